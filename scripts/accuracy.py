"""Accuracy of fnpredict on the bundled S&P 500 and on synthetic series with known truth.

Runs the evaluation lab (:mod:`fnpredict.evaluation`) and writes
``docs/accuracy.md``: every table in it is produced here from the run, none is
typed. The full run (``all`` grid, 19 configs; the S&P 500, the S&P 500 with
bursts of missing days, 5 seeds × 4000 steps of each synthetic family, scored
after 200 steps) took about 35 minutes on 2 cores (~105 s per config: one
compilation plus 27 series × 5031 steps);
``--quick`` (5 configs, 2 seeds × 1000 steps, the last 1500 S&P days) 3.5.

    python scripts/accuracy.py [--quick] [--out docs/accuracy.md] [--artifacts out/accuracy]
"""

import argparse
import datetime
import math
import os
import platform
import shutil
import sys
import time

import jax

import fnpredict as fp
from fnpredict import evaluation as ev
from fnpredict.evaluation.metrics import DETECTION_WINDOW, EWA_LEARNING_RATE
from fnpredict.evaluation.report import format_markdown

QUICK_VARIANTS = "jko,ewa,uniform,jko-no-regime_reset,jko-no-guards"


def _fmt(value, fmt=".3f"):
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, fmt)


def _lookup(result, variant, family):
    for r in result.family_rows + result.rows:
        whole = r["series"].endswith("/mean") or r["series"] == family
        if r["variant"] == variant and r["family"] == family and whole:
            return r
    return None


def _families(result):
    return list(dict.fromkeys(s.family for s in result.series.values()))


def _grid_table(result, labels, families, key, fmt=".3f", relative_to=None):
    head = "| variant | " + " | ".join(families) + " |"
    lines = [head, "|---|" + "---:|" * len(families)]
    for label in labels:
        cells = []
        for family in families:
            row = _lookup(result, label, family)
            value = row.get(key) if row else None
            if relative_to is not None and row is not None:
                ref = _lookup(result, relative_to, family)
                value = 100.0 * (value / ref[key] - 1.0) if ref and ref.get(key) else None
                cells.append("—" if value is None else f"{value:+.2f}%")
            else:
                cells.append(_fmt(value, fmt))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def default_table(result):
    rows = [_lookup(result, ev.DEFAULT_LABEL, f) for f in _families(result) if not f.endswith(_COPIES)]
    columns = (
        ("series", "family", "s"), ("MSE/RW", "mse_ratio_rw", ".4f"),
        ("MSE/min(best kernel, EWA, uniform)", "mse_ratio_best_baseline", ".4f"),
        ("MSE/oracle", "mse_ratio_oracle", ".4f"), ("MAE/RW", "mae_ratio_rw", ".4f"),
        ("MSE/best convex", "regret_ratio_convex", ".4f"), ("best kernel/RW", "_best_kernel_ratio", ".4f"),
        ("EWA/RW", "ewa_mse_ratio_rw", ".4f"), ("uniform/RW", "uniform_mse_ratio_rw", ".4f"),
    )
    for r in rows:
        if r is not None:
            r["_best_kernel_ratio"] = r["best_kernel_mse"] / r["rw_mse"] if r.get("rw_mse") else math.nan
    return format_markdown([r for r in rows if r is not None], columns)


#: Seeds per synthetic family of the gappy and bad-tick copies in the guard ablation.
GAP_SEEDS = 2
#: Suffixes of the corrupted copies (guard ablation only).
_COPIES = ("+gaps", "+ticks")


def _merge(a, b):
    """Two lab results over disjoint variants as one (same warm-up)."""
    return ev.LabResult(rows=a.rows + b.rows, family_rows=a.family_rows + b.family_rows, runs={**a.runs, **b.runs},
                        series={**a.series, **b.series}, variants=a.variants + b.variants, warmup=a.warmup,
                        seconds=a.seconds + b.seconds)


#: A guard earns its place when switching it on lowers the MSE on at least
#: one family and raises it by no more than this on any (issue 9).
MAX_COST = 0.005


