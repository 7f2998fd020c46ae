"""A kernel and a weight rule defined outside fnpredict plug in with no edit to the library.

``AR1Kernel`` forecasts the next increment as a fixed AR(1) of the last one,
holding its coefficient as an array (the stand-in for trained weights);
``SoftminRule`` weights the kernels by a softmin of an exponential moving
average of their losses, with hyperparameters of its own. Both are used as
values in ``PredictorConfig``; nothing is registered. The conformance suite
(``tests/kernels/test_conformance.py``) runs over them too.
"""

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import Array, Float

import fnpredict as fp
from fnpredict.kernels import AbstractKernel, EmptyState, Forecast, NoInfo
from fnpredict.kernels.base import tree_bytes
from fnpredict.orchestrator import AbstractWeightRule
from fnpredict.params import HyperparameterSpec


class AR1Info(eqx.Module):
    increment: Float[Array, ""]


class AR1Kernel(AbstractKernel):
    """ŷ_{t+1} = y_t + c·(y_t − y_{t−1}); ``coefficients[0]`` is c, the rest are ignored padding."""

    name: ClassVar[str] = "ar1"
    coefficients: Float[Array, " lags"]

    def init(self, params, dtype):
        return EmptyState()

    def step(self, state, history, params, key):
        increment = history.values[-1, 0] - history.values[-2, 0]
        value = history.last + self.coefficients[0].astype(history.values.dtype) * increment
        return state, Forecast.guarded(value, history, fallback=history.count < 2), AR1Info(increment=increment)


class SoftminState(eqx.Module):
    average_loss: Float[Array, " kernels"]


class SoftminRule(AbstractWeightRule):
    """ρ ∝ exp(−η · EMA(ℓ)), the EMA with rate ``decay``: both its own hyperparameters."""

    name: ClassVar[str] = "softmin"
    hyperparameters: ClassVar[tuple] = (
        HyperparameterSpec("eta", 2.0, 0.0, math.inf, True, True, "inverse temperature of the softmin"),
        HyperparameterSpec("decay", 0.1, 0.0, 1.0, True, False, "EMA rate of the losses"),
    )

    def init(self, n_kernels, hyperparams, dtype):
        return SoftminState(average_loss=jnp.zeros((n_kernels,), dtype))

    def update(self, state, weights, inputs, hyperparams):
        own = hyperparams.component(self.name) if hasattr(hyperparams, "component") else hyperparams
        average = (1 - own.decay) * state.average_loss + own.decay * jnp.minimum(inputs.losses, 1e6)
        new_weights = jax.nn.softmax(-own.eta * (average - jnp.min(average)))
        return new_weights, SoftminState(average_loss=average), NoInfo()


def ar1(coefficient=0.3, padding=0):
    return AR1Kernel(coefficients=jnp.concatenate([jnp.asarray([coefficient]), jnp.zeros((padding,))]))


SCALES = (2.0, 3.0, 4.5, 6.75, 10.0)
CONFIG = fp.PredictorConfig(
    kernels=(ar1(), "persistence", "signature"), rule=SoftminRule(), buffer_size=40, scales=SCALES, levy_window=32
)
N_ASSETS = 8


def _ar1_increments(n, phi, seed, scale=0.01):
    rng = np.random.default_rng(seed)
    increments = np.zeros(n)
    for t in range(1, n):
        increments[t] = phi * increments[t - 1] + scale * rng.standard_normal()
    return 4.0 + np.cumsum(increments)


@pytest.fixture(scope="module")
def data():
    return np.stack([_ar1_increments(150, 0.3, seed) for seed in range(N_ASSETS)], axis=1)


