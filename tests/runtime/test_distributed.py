"""Two ``jax.distributed`` CPU processes on localhost, each owning half the
assets, give the predictions of one process over all assets."""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnpredict as fp

N_ASSETS, STEPS = 8, 60

WORKER = r"""
import json, sys
import numpy as np
from fnpredict.runtime import distributed
from fnpredict.runtime.cache import enable_compilation_cache
enable_compilation_cache()
distributed.initialize(sys.argv[1], 2, int(sys.argv[2]), cpu=True)
import jax
import fnpredict as fp
from tests_data import CONFIG, N_ASSETS, series
block = distributed.local_block(N_ASSETS)
predictions = distributed.predict_assets(CONFIG, series()[:, block], jax.random.key(7), N_ASSETS)
print(json.dumps({"process": jax.process_index(), "devices": jax.device_count(), "block": [block.start, block.stop],
                  "predictions": predictions.tolist()}))
"""

DATA = f"""
import numpy as np
import fnpredict as fp
N_ASSETS, STEPS = {N_ASSETS}, {STEPS}
CONFIG = fp.PredictorConfig(kernels=("levy", "signature"), buffer_size=48, scales=(1.0, 2.0, 4.0, 8.0))
def series():
    rng = np.random.default_rng(0)
    return 4.0 + np.cumsum(rng.standard_normal((STEPS, N_ASSETS)) * 0.01, axis=0)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.integration  # two cold compilations of the scanned step: ~100 s on 2 cores
def test_two_processes_match_one(tmp_path):
    (tmp_path / "tests_data.py").write_text(DATA)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(tmp_path))
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    address = f"127.0.0.1:{_free_port()}"
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, address, str(i)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path) for i in range(2)]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["block"] for r in results] == [[0, N_ASSETS // 2], [N_ASSETS // 2, N_ASSETS]]
    assert all(r["devices"] == 2 for r in results)
    sys.path.insert(0, str(tmp_path))
    try:
        import tests_data
    finally:
        sys.path.remove(str(tmp_path))
    states = jax.vmap(lambda _: fp.init(tests_data.CONFIG))(jnp.arange(N_ASSETS))
    run = jax.jit(jax.vmap(fp.predict, in_axes=(0, 1, None), out_axes=(0, 1)))
    _, outputs = run(states, jnp.asarray(tests_data.series()), jax.random.key(7))
    reference = np.asarray(outputs.prediction)
    for result in results:
        got = np.asarray(result["predictions"], dtype=float)
        assert got.shape == (STEPS, N_ASSETS)
        diff = float(np.max(np.abs(got - reference)))
        print(f"\nprocess {result['process']}: max |distributed - one process| = {diff:.3g}")
        # Same program on the same lanes per device; 1e-12 leaves room for XLA's batch-size-dependent vectorisation.
        assert diff <= 1e-12