def verdict_table(result, labels):
    """Per guard ablation (``jko-no-<guard>`` or ``jko+<guard>``): best gain and worst cost of having it on."""
    lines = ["| guard | on by default | best gain when on | worst cost when on | earns its place |",
             "|---|---|---:|---:|---|"]
    for label in labels:
        on_by_default = label.startswith("jko-no-")
        guard = label.removeprefix("jko-no-").removeprefix("jko+")
        with_label, without_label = (ev.DEFAULT_LABEL, label) if on_by_default else (label, ev.DEFAULT_LABEL)
        effects = []  # relative MSE change of switching the guard on, per family (< 0: it helps)
        for family in _families(result):
            on, off = _lookup(result, with_label, family), _lookup(result, without_label, family)
            if on and off and off.get("mse"):
                effects.append((on["mse"] / off["mse"] - 1.0, family))
        if not effects:
            continue
        gain, gain_family = min(effects)
        cost, cost_family = max(effects)
        earns = gain < 0 and cost <= MAX_COST
        best, worst = 100 * max(-gain, 0.0) + 0.0, 100 * max(cost, 0.0) + 0.0  # + 0.0: no "-0.00"
        lines.append(f"| {guard} | {'yes' if on_by_default else 'no'} | {best:.2f}% ({gain_family}) | "
                     f"{worst:.2f}% ({cost_family}) | {'yes' if earns else '**no**'} |")
    return "\n".join(lines)


