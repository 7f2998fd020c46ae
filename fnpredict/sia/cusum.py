"""One-sided CUSUM for an increase in the scale of the forecast errors.

Each valid error ``e_t`` is standardized by the error scale *before* it,
``z_t = e_t / σ_{t−1}``, and scored by the standardized absolute deviation

.. math::

    s(z) = \\frac{\\min(|z|, 5) - \\sqrt{2/\\pi}}{\\sqrt{1 - 2/\\pi}},

which has mean 0 and variance 1 under the null ``z ~ N(0, 1)`` (``√(2/π)``
and ``1 − 2/π`` are the mean and variance of ``|z|``) and mean
``(c·√(2/π) − √(2/π))/√(1 − 2/π) ≈ 1.32 (c − 1)`` when the error scale grows
by a factor ``c``. The statistic is the classic upper CUSUM

.. math:: G^+_t = \\max(0,\\ G^+_{t-1} + s(z_t) - k),

with ``k = cusum_k`` the slack per step, in the same null-standard-deviation
units as ``s``. Why ``|z|`` and not ``(z² − 1)/√2``: both detect a scale
increase, but the square's chi-square tail makes the null statistic jumpy
(the CUSUM's false-alarm rate is governed by the score's right tail), and
under heavy-tailed errors ``z²`` has infinite variance where ``|z|`` has a
finite one; ``|z|`` trades a little power for a much steadier null.

Winsorising ``|z|`` at 5 bounds one step's contribution to
``s ≤ (5 − √(2/π))/√(1 − 2/π) ≈ 6.97``, below the default ``h = 8``: a
single gross outlier (a 1e12 glitch) cannot raise the alarm alone, only a
run of large errors can. A Gaussian exceeds 5σ with probability 6e-7, so the
null score is untouched.

The alarm threshold widens with the tails of the recent errors:

.. math:: h_t = h\\,\\big(1 + \\max(0, \\ln(\\kappa_t / 3))\\big) \\ \\ge h,

``κ_t`` the (non-excess) kurtosis of the last ``window`` errors and ``h =
cusum_h``. Statistic and threshold are both dimensionless; thin tails
(``κ < 3``) never lower the threshold below ``h``. Alarm when ``G⁺_t > h_t``.

Error scale: ``σ²`` is an exponentially weighted mean of the squared errors,
``σ²_t = σ²_{t−1} + r_t (e_t² − σ²_{t−1})`` with rate ``r_t = max(α,
1/(n_t + 1))``, ``n_t`` the number of errors absorbed so far (``α =
error_alpha``). The first error sets ``σ² = e_1²`` (``r = 1``) and the next
ones average in equally until ``1/(n+1)`` falls to ``α``, so the start is a
plain running mean rather than an EMA biased towards an arbitrary initial
value. Warm-up: ``G⁺`` stays 0 until 32 errors have been absorbed (at
``n = 32`` the relative standard error of ``σ`` is about ``1/√64 ≈ 0.13``
for Gaussian errors), so a noisy early ``σ`` cannot fire a false alarm.
After warm-up the squared error entering ``σ²`` is winsorised at
``25 σ²_{t−1}`` (the same 5σ), so one 1e12 glitch multiplies ``σ²`` by at
most ``1 + 24α`` instead of blinding the detector for thousands of steps.

Reset (:func:`cusum_reset`, applied by the predictor after an alarm):
``G⁺ → 0`` and ``n → 1``, keeping ``σ²`` as a single pseudo-observation.
``σ`` then re-adapts at the running-mean rate ``1/(n+1)`` (much faster than
``α``) and the CUSUM is muted for another warm-up. Why: an alarm usually
means the error scale has changed; with the old ``σ`` and slow EMA the new
regime's errors would keep ``|z|`` large and fire an alarm cascade (one
every few steps for ~``1/α`` steps) for what is a single change.

Missing errors (``valid`` False) leave the state unchanged. Everything is
finite for errors up to ±``finfo.max`` (errors are clipped to
``√finfo.max / 10`` in magnitude, 1.3e153 in float64, before squaring) and
for constant zero errors (``σ`` floored at the smallest normal number).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

__all__ = [
    "CusumState",
    "CusumInfo",
    "cusum_init",
    "cusum_update",
    "cusum_reset",
    "cusum_threshold",
    "rolling_kurtosis",
    "scale_score",
]

#: Winsorisation point of |z| (score and σ² update), see the module docstring.
STANDARDIZED_CAP = 5.0
#: Mean and standard deviation of |z| for z ~ N(0, 1).
_HALF_NORMAL_MEAN = math.sqrt(2.0 / math.pi)
_HALF_NORMAL_STD = math.sqrt(1.0 - 2.0 / math.pi)
#: Errors absorbed into σ² before the CUSUM accumulates (after init or reset).
WARMUP = 32
#: Fewest errors in the window for a kurtosis estimate; below it κ = 3 (the
#: Gaussian value, neutral for the threshold). An n-point sample kurtosis is
#: at most n, so with fewer than 8 points it cannot even express moderately
#: heavy tails and its sampling noise dominates.
MIN_KURTOSIS_COUNT = 8
#: Saturation of the error counter, far below int32 overflow; only
#: ``n ≥ WARMUP`` and ``1/(n+1) < α`` matter once n is large.
_COUNT_CAP = 2**30


class CusumState(eqx.Module):
    """Carried CUSUM state (one asset).

    Attributes:
        drift: the statistic ``G⁺ ≥ 0`` (null-standard-deviation units).
        variance: ``σ²``, the exponentially weighted mean squared error (in
            squared units of the series; 1 before the first error).
        count: errors absorbed into ``σ²`` since init or the last reset
            (saturating at 2**30).
        window: ring buffer of the last ``window`` errors (raw units; slots
            not yet written hold 0 and are masked out).
        window_index: slot the next error goes to.
        window_count: how many slots hold real errors (0..window).
    """

    drift: Float[Array, ""]
    variance: Float[Array, ""]
    count: Int[Array, ""]
    window: Float[Array, " time"]
    window_index: Int[Array, ""]
    window_count: Int[Array, ""]

    @property
    def sigma(self) -> Float[Array, ""]:
        """The error scale ``σ = √σ²`` in the units of the series."""
        # Double where: √ has an infinite derivative at 0 (σ² = 0 before the
        # first error), and 0·∞ = NaN would poison a gradient through σ.
        positive = self.variance > 0
        return jnp.where(positive, jnp.sqrt(jnp.where(positive, self.variance, 1.0)), 0.0)


class CusumInfo(eqx.Module):
    """Per-step CUSUM diagnostics (no sentinels; all finite).

    Attributes:
        alarm: ``G⁺ > h_t`` after this step's (valid) error; False on a
            missing error.
        drift: ``G⁺_t`` after the update.
        distance_to_alarm: ``h_t − G⁺_t`` (negative when alarmed).
        kurtosis: ``κ_t`` of the error window (3 until it holds 8 errors or
            while it has zero spread).
        threshold: the adaptive threshold ``h_t ≥ cusum_h``.
        sigma: ``σ_t``, the error scale after absorbing this error, in the
            units of the series (the scale the energy gradient standardizes
            by).
        standardized_error: ``z_t = e_t/σ_{t−1}`` winsorised at ±5 (0 on a
            missing error).
    """

    alarm: Bool[Array, ""]
    drift: Float[Array, ""]
    distance_to_alarm: Float[Array, ""]
    kurtosis: Float[Array, ""]
    threshold: Float[Array, ""]
    sigma: Float[Array, ""]
    standardized_error: Float[Array, ""]


def cusum_init(window: int, dtype=jnp.float64) -> CusumState:
    """A fresh CUSUM state: ``G⁺ = 0``, no errors seen, empty window.

    Args:
        window: length of the rolling error window for the kurtosis
            (``PredictorConfig.cusum_window``, ≥ 8).
        dtype: floating dtype of the state.

    Returns:
        The initial :class:`CusumState` (``σ = 1`` until the first
        error replaces it).

    Raises:
        ValueError: ``window`` is not an int ≥ 8.
    """
    if not isinstance(window, int) or isinstance(window, bool) or window < MIN_KURTOSIS_COUNT:
        raise ValueError(f"cusum_init: window must be an int >= {MIN_KURTOSIS_COUNT}, got {window!r}")
    zero_int = jnp.zeros((), jnp.int32)
    return CusumState(
        drift=jnp.zeros((), dtype),
        variance=jnp.ones((), dtype),
        count=zero_int,
        window=jnp.zeros((window,), dtype),
        window_index=zero_int,
        window_count=zero_int,
    )


def rolling_kurtosis(window: Float[Array, " time"], count: Int[Array, ""]) -> Float[Array, ""]:
    """Sample kurtosis ``m₄/m₂²`` of the first ``count`` entries of a window.

    Moments are central and use the ``1/n`` normalisation (the Gaussian value
    is 3, not 0). Deviations are divided by their largest magnitude first,
    which leaves the ratio unchanged and makes the fourth powers overflow-proof
    for any finite entries; the result lies in ``[1, count]``.

    Args:
        window: the error window (only the first ``count`` slots are read).
        count: how many slots hold data.

    Returns:
        ``κ``, or 3 (neutral) when fewer than 8 entries are present or they
        are all equal.
    """
    size = window.shape[0]
    mask = jnp.arange(size, dtype=count.dtype) < count
    n = jnp.maximum(count, 1).astype(window.dtype)
    mean = jnp.sum(jnp.where(mask, window, 0.0)) / n
    deviation = jnp.where(mask, window - mean, 0.0)
    spread = jnp.max(jnp.abs(deviation))
    has_spread = spread > 0.0
    scaled = deviation / jnp.where(has_spread, spread, 1.0)
    m2 = jnp.sum(scaled**2) / n
    m4 = jnp.sum(scaled**4) / n
    kurtosis = m4 / jnp.where(has_spread, m2**2, 1.0)
    ok = has_spread & (count >= MIN_KURTOSIS_COUNT)
    return jnp.where(ok, kurtosis, jnp.asarray(3.0, window.dtype))


def scale_score(z: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """The CUSUM score of standardized errors: ``(min(|z|, 5) − √(2/π)) / √(1 − 2/π)``.

    Mean 0 and variance 1 for ``z ~ N(0, 1)`` (the 5σ winsorisation changes
    them by less than 1e-5); at most ≈ 6.97.

    Args:
        z: standardized errors ``e/σ`` (dimensionless), any shape.

    Returns:
        The scores, same shape.
    """
    return (jnp.minimum(jnp.abs(z), STANDARDIZED_CAP) - _HALF_NORMAL_MEAN) / _HALF_NORMAL_STD


def cusum_threshold(kurtosis: Float[Array, ""], cusum_h: Float[Array, ""]) -> Float[Array, ""]:
    """Adaptive alarm threshold ``h (1 + max(0, ln(κ/3)))``, never below ``h``.

    ``κ = 3`` (Gaussian tails) keeps ``h``; heavier tails widen it
    logarithmically (``κ = 9`` gives ``2.1 h``), thinner ones do not narrow it.

    Args:
        kurtosis: ``κ`` of the recent errors (positive).
        cusum_h: the base threshold ``h > 0`` (dimensionless).

    Returns:
        ``h_t`` in the units of ``G⁺``.
    """
    return cusum_h * (1.0 + jnp.log(jnp.maximum(kurtosis, 3.0) / 3.0))


def cusum_update(
    state: CusumState,
    error: Float[Array, ""],
    valid: Bool[Array, ""],
    cusum_h: Float[Array, ""],
    cusum_k: Float[Array, ""],
    error_alpha: Float[Array, ""],
) -> tuple[CusumState, CusumInfo]:
    """Absorb one forecast error: standardize, score, accumulate, test.

    See the module docstring for the maths. One ``O(window)`` pass (the
    kurtosis); no data-dependent control flow.

    Args:
        state: the carried :class:`CusumState`.
        error: ``e_t = y_t − ŷ_t`` in the units of the series.
        valid: whether ``e_t`` exists (False: missing observation; a
            non-finite ``error`` is treated as missing too). An invalid error
            leaves the state unchanged.
        cusum_h: base threshold ``h > 0`` (null standard deviations).
        cusum_k: slack ``k ≥ 0`` per step (null standard deviations).
        error_alpha: EMA rate ``α ∈ (0, 1]`` of ``σ²``.

    Returns:
        ``(state, info)``: the new state and a :class:`CusumInfo`.

    Example:
        >>> state = cusum_init(64)
        >>> state, info = cusum_update(state, jnp.array(0.3), jnp.array(True),
        ...                            jnp.array(8.0), jnp.array(0.5), jnp.array(0.02))
        >>> round(float(info.sigma), 12), bool(info.alarm)   # σ = |e_1| after one error
        (0.3, False)
    """
    dtype = state.variance.dtype
    finfo = jnp.finfo(dtype)
    valid = jnp.asarray(valid, bool) & jnp.isfinite(error)
    # Clip before squaring so that 25·e² stays below finfo.max.
    error_cap = math.sqrt(float(finfo.max)) / (2.0 * STANDARDIZED_CAP)
    error = jnp.clip(jnp.where(valid, error, 0.0), -error_cap, error_cap).astype(dtype)

    # Differentiation: only σ² is differentiable (it scales the weight rule's
    # losses, a forecast path); the test itself (z, G⁺, the kurtosis window)
    # is a diagnostic and sits behind stop_gradient (DESIGN §2).
    test_error = jax.lax.stop_gradient(error)
    # Standardize by the scale before this error (floored: constant zero errors).
    sigma_before = jnp.maximum(jax.lax.stop_gradient(state.sigma), finfo.tiny)
    z = jnp.clip(test_error / sigma_before, -STANDARDIZED_CAP, STANDARDIZED_CAP)
    score = scale_score(z)
    armed = state.count >= WARMUP
    drift = jnp.where(armed, jnp.maximum(0.0, state.drift + score - cusum_k), 0.0)

    # σ² update: running mean at the start, EMA at rate α after; winsorised at
    # 5σ once armed (during warm-up σ is not yet trustworthy enough to clip by).
    rate = jnp.maximum(error_alpha, 1.0 / (state.count + 1).astype(dtype))
    squared = jnp.where(armed, jnp.minimum(error**2, STANDARDIZED_CAP**2 * state.variance), error**2)
    variance = state.variance + rate * (squared - state.variance)

    size = state.window.shape[0]
    candidate = CusumState(
        drift=drift.astype(dtype),
        variance=variance.astype(dtype),
        count=jnp.minimum(state.count + 1, _COUNT_CAP),
        window=state.window.at[state.window_index].set(test_error),
        window_index=(state.window_index + 1) % size,
        window_count=jnp.minimum(state.window_count + 1, size),
    )
    new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(valid, new, old), candidate, state)

    kurtosis = rolling_kurtosis(new_state.window, new_state.window_count)
    threshold = cusum_threshold(kurtosis, cusum_h).astype(dtype)
    info = CusumInfo(
        alarm=valid & (new_state.drift > threshold),
        drift=new_state.drift,
        distance_to_alarm=threshold - new_state.drift,
        kurtosis=kurtosis,
        threshold=threshold,
        sigma=new_state.sigma,
        standardized_error=jnp.where(valid, z, 0.0).astype(dtype),
    )
    return new_state, info


def cusum_reset(state: CusumState) -> CusumState:
    """Restart detection after an alarm: ``G⁺ → 0``, ``σ`` re-adapts fast.

    The error count drops to 1 (if any error was seen), so ``σ²`` keeps its
    value as one pseudo-observation, new errors average in at rate
    ``1/(n+1)``, and ``G⁺`` stays 0 through a fresh 32-error warm-up. The
    kurtosis window is kept: it describes the errors, not the detector.

    Args:
        state: the state after the alarming update.

    Returns:
        The reset state (apply it under ``jnp.where(alarm, ...)`` in a traced
        step).
    """
    return CusumState(
        drift=jnp.zeros_like(state.drift),
        variance=state.variance,
        count=jnp.minimum(state.count, 1),
        window=state.window,
        window_index=state.window_index,
        window_count=state.window_count,
    )
