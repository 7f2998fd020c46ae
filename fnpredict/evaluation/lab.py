"""The lab: variants × series → scored rows, per-family means, error curves.

Host-side driver around :func:`~fnpredict.evaluation.runner.run_variants` and
:func:`~fnpredict.evaluation.metrics.score`.
"""

import dataclasses
import math
import time

import jax
import numpy as np

from .metrics import random_walk_forecasts, score
from .runner import RunOutput, run_variants
from .series import EvalSeries
from .variants import Variant

__all__ = ["LabResult", "evaluate", "family_means", "error_curve"]

# Counts are pooled over seeds (and rates recomputed from them), every other
# metric is the mean over seeds.
_SUMMED = ("n_scored", "n_changes", "n_detected", "n_false_alarms")


@dataclasses.dataclass
class LabResult:
    """Everything a lab run produced.

    Attributes:
        rows: one dict per variant × series (``variant``, ``series``,
            ``family``, ``rule``, ``kernels``, ``guards``, ``seconds`` and the
            metrics of :func:`~fnpredict.evaluation.metrics.score`).
        family_rows: per variant × family with ≥ 2 series, means over seeds
            (``series`` = ``"<family>/mean"``).
        runs: ``(variant, series) ->`` :class:`RunOutput`.
        series: the series, by name.
        variants: the variants, in order.
        warmup: the first scored step.
        seconds: wall time of the whole run.
    """

    rows: list
    family_rows: list
    runs: dict
    series: dict
    variants: list
    warmup: int
    seconds: float

    def row(self, variant: str, series: str) -> dict:
        """The row of one variant on one series or family mean (``"<family>/mean"``)."""
        for r in self.rows + self.family_rows:
            if r["variant"] == variant and r["series"] == series:
                return r
        raise KeyError((variant, series))


def interval_row(run: RunOutput, values: np.ndarray, levels, warmup: int) -> dict:
    """The interval scores of one run, flat (NaN with intervals off): central 90 % coverage and
    width, pinball loss (calibrated, uncalibrated mixture, rolling-σ Gaussian over 20 steps),
    99 % VaR exception rate and share of green 250-step windows."""
    from .interval_metrics import rolling_gaussian_quantiles, score_quantiles

    nan = math.nan
    out = {"coverage_90": nan, "width_90": nan, "pinball": nan, "pinball_uncalibrated": nan,
           "pinball_gaussian_20": nan, "var_exception_rate": nan, "var_green": nan,
           "pinball_ratio_gaussian": nan, "pinball_ratio_uncalibrated": nan}
    if run.quantiles.ndim != 2 or run.quantiles.shape[1] == 0:
        return out
    target = values[:, 0] if values.ndim == 2 else values
    baseline = rolling_gaussian_quantiles(target, levels, 20)
    common = np.all([np.all(np.isfinite(q[:-1]), axis=1) for q in (run.quantiles, run.raw_quantiles, baseline)],
                    axis=0)
    ours = score_quantiles(target, run.quantiles, levels, warmup, mask=common)
    if not ours.get("n"):
        return out
    central = ours["central"].get("90", {"coverage": nan, "width": nan})
    var = ours.get("var", {"exception_rate": nan, "rolling_green": nan})
    out.update(coverage_90=central["coverage"], width_90=central["width"], pinball=ours["pinball"],
               pinball_uncalibrated=score_quantiles(target, run.raw_quantiles, levels, warmup, mask=common)["pinball"],
               pinball_gaussian_20=score_quantiles(target, baseline, levels, warmup, mask=common)["pinball"],
               var_exception_rate=var["exception_rate"], var_green=var["rolling_green"])
    out["pinball_ratio_gaussian"] = out["pinball"] / out["pinball_gaussian_20"]
    out["pinball_ratio_uncalibrated"] = out["pinball"] / out["pinball_uncalibrated"]
    return out


