"""WTMM multifractal analysis: oracles (fBm of known H, a step, a NumPy
reference of the skeleton), the circuit-breaker use case, bad input."""

import csv
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnpredict as fp
from fnpredict.sia.cwt import cwt
from fnpredict.sia.wtmm import HOLDER_SENTINEL, WTMMResult, _wtmm, holder_exponent, wtmm

HURSTS = (0.3, 0.5, 0.7)
FBM_LENGTH = 1024
FBM_PATHS = 20
# 16 geometric scales from 1 to 32 samples (2 per octave is enough for the
# lines to be linked; 32 = 1/32 of the path keeps ~8 maxima at the coarsest
# scale). The default burn-in leaves the 8 finest out of the negative-q fits.
FBM_SCALES = tuple(np.geomspace(1.0, 32.0, 16))
MOMENTS = (-2.0, -1.0, 1.0, 2.0, 3.0, 4.0)
# Acceptance: the mean over 20 paths within 0.1 of H. The path-to-path spread
# of h_min is ~0.05 (measured), so the mean's standard error is ~0.012 and
# 0.1 is dominated by the estimator's bias, not by luck.
HURST_TOLERANCE = 0.1


def fbm_davies_harte(hurst: float, length: int, n_paths: int, rng: np.random.Generator) -> np.ndarray:
    """Exact fractional Brownian motion by circulant embedding (Davies & Harte 1987).

    The autocovariance of fractional Gaussian noise,
    ``gamma(k) = (|k+1|^2H - 2|k|^2H + |k-1|^2H) / 2``, embedded in a circulant
    matrix of size ``2 length`` has non-negative eigenvalues for every
    ``H`` in (0, 1); colouring complex white noise by their square roots gives
    two independent exact fGn samples (real and imaginary parts; we keep the
    real one). Paths start at 0 with unit-variance increments.
    """
    lags = np.arange(length + 1)
    power = 2 * hurst
    gamma = 0.5 * (np.abs(lags + 1) ** power - 2 * lags**power + np.abs(lags - 1) ** power)
    row = np.concatenate([gamma, gamma[-2:0:-1]])
    eigenvalues = np.fft.fft(row).real
    # Exact non-negativity holds in theory; allow round-off only.
    assert eigenvalues.min() > -1e-9 * eigenvalues.max()
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    noise = rng.standard_normal((n_paths, row.size)) + 1j * rng.standard_normal((n_paths, row.size))
    increments = np.fft.fft(np.sqrt(eigenvalues / row.size) * noise, axis=-1)[:, : length - 1].real
    return np.concatenate([np.zeros((n_paths, 1)), np.cumsum(increments, axis=-1)], axis=-1)


def test_davies_harte_has_the_fgn_correlation():
    # The generator is itself an oracle input: its increments must have the
    # fGn lag-1 correlation 2^(2H-1) - 1. 4000 paths x 63 increments pooled:
    # the estimate's standard error is below 0.003, so 0.02 is > 6 SE.
    rng = np.random.default_rng(0)
    for hurst in HURSTS:
        increments = np.diff(fbm_davies_harte(hurst, 64, 4000, rng), axis=-1)
        correlation = np.mean(increments[:, 1:] * increments[:, :-1]) / np.mean(increments**2)
        np.testing.assert_allclose(correlation, 2 ** (2 * hurst - 1) - 1, rtol=0.0, atol=0.02)
        np.testing.assert_allclose(np.mean(increments**2), 1.0, rtol=0.0, atol=0.02)


@pytest.fixture(scope="module")
def fbm_runs():
    rng = np.random.default_rng(2024)
    paths = np.concatenate([fbm_davies_harte(h, FBM_LENGTH, FBM_PATHS, rng) for h in HURSTS])
    # One compilation for every path and both cone factors (besov_c traced).
    run = jax.jit(jax.vmap(lambda path, c: wtmm(path, FBM_SCALES, MOMENTS, c), in_axes=(0, None)))
    with_lines = run(jnp.asarray(paths), jnp.asarray(2.0))
    without_lines = run(jnp.asarray(paths), jnp.asarray(1e-9))
    def split(result):
        return jax.tree_util.tree_map(
            lambda leaf: np.asarray(leaf).reshape(len(HURSTS), FBM_PATHS, *leaf.shape[1:]), result
        )

    return split(with_lines), split(without_lines)


