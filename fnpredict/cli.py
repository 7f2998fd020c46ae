"""The ``fnpredict`` command: ``backtest``, ``tune``, ``learn``, ``stream``, ``bench``, ``warmup``.

Every subcommand takes ``--json`` for a machine-readable summary on stdout
(human-readable text then goes to stderr).
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)


def _dump(payload) -> str:
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(json.loads(json.dumps(payload, default=_json_default))), sort_keys=True)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a machine-readable JSON summary on stdout")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    parser.add_argument("--kernels", default=None,
                        help="comma-separated registered kernels (default: levy,dgm,imex,signature; "
                             "also: persistence)")
    parser.add_argument("--rule", default=None,
                        help="weight rule by name (default: jko, the JKO flow; see fnpredict.orchestrator)")
    parser.add_argument("--guards", default=None,
                        help="comma-separated guards to switch on (default: all; 'none' for none)")
    parser.add_argument("--buffer-size", type=int, default=None, help="sliding-window length (default 128)")
    parser.add_argument("--no-cache", action="store_true", help="do not use the persistent compilation cache")


def _add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None, help="CSV file (default: the bundled S&P 500 daily closes)")
    parser.add_argument("--column", default="close",
                        help="numeric column(s) to read, comma-separated (channel 0 first)")
    parser.add_argument("--date-column", default="date", help="label column (default 'date')")
    parser.add_argument("--raw", action="store_true", help="use the values as they are (default: log levels)")
    parser.add_argument("--limit", type=int, default=None, help="use only the last N rows")


def _config(args):
    import fnpredict as fp

    changes = {}
    if args.kernels:
        changes["kernels"] = tuple(k.strip() for k in args.kernels.split(",") if k.strip())
    if args.buffer_size:
        changes["buffer_size"] = args.buffer_size
    if getattr(args, "rule", None):
        changes["rule"] = args.rule
    if getattr(args, "guards", None):
        changes["guards"] = () if args.guards == "none" else tuple(
            g.strip() for g in args.guards.split(",") if g.strip()
        )
    channels = len(args.column.split(",")) if hasattr(args, "column") else 1
    if channels > 1:
        changes["n_channels"] = channels
    return fp.PredictorConfig(**changes)


def _load(args):
    from . import data as fpdata

    columns = [c.strip() for c in args.column.split(",")]
    if args.data is None:
        series = fpdata.load_sp500() if columns == ["close"] else fpdata.load_csv(fpdata.sp500_path(), columns)
    else:
        series = fpdata.load_csv(args.data, columns if len(columns) > 1 else columns[0], args.date_column)
    values = series.values if args.raw else fpdata.log_levels(series.values)
    labels = series.labels
    if args.limit:
        values, labels = values[-args.limit :], labels[-args.limit :]
    return values, labels, series.source


def _setup(args):
    if not args.no_cache:
        from .runtime.cache import enable_compilation_cache

        enable_compilation_cache()


def cmd_backtest(args) -> int:
    import jax

    from .backtest import format_summary, run_backtest, summarize, write_predictions_csv
    from .report import write_report

    _setup(args)
    config = _config(args)
    values, labels, source = _load(args)
    os.makedirs(args.out, exist_ok=True)
    log = sys.stderr if args.json else sys.stdout
    print(f"fnpredict backtest: {len(values)} steps from {source}, kernels {','.join(config.kernel_names)}", file=log)
    started = time.perf_counter()
    result = run_backtest(values, config, jax.random.key(args.seed), labels=labels, progress=not args.no_progress,
                          hyperparams=_hyperparams(args))
    elapsed = time.perf_counter() - started
    summary = summarize(result)
    summary["seconds"] = elapsed
    summary["source"] = source
    csv_path = os.path.join(args.out, "predictions.csv")
    png_path = os.path.join(args.out, "report.png")
    write_predictions_csv(csv_path, result)
    write_report(png_path, result, title=f"fnpredict backtest — {os.path.basename(source)}")
    summary["outputs"] = {"predictions_csv": csv_path, "report_png": png_path}
    if args.snapshot:
        from .runtime.snapshot import save_snapshot

        save_snapshot(args.snapshot, result.final_state)
        summary["outputs"]["snapshot"] = args.snapshot
    print(format_summary(summary), file=log)
    print(f"wrote {csv_path} and {png_path} ({elapsed:.1f} s)", file=log)
    if args.json:
        print(_dump(summary))
    return 0


def cmd_tune(args) -> int:
    import jax

    from .tuning.search import tune

    _setup(args)
    config = _config(args)
    values, _, source = _load(args)
    result = tune(
        config, values, jax.random.key(args.seed), n_trials=args.trials, batch_size=args.batch,
        n_windows=args.windows, storage=args.storage, study_name=args.study, progress=not args.json,
        heartbeat=args.heartbeat,
    )
    log = sys.stderr if args.json else sys.stdout
    print(f"best mean walk-forward MSE ratio to the random walk {result['best_value']:.6g} "
          f"after {result['n_trials']} trials on {source}", file=log)
    if args.params_out:
        from .tuning.params import write_params

        write_params(args.params_out, result["best_params"], value=result["best_value"],
                     objective="mean walk-forward MSE ratio to the random walk",
                     study_name=result["study_name"], n_trials=result["n_trials"])
        print(f"wrote {args.params_out}", file=log)
    for name, value in result["best_params"].items():
        print(f"  {name:<20} {value:.6g}", file=log)
    if args.json:
        print(_dump(result))
    return 0


def cmd_learn(args) -> int:
    import jax

    from .tuning.gradient import learn

    _setup(args)
    config = _config(args)
    values, _, source = _load(args)
    result = learn(
        config, values, jax.random.key(args.seed), n_steps=args.steps, n_windows=args.windows,
        validation=args.validation, learning_rate=args.learning_rate, patience=args.patience,
        progress=not args.json,
    )
    log = sys.stderr if args.json else sys.stdout
    print(f"mean walk-forward MSE ratio to the random walk {result.best_value:.6g} (validation "
          f"{result.best_validation:.6g}, from {result.initial_value:.6g} / {result.initial_validation:.6g}) "
          f"after {result.n_steps} steps on {source}", file=log)
    if args.params_out:
        from .tuning.params import write_params

        # The same JSON as ``tune --params-out`` (read by --params).
        write_params(args.params_out, result.best_params, value=result.best_value,
                     objective=result.objective, validation=result.best_validation,
                     method="learn", n_steps=result.n_steps)
        print(f"wrote {args.params_out}", file=log)
    for name, value in result.best_params.items():
        print(f"  {name:<20} {value:.6g}", file=log)
    if args.json:
        print(_dump({
            "best_params": result.best_params, "best_value": result.best_value,
            "best_validation": result.best_validation, "initial_value": result.initial_value,
            "initial_validation": result.initial_validation, "n_steps": result.n_steps,
            "stopped_early": result.stopped_early, "seconds": result.seconds, "objective": result.objective,
        }))
    return 0


def _hyperparams(args):
    if not getattr(args, "params", None):
        return None
    from .tuning.params import load_hyperparams

    return load_hyperparams(args.params)


def cmd_stream(args) -> int:
    from .service.stream import run_from_args

    _setup(args)
    return run_from_args(args, _config(args), _hyperparams(args))


def cmd_bench(args) -> int:
    from .runtime.bench import format_bench, run_bench

    _setup(args)
    config = _config(args)
    figures = run_bench(config, n_assets=args.assets, steps=args.steps, seed=args.seed)
    log = sys.stderr if args.json else sys.stdout
    print(format_bench(figures), file=log)
    if args.json:
        print(_dump(figures))
    return 0


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip()) if text else ()


def cmd_warmup(args) -> int:
    """Compile a deployment's programs into the persistent cache (fnpredict.runtime.warmup)."""
    from .runtime.warmup import warmup

    if args.no_cache:
        raise ValueError("warmup fills the persistent compilation cache; --no-cache makes it pointless")
    _setup(args)
    config = _config(args)
    seconds = warmup(config, stream_assets=_sizes(args.stream_assets), predict_steps=_sizes(args.predict_steps),
                     chunk_steps=_sizes(args.chunk_steps))
    log = sys.stderr if args.json else sys.stdout
    import jax

    folder = jax.config.jax_compilation_cache_dir
    for name, value in seconds.items():
        print(f"{name:16s} {value:8.2f} s", file=log)
    print(f"cache: {folder}", file=log)
    if args.json:
        print(_dump({"seconds": seconds, "cache_dir": folder}))
    return 0


