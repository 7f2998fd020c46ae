"""Bad-tick filter: hold back an implausible jump until the next observation says whether it was real.

An observation ``y`` whose jump from the last accepted value ``a`` is large
relative to a robust scale ``s`` of recent increments,

.. math:: |y - a| > c\\, s,

(``c = threshold``) is *held* instead of used. The next observation ``y'``
decides (all with the same ``c s``):

* ``y'`` near the held level ``p`` (``|y' − p| ≤ c s``, and closer to ``p``
  than to ``a``): the jump was real, **confirm**: the caller pushes ``p``
  then ``y'``;
* ``y'`` back near the old level (``|y' − a| ≤ c s``): a reverted spike,
  **discard** ``p`` and accept ``y'``;
* ``y'`` far from both: on the same side of ``a`` as ``p`` the level has
  left ``a`` for two steps running, so ``p`` is confirmed and ``y'`` is held
  against it (**confirm-hold**); on the other side it is a new suspect that
  replaces ``p`` (**hold**, with ``discarded``). Confirming on a same-side
  move keeps the filter live through a volatility explosion (a crash with
  several 10σ days), where holding the newest value every time would freeze
  the series while the caller's scale, computed from accepted increments only,
  never catches up.

A non-finite observation (NaN = missing, ±inf = garbage) is **rejected**:
nothing is pushed and any held value stays held.

Scale: :func:`mad_scale`, 1.4826 × the median absolute deviation of the last
``window`` accepted increments (masked, fixed shape). The MAD has a 50%
breakdown point, so the jumps it is meant to catch (and the few that are
accepted) do not inflate it; an EWMA of ``|Δ|`` would be multiplied by
``1 + λ(jump/s)`` by each accepted jump (×40 for a 1e12 glitch that got in at
λ = 0.03) and blind the test for ``~1/λ`` steps. With fewer than
``MIN_INCREMENTS`` increments the scale is +inf: everything is accepted
during warm-up (no basis for a test).

Default threshold ``c = 12`` robust standard deviations
(:data:`DEFAULT_THRESHOLD`). A hold costs a real jump one step: the forecast
made while it is held starts from the old level, so its squared error is the
jump's (the predictor hedges that forecast toward the held value by the
probability that the jump is real: :mod:`fnpredict.input_filter`).
The threshold is therefore set where real jumps of the families we
evaluate are rare: at ``c = 8`` the compound-Poisson jumps of
:func:`fnpredict.synthetic.ou_jumps` (σ_J = 3σ) were held a few times per
4000 steps and raised the random walk's own MSE by 2.7% (every kernel's by
as much); at ``c = 12`` none are, and the ensemble's MSE / oracle went from
1.050 to 1.022. Gaussian increments never exceed it; daily equity
log-returns do on a handful of days in a century (1987, 2008, 2020), which
are delayed by one step, not lost. A +50% one-day spike on a 1%-volatility
series is a 40σ jump, far above; a 1e12 glitch, astronomically so. Heavy
power tails (α-stable increments) hold their largest real jumps; a magnitude
test alone cannot tell those from glitches, which is why the predictor's
hedge weighs the jump's size against the tail the series has shown.
"""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..sorting import sort

__all__ = [
    "BadTickState", "BadTickDecision", "badtick_init", "badtick_update", "mad_scale",
    "ACCEPT", "HOLD", "CONFIRM", "DISCARD", "REJECT", "CONFIRM_HOLD",
    "DEFAULT_THRESHOLD", "MAD_TO_SIGMA", "MIN_INCREMENTS",
]

#: Decision codes (:attr:`BadTickDecision.code`).
ACCEPT, HOLD, CONFIRM, DISCARD, REJECT, CONFIRM_HOLD = 0, 1, 2, 3, 4, 5
#: Threshold in robust standard deviations (see the module docstring).
DEFAULT_THRESHOLD = 12.0
#: 1/Φ⁻¹(3/4): the MAD of a normal sample times this estimates its σ.
MAD_TO_SIGMA = 1.482602218505602
#: Fewest accepted increments for a scale; the median of 8 points has a
#: relative standard error ≈ 1.25/√8 ≈ 0.44 (Gaussian), enough to tell a
#: 40σ spike from noise, not enough for anything finer.
MIN_INCREMENTS = 8


class BadTickState(eqx.Module):
    """Carried state: the held observation, if any.

    Attributes:
        pending_value: the held value (0 when nothing is held).
        pending: whether a value is held.
    """

    pending_value: Float[Array, ""]
    pending: Bool[Array, ""]


class BadTickDecision(eqx.Module):
    """What the caller does with this step's observation.

    Attributes:
        code: one of ``ACCEPT`` (push obs), ``HOLD`` (obs held, nothing
            pushed), ``CONFIRM`` (push ``held_value`` then obs), ``DISCARD``
            (held value dropped, push obs), ``REJECT`` (non-finite obs, nothing
            changes), ``CONFIRM_HOLD`` (push ``held_value``; obs now held).
        push_held: push ``held_value`` first (``CONFIRM``, ``CONFIRM_HOLD``).
        push_obs: push obs (``ACCEPT``, ``CONFIRM``, ``DISCARD``).
        held_value: the confirmed held value (NaN unless ``push_held``).
        discarded: a held value was dropped (``DISCARD``, or ``HOLD`` replacing it).
        jump: ``|obs − last_accepted| / scale`` (capped at finfo.max; −1 for a
            non-finite obs; 0 during warm-up).
    """

    code: Int[Array, ""]
    push_held: Bool[Array, ""]
    push_obs: Bool[Array, ""]
    held_value: Float[Array, ""]
    discarded: Bool[Array, ""]
    jump: Float[Array, ""]


