"""Tutorial: write a weight rule of your own (optax-style ``init``/``update``) and plug it in.

A rule maps the losses of the kernels' previous forecasts to new weights on
the simplex. It sees a :class:`fnpredict.orchestrator.RuleInput`: each
kernel's standardized loss ``losses`` and the "gradient trick" losses
``linearized_losses`` (the gradient of the mixture's own loss). The guards
(circuit breaker, regime reset, staleness, collapse mute) still apply after it,
in their documented order.
"""

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

import fnpredict as fp
from fnpredict.kernels import NoInfo
from fnpredict.orchestrator import AbstractWeightRule
from fnpredict.params import HyperparameterSpec


class FollowTheLeaderState(eqx.Module):
    discounted_loss: Float[Array, " kernels"]


class SmoothLeader(AbstractWeightRule):
    """Softmin of discounted cumulative linearized losses (a smoothed follow-the-leader)."""

    name: ClassVar[str] = "smooth_leader"
    hyperparameters: ClassVar[tuple] = (
        HyperparameterSpec("temperature", 1.0, 0.0, math.inf, True, True, "softmin temperature"),
        HyperparameterSpec("discount", 0.99, 0.0, 1.0, True, False, "per-step discount of past losses"),
    )

    def init(self, n_kernels, hyperparams, dtype):
        return FollowTheLeaderState(discounted_loss=jnp.zeros((n_kernels,), dtype))

    def update(self, state, weights, inputs, hyperparams):
        own = hyperparams.component(self.name)
        loss = own.discount * state.discounted_loss + jnp.clip(inputs.linearized_losses, -1e6, 1e6)
        new_weights = jax.nn.softmax(-(loss - jnp.min(loss)) / own.temperature)
        return new_weights, FollowTheLeaderState(discounted_loss=loss), NoInfo()


def main(steps: int = 400):
    prices = fp.data.log_levels(fp.data.load_sp500().values)
    common = dict(kernels=("persistence", "levy", "signature"), buffer_size=64, scales=(2.0, 3.0, 4.5, 6.75, 10.0),
                  levy_window=48)
    walk = np.mean((prices[:steps - 1] - prices[1:steps]) ** 2)
    for label, rule in (("jko (default)", "jko"), ("smooth_leader", SmoothLeader())):
        config = fp.PredictorConfig(rule=rule, **common)
        _, outs = fp.predict(fp.init(config), prices[:steps], jax.random.key(0))
        mse = np.mean((np.asarray(outs.prediction[:-1]) - prices[1:steps]) ** 2) / walk
        weights = dict(zip(config.kernel_names, np.round(np.asarray(outs.weights[-1]), 3)))
        print(f"{label:>14}: MSE / random walk {mse:.4f}, final weights {weights}")
    # An ablation is one config change: the same rule with no guards at all.
    config = fp.PredictorConfig(rule=SmoothLeader(), guards=(), **common)
    _, outs = fp.predict(fp.init(config), prices[:steps], jax.random.key(0))
    mse = np.mean((np.asarray(outs.prediction[:-1]) - prices[1:steps]) ** 2) / walk
    print(f"smooth_leader, no guards: MSE / random walk {mse:.4f}")


if __name__ == "__main__":
    main()
