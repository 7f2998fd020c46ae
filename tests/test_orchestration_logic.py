"""The orchestrator's decisions with stub kernels of fixed forecasts (no numerics):
the JKO step is Hedge on the per-kernel losses, an alarm resets to uniform, the
DGM collapse counter mutes kernel B after more than 10 collapsed checks."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnpredict as fp
from fnpredict.kernels import AbstractKernel, Forecast, NoInfo


class StubState(eqx.Module):
    calls: jax.Array


class StubInfo(eqx.Module):
    entropy: jax.Array
    collapsed: jax.Array


class OffsetKernel(AbstractKernel):
    """Forecasts last value + a fixed offset; optionally reports collapse."""

    name = "stub"
    offset: float = eqx.field(static=True)
    collapsed: bool = eqx.field(static=True, default=False)

    def init(self, params, dtype):
        return StubState(calls=jnp.zeros((), jnp.int32))

    def step(self, state, history, params, key):
        forecast = Forecast.guarded(history.last + self.offset, history)
        # Only the kernel standing in for B has an entropy monitor.
        info = StubInfo(entropy=jnp.zeros((), history.values.dtype), collapsed=jnp.asarray(self.collapsed)) \
            if self.name == "dgm" else NoInfo()
        return StubState(calls=state.calls + history.observed.astype(jnp.int32)), forecast, info


class StubA(OffsetKernel):
    name = "stub_a"


class StubB(OffsetKernel):
    name = "dgm"  # the collapse guard watches the kernel named "dgm"


class StubC(OffsetKernel):
    name = "stub_c"


# Kernels are values of the config: no monkeypatching, no registry.
SCALES = (2.0, 3.0, 4.5, 6.75, 10.0)
TWO = fp.PredictorConfig(kernels=(StubA(0.0), StubC(0.05)), buffer_size=40, scales=SCALES, levy_window=32)
THREE = fp.PredictorConfig(
    kernels=(StubA(0.0), StubB(0.01, collapsed=True), StubC(0.02)), buffer_size=40, scales=SCALES, levy_window=32,
    guards=fp.guards.DEFAULT_GUARDS + ("collapse_mute",),  # opt-in: off by default
)


def _random_walk(n, seed=0, scale=0.01):
    return np.cumsum(np.random.default_rng(seed).standard_normal(n) * scale)


def test_jko_step_is_hedge_on_standardized_losses():
    hp = fp.Hyperparams(jko_tau=0.3)
    state = fp.init(TWO, jax.random.key(0), hp)
    values = _random_walk(30)
    _, outs = fp.predict(state, values, jax.random.key(1))
    weights = np.asarray(outs.weights)
    # Each step with an error moves w by w_k exp(-tau * l_k) with l_k the loss
    # (half squared error, MSE mode) of kernel k's previous standardized error.
    for t in range(2, 30):
        sigma = float(outs.telemetry.error_scale[t])
        previous = np.asarray(outs.kernel_predictions[t - 1])
        losses = 0.5 * ((previous - values[t]) / sigma) ** 2
        expected = weights[t - 1] * np.exp(-0.3 * (losses - losses.min()))
        expected /= expected.sum()
        if bool(outs.telemetry.regime_change_detected[t]) or bool(outs.telemetry.emergency_mode[t]):
            continue
        # Sinkhorn is run to its marginal tolerance: 1e-6 (DESIGN: faithful mode
        # equals the exponentiated-gradient update once converged).
        np.testing.assert_allclose(weights[t], expected, rtol=0, atol=1e-6)
    assert weights[-1, 1] < weights[-1, 0], "the biased kernel must lose weight"


def test_regime_alarm_resets_weights_to_uniform():
    state = fp.init(TWO, jax.random.key(0), fp.Hyperparams(jko_tau=1.0))
    quiet = _random_walk(60, seed=1, scale=0.01)
    loud = quiet[-1] + _random_walk(40, seed=2, scale=0.2)
    _, outs = fp.predict(state, np.concatenate([quiet, loud]), jax.random.key(2))
    alarms = np.flatnonzero(np.asarray(outs.telemetry.regime_change_detected))
    assert alarms.size, "a 20x jump in error scale must alarm"
    for t in alarms:
        if bool(outs.telemetry.emergency_mode[t]):
            continue  # the circuit breaker takes precedence over the reset
        np.testing.assert_allclose(np.asarray(outs.weights[t]), 0.5, rtol=0, atol=1e-15)
        # Telemetry says which detector alarmed (1 magnitude, 2 signed, 3 both), and it really crossed.
        detector = int(outs.telemetry.regime_detector[t])
        assert detector in (1, 2, 3)
        if detector & 1:
            assert float(outs.telemetry.cusum_drift[t]) > float(outs.telemetry.adaptive_threshold[t])
        if detector & 2:
            page = outs.telemetry.page
            assert max(float(page.statistic_up[t]), float(page.statistic_down[t])) > float(state.hyperparams.page_h)


def test_collapse_warning_after_eleven_checks_mutes_kernel_b():
    state = fp.init(THREE, jax.random.key(0))
    _, outs = fp.predict(state, _random_walk(20, seed=3), jax.random.key(3))
    warning = np.asarray(outs.telemetry.mode_collapse_warning)
    assert not warning[:10].any()
    assert warning[10:].all()  # the 11th consecutive collapsed check raises it
    np.testing.assert_array_equal(np.asarray(outs.weights[10:, 1]), 0.0)
    np.testing.assert_allclose(np.asarray(outs.weights.sum(axis=1)), 1.0, rtol=0, atol=1e-12)


def test_dgm_entropy_is_nan_without_kernel_b():
    _, outs = fp.predict(fp.init(TWO), _random_walk(5), jax.random.key(4))
    assert np.isnan(np.asarray(outs.telemetry.dgm_entropy)).all()


# The real kernels, with kernel B's shipped network made constant (its last
# layer zeroed): the predictor must warn after 11 collapsed checks and mute B.
# The kernel objects are part of the config, so each variant is its own
# compiled program with no other setting changed.
def _real_config(collapsed: bool):
    from fnpredict.kernels.dgm import DGMKernel

    base = fp.PredictorConfig(kernels=("levy", "dgm", "signature"), buffer_size=40, scales=SCALES,
                              levy_window=30, dgm_entropy_points=32,
                              guards=fp.guards.DEFAULT_GUARDS + ("collapse_mute",))  # opt-in guard
    if not collapsed:
        return base
    dgm = DGMKernel.from_config(base)
    network = eqx.tree_at(lambda n: n.mlp.layers[-1].weight, dgm.network,
                          jnp.zeros_like(dgm.network.mlp.layers[-1].weight))
    return base.replace(kernels=("levy", DGMKernel.from_config(base, network=network), "signature"))


def test_configs_differ_by_kernel_objects():
    assert _real_config(True) != _real_config(False)
    assert _real_config(False) == _real_config(False) and hash(_real_config(False)) == hash(_real_config(False))


@pytest.mark.parametrize("collapsed", [True, False])
def test_real_dgm_collapse_in_the_predictor(collapsed):
    config = _real_config(collapsed)
    values = 4.0 + _random_walk(60, seed=5)
    state = fp.fit(fp.init(config), values[:30], jax.random.key(0))  # B's checks start with real data
    _, outs = fp.predict(state, values[30:], jax.random.key(1))
    warning = np.asarray(outs.telemetry.mode_collapse_warning)
    if collapsed:
        # 30 collapsed checks already happened during fit: the warning is on.
        assert warning.all()
        np.testing.assert_array_equal(np.asarray(outs.weights[:, 1]), 0.0)
        fresh = fp.init(config)
        _, first = fp.predict(fresh, values[:20], jax.random.key(2))
        first_warning = np.asarray(first.telemetry.mode_collapse_warning)
        checks = np.cumsum(np.ones(20, int))
        np.testing.assert_array_equal(first_warning, checks > 10)  # the 11th check raises it
    else:
        assert not warning.any()
        assert float(np.min(np.asarray(outs.weights[:, 1]))) > 0.0