def family_means(rows: list) -> list:
    """Per variant × family means over the family's series (families with ≥ 2 series)."""
    buckets: dict[tuple, list] = {}
    for r in rows:
        buckets.setdefault((r["variant"], r["family"]), []).append(r)
    out = []
    for (variant, family), members in buckets.items():
        if len(members) < 2:
            continue
        mean = {k: members[0][k] for k in ("variant", "family", "rule", "kernels", "guards")}
        mean["series"] = f"{family}/mean"
        mean["n_series"] = len(members)
        for key, value in members[0].items():
            if key in mean or not isinstance(value, (int, float)) or isinstance(value, bool) or key == "best_kernel":
                continue
            values = np.array([m.get(key, math.nan) for m in members], float)
            if key in _SUMMED:
                mean[key] = float(np.nansum(values))
            else:
                mean[key] = float(np.nanmean(values)) if np.any(np.isfinite(values)) else math.nan
        if "n_changes" in mean:
            mean["detection_rate"] = mean["n_detected"] / mean["n_changes"] if mean["n_changes"] else math.nan
            delays = np.array([m["mean_delay"] for m in members], float)
            weights = np.array([m["n_detected"] for m in members], float)
            ok = np.isfinite(delays) & (weights > 0)
            mean["mean_delay"] = float(np.sum(delays[ok] * weights[ok]) / weights[ok].sum()) if ok.any() else math.nan
        out.append(mean)
    return out


def evaluate(variants: list[Variant], series: list[EvalSeries], key: jax.Array | None = None,
             warmup: int = 200, progress: bool = True) -> LabResult:
    """Run and score every variant on every series.

    Args:
        variants: the variants (labels unique; equal configs share one program).
        series: the series (names unique; one batch, shorter ones padded with missing steps).
        key: PRNG key of every run (default ``jax.random.key(0)``).
        warmup: first scored forecast step (the forecast at t is scored against obs t+1).
        progress: show a tqdm bar over variants.

    Example:
        >>> from fnpredict.evaluation import grid, synthetic_family, evaluate
        >>> result = evaluate(grid("default"), synthetic_family("ou", 3, 2000))
    """
    names = [s.name for s in series]
    if len(set(names)) != len(names):
        raise ValueError(f"series names must be unique, got {names}")
    for s in series:
        if s.values.shape[0] < warmup + 2:
            raise ValueError(f"series {s.name!r} has {s.values.shape[0]} steps, need > warmup + 1 = {warmup + 1}")
    key = jax.random.key(0) if key is None else key
    started = time.perf_counter()
    runs, seconds = run_variants(variants, series, key, progress=progress)
    rows = []
    for v in variants:
        kernel_names = v.config.kernel_names
        for s in series:
            run = runs[(v.label, s.name)]
            metrics = score(run.prediction, run.kernel_predictions, s.values, kernel_names, warmup,
                            conditional_mean=s.conditional_mean, change_points=s.change_points,
                            alarms=run.regime_change_detected, truth=s.truth)
            best = metrics.pop("best_kernel")
            row = {
                "variant": v.label, "series": s.name, "family": s.family, "rule": v.config.rule_object.name,
                "kernels": "+".join(kernel_names), "guards": "+".join(g.name for g in v.config.guard_objects) or "none",
                "best_kernel": kernel_names[best] if best >= 0 else "", "seconds": seconds[v.label],
                "emergency_steps": int(np.sum(run.emergency_mode[warmup:])),
                "regime_alarms": int(np.sum(run.regime_change_detected[warmup:])),
            }
            row.update(metrics)
            row.update(interval_row(run, s.values, v.config.quantile_levels, warmup))
            rows.append(row)
    return LabResult(rows, family_means(rows), runs, {s.name: s for s in series}, list(variants), warmup,
                     time.perf_counter() - started)


def error_curve(run: RunOutput, values: np.ndarray, warmup: int, truth: np.ndarray | None = None) -> np.ndarray:
    """Cumulative ``(ensemble error)² − (random-walk error)²`` over the scored steps (< 0: beats the RW).

    ``truth``: clean values to score against when ``values`` are corrupted.
    """
    values = np.asarray(values, float)
    rw = random_walk_forecasts(values)
    target = (values if truth is None else np.asarray(truth, float))[1:]
    diff = (run.prediction[:-1] - target) ** 2 - (rw[:-1] - target) ** 2
    diff = np.where(np.isfinite(diff), diff, 0.0)[warmup:]
    return np.cumsum(diff)
