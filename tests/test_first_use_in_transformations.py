"""First use inside a user's transformation leaks nothing (issue 12, acceptance line 1).

A fresh interpreter whose very first fnpredict call is inside
``jax.jit(jax.grad(loss))`` (the config, the kernels, ``init`` and ``predict``
all built under the trace) must run and return a finite gradient. Kernels are
built eagerly when the config is made, under ``jax.ensure_compile_time_eval``,
so nothing traced is cached.
"""

import subprocess
import sys

SCRIPT = r"""
import math
import jax, jax.numpy as jnp, numpy as np
import fnpredict as fp
data = jnp.asarray(np.cumsum(np.random.default_rng(0).standard_normal(120) * 0.01) + 4.0)
def loss(tau):
    cfg = fp.PredictorConfig(kernels=("levy", "signature"), buffer_size=64, scales=(2.0, 3.0, 4.5, 6.75, 10.0),
                             levy_window=48)
    state = fp.init(cfg, jax.random.key(0), fp.Hyperparams(jko_tau=tau))
    _, outs = fp.predict(state, data, jax.random.key(1))
    return jnp.mean((outs.prediction[:-1] - data[1:]) ** 2)
gradient = float(jax.jit(jax.grad(loss))(jnp.asarray(0.5)))
# And again, eagerly, after the traced first use: the same config must still work.
value = float(loss(jnp.asarray(0.5)))
assert math.isfinite(gradient) and math.isfinite(value), (gradient, value)
print("gradient", gradient)
"""


def test_first_call_inside_jit_grad_in_a_fresh_interpreter():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gradient" in result.stdout
