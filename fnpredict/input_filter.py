"""The bad-tick filter on the input: an implausible jump is held back until the next observation decides.

Wraps :mod:`fnpredict.sia.badtick` for the predictor: the robust scale is the
MAD-σ of the last :data:`SCALE_WINDOW` increments between real observations
in the buffer (so only accepted values ever enter it), floored at rounding
noise of the level; the test runs on channel 0 and holds the whole
observation vector. A held observation is kept out of the buffer, the errors
and the kernels (the step counts as missing); if the next observation
confirms the new level (a real jump), the held one is pushed first, then the
new one, so a genuine crash is delayed by one step, not lost; a reverted
spike is discarded and never seen by anything.

After a run of missing observations the next one is compared with the last
value before the gap, a move over ``g + 1`` steps: its scale is ``s √(g + 1)``
(increments add their variances), so a multi-day move after a market holiday
or a feed outage is not held as a bad tick. Without this, on the S&P 500
with bursts of 3-12 missing days the filter held the first value after most
gaps and raised the MSE by 1.3% (``docs/accuracy.md``, ``sp500+gaps``).

**The forecast made while a value is held is hedged.** Held, a real jump
costs the next forecast its whole size (that forecast starts from the old
level), and on heavy-tailed series (α-stable increments) those squared
jumps dominated the MSE: +50.6% with the filter on, every hold confirmed.
The minimum-MSE forecast given the two hypotheses is the mixture

.. math:: \\hat y_{t+1} = \\hat y^{\\text{old}}_{t+1} + \\pi\\,(y_t - a),

with ``a`` the last accepted level and ``π = P(real | J)`` the probability
that the held jump, of ``J`` robust σ, is real. Bayes with two size laws
above ``c =`` :data:`TAIL_REFERENCE` (the default threshold):

* a real jump's excess is Pareto, ``f_r(J) = (α/c) (J/c)^{−α−1}``, with the
  tail index ``α`` this series shows: Hill's estimator on its confirmed
  jumps, ``α̂ = (n + k₀) / (Σ log(J_i/c) + k₀/α₀)``, whose prior ``α₀`` worth
  ``k₀ =`` :data:`PRIOR_TAIL_WEIGHT` jumps is Hill's estimator on the
  :data:`TAIL_ORDER` largest accepted increments of the window
  (:func:`window_tail_index`; :data:`PRIOR_TAIL_INDEX` before the window
  has :data:`MIN_TAIL_INCREMENTS` of them). So a series whose everyday
  increments are heavy-tailed (α-stable, α̂ ≈ 2) believes a first large jump,
  and one whose increments look Gaussian (the S&P 500 in a calm year,
  α̂ ≈ 4) doubts it;
* a glitch's size is log-uniform over :data:`GLITCH_DECADES` decades above
  ``c`` (a bad print is as likely ×10 as ×1e12):
  ``f_g(J) = 1 / (J · D ln 10)``;

so ``log-odds = logit(p) + log(α̂ D ln 10) − α̂ log(J/c)``, where the prior
odds ``p`` are the posterior mean of this series' own outcomes with a prior of
mean :data:`PRIOR_REAL` worth :data:`PRIOR_WEIGHT` holds,
``p = (n_confirmed + w p₀) / (n_confirmed + n_discarded + w)``. A 30σ jump
on a heavy-tailed series is followed (π ≈ 0.97 on the α-stable family, whose
real jumps reach 135σ); 1e12 or 1e300 on log-levels near 4.6 gets π = 0
(the Pareto density there is astronomically small); a feed that keeps
reverting its spikes teaches ``p`` down (0.79 after one discarded hold, 0.59
after three). The prior is optimistic because on clean data every hold is a
real jump and the first holds decide most of the cost: a real jump costs
(1 − π)² J², a glitch π² J². With π = 0 (the filter before this hedge) the
α-stable family paid +50.6% MSE; with a Beta(1, 1) prior and hedging only
after a first confirmation, +27%.
Every kernel's forecast and every quantile is shifted by the same
amount (a location shift of the whole predictive law), so the weights, the
errors and the interval coverage all score what was issued.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .kernels.base import History
from .sia.badtick import BadTickState, badtick_init, badtick_update, mad_scale
from .sorting import sort

#: Increments the robust scale is estimated from (the median of 64 has a
#: relative standard error ≈ 1.25/8 ≈ 0.16 for Gaussian increments).
SCALE_WINDOW = 64

# A scale within 64 ulps of the level is rounding noise (a constant stretch):
# the same floor the kernels use, so a flat series does not hold every tick.
_ROUNDING_ULPS = 64.0

#: The hedge's priors (module docstring): the probability that a held jump
#: is real and its weight in holds; the Pareto tail index of real jumps
#: before the window can estimate one (3: the "cubic law" of daily equity
#: returns) and the weight of the window's estimate in jumps; the decades a
#: glitch's size spreads over.
PRIOR_REAL = 0.95
PRIOR_WEIGHT = 5.0
PRIOR_TAIL_INDEX = 3.0
PRIOR_TAIL_WEIGHT = 2.0
GLITCH_DECADES = 16.0
#: Order statistics of the window's Hill estimate, and the fewest accepted
#: increments it needs (the top 12 of 127 is the top 9.4%, where a Student-t
#: with 3 degrees of freedom already shows its power tail).
TAIL_ORDER = 12
MIN_TAIL_INCREMENTS = 48
#: The level ``c`` the Pareto tail and the glitch law start from, in robust
#: σ: the default threshold, fixed so that the threshold hyperparameter acts
#: only through the hold decisions (piecewise constant, as documented; a
#: held jump below it, possible with a lower threshold, counts as at it).
TAIL_REFERENCE = 12.0


class InputFilterState(eqx.Module):
    """Attributes: tick (the held channel-0 value, if any), held_obs (the whole held observation),
    missing (consecutive missing observations just before this step), held_jump (the held value's
    jump in robust σ), confirmed / discarded (this series' held values confirmed / dropped so far),
    log_excess (Σ log(J/c) over the confirmed jumps: Hill's statistic of their tail)."""

    tick: BadTickState
    held_obs: Float[Array, " channels"]
    missing: Int[Array, ""]
    held_jump: Float[Array, ""]
    confirmed: Float[Array, ""]
    discarded: Float[Array, ""]
    log_excess: Float[Array, ""]


class InputFilterInfo(eqx.Module):
    """Per-step diagnostics of the filter.

    Attributes:
        code: :mod:`fnpredict.sia.badtick` decision code (0 accept, 1 hold,
            2 confirm, 3 discard, 4 reject a non-finite value, 5 confirm and
            hold the next).
        held: this step's observation is held back as a suspected bad tick.
        confirmed: a held observation was confirmed and pushed this step.
        discarded: a held observation was dropped (a reverted spike).
        jump: |y − last accepted| in robust standard deviations (0 in warm-up,
            −1 for a non-finite observation).
        real_probability: π, the probability given to a held jump being real
            (0 when nothing is held).
        hedge: π × (held value − last accepted level), added to every
            forecast made while the value is held (0 otherwise).
    """

    code: Int[Array, ""]
    held: Bool[Array, ""]
    confirmed: Bool[Array, ""]
    discarded: Bool[Array, ""]
    jump: Float[Array, ""]
    real_probability: Float[Array, ""]
    hedge: Float[Array, ""]


def filter_init(n_channels: int, dtype) -> InputFilterState:
    zero = jnp.zeros((), dtype)
    return InputFilterState(
        tick=badtick_init(dtype), held_obs=jnp.zeros((n_channels,), dtype), missing=jnp.zeros((), jnp.int32),
        held_jump=zero, confirmed=zero, discarded=zero, log_excess=zero,
    )


def _real_increments(history: History, span: int | None = None):
    """``(increments, mask)`` of channel 0 over the last ``span + 1`` values (all when None):
    an increment is real when both its ends are observations."""
    start = None if span is None else -(span + 1)
    target = history.target[start:]
    real = history.valid_mask()[start:]
    return jnp.diff(target), real[1:] & real[:-1]


def robust_scale(history: History) -> Float[Array, ""]:
    """MAD-σ of the last ``SCALE_WINDOW`` real increments of channel 0 (+inf in warm-up)."""
    increments, mask = _real_increments(history, SCALE_WINDOW)
    scale = mad_scale(increments, mask)
    dtype = increments.dtype
    floor = _ROUNDING_ULPS * jnp.finfo(dtype).eps * jnp.abs(history.last) + jnp.finfo(dtype).tiny
    return jnp.maximum(scale, floor)


def window_tail_index(history: History) -> Float[Array, ""]:
    """Hill's tail index of the window's accepted increments (channel 0).

    .. math:: \\hat\\alpha = k \\Big/ \\sum_{i=1}^{k} \\log(X_{(i)} / X_{(k+1)}),

    with ``X_(1) ≥ X_(2) ≥ …`` the absolute increments and ``k =``
    :data:`TAIL_ORDER`; :data:`PRIOR_TAIL_INDEX` with fewer than
    :data:`MIN_TAIL_INCREMENTS` increments or a zero ``X_(k+1)`` (a flat
    stretch). Hill's estimator is the maximum-likelihood tail index of a
    Pareto tail above ``X_(k+1)``; on a light (Gaussian) tail it reads high,
    which is what the hedge should conclude about such a series.
    """
    increments, mask = _real_increments(history)
    size = jnp.where(mask, jnp.abs(increments), 0.0)
    size = jnp.where(jnp.isfinite(size), size, 0.0)
    ordered = sort(size)[::-1]  # largest first; the masked zeros sort last
    top, floor = ordered[:TAIL_ORDER], ordered[TAIL_ORDER]
    usable = (jnp.sum(mask) >= MIN_TAIL_INCREMENTS) & (floor > 0)
    safe_floor = jnp.where(usable, floor, 1.0)
    spread = jnp.sum(jnp.log(jnp.where(usable, top, 1.0) / safe_floor))
    index = TAIL_ORDER / jnp.where(usable & (spread > 0), spread, 1.0)
    return jnp.where(usable & (spread > 0), index, PRIOR_TAIL_INDEX)


def filter_observation(
    state: InputFilterState, obs: Float[Array, " channels"], observed: Bool[Array, ""], history: History,
    threshold: Float[Array, ""],
) -> tuple[InputFilterState, History, Bool[Array, ""], InputFilterInfo]:
    """Apply the filter to this step's observation.

    Returns:
        ``(state, history, use_obs, info)``: ``history`` with a confirmed held
        observation already pushed; ``use_obs`` whether this step's
        observation is to be used (pushed, scored, learned from).
    """
    last = jnp.where(history.count > 0, history.last, jnp.nan)
    channel = jnp.where(observed, obs[0], jnp.nan)
    # A move across a gap of g missing steps spans g + 1 increments.
    gap_scale = jnp.sqrt(1.0 + state.missing.astype(obs.dtype))
    scale = robust_scale(history) * gap_scale
    tick, decision = badtick_update(state.tick, channel, last, scale, threshold)
    history = history.push(state.held_obs, decision.push_held)
    holds = (decision.code == 1) | (decision.code == 5)
    held_obs = jnp.where(holds, obs, jnp.where(decision.code == 4, state.held_obs, 0.0))

    # The outcome of the last hold, then the hedge of this one (module docstring).
    # Counts and odds are bookkeeping, not a path to differentiate along.
    confirmed = state.confirmed + decision.push_held.astype(obs.dtype)
    discarded = state.discarded + decision.discarded.astype(obs.dtype)
    log_excess = state.log_excess + jnp.where(
        decision.push_held, jnp.log(jnp.maximum(state.held_jump / TAIL_REFERENCE, 1.0)), 0.0)
    displacement = jnp.where(holds, jnp.where(observed, obs[0], 0.0) - history.last, 0.0)
    safe_scale = jnp.where(jnp.isfinite(scale) & (scale > 0), scale, 1.0)
    held_jump = jax.lax.stop_gradient(jnp.where(holds, jnp.minimum(jnp.abs(displacement) / safe_scale,
                                                                    jnp.finfo(obs.dtype).max), 0.0))
    prior_index = jax.lax.stop_gradient(window_tail_index(history))
    tail_index = (confirmed + PRIOR_TAIL_WEIGHT) / (log_excess + PRIOR_TAIL_WEIGHT / prior_index)
    prior = (confirmed + PRIOR_WEIGHT * PRIOR_REAL) / (confirmed + discarded + PRIOR_WEIGHT)
    log_odds = (jnp.log(prior) - jnp.log1p(-prior) + jnp.log(tail_index * GLITCH_DECADES * jnp.log(10.0))
                - tail_index * jnp.log(jnp.maximum(held_jump / TAIL_REFERENCE, 1.0)))
    probability = jax.lax.stop_gradient(jnp.where(holds, jax.nn.sigmoid(log_odds), 0.0))
    hedge = probability * displacement
    info = InputFilterInfo(
        code=decision.code, held=holds, confirmed=decision.push_held, discarded=decision.discarded,
        jump=decision.jump, real_probability=probability, hedge=hedge,
    )
    missing = jnp.where(observed, 0, state.missing + 1).astype(jnp.int32)
    new_state = InputFilterState(
        tick=tick, held_obs=held_obs, missing=missing, held_jump=jnp.where(decision.code == 4, state.held_jump,
                                                                           held_jump),
        confirmed=confirmed, discarded=discarded, log_excess=log_excess,
    )
    return new_state, history, observed & decision.push_obs, info


__all__ = [
    "InputFilterState", "InputFilterInfo", "filter_init", "filter_observation", "robust_scale", "window_tail_index",
    "SCALE_WINDOW", "TAIL_ORDER", "MIN_TAIL_INCREMENTS", "TAIL_REFERENCE",
    "PRIOR_REAL", "PRIOR_WEIGHT", "PRIOR_TAIL_INDEX", "PRIOR_TAIL_WEIGHT", "GLITCH_DECADES",
]
