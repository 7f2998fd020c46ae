"""Wavelet-transform modulus-maxima (WTMM) multifractal analysis with fixed shapes.

The pipeline, all traceable (``jit``, ``vmap``, ``scan``) with shapes fixed by
the static scales and moments:

1. **CWT** of the buffer with the ripple-free integrated filters of
   :mod:`fnpredict.sia.cwt` (``filters="exact"``), L1-normalised:
   ``T(a, b) = |W(a, b)| / sqrt(a)``, so that ``T ~ a^h`` at a point of
   Hölder exponent ``h`` (``pywt``'s L2 normalisation gives ``a^(h + 1/2)``).
2. **Modulus maxima** along time per scale.
3. **Skeleton**: each maximum at scale ``a_s`` links to the nearest maximum
   at the next finer scale if it lies in the cone ``|b - b'| <= c a_s``
   (``c = besov_c``, traced).
4. **Sup along lines** (the standard remedy for ``q < 0``, Muzy, Bacry &
   Arneodo 1993): ``M(a, b) = max`` of ``T`` along the linked line over all
   scales ``a' <= a``. Without it, maxima that come close to zero (where a
   line of one sign meets one of the other) dominate ``Z(q < 0, a)``: on 20
   fBm paths (``H = 0.3``, 1024 samples, scales 1..32) a vanishing cone
   (``besov_c = 1e-9``, almost no links) gives a mean ``h(-2)`` of 0.74 to
   1.07 depending on the sample, ``besov_c = 2`` gives 0.32 to 0.35.
   A consequence worth knowing: ``M`` never decreases along a line, so an
   isolated singularity rougher than a jump (a one-sample spike, ``h = -1``)
   reads as ``h = 0``; any positive threshold on ``h_min`` still flags it.
5. **Partition function** ``Z(q, a) = sum_{maxima b at a} M(a, b)^q``, in the
   log domain, and its scaling ``Z(q, a) ~ a^tau(q)``.
6. ``h(q) = dtau/dq`` (exact, see :func:`wtmm`) and ``h_min``.

Boundaries: the buffer is extended by its first value on the left and its last
value on the right. A constant extension is continuous, so it adds no
singularity rougher than the signal's own (at worst a kink, ``h = 1``, which
gaus1 cannot see), and it keeps a jump near the end of the buffer a clean
jump (``h = 0``) at every scale. Zero extension (``pywt``'s) would put a step
of the signal's level at each end, and odd or even reflection would turn a
jump ``k`` samples from the end into a pair of jumps (same sign, or opposite)
that merge at scales above ``k``, changing the exponent the jump reads as.
With this extension no cone of influence needs to be discarded, which
matters here: the newest samples, at the right edge, are the ones the
predictor must watch.
"""

import functools
import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .cwt import WAVELET_SUPPORT, ScalesLike, _cwt, check_scales, check_wavelet

__all__ = ["WTMMResult", "wtmm", "holder_exponent", "HOLDER_SENTINEL"]

# Returned as ``h`` and ``h_min`` when the estimate is invalid (constant or
# non-finite buffer, a scale without maxima). It lies at or above the number of
# vanishing moments of both supported wavelets (gaus1: 1, mexh: 2), the largest
# exponent either can measure: "as regular as the wavelet can see", so an
# unmasked ``h_min < holder_threshold`` never trips a circuit breaker on it.
HOLDER_SENTINEL = 2.0


class WTMMResult(eqx.Module):
    """Outcome of :func:`wtmm`; fixed shapes, no optional fields.

    Attributes:
        tau: scaling exponents ``tau(q)``; 0 where ``valid`` is False.
        h: ``h(q) = dtau/dq``; ``HOLDER_SENTINEL`` where ``valid`` is False.
        dimension: Legendre spectrum ``D(h(q)) = q h(q) - tau(q)``; 0 where
            ``valid`` is False.
        h_min: the smallest Hölder exponent, ``min`` of ``h(q)`` over the
            positive moments; ``HOLDER_SENTINEL`` where ``valid`` is False.
        log_partition: ``log Z(q, a)``; 0 at scales with no maxima (an empty
            sum, see ``n_maxima``).
        n_maxima: number of modulus maxima at each scale.
        valid: the buffer is finite and every scale has at least one maximum.
    """

    tau: Float[Array, " moments"]
    h: Float[Array, " moments"]
    dimension: Float[Array, " moments"]
    h_min: Float[Array, ""]
    log_partition: Float[Array, "moments scales"]
    n_maxima: Int[Array, " scales"]
    valid: Bool[Array, ""]


