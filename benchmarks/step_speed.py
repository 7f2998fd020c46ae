"""The three step budgets of DESIGN §5, measured in one run, optionally against another code tree.

Run: ``python benchmarks/step_speed.py [--baseline DIR] [--rounds 2] [--assets 1024] [--write-docs]``.

Prints, for the default config on one pinned core:

* per asset-step of ``jax.jit(jax.vmap(scan of step))`` over ``--assets``
  assets (budget ≤ 60 µs, goal ≤ 30 µs);
* per step of a single-asset ``fp.predict`` (budget ≤ 120 µs);
* one ``fp.step`` call, blocked (budget ≤ 0.5 ms).

Each figure is measured in a fresh child process pinned to one core
(``sched_setaffinity`` to the lowest allowed CPU, as ``taskset -c``, and
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``)
and is the minimum over repeats and over ``--rounds`` rounds, the children of
each tree alternating, so that a shared machine's load falls on both alike.
``--baseline DIR`` is another checkout of fnpredict (e.g. ``git archive
<commit> | tar -x -C DIR``) measured the same way, for before/after ratios.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = r"""
import json, os, sys, time
tree, n_assets, steps, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, tree)
sys.path.insert(1, sys.argv[5])
from _common import block, min_time, pin_one_core, warm_batch
pin_one_core()
import jax, jax.numpy as jnp
import fnpredict as fp
assert os.path.dirname(os.path.dirname(os.path.abspath(fp.__file__))) == os.path.abspath(tree), fp.__file__
config = fp.PredictorConfig()
states, obs, data = warm_batch(config, n_assets, extra_steps=max(steps, 256))
key = jax.random.key(3)
out = {"fnpredict": fp.__file__}

# vmap over assets of a scan over `steps` steps (one program, as a user batches).
keys = jax.random.split(key, steps)
vscan = jax.jit(jax.vmap(lambda s, d: fp.engine.scan(s, d, keys, keep_outputs=True), in_axes=(0, 1)))
chunk = data[:steps]
block(vscan(states, chunk))
out["vmap_per_asset_step_us"] = min_time(lambda: vscan(states, chunk), repeats) / (steps * n_assets) * 1e6

# single-asset predict: the public fp.predict over 256 steps.
one = jax.tree_util.tree_map(lambda x: x[0], states)
series = data[:256, 0]
block(fp.predict(one, series, key))
out["predict_per_step_us"] = min_time(lambda: fp.predict(one, series, key), 3 * repeats) / 256 * 1e6

# one fp.step call, blocked (dispatch included).
o = obs[0]
block(fp.step(one, o, key))
out["step_call_us"] = min_time(lambda: fp.step(one, o, key), 300) * 1e6
print(json.dumps(out))
"""

FIGURES = [
    ("vmap_per_asset_step_us", "per asset-step, vmap over {assets} assets", 60.0),
    ("predict_per_step_us", "per step, single-asset fp.predict", 120.0),
    ("step_call_us", "one fp.step call (blocked)", 500.0),
]


def measure(tree: str, args) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, tree, str(args.assets), str(args.steps), str(args.repeats), HERE],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": tree},
    )
    if result.returncode != 0:
        raise SystemExit(f"child for {tree} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="another fnpredict checkout to compare against")
    parser.add_argument("--assets", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=16, help="scan length of the vmapped program")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    trees = {"this tree": ROOT}
    if args.baseline:
        trees = {"baseline": os.path.abspath(args.baseline), **trees}
    best: dict[str, dict] = {name: {} for name in trees}
    for round_ in range(args.rounds):
        for name, tree in trees.items():
            figures = measure(tree, args)
            for key, value in figures.items():
                if isinstance(value, float):
                    best[name][key] = min(value, best[name].get(key, float("inf")))
            print(f"round {round_ + 1}, {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()
                                                              if isinstance(v, float)))
            sys.stdout.flush()
    header = "| figure | budget | " + " | ".join(trees) + (" | before / after |" if args.baseline else "")
    lines = [header, "|---" * (2 + len(trees) + bool(args.baseline)) + "|"]
    for key, label, budget in FIGURES:
        cells = [f"{best[name][key]:.1f} µs" for name in trees]
        row = f"| {label.format(assets=args.assets)} | ≤ {budget:.0f} µs | " + " | ".join(cells)
        if args.baseline:
            row += f" | {best['baseline'][key] / best['this tree'][key]:.2f}× |"
        else:
            row += " |"
        lines.append(row)
    table = "\n".join(lines)
    print("minimum over rounds and repeats, one pinned core:")
    print(table)
    if args.write_docs:
        sys.path.insert(0, HERE)
        import jax
        from _docs import write_section

        note = (f"`python benchmarks/step_speed.py{' --baseline DIR' if args.baseline else ''} --assets "
                f"{args.assets}`: jax {jax.__version__}, float64, default config; each tree in fresh child "
                "processes pinned to one core (sched_setaffinity, as `taskset -c 0`, and "
                "`XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`), minimum over "
                f"{args.rounds} alternating rounds; vmap figure from a scan of {args.steps} steps.")
        write_section("step_speed", note + "\n\n" + table)


if __name__ == "__main__":
    main()
