"""Peak memory of the gradient of a long ``predict`` with checkpointing vs the forward pass.

Measure: XLA's memory analysis of the compiled programs
(``jax.jit(f).lower(x).compile().memory_analysis()``), peak bytes =
arguments + outputs + temporaries − aliased bytes. Static sizes from the
compiler's buffer assignment, so the figures are exact for the program and
do not depend on the machine's load (RSS would add the runtime's own pools).

Loss: MSE of the one-step forecasts of a ``steps``-step ``predict`` of the
default config, as a function of every differentiable hyperparameter.
Printed: the forward pass's peak, the gradient's with ``checkpoint = n``
(segments of n ≈ √T steps, see ``fnpredict.engine.scan``) and, with
``--baseline``, without checkpointing; the claim (issue 12) is gradient /
forward ≤ 4 with checkpointing.

Usage: ``python benchmarks/bench_grad_memory.py [--steps 2000] [--baseline]``.
"""

import argparse
import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np

import fnpredict as fp
from fnpredict import synthetic

NAMES = ("jko_tau", "sinkhorn_epsilon", "error_alpha", "huber_delta_scale", "weight_floor",
         "rls_forgetting", "rls_ridge")


def peak_bytes(compiled) -> int:
    """Arguments + outputs + temporaries − aliased, from XLA's memory analysis."""
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


def measure(config, steps: int, checkpoint: int, baseline: bool) -> dict:
    data = jnp.asarray(synthetic.ar2_increments(steps, seed=0).values + 4.0)
    keys = jax.random.split(jax.random.key(0), steps)
    template = fp.init(config).hyperparams
    x0 = jnp.asarray([float(getattr(template, n)) for n in NAMES])

    def loss(x, remat):
        state = fp.init(config, None, template.replace(**dict(zip(NAMES, x))))
        _, outputs = fp.engine.scan(state, data, keys, checkpoint=remat)
        return jnp.mean((outputs.prediction[:-1] - data[1:]) ** 2)

    # ott-jax's Sinkhorn backward needs standard promotion (see tests/test_gradients.py).
    with jax.numpy_dtype_promotion("standard"):
        forward = jax.jit(lambda x: loss(x, 0)).lower(x0).compile()
        gradient = jax.jit(jax.grad(lambda x: loss(x, checkpoint))).lower(x0).compile()
        figures = {"steps": steps, "checkpoint": checkpoint, "forward_bytes": peak_bytes(forward),
                   "gradient_bytes": peak_bytes(gradient)}
        if baseline:
            plain = jax.jit(jax.grad(lambda x: loss(x, 0))).lower(x0).compile()
            figures["gradient_no_checkpoint_bytes"] = peak_bytes(plain)
    state_bytes = sum(np.asarray(leaf).nbytes for leaf in jax.tree_util.tree_leaves(fp.init(config)))
    figures["state_bytes"] = int(state_bytes)
    figures["ratio"] = figures["gradient_bytes"] / figures["forward_bytes"]
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--checkpoint", type=int, default=None, help="segment length (default round(sqrt(steps)))")
    parser.add_argument("--baseline", action="store_true", help="also compile the gradient without checkpointing")
    parser.add_argument("--small", action="store_true",
                        help="a small config (signature, persistence) for a quick check")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    config = fp.PredictorConfig(kernels=("signature", "persistence"), buffer_size=64,
                                scales=(2.0, 3.0, 4.5, 6.75, 10.0)) if args.small else fp.PredictorConfig()
    checkpoint = args.checkpoint or max(1, round(math.sqrt(args.steps)))
    figures = measure(config, args.steps, checkpoint, args.baseline)
    mib = 2.0**20
    print(f"{args.steps}-step predict, kernels {','.join(config.kernel_names)}, "
          f"state {figures['state_bytes'] / 1024:.1f} KiB")
    print(f"  forward pass peak            {figures['forward_bytes'] / mib:9.2f} MiB")
    print(f"  gradient, checkpoint={checkpoint:<5}   {figures['gradient_bytes'] / mib:9.2f} MiB  "
          f"({figures['ratio']:.2f} x forward; claim <= 4)")
    if "gradient_no_checkpoint_bytes" in figures:
        print(f"  gradient, no checkpointing   {figures['gradient_no_checkpoint_bytes'] / mib:9.2f} MiB  "
              f"({figures['gradient_no_checkpoint_bytes'] / figures['forward_bytes']:.2f} x forward)")
    print("  (XLA memory analysis: arguments + outputs + temporaries - aliased)")
    if args.json:
        print(json.dumps(figures))
    return 0 if figures["ratio"] <= 4.0 else 1


if __name__ == "__main__":
    sys.exit(main())