def _left_pad(scales: tuple[float, ...], wavelet: str) -> int:
    # The coefficient at b reads samples within half a filter length of b; two
    # more keep the neighbours b = -1 and b = N (for maxima at the ends) clean.
    lower, upper = WAVELET_SUPPORT[wavelet]
    return math.ceil(max(scales) * (upper - lower) + 1) // 2 + 2


def _running_max(values, fill):
    """Prefix max along the last axis by recursive doubling (Hillis & Steele).

    ``log2 N`` shifted maxima. ``lax.cummax`` lowers to a Blelloch scan on
    CPU and GPU, whose many small slices and interleaves cost about three
    times as much at the buffer sizes used here (measured at N = 128).
    """
    shift = 1
    while shift < values.shape[-1]:
        padding = jnp.full(values.shape[:-1] + (shift,), fill, dtype=values.dtype)
        values = jnp.maximum(values, jnp.concatenate([padding, values[..., :-shift]], axis=-1))
        shift *= 2
    return values


@functools.lru_cache(maxsize=64)
def _slope_weights(scales: tuple[float, ...], q_moments: tuple[float, ...], burn_in: int) -> np.ndarray:
    """Least-squares slope operators on ``log a``, one row per moment.

    Row ``i`` dotted with ``log Z(q_i, ·)`` is the ordinary least-squares slope
    of ``log Z`` on ``log a``: ``sum_s w_s y_s`` with
    ``w_s = (x_s - mean x) / sum (x - mean x)^2``. For ``q < 0`` the finest
    ``burn_in`` scales get weight 0: there the sup along a line has had few
    finer scales to accumulate over, so ``M`` is still nearly the raw modulus,
    and the smallest raw maxima (which dominate negative moments) bias
    ``tau(q < 0)`` and ``h(q < 0)`` upwards.
    """
    log_scales = np.log(np.asarray(scales))
    rows = []
    for q in q_moments:
        used = np.arange(len(scales)) >= (burn_in if q < 0 else 0)
        centred = np.where(used, log_scales - log_scales[used].mean(), 0.0)
        rows.append(centred / np.sum(centred**2))
    return np.stack(rows)