# --- evaluate (the evaluation lab, fnpredict.evaluation) -------------------


def cmd_evaluate(args) -> int:
    """Run a grid of variants over observed and/or synthetic series; table, CSV, JSON, PNG."""
    import jax

    import fnpredict as fp

    from . import evaluation as ev

    _setup(args)
    log = sys.stderr if args.json else sys.stdout
    changes = {}
    if args.buffer_size:
        changes["buffer_size"] = args.buffer_size
    base = fp.PredictorConfig(**changes)
    kernels = tuple(k.strip() for k in args.kernels.split(",") if k.strip()) if args.kernels else None
    variants = ev.select(args.variants, base, kernels=kernels)
    series = []
    if args.data is not None or not args.synthetic:
        if args.data == "sp500":
            args.data = None
        values, _, source = _load(args)
        if np.ndim(values) != 1:
            raise ValueError("evaluate: one --column only (the lab scores channel 0 of a single series)")
        series.append(ev.observed(os.path.splitext(os.path.basename(source))[0], values))
    if args.synthetic:
        families = list(ev.FAMILIES) if args.synthetic == "all" else [
            f.strip() for f in args.synthetic.split(",") if f.strip()]
        for family in families:
            series += ev.synthetic_family(family, args.seeds, args.steps)
    n_configs = len(ev.group_by_config(variants))
    print(f"fnpredict evaluate: {len(variants)} variants ({n_configs} compiled configs) x {len(series)} series, "
          f"scored after {args.warmup} steps", file=log)
    result = ev.evaluate(variants, series, jax.random.key(args.seed), warmup=args.warmup,
                         progress=not args.no_progress)
    paths = ev.write_all(args.out, result, extra={"command": "evaluate", "variants_spec": args.variants})
    print(ev.format_table(ev.summary_rows(result)), file=log)
    print(f"wrote {paths['csv']}, {paths['json']} and {paths['png']} ({result.seconds:.1f} s)", file=log)
    if args.json:
        print(_dump({"seconds": result.seconds, "outputs": paths, "rows": ev.summary_rows(result)}))
    return 0