def badtick_init(dtype=jnp.float64) -> BadTickState:
    """Nothing held."""
    return BadTickState(pending_value=jnp.zeros((), dtype), pending=jnp.zeros((), bool))


def mad_scale(increments: Float[Array, " buffer"], mask: Bool[Array, " buffer"]) -> Float[Array, ""]:
    """Robust σ of the valid increments: 1.4826 × median |Δ − median Δ|; +inf with fewer than 8.

    A zero MAD (a constant stretch) gives a scale of 0: the caller floors it
    at a tick size that fits its units (see the tests: 1e-8 for log-levels).
    """
    count = jnp.sum(mask)
    safe = jnp.where(mask & jnp.isfinite(increments), increments, 0.0)

    def masked_median(values):
        ordered = sort(jnp.where(mask, values, jnp.inf))  # jnp.sort's result, vmap-fast
        lower = jnp.maximum((count - 1) // 2, 0)
        upper = jnp.maximum(count // 2, 0)
        return 0.5 * (ordered[lower] + ordered[upper])

    center = masked_median(safe)
    deviation = masked_median(jnp.abs(safe - jnp.where(count > 0, center, 0.0)))
    return jnp.where(count >= MIN_INCREMENTS, MAD_TO_SIGMA * deviation, jnp.inf)


def badtick_update(
    state: BadTickState,
    obs: Float[Array, ""],
    last_accepted: Float[Array, ""],
    scale: Float[Array, ""],
    threshold: Float[Array, ""] | float = DEFAULT_THRESHOLD,
) -> tuple[BadTickState, BadTickDecision]:
    """Decide what to do with ``obs`` (see the module docstring for the rules).

    Args:
        state: the held value, if any.
        obs: this step's observation (NaN = missing).
        last_accepted: the last value the caller accepted (non-finite when
            there is none yet: then any finite obs is accepted).
        scale: robust scale ``s`` of the accepted increments (≥ 0; +inf
            accepts everything), e.g. :func:`mad_scale`.
        threshold: ``c``, in units of ``s``.

    Returns:
        ``(state, decision)``.
    """
    dtype = state.pending_value.dtype
    obs = jnp.asarray(obs, dtype)
    last = jnp.asarray(last_accepted, dtype)
    # A NaN scale (no basis for a test) is treated as +inf: accept.
    scale = jnp.asarray(scale, dtype)
    scale = jnp.where(jnp.isnan(scale), jnp.inf, scale)
    band = jnp.asarray(threshold, dtype) * scale
    held = state.pending_value
    finite = jnp.isfinite(obs)
    have_last = jnp.isfinite(last)
    safe_obs = jnp.where(finite, obs, 0.0)
    safe_last = jnp.where(have_last, last, safe_obs)
    # Differences of finite floats may overflow to inf: inf > band is still a correct "far".
    from_last = jnp.abs(safe_obs - safe_last)
    from_held = jnp.abs(safe_obs - held)
    near_last = from_last <= band
    near_held = (from_held <= band) & (from_held < from_last)
    same_side = jnp.sign(safe_obs - safe_last) == jnp.sign(held - safe_last)

    pending = state.pending
    code_free = jnp.where(near_last, ACCEPT, HOLD)
    code_pending = jnp.where(
        near_held, CONFIRM, jnp.where(near_last, DISCARD, jnp.where(same_side, CONFIRM_HOLD, HOLD))
    )
    code = jnp.where(~finite, REJECT, jnp.where(pending, code_pending, code_free)).astype(jnp.int32)

    push_held = (code == CONFIRM) | (code == CONFIRM_HOLD)
    push_obs = (code == ACCEPT) | (code == CONFIRM) | (code == DISCARD)
    holds = (code == HOLD) | (code == CONFIRM_HOLD)
    new_state = BadTickState(
        pending_value=jnp.where(holds, safe_obs, jnp.where(code == REJECT, held, 0.0)),
        pending=jnp.where(code == REJECT, pending, holds),
    )
    biggest = jnp.finfo(dtype).max
    ratio = jnp.minimum(from_last / jnp.where(scale > 0, scale, 1.0), biggest)
    zero_scale_jump = jnp.where(from_last > 0, biggest, 0.0)
    jump = jnp.where(jnp.isinf(scale), 0.0, jnp.where(scale > 0, ratio, zero_scale_jump))
    decision = BadTickDecision(
        code=code,
        push_held=push_held,
        push_obs=push_obs,
        held_value=jnp.where(push_held, held, jnp.nan),
        discarded=pending & ((code == DISCARD) | (code == HOLD)),
        jump=jnp.where(finite & have_last, jump, jnp.where(finite, 0.0, -1.0)),
    )
    return new_state, decision