@functools.partial(jax.jit, static_argnames=("scales", "q_moments", "wavelet", "burn_in"))
def _wtmm(signal, besov_c, scales, q_moments, wavelet, burn_in):
    dtype = signal.dtype
    length = signal.shape[0]
    n_scales = len(scales)
    finite = jnp.all(jnp.isfinite(signal))
    # Measuring from the last sample makes a constant buffer exactly zero (so
    # its transform is exactly zero, not FFT round-off) and turns the right
    # constant extension into the zero extension the CWT applies anyway.
    centred = jnp.where(finite, signal - signal[-1], 0.0)
    pad = _left_pad(scales, wavelet)
    extended = jnp.concatenate([jnp.full((pad,), centred[0], dtype), centred, jnp.zeros((1,), dtype)])
    coefficients = _cwt(extended, scales, wavelet, "exact")[:, pad - 1 :]
    scale_array = jnp.asarray(scales, dtype)
    modulus = jnp.abs(coefficients) / jnp.sqrt(scale_array)[:, None]

    # Maxima below sqrt(eps) of the buffer's largest excursion from its last
    # value are round-off of an (locally) constant signal, not structure: the
    # FFT convolution's error is O(eps log n) relative to that excursion, many
    # orders of magnitude below sqrt(eps) (1.5e-8 in float64, 3e-4 in float32).
    floor = jnp.sqrt(jnp.finfo(dtype).eps) * jnp.max(jnp.abs(centred))
    inner = modulus[:, 1:-1]
    # Strict on the left, loose on the right: a plateau yields one maximum.
    is_max = (inner > modulus[:, :-2]) & (inner >= modulus[:, 2:]) & (inner > floor)
    log_modulus = jnp.log(jnp.where(is_max, inner, 1.0))

    # Nearest maximum at each scale, left and right of every b, by a running
    # max of the maxima's positions (mirrored for the right): O(S N log N)
    # work and O(S N) memory instead of an N x N distance matrix.
    # int32 positions: half the memory traffic of x64's default int64.
    position = jnp.arange(length, dtype=jnp.int32)
    far = 4 * length  # farther than any real distance, small enough for int32
    from_left = jnp.where(is_max, position, -far)
    from_right = jnp.where(is_max, length - 1 - position, -far)[:, ::-1]
    marks = jnp.stack([from_left, from_right])
    reach = _running_max(marks, -far)
    left, right = reach[0], length - 1 - reach[1][:, ::-1]
    take_left = position - left <= right - position
    nearest = jnp.clip(jnp.where(take_left, left, right), 0, length - 1)
    distance = jnp.minimum(position - left, right - position)
    # A maximum at scale s links to the nearest maximum at scale s - 1 inside
    # its cone (and only if that scale has one: without, the distance is at
    # least `far`); anything else points at itself (a line starts there).
    in_cone = (distance[:-1] < far - length) & (distance[:-1].astype(dtype) <= besov_c * scale_array[1:, None])
    linked = is_max[1:] & in_cone
    own = jnp.arange(n_scales * length, dtype=jnp.int32).reshape(n_scales, length)
    finer = jnp.arange(n_scales - 1, dtype=jnp.int32)[:, None] * length + nearest[:-1]
    parent = jnp.concatenate([own[:1], jnp.where(linked, finer, own[1:])]).reshape(-1)
    # Sup along lines by pointer jumping: after k rounds each entry holds the
    # max over itself and its 2^k - 1 nearest ancestors, so ceil(log2 S)
    # rounds cover every line (at most S - 1 ancestors).
    log_sup = log_modulus.reshape(-1)
    for _ in range(max(1, math.ceil(math.log2(n_scales)))):
        log_sup = jnp.maximum(log_sup, log_sup[parent])
        parent = parent[parent]
    log_sup = log_sup.reshape(n_scales, length)

    # log Z(q, a) = logsumexp_b q log M(a, b) over the maxima, and the exact
    # derivative d log Z / dq = sum_b p_b log M with Boltzmann weights
    # p_b = M^q / Z (Arneodo, Bacry & Muzy 1995).
    moments = jnp.asarray(q_moments, dtype)
    exponent = jnp.where(is_max, moments[:, None, None] * log_sup, -jnp.inf)
    n_maxima = jnp.sum(is_max, axis=-1)
    has_max = n_maxima > 0
    peak = jnp.where(has_max, jnp.max(exponent, axis=-1), 0.0)
    boltzmann = jnp.exp(exponent - peak[..., None])
    total = jnp.where(has_max, jnp.sum(boltzmann, axis=-1), 1.0)
    log_partition = jnp.where(has_max, peak + jnp.log(total), 0.0)
    mean_log_sup = jnp.sum(boltzmann * jnp.where(is_max, log_sup, 0.0), axis=-1) / total

    # tau(q) is linear in log Z, so the slope of d log Z / dq is exactly dtau/dq.
    slopes = jnp.asarray(_slope_weights(scales, q_moments, burn_in), dtype)
    tau = jnp.sum(slopes * log_partition, axis=-1)
    h = jnp.sum(slopes * mean_log_sup, axis=-1)

    valid = finite & jnp.all(has_max)
    sentinel = jnp.asarray(HOLDER_SENTINEL, dtype)
    positive = np.asarray(q_moments) > 0
    h_min = jnp.min(h[positive] if positive.any() else h)
    return WTMMResult(
        tau=jnp.where(valid, tau, 0.0),
        h=jnp.where(valid, h, sentinel),
        dimension=jnp.where(valid, moments * h - tau, 0.0),
        h_min=jnp.where(valid, h_min, sentinel),
        log_partition=log_partition,
        n_maxima=n_maxima,
        valid=valid,
    )


def _check_arguments(signal, scales, q_moments, besov_c, wavelet, burn_in):
    if signal.ndim != 1:
        raise ValueError(f"signal must be 1-D (vmap for batches), got shape {signal.shape}")
    scales = check_scales(scales)
    if len(scales) < 2 or any(b <= a for a, b in zip(scales, scales[1:])):
        raise ValueError(f"scales must be at least 2 strictly increasing values, got {scales}")
    q = np.asarray(q_moments, dtype=np.float64)
    if q.ndim != 1 or q.size == 0 or not np.all(np.isfinite(q)):
        raise ValueError(f"q_moments must be a non-empty 1-D sequence of finite values, got {q_moments!r}")
    wavelet = check_wavelet(wavelet)
    if burn_in is None:
        burn_in = len(scales) // 2
    if not (isinstance(burn_in, (int, np.integer)) and 0 <= burn_in <= len(scales) - 2):
        raise ValueError(f"burn_in must be an int in [0, {len(scales) - 2}], got {burn_in!r}")
    if not isinstance(besov_c, jax.core.Tracer):
        value = np.asarray(besov_c)
        if value.shape != () or not np.isfinite(value) or value <= 0:
            raise ValueError(f"besov_c must be a finite scalar > 0, got {besov_c!r}")
    besov_c = jnp.asarray(besov_c, dtype=signal.dtype)
    return scales, tuple(float(v) for v in q), besov_c, wavelet, int(burn_in)