@pytest.mark.parametrize("index, hurst", list(enumerate(HURSTS)))
def test_fbm_hurst_recovered(fbm_runs, index, hurst):
    result = jax.tree_util.tree_map(lambda leaf: leaf[index], fbm_runs[0])
    assert result.valid.all()
    mean_h = result.h.mean(axis=0)
    mean_h_min = result.h_min.mean()
    report = f"H={hurst}: mean h_min {mean_h_min:.3f}, mean h(q) {dict(zip(MOMENTS, mean_h.round(3)))}"
    # h_min is what the predictor thresholds; for a monofractal it estimates H.
    assert abs(mean_h_min - hurst) <= HURST_TOLERANCE, report
    # h(q) = H for every q, the negative moments included (the sup along
    # lines at work); h(2) is the classic single-number estimate.
    np.testing.assert_allclose(mean_h, hurst, rtol=0.0, atol=HURST_TOLERANCE, err_msg=report)
    # tau(q) = q H - 1 for fBm (lines fill the time axis: D = 1). Over 1..32
    # samples the count of maxima falls slightly slower than 1/a (measured
    # 328 -> 14, an exponent of -0.91), which lifts tau by up to ~0.1 on top
    # of q times the h bias: 0.2 (measured max 0.1).
    np.testing.assert_allclose(
        result.tau.mean(axis=0), np.asarray(MOMENTS) * hurst - 1.0, rtol=0.0, atol=0.2, err_msg=report
    )


def test_sup_along_lines_is_what_fixes_negative_moments(fbm_runs):
    # With a vanishing cone (besov_c = 1e-9) maxima are almost never linked,
    # M is the raw modulus, and near-zero maxima dominate Z(q < 0): h(-2) on
    # H = 0.3 misses by far more than the tolerance (measured 0.74 on these
    # paths, 1.07 on another sample), while the positive moments barely
    # change (0.26..0.27). This is the failure the remedy fixes.
    with_lines, without_lines = fbm_runs
    q_minus_two = MOMENTS.index(-2.0)
    raw = without_lines.h[0, :, q_minus_two].mean()
    remedied = with_lines.h[0, :, q_minus_two].mean()
    assert abs(raw - HURSTS[0]) > 3 * HURST_TOLERANCE
    assert abs(remedied - HURSTS[0]) <= HURST_TOLERANCE


def _reference_log_partition(signal, scales, moments, besov_c):
    """Plain NumPy loops over scales and maxima: the WTMM recipe step by step."""
    centred = signal - signal[-1]
    pad = 4 * len(signal)  # wider than any filter used here: ends are flat
    extended = np.concatenate([np.full(pad, centred[0]), centred, np.zeros(pad)])
    coefficients = np.asarray(cwt(jnp.asarray(extended), scales, "gaus1", filters="exact"))
    modulus = np.abs(coefficients[:, pad - 1 : pad + len(signal) + 1]) / np.sqrt(np.asarray(scales))[:, None]
    floor = np.sqrt(np.finfo(float).eps) * np.abs(centred).max()
    maxima = []
    for row in modulus:
        # row[b + 1] is position b; strict on the left, loose on the right.
        maxima.append(
            [b for b in range(len(signal)) if row[b] < row[b + 1] >= row[b + 2] and row[b + 1] > floor]
        )
    sup = [{b: modulus[0, b + 1] for b in maxima[0]}]
    for s in range(1, len(scales)):
        current = {}
        for b in maxima[s]:
            value = modulus[s, b + 1]
            if maxima[s - 1]:
                nearest = min(maxima[s - 1], key=lambda c: (abs(c - b), c))  # ties: the left one
                if abs(nearest - b) <= besov_c * scales[s]:
                    value = max(value, sup[s - 1][nearest])
            current[b] = value
        sup.append(current)
    log_partition = np.array(
        [[np.log(np.sum(np.array(list(m.values())) ** q)) for m in sup] for q in moments]
    )
    return log_partition, np.array([len(m) for m in maxima])


