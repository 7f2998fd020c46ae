"""The quantiles in the step: shapes, monotone in the level, finite on bad input, predict = loop, vmap = loop.

A small config (kernels A, C, the random walk and D; 64-point buffer) keeps
compilation short; it has both kinds of own law (Monte Carlo and mixture of
normals) and Student-t fallbacks. The default config's parity is checked in
``tests/test_engine.py`` with the point forecast's.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnpredict as fp
from fnpredict.data import load_sp500, log_levels

CONFIG = fp.PredictorConfig(buffer_size=64, kernels=("levy", "imex", "signature", "persistence"), levy_paths=64)
STEPS = 300


@pytest.fixture(scope="module")
def sp500():
    return log_levels(load_sp500().values)


@pytest.fixture(scope="module")
def run(sp500):
    state = fp.init(CONFIG, jax.random.key(0))
    data = jnp.asarray(sp500[:STEPS])
    key = jax.random.key(3)
    final, outputs = fp.predict(state, data, key)
    return state, data, key, final, outputs


def test_quantiles_shapes_levels_and_monotone(run):
    _, _, _, _, outputs = run
    levels = np.asarray(CONFIG.quantile_levels)
    assert outputs.quantiles.shape == (STEPS, len(levels)) and outputs.quantiles.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(outputs.quantile_levels), np.broadcast_to(levels, (STEPS, len(levels))))
    q = np.asarray(outputs.quantiles)
    assert np.all(np.isfinite(q))
    assert np.all(np.diff(q, axis=1) >= 0.0), "quantiles must be non-decreasing in the level on every step"
    raw = np.asarray(outputs.telemetry.intervals.raw_quantiles)
    assert np.all(np.diff(raw, axis=1) >= 0.0)
    # Once the window is filled, the intervals are not degenerate.
    assert np.all(q[CONFIG.buffer_size:, -1] > q[CONFIG.buffer_size:, 0])


def test_predict_equals_loop_of_step(run):
    state, data, key, final, outputs = run
    keys = jax.random.split(key, STEPS)
    quantiles = []
    for t in range(STEPS):
        state, out = fp.step(state, data[t], keys[t])
        quantiles.append(out.quantiles)
    # 1e-10: the point forecast's tolerance (tests/test_engine.py).
    np.testing.assert_allclose(np.asarray(outputs.quantiles), np.asarray(quantiles), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(final.intervals.offsets), np.asarray(state.intervals.offsets),
                               rtol=1e-10, atol=1e-10)


def test_vmap_over_assets_equals_loop(sp500):
    n_assets, steps = 4, 200
    starts = np.linspace(0, len(sp500) - steps - 1, n_assets).astype(int)
    data = np.stack([sp500[s : s + steps] for s in starts], axis=1)
    key = jax.random.key(4)
    state = fp.init(CONFIG, key)
    batched_state = jax.vmap(lambda _: state)(jnp.arange(n_assets))
    keys = jax.random.split(key, steps)
    batched = jax.jit(jax.vmap(lambda s, d: fp.engine.scan(s, d, keys)[1], in_axes=(0, 1)))(
        batched_state, jnp.asarray(data))
    for asset in range(n_assets):
        _, single = fp.predict(state, data[:, asset], key)
        # 1e-10: the float64 vmap parity of DESIGN §5, as for the point forecast.
        np.testing.assert_allclose(np.asarray(batched.quantiles[asset]), np.asarray(single.quantiles),
                                   rtol=1e-10, atol=1e-10)


def test_bad_input_keeps_quantiles_finite(sp500):
    # The bad inputs of tests/test_engine.py::test_bad_input_keeps_everything_finite.
    state = fp.init(CONFIG, jax.random.key(0))
    state, out = fp.step(state, jnp.nan, jax.random.key(1))
    assert np.all(np.isfinite(np.asarray(out.quantiles)))
    series = np.array(sp500[:STEPS])
    series[150] = np.nan
    series[160] = np.inf
    series[170] = -np.inf
    series[200] = 1e12
    series[230:280] = series[229]  # a constant stretch
    final, outs = fp.predict(state, series, jax.random.key(2))
    q = np.asarray(outs.quantiles)
    assert np.all(np.isfinite(q)) and np.all(np.diff(q, axis=1) >= 0.0)
    for leaf in jax.tree_util.tree_leaves(final.intervals):
        assert np.all(np.isfinite(np.asarray(leaf, float)))
    # The 1e12 tick is held back by the bad-tick filter; even so the scales
    # must not explode: after it the 90 % interval stays within 1 % in log level.
    assert np.all(q[205:229, 5] - q[205:229, 1] < 0.1)
    _, flat = fp.predict(fp.init(CONFIG), np.full(120, 2.0), jax.random.key(3))
    q = np.asarray(flat.quantiles)
    assert np.all(np.isfinite(q)) and np.all(np.diff(q, axis=1) >= 0.0)
    # A constant series: every quantile sits at the level, to rounding noise.
    np.testing.assert_allclose(q, 2.0, rtol=0, atol=1e-9)


def test_intervals_off_and_config_validation():
    with pytest.raises(ValueError, match="quantile_levels"):
        fp.PredictorConfig(quantile_levels=(0.5, 0.1))
    with pytest.raises(ValueError, match="quantile_levels"):
        fp.PredictorConfig(quantile_levels=(0.0, 0.5))
    with pytest.raises(ValueError, match="quantile_iterations"):
        fp.PredictorConfig(quantile_iterations=0)
    with pytest.raises(ValueError, match="interval_learning_rate"):
        fp.Hyperparams(interval_learning_rate=0.0)
    off = fp.PredictorConfig(buffer_size=64, kernels=("persistence",), quantile_levels=())
    _, out = fp.predict(fp.init(off), jnp.linspace(1.0, 2.0, 20), jax.random.key(0))
    assert out.quantiles.shape == (20, 0) and out.quantile_levels.shape == (20, 0)


def test_pinball_loss_of_a_backtest_is_reverse_differentiable(sp500):
    # The root find is a while_loop with an implicit-function derivative:
    # jax.grad of a quantile loss through predict must run and match a
    # central finite difference (the layer's state is smooth in its rates
    # between the clip and hit flips, which h = 1e-6 relative does not meet).
    data = jnp.asarray(sp500[:80])
    state = fp.init(CONFIG, jax.random.key(0))
    levels = jnp.asarray(CONFIG.quantile_levels)

    @jax.jit
    def loss(rate):
        s = eqx.tree_at(lambda s: s.hyperparams.interval_scale_rate, state, rate)
        _, outputs = fp.predict(s, data, jax.random.key(1))
        u = data[-20:, None] - outputs.quantiles[-21:-1]
        return jnp.mean(u * (levels - (u < 0.0).astype(u.dtype)))

    rate = jnp.asarray(0.06)
    gradient = float(jax.jit(jax.grad(loss))(rate))
    h = 1e-6 * 0.06
    central = (float(loss(rate + h)) - float(loss(rate - h))) / (2 * h)
    assert gradient != 0.0
    np.testing.assert_allclose(gradient, central, rtol=1e-3)
