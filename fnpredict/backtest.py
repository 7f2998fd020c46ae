"""Host-side backtest driver: chunked scans with a progress bar, summary, CSV.

Nothing here is traced except :func:`fnpredict.engine.predict_chunk`; the
series is cut into equal chunks (the last one padded with inactive steps), so
the whole backtest compiles one program and shows progress between chunks.
The per-step keys are ``jax.random.split(key, T)``, exactly as
:func:`fnpredict.predict` would use them, so the result equals one
``predict`` call.
"""

import csv
import dataclasses
import math
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from . import engine
from .config import Hyperparams, PredictorConfig
from .state import PredictorState
from .telemetry import flatten


@dataclasses.dataclass
class BacktestResult:
    """Everything a backtest produced, as host numpy arrays.

    Attributes:
        labels: one label (date) per step.
        obs: ``(time,)`` channel 0 of the observations (NaN = missing).
        prediction: ``(time,)`` forecast made at step t of obs t+1.
        kernel_predictions: ``(time, kernels)``.
        weights: ``(time, kernels)``.
        quantiles: ``(time, levels)`` calibrated quantiles made at step t of
            obs t+1 (``(time, 0)`` with intervals off).
        quantile_levels: ``(levels,)`` their nominal levels.
        telemetry: field name -> ``(time,)`` or ``(time, kernels)`` array.
        kernel_names: the enabled kernels, in column order.
        final_state: the state after the last step.
        config: the config used.
        hyperparams: the hyperparameters used (as Python floats).
    """

    labels: tuple[str, ...]
    obs: np.ndarray
    prediction: np.ndarray
    kernel_predictions: np.ndarray
    weights: np.ndarray
    quantiles: np.ndarray
    quantile_levels: np.ndarray
    telemetry: dict
    kernel_names: tuple[str, ...]
    final_state: PredictorState
    config: PredictorConfig
    hyperparams: dict