def test_skeleton_matches_numpy_reference():
    # Pointer-jumping sups and prefix-scan nearest neighbours against the
    # direct loops, for a tight cone (many lines broken) and a wide one. Same
    # arithmetic on the same coefficients: round-off only (1e-10 absolute on
    # log Z of order 1..10).
    rng = np.random.default_rng(5)
    config = fp.PredictorConfig()
    signals = np.cumsum(rng.standard_normal((3, config.buffer_size)), axis=-1)
    partitions, cache_sizes = {}, []
    for c in (0.3, 3.0):
        for index, signal in enumerate(signals):
            result = wtmm(jnp.asarray(signal), config.scales, MOMENTS, jnp.asarray(c))
            cache_sizes.append(_wtmm._cache_size())
            expected, counts = _reference_log_partition(signal, config.scales, MOMENTS, c)
            np.testing.assert_array_equal(np.asarray(result.n_maxima), counts)
            np.testing.assert_allclose(np.asarray(result.log_partition), expected, rtol=0.0, atol=1e-10)
            partitions[c, index] = np.asarray(result.log_partition)
    # besov_c is traced: new values reuse the compiled program.
    assert len(set(cache_sizes)) == 1
    # ...and it matters: the cone changes the sups, hence Z(q < 0).
    assert any(not np.allclose(partitions[0.3, i], partitions[3.0, i]) for i in range(len(signals)))


def test_h_is_the_exact_derivative_of_tau():
    # h(q) is computed from Boltzmann weights, not by differencing tau; a
    # central difference of tau with step 1e-4 must agree to its truncation
    # error (~1e-8 * |tau'''|) plus round-off (~eps |tau| / 1e-4 ~ 1e-11).
    delta = 1e-4
    centres = (-1.5, 2.5)
    moments = tuple(q + d for q in centres for d in (-delta, 0.0, delta))
    signal = jnp.asarray(np.cumsum(np.random.default_rng(3).standard_normal(128)))
    result = wtmm(signal, fp.PredictorConfig().scales, moments, 2.0)
    tau, h = np.asarray(result.tau).reshape(2, 3), np.asarray(result.h).reshape(2, 3)
    np.testing.assert_allclose(h[:, 1], (tau[:, 2] - tau[:, 0]) / (2 * delta), rtol=0.0, atol=1e-6)


def test_step_is_a_single_line_with_h_zero():
    # A step of height J: one maximum per scale, at the step, and
    # |W| / sqrt(a) = J * max Psi at every scale (a jump has h = 0). The only
    # scale dependence is the sub-sample discretisation at the finest scales,
    # which the sup along the line flattens: |h| <= 0.02 is generous.
    config = fp.PredictorConfig()
    position = 60
    signal = jnp.where(jnp.arange(config.buffer_size) >= position, 3.0, 0.0)
    result = wtmm(signal, config.scales, MOMENTS, 2.0)
    assert bool(result.valid)
    np.testing.assert_array_equal(np.asarray(result.n_maxima), 1)
    np.testing.assert_allclose(np.asarray(result.h), 0.0, rtol=0.0, atol=0.02)
    # tau(q) = -1 would be a dense set of jumps; an isolated one has D = 0.
    np.testing.assert_allclose(np.asarray(result.tau), 0.0, rtol=0.0, atol=0.02)


# --- the predictor's use: a circuit breaker on h_min ------------------------

JUMP_PATHS = 50
JUMP_STEPS = 8
JUMP_SIGMAS = 10.0


@pytest.fixture(scope="module")
def predictor_holder():
    config = fp.PredictorConfig()
    hyperparams = fp.Hyperparams()
    run = jax.jit(
        jax.vmap(
            lambda signal, c: holder_exponent(signal, config.scales, config.q_moments, c, config.wavelet),
            in_axes=(0, None),
        )
    )
    return config, hyperparams, run


