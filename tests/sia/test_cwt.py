"""The JAX-native CWT against its oracle, PyWavelets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import pywt

import fnpredict as fp
from fnpredict.sia.cwt import cwt, cwt_frequencies

# Scale ranges per signal length, 40 geometric scales each. They start at 1
# sample (the finest scale a gaus1 wavelet resolves) and end at a quarter of
# the signal (128 -> 32, whose gaus1 filter already has 321 taps, longer than
# the signal) or an eighth (1024 -> 128, 1281 taps): wide enough that the
# zero-padded edges, the longest filters and the FFT's circular wrap are all
# exercised.
SCALE_RANGES = {128: (1.0, 32.0), 1024: (1.0, 128.0)}
N_SCALES = 40

# Contract: max |ours - pywt| / max |pywt| per scale <= 1e-8 in float64. The
# implementation differs from pywt's direct convolution only by FFT round-off,
# ~1e-15 per unit of the largest coefficient (measured: <= 3e-13).
PYWT_RTOL = 1e-8


def _test_signal(length: int) -> np.ndarray:
    # A Brownian path with a jump and an oscillation: every scale sees signal.
    rng = np.random.default_rng(length)
    t = np.arange(length)
    walk = np.cumsum(rng.standard_normal(length))
    return walk + 5.0 * (t >= length // 3) + 3.0 * np.sin(2 * np.pi * t / 37)


def _relative_error_per_scale(ours, reference) -> np.ndarray:
    return np.max(np.abs(np.asarray(ours) - reference), axis=-1) / np.max(np.abs(reference), axis=-1)


@pytest.mark.parametrize("length", sorted(SCALE_RANGES))
@pytest.mark.parametrize("wavelet", ["gaus1", "mexh"])
def test_matches_pywt(wavelet, length):
    signal = _test_signal(length)
    scales = np.geomspace(*SCALE_RANGES[length], N_SCALES)
    reference, frequencies = pywt.cwt(signal, scales, wavelet)
    ours = cwt(jnp.asarray(signal), scales, wavelet)
    assert ours.shape == (N_SCALES, length) and ours.dtype == jnp.float64
    error = _relative_error_per_scale(ours, reference)
    assert error.max() <= PYWT_RTOL, f"max relative error per scale {error.max():.2e}"
    # The frequencies are host-side arithmetic on the same sampled wavelet as
    # pywt's: equal up to the last bits (rtol 1e-14 covers a different
    # association order of the divisions).
    np.testing.assert_allclose(cwt_frequencies(scales, wavelet), frequencies, rtol=1e-14, atol=0.0)
    np.testing.assert_allclose(
        cwt_frequencies(scales, wavelet, sampling_period=0.5), 2.0 * frequencies, rtol=1e-14, atol=0.0
    )


@pytest.mark.parametrize("wavelet", ["gaus1", "mexh"])
def test_exact_filters_are_the_high_precision_limit_of_pywt(wavelet):
    # pywt's table of 2**p samples quantises positions to (ub - lb) / 2**p
    # wavelet units; its error falls with p. At p = 20 the quantum is ~1e-5
    # units (1.5e-5 for mexh), so the closed-form filters must agree to a few
    # 1e-5 of the largest coefficient (measured 5e-6) while the default p = 12
    # table stays ~1e-3 away (measured 3e-4 .. 1.2e-3): the ripple "exact"
    # removes is real and the closed form is what pywt converges to.
    signal = _test_signal(512)
    scales = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
    exact = cwt(jnp.asarray(signal), scales, wavelet, filters="exact")
    fine = pywt.cwt(signal, scales, wavelet, precision=20)[0]
    default = pywt.cwt(signal, scales, wavelet)[0]
    assert _relative_error_per_scale(exact, fine).max() <= 3e-5
    assert _relative_error_per_scale(default, fine).max() >= 1e-4


def test_jit_and_vmap_agree_with_single_calls():
    scales = (1.0, 2.0, 4.0, 8.0)
    batch = np.stack([_test_signal(128) * k for k in (1.0, -2.0, 0.5)])
    batched = jax.jit(jax.vmap(lambda s: cwt(s, scales, "mexh")))(jnp.asarray(batch))
    for row, signal in zip(np.asarray(batched), batch):
        single = np.asarray(cwt(jnp.asarray(signal), scales, "mexh"))
        # vmap vs single call: same algorithm, XLA may reorder the batched
        # FFT's arithmetic; round-off of a few ulp of the largest coefficient.
        np.testing.assert_allclose(row, single, rtol=0.0, atol=1e-13 * np.abs(single).max())


def test_float32_signal_stays_float32():
    signal = _test_signal(128)
    scales = (1.0, 3.0, 9.0)
    ours32 = cwt(jnp.asarray(signal, jnp.float32), scales)
    reference = pywt.cwt(signal, scales, "gaus1")[0]
    assert ours32.dtype == jnp.float32
    # float32 round-off of the FFT path: ~1e-7 * log2(n) of the largest
    # coefficient; 1e-5 leaves a wide margin while catching any real error.
    assert _relative_error_per_scale(ours32, reference).max() <= 1e-5


def test_namespace():
    # fp.sia.cwt is the function DESIGN names, even after the submodule was imported.
    import fnpredict.sia.cwt  # noqa: F401

    assert fp.sia.cwt is cwt
    assert fp.sia.cwt_frequencies is cwt_frequencies


@pytest.mark.parametrize(
    "arguments, match",
    [
        ((np.zeros(8), (1.0, -2.0)), "> 0"),
        ((np.zeros(8), ()), "non-empty"),
        ((np.zeros(8), (1.0,), "morl"), "wavelet"),
        ((np.zeros(8), (1.0,), "gaus1", 0.0), "sampling_period"),
    ],
)
def test_bad_arguments_raise(arguments, match):
    signal, *rest = arguments
    with pytest.raises(ValueError, match=match):
        cwt(jnp.asarray(signal), *rest)


def test_batched_signal_is_rejected():
    # A ValueError in plain use; under the test suite's runtime type checking
    # the jaxtyping " time" annotation rejects it first (a TypeError).
    with pytest.raises((ValueError, TypeError), match="1-D|time"):
        cwt(jnp.zeros((2, 8)), (1.0,))


def test_scale_too_small_raises_like_pywt():
    # Below ~0.1 sample the integrated filter has a single tap; pywt refuses.
    with pytest.raises(ValueError):
        pywt.cwt(np.zeros(16), [0.05], "gaus1")
    with pytest.raises(ValueError, match="too small"):
        cwt(jnp.zeros(16), (0.05,))
