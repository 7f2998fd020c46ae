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
"""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .kernels.base import History
from .sia.badtick import BadTickState, badtick_init, badtick_update, mad_scale

#: Increments the robust scale is estimated from (the median of 64 has a
#: relative standard error ≈ 1.25/8 ≈ 0.16 for Gaussian increments).
SCALE_WINDOW = 64

# A scale within 64 ulps of the level is rounding noise (a constant stretch):
# the same floor the kernels use, so a flat series does not hold every tick.
_ROUNDING_ULPS = 64.0


class InputFilterState(eqx.Module):
    """Attributes: tick (the held channel-0 value, if any), held_obs (the whole held observation),
    missing (consecutive missing observations just before this step)."""

    tick: BadTickState
    held_obs: Float[Array, " channels"]
    missing: Int[Array, ""]


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
    """

    code: Int[Array, ""]
    held: Bool[Array, ""]
    confirmed: Bool[Array, ""]
    discarded: Bool[Array, ""]
    jump: Float[Array, ""]


def filter_init(n_channels: int, dtype) -> InputFilterState:
    return InputFilterState(
        tick=badtick_init(dtype), held_obs=jnp.zeros((n_channels,), dtype), missing=jnp.zeros((), jnp.int32)
    )


def robust_scale(history: History) -> Float[Array, ""]:
    """MAD-σ of the last ``SCALE_WINDOW`` real increments of channel 0 (+inf in warm-up)."""
    target = history.target[-(SCALE_WINDOW + 1):]
    increments = jnp.diff(target)
    real = history.valid_mask()[-(SCALE_WINDOW + 1):]
    mask = real[1:] & real[:-1]
    scale = mad_scale(increments, mask)
    floor = _ROUNDING_ULPS * jnp.finfo(target.dtype).eps * jnp.abs(history.last) + jnp.finfo(target.dtype).tiny
    return jnp.maximum(scale, floor)


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
    tick, decision = badtick_update(state.tick, channel, last, robust_scale(history) * gap_scale, threshold)
    history = history.push(state.held_obs, decision.push_held)
    holds = (decision.code == 1) | (decision.code == 5)
    held_obs = jnp.where(holds, obs, jnp.where(decision.code == 4, state.held_obs, 0.0))
    info = InputFilterInfo(
        code=decision.code, held=holds, confirmed=decision.push_held, discarded=decision.discarded,
        jump=decision.jump,
    )
    missing = jnp.where(observed, 0, state.missing + 1).astype(jnp.int32)
    return InputFilterState(tick=tick, held_obs=held_obs, missing=missing), history, observed & decision.push_obs, info


__all__ = ["InputFilterState", "InputFilterInfo", "filter_init", "filter_observation", "robust_scale", "SCALE_WINDOW"]
