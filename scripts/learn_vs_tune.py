"""Learn (gradient, Optax) vs tune (Optuna TPE) on the bundled S&P 500; writes docs/learn-vs-tune.md.

Same data, same search box (the differentiable fields of the default search
space, ``fp.tuning.DEFAULT_LEARN_SPACE``), same budget of backtest
evaluations of the objective (mean walk-forward MSE / random-walk MSE on the
training windows): ``learn`` takes at most BUDGET gradient steps (each one
objective evaluation with its gradient, plus a forward validation score for
early stopping), ``tune`` evaluates BUDGET trials. Both see only the first
LEARN_FRACTION of the series; ``learn`` holds the last quarter of that span
out for validation, ``tune`` scores its trials on the same training windows.
The rest of the series is the unseen span: walk-forward MSE / random walk of
the defaults, the learned and the tuned hyperparameters on it.

Usage: ``python scripts/learn_vs_tune.py [--budget 24] [--out docs/learn-vs-tune.md]``.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

import fnpredict as fp
from fnpredict import data as fpdata
from fnpredict.tuning.gradient import DEFAULT_LEARN_SPACE

ROOT = Path(__file__).resolve().parents[1]
LEARN_FRACTION = 0.6
VALIDATION = 0.25
N_WINDOWS = 4


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=24, help="objective evaluations for each method")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N days (a quick run)")
    parser.add_argument("--buffer-size", type=int, default=None, help="config buffer size (default 128)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "learn-vs-tune.md"))
    parser.add_argument("--json", default=None, help="also write the figures as JSON here")
    parser.add_argument("--learning-rate", type=float, default=0.1, help="learn's AdamW learning rate")
    parser.add_argument("--patience", type=int, default=8, help="learn's early-stopping patience")
    parser.add_argument("--no-cache", action="store_true", help="do not use the persistent compilation cache")
    args = parser.parse_args(argv)
    if not args.no_cache:
        from fnpredict.runtime.cache import enable_compilation_cache

        enable_compilation_cache()

    series = fpdata.load_sp500()
    values = fpdata.log_levels(series.values)
    labels = list(series.labels)
    if args.limit:
        values, labels = values[: args.limit], labels[: args.limit]
    config = fp.PredictorConfig() if args.buffer_size is None else fp.PredictorConfig(buffer_size=args.buffer_size)
    split = int(round(len(values) * LEARN_FRACTION))
    learning_span, unseen = values[:split], values[split:]
    training = learning_span[: int(round(split * (1.0 - VALIDATION)))]
    key = jax.random.key(0)

    print(f"S&P 500 {labels[0]}..{labels[-1]} ({len(values)} days): learn on {labels[0]}..{labels[split - 1]}, "
          f"unseen {labels[split]}..{labels[-1]}; budget {args.budget}", file=sys.stderr)

    started = time.perf_counter()
    learned = fp.tuning.learn(config, learning_span, key, n_steps=args.budget, n_windows=N_WINDOWS,
                              validation=VALIDATION, learning_rate=args.learning_rate, patience=args.patience,
                              progress=True)
    learn_seconds = time.perf_counter() - started

    started = time.perf_counter()
    space = dict(DEFAULT_LEARN_SPACE)
    tuned = fp.tuning.tune(config, training, key, n_trials=args.budget, batch_size=4, n_windows=N_WINDOWS,
                           search_space=space, progress=True)
    tune_seconds = time.perf_counter() - started

    def unseen_score(hyperparams):
        result = fp.tuning.walk_forward(config, unseen, key, hyperparams, n_windows=N_WINDOWS)
        return float(np.mean(np.asarray(result.mse_ratio))), [float(v) for v in np.asarray(result.mse_ratio)]

    defaults = fp.Hyperparams()
    tuned_hp = defaults.replace(**tuned["best_params"])
    training_default = float(np.mean(np.asarray(
        fp.tuning.walk_forward(config, training, key, defaults, n_windows=N_WINDOWS).mse_ratio)))
    rows = {
        "defaults": dict(objective=training_default, seconds=0.0, evaluations=0, unseen=unseen_score(defaults)),
        "learn": dict(objective=learned.best_value, seconds=learn_seconds, evaluations=learned.n_evaluations,
                      unseen=unseen_score(learned.hyperparams), validation=learned.best_validation,
                      params=learned.best_params, stopped_early=learned.stopped_early),
        "tune": dict(objective=tuned["best_value"], seconds=tune_seconds, evaluations=tuned["n_trials"],
                     unseen=unseen_score(tuned_hp), params=tuned["best_params"]),
    }
    figures = dict(
        data=f"bundled S&P 500 log closes, {labels[0]}..{labels[-1]} ({len(values)} days)",
        learning_span=f"{labels[0]}..{labels[split - 1]}", unseen_span=f"{labels[split]}..{labels[-1]}",
        budget=args.budget, learning_rate=args.learning_rate, patience=args.patience, rows=rows,
        initial_validation=learned.initial_validation,
        learn_history=[{k: h[k] for k in ("step", "value", "validation", "grad_norm")} for h in learned.history],
        config=config.describe()["kernels"], jax=jax.__version__,
    )
    for name in ("defaults", "learn", "tune"):
        print(f"{name:<9} unseen walk-forward MSE/RW {rows[name]['unseen'][0]:.6f}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    Path(args.out).write_text(render(figures))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def render(figures) -> str:
    rows = figures["rows"]
    lines = [
        "# Learn vs tune",
        "",
        "Generated by `scripts/learn_vs_tune.py` (do not edit by hand).",
        "",
        f"Data: {figures['data']}; default config (kernels {', '.join(figures['config'])}); "
        f"jax {figures['jax']}.",
        f"Both methods see only the learning span {figures['learning_span']}: `fp.tuning.learn` trains on "
        f"its first {1 - VALIDATION:.0%} ({N_WINDOWS} walk-forward windows) and stops early on the last "
        f"{VALIDATION:.0%}; `fp.tuning.tune` (Optuna TPE) scores its trials on the same {N_WINDOWS} "
        "training windows. Same search box (the differentiable fields of the default search space), "
        f"same budget: {figures['budget']} objective evaluations each (for `learn`, each also computes "
        f"the gradient and a validation score; AdamW learning rate {figures['learning_rate']}, patience "
        f"{figures['patience']}). The unseen span "
        f"{figures['unseen_span']} was never evaluated by either; it is scored with {N_WINDOWS} "
        "walk-forward windows.",
        "",
        "Objective: mean walk-forward MSE / random-walk MSE (lower is better; 1 = the random walk).",
        "",
        "| | objective reached (training windows) | evaluations | wall time (s) | unseen span MSE/RW |",
        "|---|---|---|---|---|",
    ]
    for name in ("defaults", "learn", "tune"):
        row = rows[name]
        seconds = "—" if name == "defaults" else f"{row['seconds']:.0f}"
        evaluations = "—" if name == "defaults" else str(row["evaluations"])
        lines.append(f"| {name} | {row['objective']:.6f} | {evaluations} | {seconds} | {row['unseen'][0]:.6f} |")
    lines += ["", "Unseen span, per window:", "",
              "| | " + " | ".join(f"window {i + 1}" for i in range(N_WINDOWS)) + " |",
              "|---|" + "---|" * N_WINDOWS]
    for name in ("defaults", "learn", "tune"):
        lines.append(f"| {name} | " + " | ".join(f"{v:.6f}" for v in rows[name]["unseen"][1]) + " |")
    learn = rows["learn"]
    lines += ["", f"`learn`: validation objective {figures['initial_validation']:.6f} at the defaults, "
              f"{learn['validation']:.6f} at the kept step"
              f"{' (stopped early)' if learn['stopped_early'] else ''}.", "",
              "| field | default | learn | tune |", "|---|---|---|---|"]
    defaults = fp.Hyperparams()
    for name in learn["params"]:
        lines.append(f"| `{name}` | {float(getattr(defaults, name)):.6g} | {learn['params'][name]:.6g} | "
                     f"{rows['tune']['params'].get(name, float('nan')):.6g} |")
    lines += ["", "`learn` steps:", "", "| step | training objective | validation | gradient norm |",
              "|---|---|---|---|"]
    for h in figures["learn_history"]:
        lines.append(f"| {h['step']} | {h['value']:.6f} | {h['validation']:.6f} | {h['grad_norm']:.3g} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
