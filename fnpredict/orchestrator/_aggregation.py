"""Shared numerics of the aggregation rules (:mod:`.ewa`, :mod:`.fixed_share`, :mod:`.boa`, :mod:`.mlpol`).

Everything here is traced code: fixed shapes, no Python control flow on
values. The helpers make every rule finite for any finite loss (up to
``LOSS_CAP`` in magnitude, losses beyond are clipped) and keep its state
unchanged on a missing step.
"""

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .base import RuleInput

__all__ = [
    "LOSS_CAP",
    "own_hyperparams",
    "step_losses",
    "instantaneous_regret",
    "log_softmax_weights",
    "keep_if_valid",
    "calibration_grid",
    "copy_scores",
    "best_copy",
    "STANDARDIZED_ERROR_CAP",
]

#: Largest loss magnitude a rule sees. The rules square losses (ranges,
#: regrets) and sum them over time: with |ℓ| ≤ 1e100 a squared regret is at
#: most 4e200 and a sum over 1e100 steps stays below the float64 maximum
#: (1.8e308). The engine's own cap (standardized error 1e6, loss 5e11) is far
#: below, so the clip only matters for hostile inputs.
LOSS_CAP = 1e100


#: Cap on a calibration copy's standardized error, the engine's own cap
#: (:data:`fnpredict.orchestrator.losses.STANDARDIZED_ERROR_CAP`): a copy's
#: squared score is then at most 5e11 per step.
STANDARDIZED_ERROR_CAP = 1e6


def own_hyperparams(hyperparams, name: str):
    """The rule's own hyperparameter group.

    The engine passes the full ``Hyperparams`` (own values under
    ``hyperparams.component(name)``); standalone tests pass the rule's
    ``HyperparameterGroup`` itself.
    """
    component = getattr(hyperparams, "component", None)
    return component(name) if callable(component) else hyperparams


def step_losses(inputs: RuleInput, gradient_trick: bool) -> Float[Array, " kernels"]:
    """The losses a rule learns from this step, clipped, and 0 on a missing step.

    Args:
        inputs: this step's :class:`RuleInput`.
        gradient_trick: static; use ``linearized_losses`` (compete with the
            best convex combination) instead of ``losses`` (compete with the
            best kernel).

    Returns:
        ``(K,)`` finite losses (a missing step may carry NaN; it is replaced
        by 0 so that no NaN is ever computed, even in a discarded branch).
    """
    raw = inputs.linearized_losses if gradient_trick else inputs.losses
    cleaned = jnp.where(inputs.valid & jnp.isfinite(raw), raw, 0.0)
    return jnp.clip(cleaned, -LOSS_CAP, LOSS_CAP)


def instantaneous_regret(
    weights: Float[Array, " kernels"], losses: Float[Array, " kernels"]
) -> Float[Array, " kernels"]:
    """``r_k = ⟨w, ℓ⟩ − ℓ_k``: how much better kernel k did than the played mixture.

    With linearized losses ``ℓ_k = ℓ'(z_ρ) z_k`` (and the engine's weights
    ``w = ρ``), ``⟨w, ℓ⟩ = ℓ'(z_ρ) z_ρ`` is the mixture's own linearized loss.
    The played weights are re-normalized here so that a guard that left them
    slightly off the simplex cannot bias the regret.
    """
    total = jnp.sum(weights)
    played = jnp.where(total > 0, weights / jnp.where(total > 0, total, 1.0), 1.0 / weights.shape[-1])
    return jnp.dot(played, losses) - losses


def log_softmax_weights(logits: Float[Array, "*batch kernels"]) -> Float[Array, "*batch kernels"]:
    """Weights ``∝ exp(logits)`` on the last axis, computed with a max shift.

    ``-inf`` logits get weight 0; a row that is ``-inf`` everywhere (nothing
    to prefer) gets uniform weights, so the result is always on the simplex.
    """
    finite = jnp.isfinite(logits)
    any_finite = jnp.any(finite, axis=-1, keepdims=True)
    safe = jnp.where(finite, logits, -jnp.inf)
    shift = jnp.max(jnp.where(finite, logits, -jnp.finfo(logits.dtype).max), axis=-1, keepdims=True)
    unnormalized = jnp.exp(safe - shift)
    weights = unnormalized / jnp.sum(unnormalized, axis=-1, keepdims=True)
    uniform = jnp.full_like(logits, 1.0 / logits.shape[-1])
    return jnp.where(any_finite, weights, uniform)


def keep_if_valid(valid: Bool[Array, ""], new, old):
    """``new`` where the step is valid, else ``old`` (leafwise, on PyTrees)."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(valid, a, b), new, old)


def calibration_grid(low_log2: float, high_log2: float, size: int) -> tuple[float, ...]:
    """A static, log-spaced grid of learning-rate multipliers ``2^j``, j from ``low_log2`` to ``high_log2``."""
    if size < 1:
        raise ValueError(f"grid size must be >= 1, got {size}")
    if size == 1:
        return (2.0**low_log2,)
    step = (high_log2 - low_log2) / (size - 1)
    return tuple(math.pow(2.0, low_log2 + i * step) for i in range(size))


def copy_scores(
    copy_weights: Float[Array, "grid kernels"],
    inputs: RuleInput,
    losses: Float[Array, " kernels"],
    gradient_trick: bool,
) -> Float[Array, " grid"]:
    """This step's loss of each calibration copy (the quantity its learning rate is chosen on).

    Without the gradient trick the copy's loss is linear, ``⟨w_g, ℓ⟩``. With
    it, the linear score ``⟨w_g, ℓ'(z_ρ) z⟩`` evaluated at the *played*
    mixture misses the curvature of the loss and systematically favours the
    most aggressive copies (measured: it costs EWA ≈ 0.07 per step against
    0.004 for the best fixed rate on the forecast-combination test); so the
    copy is scored by the squared loss of its own mixture, ``½ z_g²`` with
    ``z_g = (w_g·ŷ − y)/σ`` capped at ``STANDARDIZED_ERROR_CAP`` (also in
    Huber mode: the rule does not know δ, and the score only ranks rates).
    """
    if not gradient_trick:
        return copy_weights @ losses
    scale = jnp.where(inputs.scale > 0, inputs.scale, 1.0)
    predictions = jnp.where(inputs.valid & jnp.isfinite(inputs.predictions), inputs.predictions, 0.0)
    target = jnp.where(inputs.valid & jnp.isfinite(inputs.target), inputs.target, 0.0)
    errors = (copy_weights @ predictions.astype(copy_weights.dtype) - target) / scale
    errors = jnp.clip(jnp.where(jnp.isfinite(errors), errors, 0.0), -STANDARDIZED_ERROR_CAP, STANDARDIZED_ERROR_CAP)
    return 0.5 * jnp.square(errors)


def best_copy(grid_losses: Float[Array, " grid"], grid: tuple[float, ...], preferred: float) -> Int[Array, ""]:
    """Index of the smallest calibration score; ties go to the multiplier closest to ``preferred``.

    Ties happen at the start (every copy plays uniform weights on step 1);
    breaking them towards the theoretically tuned constant rather than the
    smallest one avoids many steps of near-uniform play.
    """
    order = sorted(range(len(grid)), key=lambda i: abs(math.log2(grid[i]) - math.log2(preferred)))
    order_array = jnp.asarray(order, jnp.int32)
    return order_array[jnp.argmin(grid_losses[order_array])]
