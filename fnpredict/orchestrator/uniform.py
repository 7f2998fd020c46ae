"""The uniform rule: weights 1/K forever (the sanity baseline of every aggregation rule)."""

from typing import ClassVar

import jax.numpy as jnp

from ..kernels.base import EmptyState, NoInfo
from .base import AbstractWeightRule, RuleInput

__all__ = ["Uniform"]


class Uniform(AbstractWeightRule):
    """Equal weights ``w_k = 1/K`` whatever the losses (stateless, no hyperparameters).

    The equally weighted forecast average is a strong baseline when the
    kernels are comparably good and their errors weakly correlated (the
    "forecast combination puzzle"); any learning rule should beat it on
    average when one kernel is clearly better.
    """

    name: ClassVar[str] = "uniform"

    def init(self, n_kernels, hyperparams, dtype):
        return EmptyState()

    def update(self, state, weights, inputs: RuleInput, hyperparams):
        uniform = jnp.full(weights.shape, 1.0 / weights.shape[-1], dtype=weights.dtype)
        return uniform, state, NoInfo()