def run_backtest(
    data: np.ndarray,
    config: PredictorConfig,
    key: jax.Array,
    hyperparams: Hyperparams | None = None,
    labels: Sequence[str] | None = None,
    chunk: int = 256,
    progress: bool = True,
    state: PredictorState | None = None,
) -> BacktestResult:
    """Run the predictor over ``data`` (``(time,)`` or ``(time, channels)``).

    Args:
        data: observations, NaN = missing.
        config: the predictor config.
        key: the PRNG key of the whole run.
        hyperparams: default ``Hyperparams()``.
        labels: a label per step (dates); default the step index.
        chunk: steps per compiled chunk (progress granularity).
        progress: show a tqdm bar on stderr.
        state: start from this state (hot start) instead of ``init``.
    """
    data = np.asarray(data, dtype=np.float64)
    if data.ndim not in (1, 2) or data.shape[0] == 0:
        raise ValueError(f"data must be (time,) or (time, channels) with time > 0, got {data.shape}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    total = data.shape[0]
    labels = tuple(str(i) for i in range(total)) if labels is None else tuple(labels)
    if len(labels) != total:
        raise ValueError(f"{len(labels)} labels for {total} steps")
    if state is None:
        state = engine.init(config, key, hyperparams)
    keys = jax.random.split(key, total)
    chunk = min(chunk, total)
    n_chunks = math.ceil(total / chunk)
    padded = n_chunks * chunk
    pad_shape = (padded - total,) + data.shape[1:]
    data_padded = np.concatenate([data, np.full(pad_shape, np.nan)], axis=0)
    keys_padded = jnp.concatenate([keys, jnp.broadcast_to(keys[-1:], (padded - total,) + keys.shape[1:])])
    active = np.arange(padded) < total
    pieces = []
    bar = tqdm(total=total, desc="backtest", unit="step", disable=not progress, leave=False)
    for index in range(n_chunks):
        window = slice(index * chunk, (index + 1) * chunk)
        state, outputs = engine.predict_chunk(
            state, jnp.asarray(data_padded[window], config.jnp_dtype), keys_padded[window], jnp.asarray(active[window])
        )
        pieces.append(jax.device_get(outputs))
        bar.update(min(chunk, total - index * chunk))
    bar.close()
    stacked = jax.tree_util.tree_map(lambda *parts: np.concatenate(parts, axis=0)[:total], *pieces)
    telemetry = flatten(stacked.telemetry)
    hp = state.hyperparams
    return BacktestResult(
        labels=labels,
        obs=data if data.ndim == 1 else data[:, 0],
        prediction=np.asarray(stacked.prediction),
        kernel_predictions=np.asarray(stacked.kernel_predictions),
        weights=np.asarray(stacked.weights),
        quantiles=np.asarray(stacked.quantiles),
        quantile_levels=np.asarray(config.quantile_levels, dtype=np.float64),
        telemetry=telemetry,
        kernel_names=config.kernel_names,
        final_state=state,
        config=config,
        hyperparams={name: float(np.asarray(getattr(hp, name))) for name in Hyperparams.spec()},
    )


def _errors(forecast: np.ndarray, target: np.ndarray) -> dict:
    mask = np.isfinite(forecast) & np.isfinite(target)
    if not np.any(mask):
        return {"mae": math.nan, "rmse": math.nan, "n": 0}
    error = forecast[mask] - target[mask]
    return {"mae": float(np.mean(np.abs(error))), "rmse": float(np.sqrt(np.mean(error**2))), "n": int(mask.sum())}


def summarize(result: BacktestResult, warmup: int | None = None) -> dict:
    """Accuracy of the ensemble, each kernel and the random walk; event counts.

    The forecast made at step t is scored against obs t+1, from step
    ``warmup`` on (default: the buffer size, once the window is full). The
    random walk forecasts obs t+1 by obs t (the last valid one).
    """
    warmup = result.config.buffer_size if warmup is None else warmup
    obs = result.obs
    target = obs[1:]
    scored = np.arange(len(target)) >= warmup
    last_valid = _forward_fill(obs)  # the random walk's forecast made at step t

    def score(forecast):
        return _errors(np.where(scored, forecast[:-1], np.nan), target)

    rows = {"ensemble": score(result.prediction)}
    for column, name in enumerate(result.kernel_names):
        rows[name] = score(result.kernel_predictions[:, column])
    rows["random_walk"] = score(last_valid)
    rw = rows["random_walk"]
    for row in rows.values():
        row["mae_ratio"] = row["mae"] / rw["mae"] if rw["mae"] else math.nan
        row["rmse_ratio"] = row["rmse"] / rw["rmse"] if rw["rmse"] else math.nan
    telemetry = result.telemetry
    counts = {
        "steps": int(len(obs)),
        "scored_steps": int(rw["n"]),
        "warmup": int(warmup),
        "regime_alarms": int(np.sum(telemetry["regime_change_detected"])),
        "emergency_steps": int(np.sum(telemetry["emergency_mode"])),
        "degraded_steps": int(np.sum(telemetry["degraded_inference_mode"])),
        "missing_observations": int(np.sum(telemetry["observation_missing"])),
        "rejected_observations": int(np.sum(telemetry["observation_rejected"])),
        "collapse_warning_steps": int(np.sum(telemetry["mode_collapse_warning"])),
        "sinkhorn_failures": int(np.sum(~telemetry["sinkhorn_converged"])),
        "huber_steps": int(np.sum(telemetry["loss_type"] == 1)),
    }
    final_weights = {name: float(result.weights[-1, i]) for i, name in enumerate(result.kernel_names)}
    out = {"accuracy": rows, "counts": counts, "final_weights": final_weights, "hyperparams": result.hyperparams}
    if result.quantiles.shape[1]:
        out["intervals"] = summarize_intervals(result, warmup)
    return out


#: Windows (days) of the rolling-σ Gaussian interval baselines.
BASELINE_WINDOWS = (20, 250)


def interval_forecasters(result: BacktestResult) -> dict:
    """Quantiles ``(time, levels)`` of fnpredict, the uncalibrated mixture and the rolling-σ baselines."""
    from .evaluation.interval_metrics import rolling_gaussian_quantiles

    levels = result.quantile_levels
    out = {"fnpredict": result.quantiles}
    raw = [result.telemetry.get("intervals.raw_quantiles")]
    if raw[0] is not None:
        out["uncalibrated_mixture"] = raw[0]
    for window in BASELINE_WINDOWS:
        out[f"rolling_gaussian_{window}"] = rolling_gaussian_quantiles(result.obs, levels, window)
    return out


def summarize_intervals(result: BacktestResult, warmup: int) -> dict:
    """Coverage per level, central coverage and width, pinball loss and 99 % VaR windows, per forecaster.

    Every forecaster is scored on the same steps (from ``warmup`` on, where
    all of them are finite); see :mod:`fnpredict.evaluation.interval_metrics`.
    """
    from .evaluation.interval_metrics import score_quantiles

    forecasters = interval_forecasters(result)
    common = np.all([np.all(np.isfinite(q[:-1]), axis=1) for q in forecasters.values()], axis=0)
    labels = result.labels if all(len(label) >= 4 and label[:4].isdigit() for label in result.labels[:1]) else None
    scores = {name: score_quantiles(result.obs, q, result.quantile_levels, warmup, labels, mask=common)
              for name, q in forecasters.items()}
    return {"levels": [float(p) for p in result.quantile_levels], "forecasters": scores}


def _forward_fill(values: np.ndarray) -> np.ndarray:
    out = np.array(values, dtype=np.float64)
    for i in range(1, len(out)):
        if not np.isfinite(out[i]):
            out[i] = out[i - 1]
    return out


def format_summary(summary: dict) -> str:
    """A plain-text table of :func:`summarize`'s result."""
    lines = [
        f"{'forecaster':<13}{'MAE':>12}{'RMSE':>12}{'MAE/RW':>9}{'RMSE/RW':>9}{'n':>7}",
        "-" * 62,
    ]
    for name, row in summary["accuracy"].items():
        lines.append(
            f"{name:<13}{row['mae']:>12.6f}{row['rmse']:>12.6f}{row['mae_ratio']:>9.4f}{row['rmse_ratio']:>9.4f}{row['n']:>7d}"
        )
    lines.append("-" * 62)
    counts = summary["counts"]
    lines.append(
        "regime alarms {regime_alarms}, emergency steps {emergency_steps}, degraded steps {degraded_steps}, "
        "missing obs {missing_observations}, collapse-warning steps {collapse_warning_steps}, "
        "Sinkhorn failures {sinkhorn_failures}".format(**counts)
    )
    lines.append(
        "final weights: " + ", ".join(f"{k}={v:.3f}" for k, v in summary["final_weights"].items())
    )
    if "intervals" in summary:
        lines += ["", format_intervals(summary["intervals"])]
    return "\n".join(lines)


def format_intervals(intervals: dict) -> str:
    """A plain-text table of :func:`summarize_intervals`'s result."""
    lines = [
        f"{'intervals':<24}{'cov90':>8}{'width90':>10}{'pinball':>12}{'VaR exc':>9}{'green':>7}{'n':>7}",
        "-" * 77,
    ]
    for name, s in intervals["forecasters"].items():
        if not s.get("n"):
            continue
        central = s.get("central", {}).get("90", {"coverage": math.nan, "width": math.nan})
        var = s.get("var", {"exception_rate": math.nan, "rolling_green": math.nan})
        lines.append(f"{name:<24}{central['coverage']:>8.4f}{central['width']:>10.5f}{s['pinball']:>12.7f}"
                     f"{var['exception_rate']:>9.4f}{var['rolling_green']:>7.3f}{s['n']:>7d}")
    ours = intervals["forecasters"].get("fnpredict", {})
    if ours.get("coverage"):
        lines.append("fnpredict coverage per level: "
                     + ", ".join(f"{p}: {v:.4f}" for p, v in ours["coverage"].items()))
    by_year = ours.get("central", {}).get("90", {}).get("by_year")
    if by_year:
        lines.append("fnpredict 90% coverage per year: " + ", ".join(f"{y}: {v:.3f}" for y, v in by_year.items()))
    return "\n".join(lines)


def telemetry_columns(result: BacktestResult) -> list[tuple[str, str, int | None]]:
    """The CSV's telemetry columns, derived from the telemetry tree: ``(column, path, index)``.

    A per-step scalar is one column named by its dotted path; a per-kernel
    vector ``kernel_<what>`` becomes ``<what>_<kernel>``; any other vector
    becomes ``<path>_<i>``. ``kernel_weights`` is the ``weight_<kernel>``
    columns already.
    """
    names = result.kernel_names
    columns = []
    for path, values in result.telemetry.items():
        if path == "kernel_weights":
            continue
        if values.ndim == 1:
            columns.append((path, path, None))
        elif values.ndim == 2 and path.startswith("kernel_") and values.shape[1] == len(names):
            columns += [(f"{path.removeprefix('kernel_')}_{n}", path, j) for j, n in enumerate(names)]
        elif values.ndim == 2:
            columns += [(f"{path}_{j}", path, j) for j in range(values.shape[1])]
    return columns


def write_predictions_csv(path: str | os.PathLike, result: BacktestResult) -> None:
    """``date, obs, prediction, pred_<kernel>…, weight_<kernel>…, q_<level>…, telemetry…`` per step.

    ``prediction`` and the quantile columns ``q_<level>`` on row t are
    forecasts of row t+1's ``obs``. The
    telemetry columns are every leaf of the telemetry tree
    (:func:`telemetry_columns`), components' infos included.
    """
    names = result.kernel_names
    columns = telemetry_columns(result)
    header = (
        ["date", "obs", "prediction"]
        + [f"pred_{n}" for n in names]
        + [f"weight_{n}" for n in names]
        + [f"q_{p:g}" for p in result.quantile_levels]
        + [column for column, _, _ in columns]
    )
    telemetry = result.telemetry
    tmp = os.fspath(path) + ".tmp"
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for t, label in enumerate(result.labels):
            row = [label, repr(float(result.obs[t])), repr(float(result.prediction[t]))]
            row += [repr(float(v)) for v in result.kernel_predictions[t]]
            row += [repr(float(v)) for v in result.weights[t]]
            row += [repr(float(v)) for v in result.quantiles[t]]
            for _, field, index in columns:
                value = telemetry[field][t] if index is None else telemetry[field][t, index]
                integral = value.dtype == bool or np.issubdtype(value.dtype, np.integer)
                row.append(int(value) if integral else repr(float(value)))
            writer.writerow(row)
    os.replace(tmp, path)


__all__ = [
    "BacktestResult", "run_backtest", "summarize", "format_summary", "write_predictions_csv", "telemetry_columns",
    "summarize_intervals", "format_intervals", "interval_forecasters", "BASELINE_WINDOWS",
]
