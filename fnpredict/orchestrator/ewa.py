"""Exponentially weighted average (Hedge) with an online-calibrated learning rate.

EWA plays ``w_{k,t+1} ∝ exp(−η_t L_{k,t})``, ``L_{k,t} = Σ_{s≤t} ℓ_{k,s}``
the cumulative losses. Its regret against the best kernel is
``≤ E √(T ln K / 2)`` for losses in a range of width ``E`` with the tuned
``η = √(8 ln K / T)/E`` (Cesa-Bianchi & Lugosi 2006, Thm 2.2), but neither
``T`` nor ``E`` is known online. Two devices remove them:

* **scale-free rate**: ``η_{g,t} = c_g √(ln K / V_t)``, with
  ``V_t = Σ_{s≤t} (max_k ℓ_{k,s} − min_k ℓ_{k,s})²`` the cumulative squared
  loss range. Multiplying every loss by a constant leaves the weights
  unchanged, and ``η ∝ 1/√t`` on stationary losses as the anytime analysis
  wants (Cesa-Bianchi, Mansour & Stoltz 2007);
* **calibration** of the constant ``c`` (opera's "EWA with calibrated
  learning rate", Gaillard 2015): ``G`` copies of EWA, one per multiplier
  ``c_g`` of a static log-spaced grid, share the cumulative losses; each copy
  also accumulates the loss its own weights would have suffered,
  ``M_g = Σ_s ⟨w_{g,s}, ℓ_s⟩``, and the rule plays the copy with the smallest
  ``M_g`` (ties, as at the start: the ``c`` closest to the bound's optimum 2).

With ``gradient_trick`` (the default) ``ℓ`` is the linearized loss
``ℓ'(z_ρ) z_k``, so the rule competes with the best convex combination of the
kernels (Cesa-Bianchi & Lugosi 2006, §2.5); ``M_g`` then sums the squared
standardized error of copy g's own mixture, ``½ ((w_g·ŷ − y)/σ)²`` (opera
scores copies by the linearized loss at the played mixture; that first-order
score ignores the curvature and picks too aggressive rates, see
:func:`._aggregation.copy_scores`).

Numerics: every step's losses are shifted by their minimum and ``L`` by its
minimum (neither changes any weight nor the argmin of ``M``); with ``V``
floored at the smallest normal number ``η_g (L_k − min L) ≤ c_g √(t ln K)``,
so the exponentials are finite; weights come from a max-shifted softmax.

References:
    Cesa-Bianchi, N. & Lugosi, G. (2006). *Prediction, Learning, and Games*.
    Gaillard, P. (2015). *Contributions à l'agrégation séquentielle robuste
    d'experts*, PhD thesis (opera's ``EWA`` with ``eta = NULL``).
"""

import math
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ._aggregation import best_copy, calibration_grid, copy_scores, keep_if_valid, log_softmax_weights, step_losses
from .base import AbstractWeightRule, RuleInput

__all__ = ["EWA", "EWAState", "EWAInfo", "DEFAULT_EWA_GRID"]

#: Multipliers ``c`` of ``√(ln K / V_t)``: 2^-6 … 2^6, 13 points a factor 2
#: apart. With this time-varying rate the Hedge regret is at most
#: ``√(V_T ln K)·(1/c + c/4)`` (``ln K/η_T + Σ_t η_t r_t²/8`` and
#: ``Σ_t r_t²/√V_t ≤ 2√V_T``), minimal at ``c = 2``; the nearest grid point is
#: within a factor √2 of any constant, which costs at most
#: ``(1/(2√2) + √2/2) ≈ 1.06`` times the bound. The grid spans 2^-7 to 2^5
#: times that optimum, from "almost uniform" to "follow the leader".
DEFAULT_EWA_GRID = calibration_grid(-6.0, 6.0, 13)
#: c = 2, the minimizer of the bound above; preferred at ties (the start).
TUNED_MULTIPLIER = 2.0


class EWAState(eqx.Module):
    """Carried EWA state.

    Attributes:
        cumulative_losses: ``L_k − min_j L_j`` (≥ 0).
        grid_losses: ``M_g − min_h M_h`` (≥ 0), the calibration scores.
        squared_range: ``V_t``, the cumulative squared loss range.
    """

    cumulative_losses: Float[Array, " kernels"]
    grid_losses: Float[Array, " grid"]
    squared_range: Float[Array, ""]


class EWAInfo(eqx.Module):
    """Per-step EWA diagnostics.

    Attributes:
        learning_rate: the played copy's ``η_{g*,t}`` (after this step).
        grid_index: ``g*``, the index of the played multiplier in ``grid``.
    """

    learning_rate: Float[Array, ""]
    grid_index: Int[Array, ""]


def grid_weights(
    cumulative_losses: Float[Array, " kernels"], squared_range: Float[Array, ""], grid: Float[Array, " grid"]
) -> tuple[Float[Array, "grid kernels"], Float[Array, " grid"]]:
    """Each calibration copy's weights ``softmax(−η_g L)`` and its rate ``η_g``."""
    n_kernels = cumulative_losses.shape[-1]
    # ln K floored at ln 2: with one kernel the weights are [1] whatever η is.
    log_k = math.log(max(n_kernels, 2))
    floor = jnp.finfo(cumulative_losses.dtype).tiny
    rates = grid * jnp.sqrt(log_k / jnp.maximum(squared_range, floor))
    return log_softmax_weights(-rates[:, None] * cumulative_losses[None, :]), rates


class EWA(AbstractWeightRule):
    """Exponentially weighted average with a calibrated, scale-free learning rate (no hyperparameters).

    Attributes:
        gradient_trick: learn from the linearized losses (compete with the
            best convex combination) rather than each kernel's own loss.
        grid: the static multipliers ``c_g`` (changing it changes shapes).
    """

    name: ClassVar[str] = "ewa"
    gradient_trick: bool = eqx.field(static=True, default=True)
    grid: tuple[float, ...] = eqx.field(static=True, default=DEFAULT_EWA_GRID)

    def init(self, n_kernels, hyperparams, dtype):
        return EWAState(
            cumulative_losses=jnp.zeros((n_kernels,), dtype),
            grid_losses=jnp.zeros((len(self.grid),), dtype),
            squared_range=jnp.zeros((), dtype),
        )

    def update(self, state: EWAState, weights, inputs: RuleInput, hyperparams):
        dtype = state.cumulative_losses.dtype
        grid = jnp.asarray(self.grid, dtype)
        losses = step_losses(inputs, self.gradient_trick).astype(dtype)
        shifted = losses - jnp.min(losses)
        # Score each copy with the weights it would have played this step.
        played, _ = grid_weights(state.cumulative_losses, state.squared_range, grid)
        grid_losses = state.grid_losses + copy_scores(played, inputs, shifted, self.gradient_trick)
        cumulative = state.cumulative_losses + shifted
        candidate = EWAState(
            cumulative_losses=cumulative - jnp.min(cumulative),
            grid_losses=grid_losses - jnp.min(grid_losses),
            squared_range=state.squared_range + jnp.square(jnp.max(shifted)),
        )
        new_state = keep_if_valid(inputs.valid, candidate, state)
        all_weights, rates = grid_weights(new_state.cumulative_losses, new_state.squared_range, grid)
        best = best_copy(new_state.grid_losses, self.grid, TUNED_MULTIPLIER)
        info = EWAInfo(learning_rate=rates[best], grid_index=best)
        return all_weights[best], new_state, info
