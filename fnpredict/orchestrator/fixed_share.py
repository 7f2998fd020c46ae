"""Fixed share (Herbster & Warmuth 1998): EWA that tracks a best kernel which changes over time.

One step is an exponential-weights update followed by a share of ``α`` of the
mass spread uniformly:

.. math::

    v_{k} = \\frac{w_{k,t}\\, e^{-\\eta_t \\ell_{k,t}}}{\\sum_j w_{j,t}\\, e^{-\\eta_t \\ell_{j,t}}},
    \\qquad w_{k,t+1} = (1 - \\alpha)\\, v_k + \\frac{\\alpha}{K}.

The share floors every weight at ``α/K``, so a kernel that was bad for a
long time can win again after ``O(ln(K/α)/η)`` steps instead of after
making up its whole cumulative deficit. Against the best sequence of kernels
with ``m`` switches the regret is ``O(√(T (m + 1) ln(KT)))`` with ``α ≈ m/T``
tuned (Herbster & Warmuth 1998; Cesa-Bianchi & Lugosi 2006, §5.2).

Learning rate: **calibrated**, not a hyperparameter. ``η_{g,t} = c_g /
s_t`` with ``s_t² = V_t / n_t`` the mean squared loss range per step (scale
free: multiplying all losses by a constant changes nothing) and ``c_g`` a
static grid; unlike EWA the rate does not decay with ``t`` (tracking needs a
constant rate). As in :mod:`.ewa`, G copies run in parallel, each
accumulating the loss of its own weights ``M_g`` (with the gradient trick:
the squared standardized error of its own mixture), and the copy with the
smallest ``M_g`` is played. ``α`` is the hyperparameter ``share_rate``
(default 1/100, see :data:`DEFAULT_SHARE_RATE`). The price of tracking: on a
stationary problem the constant rate keeps the weights moving, which costs
O(η r²) per step (measured 0.02–0.03 per step above the best convex
combination on the forecast-combination test, against 0.004–0.007 for EWA,
BOA and ML-Poly); after a switch of the best kernel it recovers in
``≈ ln(K/α)/η`` steps where EWA needs the whole accumulated deficit.

Numerics: log-weights, normalized by ``logsumexp`` each step and mixed with
the uniform share by ``logaddexp``; they stay ≥ ``ln(α/K)`` (finite) and the
exponent ``η (ℓ − min ℓ) ≤ c_g √n_t`` is finite since ``V_t`` includes the
current step.

References:
    Herbster, M. & Warmuth, M. K. (1998). Tracking the best expert.
    *Machine Learning* 32, 151–178.
"""

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..params import HyperparameterSpec
from ._aggregation import (
    best_copy, calibration_grid, copy_scores, keep_if_valid, log_softmax_weights, own_hyperparams, step_losses,
)
from .base import AbstractWeightRule, RuleInput

__all__ = ["FixedShare", "FixedShareState", "FixedShareInfo", "DEFAULT_SHARE_RATE", "DEFAULT_FIXED_SHARE_GRID"]

#: α = 1/100: tuned for about one switch of the best kernel per 100 steps.
#: Erring high is cheap: a too-large α costs ≈ α per step in lost mass
#: (T·α overall), a too-small one ≈ ln(1/α) per switch plus a slow recovery;
#: regimes of 100–300 days (the drift-flip family's 256) sit near this value.
DEFAULT_SHARE_RATE = 0.01

#: Multipliers ``c`` of ``1/s_t``: 2^-8 … 2^3, 12 points a factor 2 apart.
#: ``η·range`` from 0.004 (averaging over ≈ 250 steps, the slowest useful
#: tracker) to 8 (follow the last step's leader).
DEFAULT_FIXED_SHARE_GRID = calibration_grid(-8.0, 3.0, 12)
#: Preferred multiplier at ties (the start): η·range = 1/2, a moderate tracker.
TUNED_MULTIPLIER = 0.5


