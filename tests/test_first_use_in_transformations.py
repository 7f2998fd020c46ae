"""First use inside a user's transformation leaks nothing (issue 12, acceptance line 1).

A fresh interpreter whose very first fnpredict call is inside
``jax.jit(jax.grad(loss))`` (the config, the kernels, ``init`` and ``predict``
all built under the trace) must run and return a finite gradient. Kernels are
built eagerly when the config is made, under ``jax.ensure_compile_time_eval``,
so nothing traced is cached. The same holds when the first use is inside
``jax.vmap`` (``init``, ``fit`` and ``predict`` over a hyperparameter
population) or inside ``jax.jit`` (``init``, ``step`` and ``fit``), each
followed by an eager call with the same config.
"""

import subprocess
import sys

import pytest

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


# A tiny config: these runs are about what gets cached at first use, not about numerics.
TINY = r"""
import math
import jax, jax.numpy as jnp, numpy as np
import fnpredict as fp
data = jnp.asarray(np.cumsum(np.random.default_rng(0).standard_normal(48) * 0.01) + 4.0)
def config():
    return fp.PredictorConfig(kernels=("signature", "persistence"), buffer_size=32, scales=(1.0, 2.0, 4.0))
"""

VMAP_FIRST = TINY + r"""
def run(tau):
    state = fp.init(config(), None, fp.Hyperparams(jko_tau=tau))
    state = fp.fit(state, data[:24], jax.random.key(0))
    _, outs = fp.predict(state, data[24:], jax.random.key(1))
    return outs.prediction
first = jax.vmap(run)(jnp.asarray([0.3, 0.5, 0.9]))
again = run(jnp.asarray(0.5))
assert first.shape == (3, 24) and bool(jnp.all(jnp.isfinite(first))), first
np.testing.assert_allclose(np.asarray(first[1]), np.asarray(again), rtol=1e-12, atol=0)
print("vmap ok")
"""

JIT_FIRST = TINY + r"""
@jax.jit
def run(obs):
    state = fp.init(config(), jax.random.key(0))
    state, out = fp.step(state, obs, jax.random.key(1))
    state = fp.fit(state, data, jax.random.key(2))
    return out.prediction, state.prediction
first = run(data[0])
state = fp.init(config(), jax.random.key(0))
state, out = fp.step(state, data[0], jax.random.key(1))
state = fp.fit(state, data, jax.random.key(2))
assert all(math.isfinite(float(v)) for v in first), first
np.testing.assert_allclose([float(v) for v in first], [float(out.prediction), float(state.prediction)],
                           rtol=1e-12, atol=0)
print("jit ok")
"""


@pytest.mark.integration  # minutes of end-to-end run: the integration leg
def test_first_call_inside_vmap_in_a_fresh_interpreter():
    result = subprocess.run([sys.executable, "-c", VMAP_FIRST], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vmap ok" in result.stdout


@pytest.mark.integration  # minutes of end-to-end run: the integration leg
def test_first_call_inside_jit_of_init_step_fit_in_a_fresh_interpreter():
    result = subprocess.run([sys.executable, "-c", JIT_FIRST], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "jit ok" in result.stdout