def detection_table(result, family="drift_flip"):
    columns = (("variant", "variant", "s"), ("changes", "n_changes", ".0f"), ("detected", "n_detected", ".0f"),
               ("detection rate", "detection_rate", ".2f"), ("mean delay (steps)", "mean_delay", ".1f"),
               ("false alarms / 1000 steps", "false_alarms_per_1000", ".2f"), ("MSE/RW", "mse_ratio_rw", ".4f"),
               ("MSE/oracle", "mse_ratio_oracle", ".4f"))
    rows = [_lookup(result, v.label, family) for v in result.variants]
    return format_markdown([r for r in rows if r is not None], columns)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (5 configs, 2 seeds x 1000 steps)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per family (default 5; quick 2)")
    parser.add_argument("--steps", type=int, default=None, help="steps per synthetic series (default 4000; quick 1000)")
    parser.add_argument("--warmup", type=int, default=200, help="first scored step (default 200)")
    parser.add_argument("--variants", default=None, help="grid or labels (default all; quick " + QUICK_VARIANTS + ")")
    parser.add_argument("--out", default=os.path.join("docs", "accuracy.md"))
    parser.add_argument("--artifacts", default=os.path.join("out", "accuracy"),
                        help="folder for evaluation.csv/json/png")
    parser.add_argument("--no-cache", action="store_true", help="do not use the persistent compilation cache")
    args = parser.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 5)
    steps = args.steps or (1000 if args.quick else 4000)
    spec = args.variants or (QUICK_VARIANTS if args.quick else "all")
    if not args.no_cache:
        from fnpredict.runtime.cache import enable_compilation_cache

        enable_compilation_cache()

    sp500 = fp.data.log_levels(fp.data.load_sp500().values)
    if args.quick:
        sp500 = sp500[-1500:]
    series = [ev.observed("sp500", sp500)]
    for family in ev.FAMILIES:
        series += ev.synthetic_family(family, seeds, steps)
    # The guard ablation also runs on series with bursts of missing observations,
    # where the staleness guard acts: the S&P 500 and GAP_SEEDS seeds per family.
    gappy = [ev.with_missing_bursts(series[0])]
    for family in ev.FAMILIES:
        gappy += [ev.with_missing_bursts(s, bursts=30, seed=i)
                  for i, s in enumerate(ev.synthetic_family(family, min(seeds, GAP_SEEDS), steps))]
    # ... and on copies with one-step spikes (bad prints), where the bad-tick filter acts.
    gappy += [ev.with_bad_ticks(series[0], ticks=10)]
    for family in ev.FAMILIES:
        gappy += [ev.with_bad_ticks(s, seed=i)
                  for i, s in enumerate(ev.synthetic_family(family, min(seeds, GAP_SEEDS), steps))]
    variants = ev.select(spec)
    guard_variants = [v for v in variants if "guards" in v.tags]
    other_variants = [v for v in variants if "guards" not in v.tags]
    print(f"accuracy: {len(variants)} variants x {len(series)} series (+{len(gappy)} gappy and bad-tick series for "
          f"{len(guard_variants)} guard variants)", file=sys.stderr)
    started = time.perf_counter()
    result = ev.evaluate(guard_variants or variants, series + (gappy if guard_variants else []), jax.random.key(0),
                         warmup=args.warmup)
    if guard_variants and other_variants:
        result = _merge(result, ev.evaluate(other_variants, series, jax.random.key(0), warmup=args.warmup))
    elapsed = time.perf_counter() - started
    paths = ev.write_all(args.artifacts, result, extra={"command": "scripts/accuracy.py", "quick": args.quick})

    # The figure goes next to the markdown (the artifacts folder is not part of the docs).
    figure = os.path.splitext(args.out)[0] + ".png"
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    shutil.copyfile(paths["png"], figure)
    families = _families(result)
    base_families = [f for f in families if not f.endswith(_COPIES)]
    labels = [v.label for v in result.variants]
    rule_labels = [v.label for v in result.variants if "rules" in v.tags] or labels
    guard_labels = [v.label for v in result.variants if "guards" in v.tags]
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "python scripts/accuracy.py" + (" --quick" if args.quick else "")
    parts = [
        "# Accuracy",
        "",
        f"*Generated by `{command}` on {when} ({elapsed / 60:.1f} min on {os.cpu_count()} CPU cores, "
        f"{platform.machine()}, jax {jax.__version__}, fnpredict {fp.__version__}). Do not edit by hand: "
        "rerun the script.*",
        "",
        f"Series: the bundled S&P 500 daily log-levels ({sp500.size} days{', the last 1500' if args.quick else ''}) "
        f"and {seeds} seeds × {steps} steps of each synthetic family of `fnpredict.synthetic` at its defaults "
        f"({', '.join(ev.FAMILIES)}); family numbers are means over seeds. The forecast made at step t is scored "
        f"against observation t+1 from step {args.warmup} on. RW = the random walk (forecast = last value); "
        "ratios below 1 beat it. *oracle* = the true conditional mean E[y_{t+1} | past] (for drift_flip the "
        "oracle knows the current regime; for stable_increments it is the random walk, α = 1.7). "
        f"EWA = exponentially weighted average of the same kernel forecasts with the fixed learning rate "
        f"η = {EWA_LEARNING_RATE} per unit of squared error normalised by the warm-up's mean squared increment; "
        "uniform = their plain average; best kernel and best convex combination are chosen in hindsight on the "
        "scored steps. Every variant sees the same per-step PRNG keys. Raw numbers: "
        f"`{paths['csv']}`, `{paths['json']}`, plot `{paths['png']}`.",
        "",
        f"## The default predictor ({ev.DEFAULT_LABEL}: levy, dgm, imex, signature, persistence; all guards; "
        "bad-tick filter; regime window)",
        "",
        default_table(result),
        "",
        "## Rules × kernel sets: MSE / RW",
        "",
        "`-persistence` drops the random walk itself, the fifth expert of the default set.",
        "",
        _grid_table(result, rule_labels, base_families, "mse_ratio_rw", ".4f"),
        "",
        "MSE / best convex combination of the variant's own kernels in hindsight (the regret ratio):",
        "",
        _grid_table(result, rule_labels, base_families, "regret_ratio_convex", ".4f"),
        "",
    ]
    if len(guard_labels) > 1:
        parts += [
            "## Guard ablation: MSE / RW",
            "",
            _grid_table(result, guard_labels, families, "mse_ratio_rw", ".4f"),
            "",
            f"Each ablation's MSE change relative to the default ({ev.DEFAULT_LABEL}): for `jko-no-X` (X switched "
            "off) positive = X helps; for `jko+X` (X, off by default, switched on) negative = X helps.",
            "",
            _grid_table(result, [g for g in guard_labels if g != ev.DEFAULT_LABEL], families, "mse",
                        relative_to=ev.DEFAULT_LABEL),
            "",
            f"Verdict: a guard earns its place when having it on lowers the MSE on at least one family and "
            f"raises it by at most {100 * MAX_COST:.1f}% on any; one that does not is off by default. The `+gaps` "
            "series (guard ablation only) are copies with bursts of 3-12 missing observations "
            f"(`fnpredict.evaluation.with_missing_bursts`: 40 on the S&P 500, 30 on {GAP_SEEDS} seeds of each "
            "synthetic family), where the staleness guard acts; the `+ticks` series are copies with one-step "
            "spikes of 15-60 σ of the increments (`fnpredict.evaluation.with_bad_ticks`: 10 on the S&P 500, 8 on "
            f"{GAP_SEEDS} seeds of each synthetic family), scored against the clean values, where the bad-tick "
            "filter acts. The bad-tick filter and the regime window are input-side defenses, judged by the same "
            "rule.",
            "",
            verdict_table(result, [g for g in guard_labels
                                   if g.startswith(("jko-no-", "jko+")) and g != "jko-no-guards"]),
            "",
        ]
    parts += [
        "## Regime detection on drift_flip",
        "",
        f"A detection is the first `regime_change_detected` alarm within {DETECTION_WINDOW} steps after a change "
        f"point; any other alarm is false. Counts pooled over the {seeds} seeds, from step {args.warmup} on.",
        "",
        detection_table(result),
        "",
        f"![cumulative squared-error difference to the random walk]({os.path.basename(figure)})",
        "",
    ]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as handle:
        handle.write("\n".join(parts))
    print(ev.format_table(ev.summary_rows(result)))
    print(f"wrote {args.out} and {args.artifacts}/ ({elapsed:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