class FixedShareState(eqx.Module):
    """Carried fixed-share state.

    Attributes:
        log_weights: ``(G, K)`` normalized log-weights of each calibration copy.
        grid_losses: ``M_g − min_h M_h`` (≥ 0), the calibration scores.
        squared_range: ``V_t``, the cumulative squared loss range.
        count: ``n_t``, valid steps so far (float, so that it never overflows).
    """

    log_weights: Float[Array, "grid kernels"]
    grid_losses: Float[Array, " grid"]
    squared_range: Float[Array, ""]
    count: Float[Array, ""]


class FixedShareInfo(eqx.Module):
    """Per-step fixed-share diagnostics.

    Attributes:
        learning_rate: the played copy's ``η_{g*,t}``.
        grid_index: ``g*``, the index of the played multiplier.
    """

    learning_rate: Float[Array, ""]
    grid_index: Int[Array, ""]


class FixedShare(AbstractWeightRule):
    """Herbster–Warmuth fixed share with a calibrated, scale-free learning rate.

    Attributes:
        gradient_trick: learn from the linearized losses (compete with the
            best sequence of convex combinations) rather than each kernel's loss.
        grid: the static multipliers ``c_g`` of ``1/s_t``.
    """

    name: ClassVar[str] = "fixed_share"
    hyperparameters: ClassVar[tuple[HyperparameterSpec, ...]] = (
        HyperparameterSpec(
            "share_rate", DEFAULT_SHARE_RATE, 0.0, 1.0, True, True,
            "fixed-share mixing rate α (probability of a switch of the best kernel per step)",
        ),
    )
    gradient_trick: bool = eqx.field(static=True, default=True)
    grid: tuple[float, ...] = eqx.field(static=True, default=DEFAULT_FIXED_SHARE_GRID)

    def init(self, n_kernels, hyperparams, dtype):
        size = len(self.grid)
        return FixedShareState(
            log_weights=jnp.full((size, n_kernels), -math.log(n_kernels), dtype),
            grid_losses=jnp.zeros((size,), dtype),
            squared_range=jnp.zeros((), dtype),
            count=jnp.zeros((), dtype),
        )

    def update(self, state: FixedShareState, weights, inputs: RuleInput, hyperparams):
        dtype = state.log_weights.dtype
        n_kernels = state.log_weights.shape[-1]
        share = jnp.asarray(own_hyperparams(hyperparams, self.name).share_rate, dtype)
        grid = jnp.asarray(self.grid, dtype)
        losses = step_losses(inputs, self.gradient_trick).astype(dtype)
        shifted = losses - jnp.min(losses)

        played = log_softmax_weights(state.log_weights)
        grid_losses = state.grid_losses + copy_scores(played, inputs, shifted, self.gradient_trick)
        squared_range = state.squared_range + jnp.square(jnp.max(shifted))
        count = state.count + 1.0
        # V floored at the smallest normal number; √n/√V rather than √(n/V),
        # whose quotient overflows for V = tiny.
        floor = jnp.finfo(dtype).tiny
        rates = grid * jnp.sqrt(count) / jnp.sqrt(jnp.maximum(squared_range, floor))

        exponential = state.log_weights - rates[:, None] * shifted[None, :]
        exponential = exponential - jax.scipy.special.logsumexp(exponential, axis=-1, keepdims=True)
        mixed = jnp.logaddexp(jnp.log1p(-share) + exponential, jnp.log(share / n_kernels))
        candidate = FixedShareState(
            log_weights=mixed - jax.scipy.special.logsumexp(mixed, axis=-1, keepdims=True),
            grid_losses=grid_losses - jnp.min(grid_losses),
            squared_range=squared_range,
            count=count,
        )
        new_state = keep_if_valid(inputs.valid, candidate, state)
        best = best_copy(new_state.grid_losses, self.grid, TUNED_MULTIPLIER)
        current_rates = grid * jnp.sqrt(new_state.count) / jnp.sqrt(jnp.maximum(new_state.squared_range, floor))
        info = FixedShareInfo(learning_rate=current_rates[best], grid_index=best)
        return log_softmax_weights(new_state.log_weights[best]), new_state, info
