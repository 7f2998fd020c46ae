"""The predictor as a whole: API, parity (scan/loop, vmap/loop, reruns),
compilation count, bad input, staleness, circuit breaker, regime reset."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnpredict as fp
from fnpredict.data import load_sp500, log_levels

CONFIG = fp.PredictorConfig()  # the default: every kernel on
PARITY_STEPS = 500
WARMUP = 160


class CompileCounter:
    """Counts XLA backend compilations through jax.monitoring while active."""

    def __init__(self):
        self.count = 0
        self.active = False
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **kwargs):
        if self.active and event == "/jax/core/compile/backend_compile_duration":
            self.count += 1

    def __enter__(self):
        self.count = 0
        self.active = True
        return self

    def __exit__(self, *exc):
        self.active = False


COUNTER = CompileCounter()


@pytest.fixture(scope="module")
def sp500():
    return log_levels(load_sp500().values)


@pytest.fixture(scope="module")
def warm(sp500):
    state = fp.init(CONFIG, jax.random.key(0))
    return fp.fit(state, sp500[:WARMUP], jax.random.key(1))


@pytest.fixture(scope="module")
def parity_run(warm, sp500):
    data = jnp.asarray(sp500[WARMUP : WARMUP + PARITY_STEPS])
    key = jax.random.key(7)
    final, outputs = fp.predict(warm, data, key)
    return data, key, final, outputs


def _leaves_close(a, b, rtol, atol):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x, float), np.asarray(y, float), rtol=rtol, atol=atol, equal_nan=True)


def test_public_api_types(warm, sp500):
    assert isinstance(warm, fp.PredictorState)
    state, out = fp.step(warm, sp500[WARMUP], jax.random.key(2))
    assert isinstance(state, fp.PredictorState)
    assert isinstance(out, fp.StepOutput) and isinstance(out.telemetry, fp.Telemetry)
    K = CONFIG.n_kernels
    assert out.prediction.shape == () and out.prediction.dtype == jnp.float64
    assert out.kernel_predictions.shape == (K,) and out.weights.shape == (K,)
    np.testing.assert_allclose(float(jnp.sum(out.weights)), 1.0, rtol=0, atol=1e-12)  # simplex, to round-off
    required = {
        "holder_exponent", "cusum_drift", "distance_to_alarm", "kurtosis", "adaptive_threshold",
        "dgm_entropy", "free_energy", "kernel_weights", "degraded_inference_mode", "emergency_mode",
        "regime_change_detected", "mode_collapse_warning", "sinkhorn_converged", "loss_type",
    }
    assert required <= {f.name for f in dataclasses.fields(out.telemetry)}
    assert out.telemetry.loss_type.dtype == jnp.int32
    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(warm)


def test_predict_equals_python_loop_of_step(warm, parity_run):
    data, key, final, outputs = parity_run
    keys = jax.random.split(key, PARITY_STEPS)
    state = warm
    predictions, weights, quantiles = [], [], []
    for t in range(PARITY_STEPS):
        state, out = fp.step(state, data[t], keys[t])
        predictions.append(out.prediction)
        weights.append(out.weights)
        quantiles.append(out.quantiles)
    # 1e-10: the scan body and the jitted step are the same program up to XLA
    # fusion choices; float64 round-off may differ in the last bits only.
    np.testing.assert_allclose(np.asarray(outputs.prediction), np.asarray(predictions), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(outputs.weights), np.asarray(weights), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(outputs.quantiles), np.asarray(quantiles), rtol=1e-10, atol=1e-10)
    _leaves_close(final, state, rtol=1e-10, atol=1e-10)


def test_two_runs_are_bit_identical(warm, parity_run):
    data, key, final, outputs = parity_run
    again_final, again = fp.predict(warm, data, key)
    for x, y in zip(jax.tree_util.tree_leaves((final, outputs)), jax.tree_util.tree_leaves((again_final, again))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_no_compilation_after_warmup(warm, parity_run):
    data, key, _, _ = parity_run
    shifted = jax.block_until_ready(data + 0.001)  # new data, prepared outside the count
    new_key = jax.random.key(99)
    with COUNTER as counter:
        _, out = fp.predict(warm, shifted, new_key)
        out.prediction.block_until_ready()
    assert counter.count == 0, f"{counter.count} compilations in a warmed-up 500-step predict"


def test_vmap_over_assets_equals_loop(sp500):
    n_assets, steps = 8, 200
    starts = np.linspace(0, len(sp500) - steps - 1, n_assets).astype(int)
    data = np.stack([sp500[s : s + steps] for s in starts], axis=1)  # (time, assets)
    key = jax.random.key(4)
    state = fp.init(CONFIG, key)
    batched_state = jax.vmap(lambda _: state)(jnp.arange(n_assets))
    keys = jax.random.split(key, steps)
    run = jax.jit(jax.vmap(lambda s, d: fp.engine.scan(s, d, keys), in_axes=(0, 1)))
    _, batched = run(batched_state, jnp.asarray(data))
    for asset in range(n_assets):
        _, single = fp.predict(state, data[:, asset], key)
        # vmap vs a single call is not bitwise equal in XLA; 1e-10 is the float64
        # parity we guarantee (DESIGN §5).
        np.testing.assert_allclose(np.asarray(batched.prediction[asset]), np.asarray(single.prediction),
                                   rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(np.asarray(batched.weights[asset]), np.asarray(single.weights),
                                   rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(np.asarray(batched.quantiles[asset]), np.asarray(single.quantiles),
                                   rtol=1e-10, atol=1e-10)


def test_hyperparameter_population_is_one_compilation(sp500):
    members = 3
    population = fp.Hyperparams(jko_tau=jnp.asarray([0.2, 0.5, 2.0]), cusum_h=jnp.asarray([6.0, 8.0, 12.0]))
    population = jax.tree_util.tree_map(lambda leaf: jnp.broadcast_to(leaf, (members,)), population)
    data = jnp.asarray(sp500[1000:1300])
    key = jax.random.key(8)
    keys = jax.random.split(key, data.shape[0])
    run = jax.jit(jax.vmap(lambda hp: fp.engine.scan(fp.init(CONFIG, None, hp), data, keys)[1].prediction))
    with COUNTER as counter:
        together = run(population).block_until_ready()
    assert counter.count == 1, f"a population should compile once, compiled {counter.count}x"
    # The real compile check: a second, different population compiles nothing.
    second = jax.tree_util.tree_map(lambda leaf: leaf * 1.01, population)
    with COUNTER as counter:
        run(second).block_until_ready()
    assert counter.count == 0, f"a second population compiled {counter.count} program(s)"
    for m in range(members):
        hp = jax.tree_util.tree_map(lambda leaf: leaf[m], population)
        _, alone = fp.predict(fp.init(CONFIG, key, hp), data, key)
        np.testing.assert_allclose(np.asarray(together[m]), np.asarray(alone.prediction), rtol=1e-10, atol=1e-10)


def _all_finite(tree):
    for leaf in jax.tree_util.tree_leaves(tree):
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            assert bool(jnp.all(jnp.isfinite(leaf))), "non-finite leaf"


def test_bad_input_keeps_everything_finite(sp500):
    state = fp.init(CONFIG, jax.random.key(0))
    # A first step on an empty buffer.
    state, out = fp.step(state, jnp.nan, jax.random.key(1))
    assert bool(out.telemetry.observation_missing)
    _all_finite(state)
    assert np.isfinite(float(out.prediction))
    series = np.array(sp500[:400])
    series[150] = np.nan
    series[160] = np.inf
    series[170] = -np.inf
    series[200] = 1e12
    series[250:320] = series[249]  # a constant stretch
    final, outs = fp.predict(state, series, jax.random.key(2))
    _all_finite(final)
    assert bool(jnp.all(jnp.isfinite(outs.prediction)))
    assert bool(jnp.all(jnp.isfinite(outs.weights)))
    assert bool(jnp.all(jnp.isfinite(outs.quantiles))) and bool(jnp.all(jnp.diff(outs.quantiles, axis=1) >= 0))
    assert bool(outs.telemetry.observation_rejected[160]) and bool(outs.telemetry.observation_rejected[170])
    assert not bool(outs.telemetry.observation_rejected[150]) and bool(outs.telemetry.observation_missing[150])
    # A fully constant series from the start.
    _, flat = fp.predict(fp.init(CONFIG), np.full(200, 2.0), jax.random.key(3))
    assert bool(jnp.all(jnp.isfinite(flat.prediction)))
    np.testing.assert_allclose(np.asarray(flat.prediction), 2.0, rtol=0, atol=1e-9)


def test_staleness_degrades_freezes_and_recovers(warm, sp500):
    ttl, recovery = CONFIG.ttl_max, CONFIG.ttl_recovery
    values = np.concatenate([sp500[WARMUP : WARMUP + 20], np.full(ttl + 3, np.nan), sp500[WARMUP + 20 : WARMUP + 30]])
    _, outs = fp.predict(warm, values, jax.random.key(5))
    degraded = np.asarray(outs.telemetry.degraded_inference_mode)
    first_missing = 20
    assert not degraded[: first_missing + ttl - 1].any()
    assert degraded[first_missing + ttl - 1 : first_missing + ttl + 3].all()
    frozen = np.asarray(outs.weights[first_missing + ttl - 1 : first_missing + ttl + 3])
    np.testing.assert_array_equal(frozen, np.broadcast_to(frozen[0], frozen.shape))
    assert np.isfinite(np.asarray(outs.prediction)).all()
    back = first_missing + ttl + 3
    # Hysteresis: still degraded until `recovery` valid observations have arrived.
    assert degraded[back : back + recovery - 1].all()
    assert not degraded[back + recovery - 1 :].any()


def test_jump_trips_circuit_breaker(warm, sp500):
    increments = np.diff(sp500[:WARMUP])
    sigma = np.std(increments)
    path = sp500[WARMUP : WARMUP + 330].copy()
    jump_at = 130
    path[jump_at:] += 10 * sigma
    _, outs = fp.predict(warm, path, jax.random.key(6))
    emergency = np.asarray(outs.telemetry.emergency_mode)
    assert not emergency[100:jump_at].any(), "tripped before the jump"
    tripped = np.flatnonzero(emergency[jump_at:])
    assert tripped.size and tripped[0] <= 6, f"no trip within a few steps: {tripped[:5]}"
    t = jump_at + tripped[0]
    d = CONFIG.kernel_index("signature")
    assert float(outs.weights[t, d]) >= 1 - CONFIG.n_kernels * float(fp.Hyperparams().weight_floor)
    assert int(outs.telemetry.loss_type[t]) == 1
    # Once the jump has left the window the breaker releases and the weights
    # restart from uniform.
    release = t + np.flatnonzero(~emergency[t:])[0]
    np.testing.assert_allclose(np.asarray(outs.weights[release]), 1.0 / CONFIG.n_kernels, rtol=0, atol=1e-15)


def test_invalid_arguments_raise_clear_errors(warm):
    with pytest.raises(ValueError, match="buffer_size"):
        fp.PredictorConfig(buffer_size=8)
    with pytest.raises(ValueError, match="kernels"):
        fp.PredictorConfig(kernels=("levy", "oracle"))
    with pytest.raises(ValueError, match="scales"):
        fp.PredictorConfig(scales=(4.0, 2.0, 8.0))
    with pytest.raises(ValueError, match="jko_tau"):
        fp.Hyperparams(jko_tau=-1.0)
    with pytest.raises(ValueError, match="error_alpha"):
        fp.Hyperparams(error_alpha=1.5)
    with pytest.raises(ValueError, match="unknown"):
        fp.Hyperparams(learning_rate=0.1)
    with pytest.raises(ValueError, match="shape"):
        fp.step(warm, jnp.ones(3), jax.random.key(0))
    with pytest.raises(TypeError, match="key"):
        fp.predict(warm, jnp.ones(10), 42)
    with pytest.raises(ValueError, match="channels"):
        fp.predict(warm, jnp.ones((10, 2)), jax.random.key(0))
    with pytest.raises(TypeError, match="PredictorConfig"):
        fp.init({"buffer_size": 64})
