"""Bernstein Online Aggregation (Wintenberger 2017) with adaptive per-kernel learning rates.

With the instantaneous regrets ``r_{k,t} = ⟨w_t, ℓ_t⟩ − ℓ_{k,t}`` (by default
on the linearized losses, so ``⟨w_t, ℓ_t⟩`` is the mixture's own loss), BOA
plays

.. math::

    w_{k,t+1} \\propto \\pi_k\\, \\eta_{k,t} \\exp\\!\\Big(\\eta_{k,t} \\sum_{s \\le t}
        \\big(r_{k,s} - \\eta_{k,s}\\, r_{k,s}^2\\big)\\Big),

uniform prior ``π_k = 1/K``. The second-order term ``−η r²`` is the
Bernstein refinement: it makes the regret scale with the cumulative squared
regret ``V_k`` instead of ``T`` (second-order bound, and fast ``O(ln T)``
rates against the best kernel under exp-concavity or stochastic conditions).
The learning rates are per kernel and adaptive (Wintenberger 2017, §4):

.. math::

    \\eta_{k,t} = \\min\\Big(\\frac{1}{2 E_t},\\ \\sqrt{\\frac{\\ln K}{V_{k,t}}}\\Big),
    \\qquad V_{k,t} = \\sum_{s \\le t} r_{k,s}^2,\\quad E_t = \\max_{s \\le t,\\, j} |r_{j,s}|,

``E_t`` the running range of the regrets (replaces the a priori bound of
the non-adaptive version, so the rule is scale free: multiplying every loss
by a constant leaves the weights unchanged). The factor ``η_{k,t}`` in front
of the exponential is what the adaptive analysis needs (opera does the same).

Numerics: the weights are a softmax of ``ln η_k + η_k R̃_k``; ``η_k |r| ≤ 1/2``
by construction, so ``|η_k R̃_k| ≤ 3t/4`` and every term is finite. Before any
non-zero regret (``E = 0``) the weights are uniform.

References:
    Wintenberger, O. (2017). Optimal learning with Bernstein online
    aggregation. *Machine Learning* 106, 119–141.
"""

import math
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._aggregation import instantaneous_regret, keep_if_valid, log_softmax_weights, step_losses
from .base import AbstractWeightRule, RuleInput

__all__ = ["BOA", "BOAState", "BOAInfo"]


class BOAState(eqx.Module):
    """Carried BOA state.

    Attributes:
        regularized_regret: ``R̃_k = Σ_s (r_{k,s} − η_{k,s} r_{k,s}²)``.
        squared_regret: ``V_k = Σ_s r_{k,s}²``.
        regret_range: ``E_t = max |r|`` so far (0 before any non-zero regret).
    """

    regularized_regret: Float[Array, " kernels"]
    squared_regret: Float[Array, " kernels"]
    regret_range: Float[Array, ""]


class BOAInfo(eqx.Module):
    """Per-step BOA diagnostics.

    Attributes:
        learning_rates: ``η_{k,t}`` after this step (1 before any non-zero
            regret: a sentinel value, harmless because it multiplies a zero regret).
    """

    learning_rates: Float[Array, " kernels"]


def learning_rates(
    squared_regret: Float[Array, " kernels"], regret_range: Float[Array, ""]
) -> Float[Array, " kernels"]:
    """``η_k = min(1/(2E), √(ln K / V_k))``, and 1 while ``E = 0``."""
    # ln K floored at ln 2: the single-kernel rule plays [1] anyway.
    log_k = math.log(max(squared_regret.shape[-1], 2))
    started = regret_range > 0
    # E floored at the smallest normal number: a subnormal E would give 1/(2E) = inf.
    cap = 0.5 / jnp.maximum(regret_range, jnp.finfo(regret_range.dtype).tiny)
    # V_k = 0 (no regret yet for k, or r² underflowed) gives +inf, then the cap.
    second_order = jnp.sqrt(log_k / squared_regret)
    return jnp.where(started, jnp.minimum(cap, second_order), 1.0)


class BOA(AbstractWeightRule):
    """Bernstein online aggregation, second-order, adaptive per-kernel rates (no hyperparameters).

    Attributes:
        gradient_trick: learn from the linearized losses (the default, as in
            opera) rather than each kernel's own loss.
    """

    name: ClassVar[str] = "boa"
    gradient_trick: bool = eqx.field(static=True, default=True)

    def init(self, n_kernels, hyperparams, dtype):
        return BOAState(
            regularized_regret=jnp.zeros((n_kernels,), dtype),
            squared_regret=jnp.zeros((n_kernels,), dtype),
            regret_range=jnp.zeros((), dtype),
        )

    def update(self, state: BOAState, weights, inputs: RuleInput, hyperparams):
        dtype = state.regularized_regret.dtype
        losses = step_losses(inputs, self.gradient_trick).astype(dtype)
        regret = instantaneous_regret(weights.astype(dtype), losses)
        squared_regret = state.squared_regret + jnp.square(regret)
        regret_range = jnp.maximum(state.regret_range, jnp.max(jnp.abs(regret)))
        rates = learning_rates(squared_regret, regret_range)
        candidate = BOAState(
            regularized_regret=state.regularized_regret + regret - rates * jnp.square(regret),
            squared_regret=squared_regret,
            regret_range=regret_range,
        )
        new_state = keep_if_valid(inputs.valid, candidate, state)
        rates = learning_rates(new_state.squared_regret, new_state.regret_range)
        logits = jnp.log(rates) + rates * new_state.regularized_regret
        return log_softmax_weights(logits), new_state, BOAInfo(learning_rates=rates)
