"""Two-sided signed mean-shift CUSUM (Page 1954) on standardized forecast errors.

With ``z_t`` the standardized one-step error of a predictor (mean 0 and
variance 1 while the predictor is right), the two statistics

.. math::

    g^+_t = \\max(0,\\ g^+_{t-1} + z_t - k), \\qquad
    g^-_t = \\max(0,\\ g^-_{t-1} - z_t - k)

accumulate evidence that the error mean has moved up (``g⁺``) or down
(``g⁻``) by more than the reference value ``k`` (in standard deviations);
the alarm fires when either exceeds ``h``, and both are then reset to 0. Page's
CUSUM is optimal (Lorden 1971, Moustakides 1986) for detecting a shift of
``2k`` in the mean: ``k`` is half the smallest shift worth detecting.

Defaults (:data:`DEFAULT_H`, :data:`DEFAULT_K`): ``k = 0.35``, ``h = 12``.
The classic choice for a sustained 1σ shift (the size of a drift flip
±0.5σ) would be ``k = 0.5``; but the errors of a drift-tracking predictor
see a flip as a shift that *decays* while the predictor re-learns the drift
(``≈ e^{−rj}σ`` after j steps for an EMA of rate r), so a smaller ``k`` with a
larger ``h`` integrates more of it. ``h = 12`` keeps the null average run
length for N(0, 1) errors at ≈ 20 600 steps (Siegmund's approximation
``ARL₀ ≈ (e^{2kb} − 1 − 2kb)/(2k²)``, ``b = h + 1.166``, halved for the two
sides): ≈ 0.5 false alarms in 10 000 steps, and P(≥ 3) ≈ 1.3%. Measured (see
``tests/sia/test_page.py``; random walk + EMA-drift predictor, rate 0.01,
σ by an EMA of rate 0.02) on the drift-flip family (flips ±0.5σ, mean regime
256 steps, 8 seeds × 20 000 steps): ≈ 70% of flips detected in the right
direction within 50 steps, ≈ 0.18 false alarms per 1000 steps; 0.5 false
alarms per 10 000 N(0, 1) steps (40 seeds, at most 2). Sweeps over
``k ∈ [0.3, 0.6]`` at equal null ARL gave detection 0.56–0.74, best near
k = 0.35–0.4.

Clipping: ``z`` is clipped to ±``Z_CAP`` = ±5 before it enters. A Gaussian
exceeds 5σ with probability 6e-7, so the null behaviour is untouched; one
step then moves a statistic by at most ``5 − k = 4.65``, so with the defaults
neither one nor two gross outliers (a 1e12 glitch: ``2 × 4.65 = 9.3 < h``)
can raise an alarm; only a run of them can. NaN errors count as missing.

Missing steps (``valid`` False) leave the state unchanged and raise no alarm.
"""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

__all__ = ["PageState", "PageInfo", "page_init", "page_update", "DEFAULT_H", "DEFAULT_K", "Z_CAP"]

#: Alarm threshold h (standard deviations of z): null ARL ≈ 20 600 steps
#: with the default k (see the module docstring).
DEFAULT_H = 12.0
#: Reference value k: below half the 1σ flip, because a drift-tracking
#: predictor's errors see the flip as a decaying shift.
DEFAULT_K = 0.35
#: Clip of the standardized error (see the module docstring).
Z_CAP = 5.0


class PageState(eqx.Module):
    """Carried two-sided CUSUM state (one series).

    Attributes:
        g_plus: ``g⁺ ≥ 0``, evidence of an upward shift of the error mean.
        g_minus: ``g⁻ ≥ 0``, evidence of a downward shift.
    """

    g_plus: Float[Array, ""]
    g_minus: Float[Array, ""]


class PageInfo(eqx.Module):
    """Per-step diagnostics (no sentinels; all finite).

    Attributes:
        statistic_up: ``g⁺_t`` after this step's error, *before* the reset an
            alarm triggers (so an alarm shows the value that crossed ``h``).
        statistic_down: ``g⁻_t``, likewise.
        alarm: ``g⁺_t > h`` or ``g⁻_t > h`` (False on a missing step).
        direction: +1 for an upward shift (errors ``pred − obs`` or ``obs −
            pred``, whichever sign convention ``z`` has, grew), −1 for a
            downward one, 0 without alarm. If both cross on the same step (only
            possible with ``h < 0``), the larger excess wins.
    """

    statistic_up: Float[Array, ""]
    statistic_down: Float[Array, ""]
    alarm: Bool[Array, ""]
    direction: Int[Array, ""]


def page_init(dtype=jnp.float64) -> PageState:
    """Both statistics at 0."""
    return PageState(g_plus=jnp.zeros((), dtype), g_minus=jnp.zeros((), dtype))


def page_update(
    state: PageState,
    z: Float[Array, ""],
    valid: Bool[Array, ""],
    h: Float[Array, ""] | float = DEFAULT_H,
    k: Float[Array, ""] | float = DEFAULT_K,
) -> tuple[PageState, PageInfo]:
    """One step of the two-sided CUSUM.

    Args:
        state: the current statistics.
        z: this step's standardized error (any finite or non-finite value:
            clipped to ±5, NaN treated as missing).
        valid: whether there is an error this step.
        h: alarm threshold (> 0, standard deviations of z).
        k: reference value (≥ 0, half the shift to detect).

    Returns:
        ``(state, info)``: the statistics after the step (both 0 after an
        alarm) and the :class:`PageInfo`.

    Example:
        >>> state = page_init()
        >>> state, info = page_update(state, jnp.asarray(1.0), jnp.asarray(True))
    """
    dtype = state.g_plus.dtype
    h = jnp.asarray(h, dtype)
    k = jnp.asarray(k, dtype)
    z = jnp.asarray(z, dtype)
    use = jnp.asarray(valid) & ~jnp.isnan(z)
    clipped = jnp.clip(jnp.where(use, z, 0.0), -Z_CAP, Z_CAP)
    up = jnp.where(use, jnp.maximum(0.0, state.g_plus + clipped - k), state.g_plus)
    down = jnp.where(use, jnp.maximum(0.0, state.g_minus - clipped - k), state.g_minus)
    alarm_up = use & (up > h)
    alarm_down = use & (down > h)
    alarm = alarm_up | alarm_down
    direction = jnp.where(
        alarm_up & (~alarm_down | (up - h >= down - h)), 1, jnp.where(alarm_down, -1, 0)
    ).astype(jnp.int32)
    new_state = PageState(g_plus=jnp.where(alarm, 0.0, up), g_minus=jnp.where(alarm, 0.0, down))
    return new_state, PageInfo(statistic_up=up, statistic_down=down, alarm=alarm, direction=direction)
