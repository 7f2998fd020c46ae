"""Step speed: latency, scan vs Python loop, vmap vs one asset, state bytes, compile.

Run: ``python benchmarks/bench_step.py [--assets 256] [--steps 500] [--one-core]``.
Prints ratios measured in one run (the machines are shared and noisy), for the
default config and for the kernel subsets that show each kernel's cost.
"""

import argparse
import os
import sys

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--assets", type=int, default=256)
parser.add_argument("--steps", type=int, default=500)
parser.add_argument("--one-core", action="store_true", help="pin XLA to one CPU thread (the latency budget's setting)")
parser.add_argument("--configs", default="default,levy+signature,levy+dgm+signature,levy+imex+signature",
                    help="comma-separated kernel sets ('default' = all four), '+' between kernels")
args = parser.parse_args()
if args.one_core:
    # Must be set before jax is imported: one intra-op thread, no Eigen pool.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import fnpredict as fp  # noqa: E402
from fnpredict.runtime.bench import format_bench, run_bench  # noqa: E402

for name in args.configs.split(","):
    kernels = fp.config.DEFAULT_KERNELS if name == "default" else tuple(name.split("+"))
    config = fp.PredictorConfig(kernels=kernels)
    figures = run_bench(config, n_assets=args.assets, steps=args.steps)
    print(f"== {name}")
    print(format_bench(figures))
    sys.stdout.flush()
