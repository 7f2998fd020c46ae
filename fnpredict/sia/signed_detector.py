"""The signed regime detector: a Page CUSUM on the errors of its own drift-tracking reference.

The Page CUSUM (:mod:`fnpredict.sia.page`) needs errors whose mean is 0
while nothing changes and moves when the regime does. The ensemble's own
errors are a poor input for that: the ensemble re-learns a new drift within
a few steps (its weight rule chases whichever kernel is right), so a change
shows in its errors only as a short, decaying shift, and how short depends on
the rule, the kernels and their windows. The detector therefore carries a
reference predictor of its own, independent of the ensemble, the simplest
one that is unbiased within a regime: the random walk plus an exponentially
weighted drift,

.. math::

    e_t = Δy_t - m_{t-1}, \\qquad z_t = e_t / s_{t-1}, \\qquad
    m_t = m_{t-1} + r_t (Δy_t - m_{t-1}), \\qquad
    s_t^2 = s_{t-1}^2 + q_t (e_t^2 - s_{t-1}^2),

with rates ``r_t = max(DRIFT_RATE, 1/(n+1))`` (``n`` the increments since the
drift estimate last restarted: a running mean at first) and ``q_t =
max(SCALE_RATE, 1/(c+1))`` (``c`` all increments seen). ``z_t`` feeds the
two-sided Page CUSUM; an alarm restarts the drift estimate (``m = 0, n = 0``)
so that it learns the new regime's drift from scratch instead of crawling
over from the old one. The CUSUM is muted for the first ``WARMUP``
increments while ``s`` forms.

These are exactly the settings under which the Page defaults (``h = 12``,
``k = 0.35``) were calibrated (``tests/sia/test_page.py``): ≈ 70% of the ±0.5σ
drift flips of :func:`fnpredict.synthetic.drift_flip` detected within 50
steps, ≈ 0.2 false alarms per 1000 steps, ≈ 0.5 in 10 000 Gaussian steps.
"""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .page import PageInfo, PageState, page_init, page_update

__all__ = ["SignedDetectorState", "signed_detector_init", "signed_detector_update",
           "DRIFT_RATE", "SCALE_RATE", "WARMUP"]

#: Rate of the reference's drift EMA: adapts in ≈ 1/r = 100 steps, well inside
#: a 256-step regime, with a drift noise of σ√(r/2) ≈ 0.07σ.
DRIFT_RATE = 0.01
#: Rate of the reference's error-scale EMA (the engine's error-scale rate).
SCALE_RATE = 0.02
#: Increments before the CUSUM runs (σ's relative error ≈ 1/√64 at 32).
WARMUP = 32


class SignedDetectorState(eqx.Module):
    """Carried state (one series).

    Attributes:
        page: the two-sided CUSUM statistics.
        drift: ``m``, the reference's drift estimate (units of y per step).
        drift_count: increments since the drift estimate restarted.
        variance: ``s²``, the reference's squared error scale.
        count: increments seen.
    """

    page: PageState
    drift: Float[Array, ""]
    drift_count: Float[Array, ""]
    variance: Float[Array, ""]
    count: Float[Array, ""]


def signed_detector_init(dtype=jnp.float64) -> SignedDetectorState:
    """No increments seen, drift 0."""
    zero = jnp.zeros((), dtype)
    return SignedDetectorState(page=page_init(dtype), drift=zero, drift_count=zero, variance=zero, count=zero)


def signed_detector_update(
    state: SignedDetectorState,
    increment: Float[Array, ""],
    valid: Bool[Array, ""],
    h: Float[Array, ""] | float,
    k: Float[Array, ""] | float,
) -> tuple[SignedDetectorState, PageInfo]:
    """One increment ``Δy_t`` (ignored where ``valid`` is False or it is not finite).

    Returns ``(state, info)``; ``info.alarm`` is the signed regime alarm and
    ``info.direction`` its sign (+1: the increments moved up).
    """
    dtype = state.drift.dtype
    increment = jnp.asarray(increment, dtype)
    use = jnp.asarray(valid) & jnp.isfinite(increment)
    increment = jnp.where(use, increment, 0.0)
    error = increment - state.drift
    scale = jnp.sqrt(jnp.where(state.variance > 0, state.variance, 1.0))
    z = jnp.where(state.count > 0, error / scale, 0.0)
    page, info = page_update(state.page, z, use & (state.count >= WARMUP), h, k)
    scale_rate = jnp.maximum(SCALE_RATE, 1.0 / (state.count + 1.0))
    variance = state.variance + scale_rate * (error**2 - state.variance)
    rate = jnp.maximum(DRIFT_RATE, 1.0 / (state.drift_count + 1.0))
    drift = state.drift + rate * error
    drift_count = state.drift_count + 1.0
    drift = jnp.where(info.alarm, 0.0, drift)
    drift_count = jnp.where(info.alarm, 0.0, drift_count)
    new = SignedDetectorState(
        page=page,
        drift=jnp.where(use, drift, state.drift),
        drift_count=jnp.where(use, drift_count, state.drift_count),
        variance=jnp.where(use, variance, state.variance),
        count=jnp.where(use, state.count + 1.0, state.count),
    )
    return new, info
