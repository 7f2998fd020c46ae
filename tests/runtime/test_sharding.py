"""Assets sharded over (simulated) devices give the unsharded result.

Runs in a subprocess because the device count of the CPU backend is fixed
when jax starts (``--xla_force_host_platform_device_count``)."""

import json
import os
import subprocess
import sys

CHILD = r"""
import json
import jax, jax.numpy as jnp, numpy as np
import fnpredict as fp
from fnpredict.runtime.sharding import asset_mesh, shard_assets

assert len(jax.devices()) == 4, jax.devices()
cfg = fp.PredictorConfig(kernels=("levy", "signature"), buffer_size=48, scales=(1.0, 2.0, 4.0, 8.0))
n_assets, steps = 8, 80
rng = np.random.default_rng(0)
data = jnp.asarray(np.cumsum(rng.standard_normal((steps, n_assets)) * 0.01, axis=0))
key = jax.random.key(0)
states = jax.vmap(lambda _: fp.init(cfg))(jnp.arange(n_assets))
run = jax.jit(jax.vmap(fp.predict, in_axes=(0, 1, None)))
_, plain = run(states, data, key)
mesh = asset_mesh()
sharded_states = shard_assets(states, mesh)
sharded_data = shard_assets(data, mesh, axis=1)
_, sharded = run(sharded_states, sharded_data, key)
devices = {d.id for d in sharded.prediction.sharding.device_set}
print(json.dumps({
    "max_diff": float(jnp.max(jnp.abs(sharded.prediction - plain.prediction))),
    "devices": len(devices),
}))
"""


def test_sharded_assets_match_unsharded():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    process = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=900)
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(process.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4
    # Sharding changes only where lanes run; 1e-10 is the vmap parity bound (DESIGN §5).
    assert result["max_diff"] <= 1e-10
