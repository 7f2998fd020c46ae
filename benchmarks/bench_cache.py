"""Cold compile vs persistent-cache start, in fresh processes.

Runs the same small script twice against an empty cache folder: the first
process compiles and fills the cache, the second loads from it. Prints both
wall times of the first step (trace + compile/load + run) and their ratio.
"""

import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
import jax, jax.numpy as jnp
import fnpredict as fp
from fnpredict.runtime.cache import enable_compilation_cache
enable_compilation_cache(sys.argv[1])
kernels = tuple(sys.argv[2].split("+")) if sys.argv[2] != "default" else fp.config.DEFAULT_KERNELS
config = fp.PredictorConfig(kernels=kernels)
state = fp.init(config, jax.random.key(0))
start = time.perf_counter()
state, out = fp.step(state, jnp.asarray(1.0), jax.random.key(1))
out.prediction.block_until_ready()
print(json.dumps({"first_step_s": time.perf_counter() - start}))
"""


def main():
    kernels = sys.argv[1] if len(sys.argv) > 1 else "default"
    with tempfile.TemporaryDirectory() as cache:
        times = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", CHILD, cache, kernels],
                                 capture_output=True, text=True, check=True)
            times.append(json.loads(out.stdout.strip().splitlines()[-1])["first_step_s"])
    print(f"first step, empty cache   {times[0]:8.2f} s")
    print(f"first step, warm cache    {times[1]:8.2f} s")
    print(f"cold / cached             {times[0] / times[1]:8.2f}x")


if __name__ == "__main__":
    main()
