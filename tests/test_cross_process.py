"""A snapshot written by one process restores in a fresh one (a restart's hot start)."""

import subprocess
import sys

import jax
import jax.numpy as jnp

import fnpredict as fp

CHILD = """
import sys, jax, fnpredict as fp
state = fp.load_snapshot(sys.argv[1], fp.init(fp.PredictorConfig()))
print(int(state.step_count))
"""


def test_snapshot_restores_in_a_fresh_process(tmp_path):
    # The default config holds the DGM network, whose activation functions
    # are leaves: their identity must not depend on the process (no addresses).
    config = fp.PredictorConfig()
    state = fp.init(config)
    state, _ = fp.step(state, jnp.asarray(1.0), jax.random.key(0))
    path = tmp_path / "state.fnsnap"
    fp.save_snapshot(path, state)
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "1"
