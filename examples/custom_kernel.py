"""Tutorial: write a kernel of your own and plug it in — no edit to fnpredict, no registry.

A kernel is an ``eqx.Module``: its fields are its settings and any arrays it
holds (here a coefficient vector: the stand-in for trained weights). It
declares its hyperparameters, builds its learned state in ``init``, and does
everything a step needs in one ``step``: learn from the realised y_t, then
forecast y_{t+1}. Pass an *instance* in ``PredictorConfig(kernels=...)``.
"""

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

import fnpredict as fp
from fnpredict.kernels import AbstractKernel, Forecast
from fnpredict.kernels.base import tree_bytes
from fnpredict.params import HyperparameterSpec


class MomentumState(eqx.Module):
    drift: Float[Array, ""]  # an exponential moving average of the increments


class MomentumInfo(eqx.Module):
    drift: Float[Array, ""]  # what the kernel reports each step (lands in the telemetry)


class MomentumKernel(AbstractKernel):
    """ŷ_{t+1} = y_t + gain · EMA(Δy): learns its drift online, at rate ``momentum_rate``."""

    name: ClassVar[str] = "momentum"
    hyperparameters: ClassVar[tuple] = (
        HyperparameterSpec("momentum_rate", 0.05, 0.0, 1.0, True, False, "EMA rate of the increments"),
    )
    gain: Float[Array, ""]  # an array the kernel holds: a constant of the compiled step, shared by all assets

    def init(self, params, dtype):
        return MomentumState(drift=jnp.zeros((), dtype))

    def step(self, state, history, params, key):
        # 1. Learn from the realised increment (only on an observed step).
        increment = history.values[-1, 0] - history.values[-2, 0]
        learn = history.observed & (history.count >= 2)
        drift = jnp.where(learn, (1 - params.momentum_rate) * state.drift + params.momentum_rate * increment,
                          state.drift)
        # 2. Forecast with what was just learnt; Forecast.guarded keeps it finite.
        forecast = Forecast.guarded(history.last + self.gain * drift, history, fallback=history.count < 2)
        return MomentumState(drift=drift), forecast, MomentumInfo(drift=drift)


def main(steps: int = 400, n_assets: int = 8):
    prices = fp.data.log_levels(fp.data.load_sp500().values)
    kernel = MomentumKernel(gain=jnp.asarray(0.5))
    config = fp.PredictorConfig(kernels=("persistence", "signature", kernel), buffer_size=64,
                                scales=(2.0, 3.0, 4.5, 6.75, 10.0))
    state = fp.init(config, jax.random.key(0))  # adds the kernel's default hyperparameters
    state, outs = fp.predict(state, prices[:steps], jax.random.key(1))
    errors = np.asarray(outs.prediction[:-1]) - prices[1:steps]
    walk = prices[:steps - 1] - prices[1:steps]
    print(f"MSE / random walk over {steps - 1} days: {np.mean(errors ** 2) / np.mean(walk ** 2):.4f}")
    print("final weights:", dict(zip(config.kernel_names, np.round(np.asarray(outs.weights[-1]), 3))))
    print("momentum drift (from its Info):", float(outs.telemetry.kernels["momentum"].drift[-1]))

    # A population of its hyperparameter is one vmap, like any built-in one.
    rates = jnp.asarray([0.01, 0.05, 0.2])
    population = jax.vmap(lambda r: fp.Hyperparams(components={
        "momentum": state.hyperparams.component("momentum").replace(momentum_rate=r)}))(rates)
    states = jax.vmap(lambda hp: fp.init(config, None, hp))(population)
    keys = jax.random.split(jax.random.key(1), steps)
    run = jax.jit(jax.vmap(lambda s: fp.engine.scan(s, jnp.asarray(prices[:steps]), keys)[1].prediction))
    for rate, prediction in zip(np.asarray(rates), np.asarray(run(states))):
        mse = np.mean((prediction[:-1] - prices[1:steps]) ** 2) / np.mean(walk ** 2)
        print(f"momentum_rate {rate:.2f}: MSE / random walk {mse:.4f}")

    # Its array is held once, not per asset.
    assets = jax.vmap(lambda k: fp.init(config, k))(jax.random.split(jax.random.key(2), n_assets))
    print(f"state bytes per asset: {tree_bytes(assets) / n_assets:.0f}")
    assert math.isfinite(float(outs.prediction[-1]))


if __name__ == "__main__":
    main()
