"""JAX-native continuous wavelet transform, numerically equal to ``pywt.cwt``.

PyWavelets computes ``pywt.cwt(signal, scales, wavelet)`` (``method="conv"``)
with *integrated* wavelets rather than sampled ones. With
``psi`` sampled on ``2**12`` points ``x_k`` of its support ``[lb, ub]`` and
step ``dx``, the running integral

    Psi_k = dx * sum_{i <= k} psi(x_i)

is resampled at scale ``a`` as ``f_a[j] = Psi[floor(j / (a dx))]`` for
``j = 0 .. ceil(a (ub - lb) + 1) - 1`` (indices past the table dropped),
reversed, convolved with the signal, differenced and centred:

    W(a, ·) = -sqrt(a) * diff(signal * reverse(f_a))[d_lo : -d_hi],
    d = (len(f_a) - 2) / 2,  d_lo = floor(d),  d_hi = ceil(d).

This module builds the same ``f_a`` in NumPy from the closed-form wavelets
(no PyWavelets call), folds the difference and the ``-sqrt(a)`` factor into
the filters (``g_a[k] = -sqrt(a) (f_a[k] - f_a[k-1])``), aligns every scale's
filter on a common offset, and evaluates all scales with one real FFT of the
signal: the result is ``pywt.cwt``'s coefficient array to FFT round-off
(~1e-15 relative to the largest coefficient of a scale, far inside the
1e-8 contract the tests check). The filters depend only on the static
``scales``, ``wavelet`` and signal length, so they are compile-time constants
and the transform is jittable, vmappable and differentiable in the signal.

``filters="exact"`` swaps the table for the closed-form running integral
(see :func:`cwt`), removing the table's quantisation ripple.

PyWavelets is not used at run time; it is the test oracle.
"""

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["cwt", "cwt_frequencies"]

# PyWavelets' ``wavefun(precision)`` samples a continuous wavelet on
# ``2**precision`` points and ``pywt.cwt`` uses ``precision=12`` by default;
# matching it is what makes the integrated filters (and so the output) equal.
_PRECISION = 12

# Effective supports [lb, ub] PyWavelets assigns (``ContinuousWavelet.lower_bound``
# / ``upper_bound``); they fix the filter length ceil(a (ub - lb) + 1).
WAVELET_SUPPORT: dict[str, tuple[float, float]] = {"gaus1": (-5.0, 5.0), "mexh": (-8.0, 8.0)}

# How the integrated wavelet is evaluated, see :func:`cwt`.
FILTERS: tuple[str, ...] = ("pywt", "exact")

ScalesLike = Sequence[float | int] | np.ndarray


def _psi(wavelet: str, x: np.ndarray) -> np.ndarray:
    """Closed-form real wavelets with PyWavelets' normalisation (unit L2 norm)."""
    if wavelet == "gaus1":
        # d/dx exp(-x^2) = -2 x exp(-x^2), divided by (pi/2)^(1/4) for unit L2 norm.
        return -2.0 * x * np.exp(-(x**2)) / np.sqrt(np.sqrt(np.pi / 2.0))
    if wavelet == "mexh":
        # Ricker: 2 / (sqrt(3) pi^(1/4)) (1 - x^2) exp(-x^2 / 2).
        return 2.0 / (np.sqrt(3.0) * np.pi**0.25) * (1.0 - x**2) * np.exp(-(x**2) / 2.0)
    raise ValueError(f"wavelet must be one of {tuple(WAVELET_SUPPORT)}, got {wavelet!r}")


def _antiderivative(wavelet: str, t: np.ndarray) -> np.ndarray:
    """Closed-form running integrals Psi(t) = int_{-inf}^t psi of the wavelets above."""
    if wavelet == "gaus1":
        # d/dt exp(-t^2) = -2 t exp(-t^2).
        return np.exp(-(t**2)) / np.sqrt(np.sqrt(np.pi / 2.0))
    # mexh: d/dt t exp(-t^2 / 2) = (1 - t^2) exp(-t^2 / 2).
    return 2.0 / (np.sqrt(3.0) * np.pi**0.25) * t * np.exp(-(t**2) / 2.0)


def _wavefun(wavelet: str) -> tuple[np.ndarray, np.ndarray]:
    lower, upper = WAVELET_SUPPORT[wavelet]
    x = np.linspace(lower, upper, 2**_PRECISION)
    return _psi(wavelet, x), x