def test_jump_trips_the_breaker_within_a_few_steps(predictor_holder):
    config, hyperparams, run = predictor_holder
    size = config.buffer_size
    threshold = float(hyperparams.holder_threshold)
    rng = np.random.default_rng(123)
    # Brownian paths with unit increment std; a 10-sigma jump lands on sample
    # `size`. The buffer at step k (k = 1..8) is samples k .. size + k - 1, so
    # the jump sits k samples from its end; step 0 is the jump-free buffer.
    paths = np.cumsum(rng.standard_normal((JUMP_PATHS, size + JUMP_STEPS)), axis=-1)
    paths[:, size:] += JUMP_SIGMAS
    windows = np.stack([paths[:, k : k + size] for k in range(JUMP_STEPS + 1)], axis=1)
    h_min, valid = run(jnp.asarray(windows.reshape(-1, size)), hyperparams.besov_c)
    h_min = np.asarray(h_min).reshape(JUMP_PATHS, JUMP_STEPS + 1)
    assert np.asarray(valid).all()
    tripped = h_min < threshold
    report = (
        f"jump-free h_min min {h_min[:, 0].min():.3f} q05 {np.quantile(h_min[:, 0], 0.05):.3f}; "
        f"trip rate by k = 1..8: {tripped[:, 1:].mean(axis=0).round(2)}; "
        f"median h_min at k = 3..8: {np.median(h_min[:, 3:]):.3f}"
    )
    # Jump-free Brownian buffers stay above the threshold: measured 1 of 900
    # below it (3 seeds x 300 paths); 1 of 50 is allowed.
    assert np.sum(tripped[:, 0]) <= 1, report
    # With the jump 1..5 samples from the end the breaker has tripped on at
    # least one step for 92% of paths (900 paths; this seed's 50: 88%). For 50
    # paths the standard error is 3.8%, so 80% is > 3 SE below the rate.
    assert np.mean(tripped[:, 1:6].any(axis=1)) >= 0.8, report
    # ...and at 3..8 samples from the end on most individual steps
    # (measured 80-85% per step; 65% is > 3 SE below for 300 buffers).
    assert np.mean(tripped[:, 3:]) >= 0.65, report


def test_sp500_windows_rarely_trip(predictor_holder):
    config, hyperparams, _ = predictor_holder
    path = Path(fp.__file__).parent / "data" / "sp500_daily.csv"
    with open(path, newline="") as handle:
        close = np.array([float(row["close"]) for row in csv.DictReader(handle)])
    windows = np.lib.stride_tricks.sliding_window_view(np.log(close), config.buffer_size)

    def one(signal):
        return holder_exponent(signal, config.scales, config.q_moments, hyperparams.besov_c, config.wavelet)

    # lax.map in batches keeps memory at 256 windows' worth of (q, scale,
    # time); padding to whole batches (repeats of the last window, dropped
    # after) avoids compiling a second program for a remainder.
    batch = 256
    padded = np.concatenate([windows, np.repeat(windows[-1:], -len(windows) % batch, axis=0)])
    h_min, valid = jax.jit(lambda w: jax.lax.map(one, w, batch_size=batch))(jnp.asarray(padded))
    h_min, valid = np.asarray(h_min)[: len(windows)], np.asarray(valid)[: len(windows)]
    threshold = float(hyperparams.holder_threshold)
    assert valid.all()
    below = np.mean(h_min < threshold)
    quantiles = np.quantile(h_min, [0.0, 0.01, 0.05, 0.25, 0.5])
    print(
        f"S&P 500, {len(windows)} windows: h_min min/1/5/25/50% {quantiles.round(3)}, "
        f"below {threshold}: {below:.4f}"
    )
    # Ordinary market windows rarely trip (measured 2.2%); real crashes do.
    assert below <= 0.05, f"{below:.4f} of windows below {threshold}; quantiles {quantiles}"


# --- bad data is data --------------------------------------------------------