# --- end evaluate ------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fnpredict", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("backtest", help="run the predictor over a series; summary, predictions.csv, report.png")
    _add_common(p)
    _add_data(p)
    p.add_argument("--out", default="out", help="output folder (default ./out)")
    p.add_argument("--snapshot", default=None, help="also save the final state to this snapshot file")
    p.add_argument("--params", default=None, help="hyperparameters JSON (as written by tune --params-out)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_backtest)

    p = sub.add_parser("tune", help="Optuna TPE search of the hyperparameters on walk-forward windows")
    _add_common(p)
    _add_data(p)
    p.add_argument("--trials", type=int, default=16, help="number of trials (default 16)")
    p.add_argument("--batch", type=int, default=4, help="trials evaluated together as one vmapped population")
    p.add_argument("--windows", type=int, default=4, help="walk-forward windows (default 4)")
    p.add_argument("--storage", default=None,
                   help="shared Optuna storage: a journal file path, or an RDB URL (sqlite:///x.db, postgresql://...)")
    p.add_argument("--study", default="fnpredict", help="study name in the storage")
    p.add_argument("--params-out", default=None, help="write the best hyperparameters to this JSON file")
    p.add_argument("--heartbeat", type=int, default=None,
                   help="heartbeat seconds with a shared storage (default 10): a trial silent for 3 beats "
                        "(its worker died) is failed and retried once")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("learn", help="learn the differentiable hyperparameters by gradient (Optax AdamW) "
                                     "on walk-forward windows")
    _add_common(p)
    _add_data(p)
    p.add_argument("--steps", type=int, default=30, help="most gradient steps (default 30)")
    p.add_argument("--windows", type=int, default=4, help="training walk-forward windows (default 4)")
    p.add_argument("--validation", type=float, default=0.25,
                   help="fraction of the series, at its end, held out for early stopping (default 0.25)")
    p.add_argument("--learning-rate", type=float, default=0.1, help="AdamW learning rate (default 0.1)")
    p.add_argument("--patience", type=int, default=8, help="steps without a validation improvement before stopping")
    p.add_argument("--params-out", default=None, help="write the learned hyperparameters to this JSON file")
    p.set_defaults(func=cmd_learn)

    p = sub.add_parser("stream", help="read observations from stdin (one per line), write JSON lines")
    _add_common(p)
    p.add_argument("--column", default="close", help=argparse.SUPPRESS)
    p.add_argument("--channels", type=int, default=1, help="values per line (comma-separated)")
    p.add_argument("--assets", type=int, default=1, help="assets per line, advanced by one vmapped step")
    p.add_argument("--csv", action="store_true", help="CSV input: a header (timestamp,asset...) then rows")
    p.add_argument("--snapshot", default=None, help="snapshot file (written on SIGTERM/SIGINT and at the end)")
    p.add_argument("--snapshot-every", type=int, default=0, help="also save every N lines")
    p.add_argument("--resume", action="store_true", help="restore --snapshot and continue")
    p.add_argument("--resume-input", choices=("replay", "continue"), default="replay",
                   help="replay: the input starts again from its first line (consumed lines are skipped); "
                        "continue: it starts at the first line not consumed")
    p.add_argument("--params", default=None, help="hyperparameters JSON (as written by tune --params-out)")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error", "critical"))
    p.add_argument("--metrics-port", type=int, default=0,
                   help="serve /metrics (Prometheus) and /healthz on 127.0.0.1:PORT")
    p.set_defaults(func=cmd_stream)

    p = sub.add_parser("bench", help="per-step latency, scan vs loop, vmap vs one asset, state bytes, compile time")
    _add_common(p)
    p.add_argument("--assets", type=int, default=256, help="assets in the vmap measurement (default 256)")
    p.add_argument("--steps", type=int, default=500, help="steps per measurement (default 500)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("warmup", help="compile every program a deployment uses into the persistent cache")
    _add_common(p)
    p.add_argument("--channels", type=int, default=1, help="values per observation")
    p.add_argument("--stream-assets", default="1", help="comma-separated asset counts of `stream` (default 1)")
    p.add_argument("--predict-steps", default="", help="comma-separated lengths of fp.predict calls")
    p.add_argument("--chunk-steps", default="256",
                   help="comma-separated backtest chunk lengths (default 256, the backtest's; '' for none)")
    p.set_defaults(func=cmd_warmup, column="close")

    p = sub.add_parser("evaluate", help="evaluation lab: variants x series vs random walk, kernels, truth")
    _add_data(p)
    p.add_argument("--synthetic", default=None,
                   help="comma-separated synthetic families (ou, ou_jumps, drift_flip, ar2_increments, "
                        "stable_increments) or 'all'; without --data only these are scored "
                        "(--data sp500 adds the bundled series)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per synthetic family (default 3)")
    p.add_argument("--steps", type=int, default=2000, help="steps per synthetic series (default 2000)")
    p.add_argument("--warmup", type=int, default=200, help="first scored step (default 200)")
    p.add_argument("--variants", default="default",
                   help="grid: default (6 configs: jko, ewa, boa, uniform with the default kernels, "
                        "jko-persistence, jko-no-guards), rules (12), guards (8), all (19 configs: rules "
                        "jko/ewa/boa/mlpol/fixed_share/uniform x default/-persistence kernels and every guard "
                        "and input-filter ablation); or comma-separated labels")
    p.add_argument("--kernels", default=None, help="replace the default kernel set of the grid")
    p.add_argument("--buffer-size", type=int, default=None, help="sliding-window length (default 128)")
    p.add_argument("--out", default="out/evaluation", help="output folder (default ./out/evaluation)")
    p.add_argument("--json", action="store_true", help="print a machine-readable JSON summary on stdout")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed of the runs (default 0)")
    p.add_argument("--no-cache", action="store_true", help="do not use the persistent compilation cache")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("stream", "warmup") and args.channels > 1:
        args.column = ",".join(f"c{i}" for i in range(args.channels))
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        if os.environ.get("FNPREDICT_DEBUG") == "1":
            raise
        print(f"fnpredict {args.command}: error: {error} (FNPREDICT_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
