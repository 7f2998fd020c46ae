"""The seed's weight flow as weight rules: the two modes of :func:`~fnpredict.orchestrator.jko.jko_step`.

Both rules are stateless (the weights are the flow's whole state) and read the
flat hyperparameters ``jko_tau`` (τ) and ``sinkhorn_epsilon`` (ε). Their
energy gradient is :attr:`RuleInput.losses`, each kernel's own standardized
loss, as in the seed.
"""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp

from ..kernels.base import EmptyState
from .base import AbstractWeightRule, RuleInput
from .jko import DEFAULT_ITERATIONS, JKOInfo, jko_step


class FaithfulJKO(AbstractWeightRule):
    """The seed's "Sinkhorn projection" (an exponentiated-gradient step in disguise).

    Attributes:
        iterations: fixed Sinkhorn iteration count (a fixed count keeps
            ``vmap`` lanes in lock step).
    """

    name: ClassVar[str] = "jko_faithful"
    iterations: int = eqx.field(static=True, default=DEFAULT_ITERATIONS)

    def init(self, n_kernels, hyperparams, dtype):
        return EmptyState()

    def update(self, state, weights, inputs: RuleInput, hyperparams):
        new, info = jko_step(
            weights, inputs.losses, hyperparams.jko_tau, hyperparams.sinkhorn_epsilon,
            mode="faithful", iterations=self.iterations,
        )
        return new, state, info


class ProximalJKO(AbstractWeightRule):
    """The real entropic Wasserstein-proximal step ρ ↦ argmin ⟨∇E, ρ⟩ + W_ε(ρ_k, ρ)/τ (closed form).

    Attributes:
        cost: ``(K, K)`` cost between kernels as nested tuples (static, so the
            rule stays hashable), or ``None`` for the default ``1 − I``.
    """

    name: ClassVar[str] = "jko_proximal"
    cost: tuple | None = eqx.field(static=True, default=None)

    def init(self, n_kernels, hyperparams, dtype):
        return EmptyState()

    def update(self, state, weights, inputs: RuleInput, hyperparams):
        cost = None if self.cost is None else jnp.asarray(self.cost, weights.dtype)
        new, info = jko_step(
            weights, inputs.losses, hyperparams.jko_tau, hyperparams.sinkhorn_epsilon,
            mode="proximal", cost=cost,
        )
        return new, state, info


__all__ = ["FaithfulJKO", "ProximalJKO", "JKOInfo"]