def _degenerate_buffers(size):
    ramp = np.cumsum(np.random.default_rng(9).standard_normal(size))
    spike = ramp.copy()
    spike[size // 2] += 1e12
    with_nan = ramp.copy()
    with_nan[5] = np.nan
    with_inf = ramp.copy()
    with_inf[-1] = np.inf
    return {
        "constant": (np.full(size, 4321.5), False),
        "zeros": (np.zeros(size), False),
        "nan": (with_nan, False),
        "inf": (with_inf, False),
        "outlier_1e12": (spike, True),
        "huge_level": (ramp + 1e12, True),
    }


@pytest.mark.parametrize("name", list(_degenerate_buffers(8)))
def test_degenerate_buffers_are_finite(predictor_holder, name):
    config, hyperparams, _ = predictor_holder
    signal, expected_valid = _degenerate_buffers(config.buffer_size)[name]
    result = wtmm(jnp.asarray(signal), config.scales, config.q_moments, hyperparams.besov_c, config.wavelet)
    assert isinstance(result, WTMMResult)
    for field in ("tau", "h", "dimension", "h_min", "log_partition"):
        assert np.all(np.isfinite(np.asarray(getattr(result, field)))), f"{name}: non-finite {field}"
    assert bool(result.valid) == expected_valid
    if not expected_valid:
        assert float(result.h_min) == HOLDER_SENTINEL
        np.testing.assert_array_equal(np.asarray(result.h), HOLDER_SENTINEL)
    if name == "outlier_1e12":
        # A one-sample spike reads as h = 0 (the sup floors isolated
        # singularities at 0): the breaker must see it.
        assert float(result.h_min) < float(hyperparams.holder_threshold)


def test_short_buffer_and_float32_are_finite():
    config = fp.PredictorConfig()
    rng = np.random.default_rng(1)
    short = jnp.asarray(np.cumsum(rng.standard_normal(6)))
    result = wtmm(short, config.scales, config.q_moments, 2.0)
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree_util.tree_leaves(result))
    signal32 = jnp.asarray(np.cumsum(rng.standard_normal(128)), jnp.float32)
    result32 = wtmm(signal32, config.scales, config.q_moments, jnp.asarray(2.0, jnp.float32))
    assert result32.h_min.dtype == jnp.float32 and bool(result32.valid)
    assert np.isfinite(float(result32.h_min))


def test_vmap_over_besov_population_equals_single_calls():
    config = fp.PredictorConfig()
    signal = jnp.asarray(np.cumsum(np.random.default_rng(4).standard_normal(128)))
    population = jnp.asarray([0.25, 1.0, 2.0, 8.0])
    batched = jax.vmap(lambda c: wtmm(signal, config.scales, MOMENTS, c))(population)
    for index, c in enumerate(population):
        single = wtmm(signal, config.scales, MOMENTS, c)
        for name in ("tau", "h", "log_partition"):
            # Same program batched: XLA may reassociate sums, so a few ulp.
            expected = np.asarray(getattr(single, name))
            np.testing.assert_allclose(
                np.asarray(getattr(batched, name))[index], expected, rtol=1e-12, atol=1e-12
            )


def test_namespace():
    assert fp.sia.WTMMResult is WTMMResult
    assert fp.sia.holder_exponent is holder_exponent
    scales = fp.PredictorConfig().scales
    signal = jnp.asarray(np.cumsum(np.random.default_rng(2).standard_normal(128)))
    direct = wtmm(signal, scales, MOMENTS, 2.0)
    via_namespace = fp.sia.wtmm(signal, scales, MOMENTS, 2.0)  # the function, not the module
    np.testing.assert_array_equal(np.asarray(via_namespace.h), np.asarray(direct.h))


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"scales": (2.0, 1.0, 4.0)}, "increasing"),
        ({"scales": (2.0,)}, "at least 2"),
        ({"q_moments": ()}, "q_moments"),
        ({"besov_c": -1.0}, "besov_c"),
        ({"besov_c": float("nan")}, "besov_c"),
        ({"wavelet": "haar"}, "wavelet"),
        ({"burn_in": 3}, "burn_in"),
    ],
)
def test_bad_arguments_raise(changes, match):
    arguments = {"scales": (1.0, 2.0, 4.0), "q_moments": MOMENTS, "besov_c": 2.0, "wavelet": "gaus1"}
    arguments.update(changes)
    with pytest.raises(ValueError, match=match):
        wtmm(jnp.zeros(32), **arguments)