def wtmm(
    signal: Float[Array, " time"],
    scales: ScalesLike,
    q_moments: Sequence[float | int] | np.ndarray,
    besov_c: Float[Array, ""] | float,
    wavelet: str = "gaus1",
    *,
    burn_in: int | None = None,
) -> WTMMResult:
    """Multifractal spectrum of one buffer by the WTMM method.

    With ``T(a, b) = |W(a, b)| / sqrt(a)`` the L1-normalised CWT modulus and
    ``M(a, b)`` its sup along the maxima line through ``(a, b)`` over scales
    ``a' <= a`` (lines linked scale to scale to the nearest finer maximum
    within ``|b - b'| <= besov_c * a``),

        Z(q, a) = sum_{maxima b at scale a} M(a, b)^q  ~  a^tau(q),

    ``tau(q)`` is the least-squares slope of ``log Z(q, ·)`` on ``log a``, and

        h(q) = dtau/dq = slope over log a of sum_b p_b(q, a) log M(a, b),
        p_b(q, a) = M(a, b)^q / Z(q, a),

    the *exact* derivative of the fitted ``tau`` (no finite difference in
    ``q``, so any grid of moments works, gaps around 0 included). For a
    monofractal such as fractional Brownian motion of index ``H``,
    ``tau(q) = q H - 1`` and ``h(q) = H`` for all ``q``.

    ``h_min`` is ``min h(q)`` over the positive moments: under the Legendre
    transform large positive ``q`` select the most singular points
    (``h(q) -> h_min`` as ``q -> +inf``) while negative ``q`` describe the
    most regular ones; ``h(q)`` is non-increasing in theory, and taking the
    minimum guards against a non-monotone finite-sample estimate. With no
    positive moment the minimum runs over all of them.

    Positive moments are fitted over all scales; negative moments over all
    but the ``burn_in`` finest (see Args). Cost: one FFT-based CWT, a few
    ``O(S N)`` passes and ``ceil(log2 S)`` gathers for the line sups; no
    Python loop over time, no ``N x N`` array.

    Args:
        signal: one buffer (``vmap`` for batches). NaN or infinite entries
            make the result invalid.
        scales: static, strictly increasing scales in samples (finest first).
        q_moments: static moments ``q``.
        besov_c: cone factor ``c`` of the linking radius ``c * a``: a traced
            scalar (a hyperparameter), or a positive Python float.
        wavelet: ``"gaus1"`` (measures ``h < 1``) or ``"mexh"`` (``h < 2``).
        burn_in: number of finest scales left out of the fits of negative
            moments, where the sup along lines has not yet accumulated
            (static; default ``len(scales) // 2``).

    Returns:
        A :class:`WTMMResult`; when ``valid`` is False (constant or
        non-finite buffer, a scale without maxima) ``h`` and ``h_min`` hold
        ``HOLDER_SENTINEL`` and ``tau``, ``dimension`` hold 0, all finite.

    Raises:
        ValueError: bad shapes, scales, moments, wavelet, ``burn_in``, or a
            concrete ``besov_c`` that is not a positive finite scalar.

    Example:
        >>> result = fp.sia.wtmm(path, (1.0, 2.0, 4.0, 8.0), (-2, -1, 1, 2, 3, 4), 2.0)
        >>> result.h_min, result.valid

    References:
        Muzy, Bacry & Arneodo (1993), "Multifractal formalism for fractal
        signals: the structure-function approach versus the wavelet-transform
        modulus-maxima method", Phys. Rev. E 47.
        Arneodo, Bacry & Muzy (1995), "The thermodynamics of fractals
        revisited with wavelets", Physica A 213.
    """
    scales, q_moments, besov_c, wavelet, burn_in = _check_arguments(
        signal, scales, q_moments, besov_c, wavelet, burn_in
    )
    return _wtmm(signal, besov_c, scales, q_moments, wavelet, burn_in)


def holder_exponent(
    signal: Float[Array, " time"],
    scales: ScalesLike,
    q_moments: Sequence[float | int] | np.ndarray,
    besov_c: Float[Array, ""] | float,
    wavelet: str = "gaus1",
) -> tuple[Float[Array, ""], Bool[Array, ""]]:
    """``(h_min, valid)`` of :func:`wtmm`: the predictor's circuit-breaker input.

    Args:
        signal: the ring buffer in time order (oldest first).
        scales: static CWT scales, e.g. ``PredictorConfig.scales``.
        q_moments: static moments, e.g. ``PredictorConfig.q_moments``.
        besov_c: traced cone factor, ``Hyperparams.besov_c``.
        wavelet: ``PredictorConfig.wavelet``.

    Returns:
        ``h_min`` (``HOLDER_SENTINEL`` when invalid) and ``valid``.
    """
    result = wtmm(signal, scales, q_moments, besov_c, wavelet)
    return result.h_min, result.valid