def test_custom_kernel_and_rule_in_predict(data):
    state = fp.init(CONFIG, jax.random.key(0))
    assert float(state.hyperparams.component("softmin").eta) == 2.0  # init added the rule's defaults
    final, outs = fp.predict(state, data[:, 0], jax.random.key(1))
    values = data[:, 0]
    # The AR(1) kernel is the true model: it forecasts exactly y_t + 0.3 Δy_t ...
    np.testing.assert_allclose(
        np.asarray(outs.kernel_predictions[2:, 0]), values[2:] + 0.3 * np.diff(values)[1:], rtol=0, atol=1e-12
    )
    # ... and the softmin rule learns to prefer it over the random walk.
    assert float(outs.weights[-1, 0]) > float(outs.weights[-1, 1])
    np.testing.assert_allclose(np.asarray(outs.weights.sum(axis=1)), 1.0, rtol=0, atol=1e-12)
    assert set(fp.telemetry.flatten(outs.telemetry)) >= {"kernels.ar1.increment", "status"}


def test_custom_components_vmap_equals_loop(data):
    keys = jax.random.split(jax.random.key(2), N_ASSETS)
    init = jax.vmap(lambda k: fp.init(CONFIG, k))
    states = init(keys)
    run = jax.jit(jax.vmap(lambda s, d, k: fp.engine.scan(s, d, jax.random.split(k, d.shape[0])), in_axes=(0, 1, 0)))
    _, vmapped = run(states, jnp.asarray(data), keys)
    for asset in range(N_ASSETS):
        _, alone = fp.predict(fp.init(CONFIG, keys[asset]), data[:, asset], keys[asset])
        # vmap and a single call are not bitwise equal in XLA: 1e-10 is the
        # float64 parity the library guarantees (DESIGN §5).
        np.testing.assert_allclose(np.asarray(vmapped.prediction[asset]), np.asarray(alone.prediction),
                                   rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(np.asarray(vmapped.weights[asset]), np.asarray(alone.weights),
                                   rtol=1e-10, atol=1e-10)


def test_custom_components_snapshot_round_trip(tmp_path, data):
    state = fp.fit(fp.init(CONFIG), data[:80, 0], jax.random.key(3))
    path = tmp_path / "custom.snap"
    fp.save_snapshot(path, state)
    restored = fp.load_snapshot(path, fp.init(CONFIG))
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _, continued = fp.predict(restored, data[80:, 0], jax.random.key(4))
    _, straight = fp.predict(state, data[80:, 0], jax.random.key(4))
    np.testing.assert_array_equal(np.asarray(continued.prediction), np.asarray(straight.prediction))
    # A different coefficient is a different config: the snapshot says so.
    other = fp.init(CONFIG.replace(kernels=(ar1(0.5), "persistence", "signature")))
    with pytest.raises(fp.SnapshotError, match="different config"):
        fp.load_snapshot(path, other)


def test_kernel_arrays_are_not_replicated_per_asset(capsys):
    small = CONFIG.replace(kernels=(ar1(padding=0), "persistence", "signature"))
    large = CONFIG.replace(kernels=(ar1(padding=16383), "persistence", "signature"))  # 128 KiB of "weights"
    keys = jax.random.split(jax.random.key(5), N_ASSETS)
    per_asset = {}
    for label, config in (("1 coefficient", small), ("16384 coefficients", large)):
        states = jax.vmap(lambda k: fp.init(config, k))(keys)
        per_asset[label] = tree_bytes(states) / N_ASSETS
    with capsys.disabled():
        print(f"\nstate bytes per asset: {per_asset}")
    assert per_asset["1 coefficient"] == per_asset["16384 coefficients"]
    assert per_asset["16384 coefficients"] < 16384 * 8  # the array is a constant of the step, not state


def test_config_equality_is_by_value():
    assert CONFIG.replace(kernels=(ar1(), "persistence", "signature")) == CONFIG
    assert hash(CONFIG.replace(kernels=(ar1(), "persistence", "signature"))) == hash(CONFIG)
    assert CONFIG.replace(kernels=(ar1(0.31), "persistence", "signature")) != CONFIG
    assert CONFIG.replace(rule="jko") != CONFIG
    with pytest.raises(ValueError, match="PredictorConfig.kernels: duplicates"):
        fp.PredictorConfig(kernels=(ar1(), ar1(0.5)))
    with pytest.raises(ValueError, match="PredictorConfig.rule: unknown rule"):
        fp.PredictorConfig(rule="nope")
    with pytest.raises(ValueError, match="PredictorConfig.guards: unknown guard"):
        fp.PredictorConfig(guards=("nope",))
