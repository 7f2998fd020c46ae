"""ML-Poly (Gaillard, Stoltz & van Erven 2014): polynomial weights with one learning rate per kernel.

With the instantaneous regrets ``r_{k,t} = ⟨w_t, ℓ_t⟩ − ℓ_{k,t}`` (by default
on the linearized losses) and the cumulative regrets ``R_{k,t} = Σ_{s≤t}
r_{k,s}``, ML-Poly plays the polynomially weighted average of degree 2
(the gradient of ``½ Σ_k η_k (R_k)_+²``):

.. math::

    w_{k,t+1} = \\frac{\\eta_{k,t}\\, (R_{k,t})_+}{\\sum_j \\eta_{j,t}\\, (R_{j,t})_+},
    \\qquad \\eta_{k,t} = \\frac{1}{E_t^2 + \\sum_{s \\le t} r_{k,s}^2},

uniform when every ``(R_k)_+`` is 0. ``E_t = max_{s≤t, j} |r_{j,s}|`` is the
running range of the regrets, the scale-free stand-in for the paper's a
priori bound (its ``1 + Σ r²`` for losses in [0, 1]); with it the rule is
invariant to multiplying the losses by a constant and needs no tuning. The
regret against each kernel k is ``O(√((ln K) (E² + Σ_s r_{k,s}²)))``, a
second-order bound (Gaillard et al. 2014, Thm 3 and Cor. 4).

Numerics: the weights are a softmax of ``ln (R_k)_+ − ln(E² + V_k)``
(``ln 0 = −inf`` gives weight 0), with ``E² + V_k`` floored at the smallest
normal number, so no ratio can overflow.

References:
    Gaillard, P., Stoltz, G. & van Erven, T. (2014). A second-order bound with
    excess losses. *COLT 2014*, PMLR 35, 176–196.
"""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._aggregation import instantaneous_regret, keep_if_valid, log_softmax_weights, step_losses
from .base import AbstractWeightRule, RuleInput

__all__ = ["MLPol", "MLPolState", "MLPolInfo"]


class MLPolState(eqx.Module):
    """Carried ML-Poly state.

    Attributes:
        regret: ``R_k``, the cumulative regrets.
        squared_regret: ``V_k = Σ_s r_{k,s}²``.
        regret_range: ``E_t = max |r|`` so far.
    """

    regret: Float[Array, " kernels"]
    squared_regret: Float[Array, " kernels"]
    regret_range: Float[Array, ""]


class MLPolInfo(eqx.Module):
    """Per-step ML-Poly diagnostics.

    Attributes:
        learning_rates: ``η_{k,t} = 1/(E² + V_k)`` (``1/tiny`` ≈ 4.5e307 before any regret).
    """

    learning_rates: Float[Array, " kernels"]


class MLPol(AbstractWeightRule):
    """Polynomially weighted average with multiple, adaptive learning rates (no hyperparameters).

    Attributes:
        gradient_trick: learn from the linearized losses (the default, as in
            opera) rather than each kernel's own loss.
    """

    name: ClassVar[str] = "mlpol"
    gradient_trick: bool = eqx.field(static=True, default=True)

    def init(self, n_kernels, hyperparams, dtype):
        return MLPolState(
            regret=jnp.zeros((n_kernels,), dtype),
            squared_regret=jnp.zeros((n_kernels,), dtype),
            regret_range=jnp.zeros((), dtype),
        )

    def update(self, state: MLPolState, weights, inputs: RuleInput, hyperparams):
        dtype = state.regret.dtype
        losses = step_losses(inputs, self.gradient_trick).astype(dtype)
        regret = instantaneous_regret(weights.astype(dtype), losses)
        candidate = MLPolState(
            regret=state.regret + regret,
            squared_regret=state.squared_regret + jnp.square(regret),
            regret_range=jnp.maximum(state.regret_range, jnp.max(jnp.abs(regret))),
        )
        new_state = keep_if_valid(inputs.valid, candidate, state)
        denominator = jnp.maximum(
            jnp.square(new_state.regret_range) + new_state.squared_regret, jnp.finfo(dtype).tiny
        )
        positive = jnp.maximum(new_state.regret, 0.0)
        # log 0 = -inf: a kernel with no positive regret gets weight 0 (all such: uniform).
        logits = jnp.where(positive > 0, jnp.log(jnp.where(positive > 0, positive, 1.0)), -jnp.inf)
        logits = logits - jnp.log(denominator)
        return log_softmax_weights(logits), new_state, MLPolInfo(learning_rates=1.0 / denominator)