def check_scales(scales: ScalesLike) -> tuple[float, ...]:
    """Validate static CWT scales and return them as a hashable tuple of floats."""
    array = np.asarray(scales, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"scales must be a non-empty 1-D sequence, got shape {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ValueError(f"scales must be finite and > 0, got {array}")
    return tuple(float(s) for s in array)


def check_wavelet(wavelet: str) -> str:
    """Validate a wavelet name."""
    if wavelet not in WAVELET_SUPPORT:
        raise ValueError(f"wavelet must be one of {tuple(WAVELET_SUPPORT)}, got {wavelet!r}")
    return wavelet


def _integrated_filter(wavelet: str, scale: float, filters: str) -> np.ndarray:
    """The reversed integrated wavelet ``f_a`` of one scale.

    ``"pywt"``: PyWavelets' table ``int_psi[j][::-1]``, the rectangle-rule
    running integral on ``2**12`` points read at ``j = floor(k / (a dx))``.
    ``"exact"``: the closed-form ``Psi(lb + k / a)`` at the same ``k``, free
    of the table's quantisation (see :func:`cwt`).
    """
    psi, x = _wavefun(wavelet)
    step = x[1] - x[0]
    j = (np.arange(scale * (x[-1] - x[0]) + 1) / (scale * step)).astype(int)
    j = j[j < psi.size]
    if filters == "pywt":
        return (np.cumsum(psi) * step)[j][::-1]
    return _antiderivative(wavelet, x[0] + np.arange(j.size) / scale)[::-1]


def _fast_length(n: int) -> int:
    """Smallest 2^i 3^j 5^k >= n: sizes the FFT back-ends transform fastest."""
    best = 1 << max(n - 1, 0).bit_length()
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            size = power35
            while size < n:
                size *= 2
            best = min(best, size)
            power35 *= 3
        power5 *= 5
    return best


@functools.lru_cache(maxsize=64)
def _filter_bank(scales: tuple[float, ...], wavelet: str, length: int, filters: str):
    """Frequency responses of all scales' filters, aligned on a common output offset.

    Returns ``(spectra, fft_size, offset)`` with ``spectra`` of shape
    ``(len(scales), fft_size // 2 + 1)`` (complex128) such that
    ``irfft(rfft(signal, fft_size) * spectra)[:, offset : offset + length]``
    is the CWT (``pywt.cwt(signal, scales, wavelet)[0]`` for ``"pywt"`` filters).
    """
    differenced, offsets = [], []
    for scale in scales:
        f = _integrated_filter(wavelet, scale, filters)
        if f.size < 2:
            # pywt raises the same: a one-tap integrated filter has no difference.
            raise ValueError(f"scale {scale} is too small for wavelet {wavelet!r}")
        # -sqrt(a) * diff(signal * f) = signal * g with g the differenced filter.
        differenced.append(-np.sqrt(scale) * np.diff(np.concatenate([[0.0], f, [0.0]])))
        # Output sample n of pywt is full-convolution index n + floor(d) + 1.
        offsets.append(math.floor((f.size - 2) / 2) + 1)
    offset = max(offsets)
    width = max(offset - o + g.size for o, g in zip(offsets, differenced))
    bank = np.zeros((len(scales), width))
    for row, (o, g) in enumerate(zip(offsets, differenced)):
        # Delaying filter `row` by offset - o puts every scale's sample n at n + offset.
        bank[row, offset - o : offset - o + g.size] = g
    # Circular convolution equals the linear one on the samples read,
    # [offset, offset + length), when no wrapped term lands there: linear
    # samples i >= P (up to length + width - 2) wrap to i - P, which must stay
    # below offset, and the window itself must fit below P.
    fft_size = _fast_length(max(length + width - 1 - offset, offset + length))
    return np.fft.rfft(bank, fft_size, axis=-1), fft_size, offset


@functools.partial(jax.jit, static_argnames=("scales", "wavelet", "filters"))
def _cwt(signal, scales, wavelet, filters):
    length = signal.shape[-1]
    spectra, fft_size, offset = _filter_bank(scales, wavelet, length, filters)
    complex_dtype = jnp.complex128 if signal.dtype == jnp.float64 else jnp.complex64
    spectrum = jnp.fft.rfft(signal, fft_size) * jnp.asarray(spectra, dtype=complex_dtype)
    full = jnp.fft.irfft(spectrum, fft_size, axis=-1)
    return full[:, offset : offset + length].astype(signal.dtype)


def cwt(
    signal: Float[Array, " time"],
    scales: ScalesLike,
    wavelet: str = "gaus1",
    sampling_period: float = 1.0,
    *,
    filters: str = "pywt",
) -> Float[Array, "scales time"]:
    """Continuous wavelet transform, equal to ``pywt.cwt(signal, scales, wavelet)[0]``.

    For a real wavelet ``psi`` with unit L2 norm the coefficient at scale ``a``
    and position ``b`` is

        W(a, b) = sqrt(a) sum_m signal[m] (Psi(t_m + 1/a) - Psi(t_m)),
        t_m = (m - b) / a  (up to PyWavelets' sub-sample centring),

    with ``Psi`` the running integral of ``psi``: the wavelet averaged over
    each sample's cell, ``~ a^(-1/2) sum_m signal[m] psi((m - b) / a)``, with
    zero extension of the signal beyond its ends. All scales share one real
    FFT of the signal; the per-scale filters are constants built in NumPy once
    per ``(scales, wavelet, length, filters)``.

    ``filters="pywt"`` (default) reads ``Psi`` from PyWavelets' rectangle-rule
    table of ``2**12`` points with positions floored to the table grid,
    reproducing ``pywt.cwt`` to round-off. That quantisation leaves a
    saw-tooth ripple of ~1e-3 of the coefficients (PyWavelets' "zipper"),
    which at large scales creates spurious modulus maxima. ``filters="exact"``
    evaluates the closed-form ``Psi`` instead (gaus1:
    ``exp(-t^2) / (pi/2)^(1/4)``; mexh: ``2 / (sqrt(3) pi^(1/4)) t exp(-t^2/2)``):
    the limit of ``pywt.cwt(..., precision=p)`` as ``p`` grows, ripple-free;
    the WTMM uses it.

    Args:
        signal: real samples, one series (``vmap`` for batches).
        scales: static positive scales in samples (tuple, list or NumPy array;
            not traced: the filter lengths depend on them).
        wavelet: ``"gaus1"`` or ``"mexh"`` (PyWavelets' names).
        sampling_period: sampling interval, as in ``pywt.cwt``; like there it
            does not change the coefficients (it only scales the frequencies,
            see :func:`cwt_frequencies`) and is accepted for call compatibility.
        filters: ``"pywt"`` or ``"exact"`` (static), see above.

    Returns:
        Coefficients of shape ``(len(scales), len(signal))``, in the signal's dtype.

    Raises:
        ValueError: non-1-D signal, non-positive scales, a scale below the
            wavelet's resolution (about 0.1; PyWavelets raises too), unknown
            wavelet or filters, or a non-positive sampling period.

    Example:
        >>> coefficients = fp.sia.cwt(jnp.cumsum(noise), (2.0, 4.0, 8.0), "mexh")
    """
    scales = check_scales(scales)
    wavelet = check_wavelet(wavelet)
    if filters not in FILTERS:
        raise ValueError(f"filters must be one of {FILTERS}, got {filters!r}")
    if isinstance(sampling_period, bool) or not (
        isinstance(sampling_period, (int, float)) and math.isfinite(sampling_period) and sampling_period > 0
    ):
        raise ValueError(f"sampling_period must be a positive finite number, got {sampling_period!r}")
    if signal.ndim != 1:
        raise ValueError(f"signal must be 1-D (vmap for batches), got shape {signal.shape}")
    return _cwt(signal, scales, wavelet, filters)


def cwt_frequencies(scales: ScalesLike, wavelet: str = "gaus1", sampling_period: float = 1.0) -> np.ndarray:
    """Frequencies of the CWT scales, equal to ``pywt.cwt(...)[1]`` (host-side NumPy).

    ``f(a) = f_c / (a * sampling_period)`` with ``f_c`` the central frequency of
    the sampled wavelet: the dominant non-zero bin of its discrete Fourier
    transform, ``(k - 1) / (ub - lb)``, computed as PyWavelets does.

    Args:
        scales: positive scales in samples.
        wavelet: ``"gaus1"`` or ``"mexh"``.
        sampling_period: sampling interval; the frequencies are in its inverse unit.

    Returns:
        A float64 NumPy array of shape ``(len(scales),)``.
    """
    scales = np.asarray(check_scales(scales))
    psi, x = _wavefun(check_wavelet(wavelet))
    index = int(np.argmax(np.abs(np.fft.fft(psi)[1:]))) + 2
    if index > psi.size / 2:
        index = psi.size - index + 2
    central = 1.0 / (float(x[-1] - x[0]) / (index - 1))
    return central / scales / sampling_period

