"""CUSUM on standardized errors: false alarms, detection delay, robustness."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import fnpredict as fp
from fnpredict.sia import cusum
from fnpredict.sia.cusum import (
    WARMUP,
    CusumInfo,
    CusumState,
    cusum_init,
    cusum_reset,
    cusum_threshold,
    cusum_update,
    rolling_kurtosis,
    scale_score,
)

HP = fp.Hyperparams()
WINDOW = fp.PredictorConfig().cusum_window
STEPS = 10_000
SEEDS = 8
SHIFT_AT = 2_000


def _scan(errors, valid, h, k, alpha):
    """The predictor's use: update, then reset after an alarm; one series."""

    def body(state, inputs):
        error, ok = inputs
        state, info = cusum_update(state, error, ok, h, k, alpha)
        state = jax.tree_util.tree_map(
            lambda reset, kept: jnp.where(info.alarm, reset, kept), cusum_reset(state), state
        )
        return state, info

    return jax.lax.scan(body, cusum_init(WINDOW, errors.dtype), (errors, valid))


# One compilation for every scan in this file: all series are padded to
# STEPS with missing (invalid) errors, which leave the state unchanged, and
# run as one vmapped batch with traced hyperparameters.
_scan_batch = jax.jit(jax.vmap(_scan, in_axes=(0, 0, None, None, None)))
_update = jax.jit(cusum_update)
_reset = jax.jit(cusum_reset)


def _special_series():
    """Short series for the unit checks, each padded to STEPS."""
    rng = np.random.default_rng(5)
    gaussian = rng.standard_normal(600)
    huge = float(np.finfo(np.float64).max)
    glitch = gaussian.copy()
    glitch[400] = 1e12
    return {
        "init": rng.standard_normal(60) * 2.0,
        "kurtosis": rng.standard_t(4.0, WINDOW + 37),
        "glitch": glitch,
        "zeros": np.zeros(600),
        "zeros-then-noise": np.concatenate([np.zeros(300), gaussian[:300]]),
        "all-huge": np.full(600, 1e12) * np.sign(gaussian),
        "max-float": np.where(np.arange(600) % 50 == 0, huge, gaussian),
        "loop-0": rng.standard_normal(150),
        "loop-1": rng.standard_normal(150) * 2.0,
    }


@pytest.fixture(scope="module")
def runs():
    rng = np.random.default_rng(20240601)
    gaussian = rng.standard_normal((SEEDS, STEPS))
    student = rng.standard_t(3.0, (SEEDS, STEPS))
    shifted = rng.standard_normal((SEEDS, STEPS))
    shifted[:, SHIFT_AT:] *= 3.0
    special = _special_series()
    errors = np.zeros((3 * SEEDS + len(special), STEPS))
    valid = np.zeros(errors.shape, bool)
    errors[: 3 * SEEDS] = np.concatenate([gaussian, student, shifted])
    valid[: 3 * SEEDS] = True
    rows = {}
    for row, (name, series) in enumerate(special.items(), start=3 * SEEDS):
        errors[row, : series.size] = series
        valid[row, : series.size] = True
        rows[name] = row
    states, info = _scan_batch(
        jnp.asarray(errors), jnp.asarray(valid), HP.cusum_h, HP.cusum_k, HP.error_alpha
    )
    alarms = np.asarray(info.alarm)
    return {
        "gaussian": alarms[:SEEDS],
        "student": alarms[SEEDS : 2 * SEEDS],
        "shift": alarms[2 * SEEDS : 3 * SEEDS],
        "info": info,
        "states": states,
        "rows": rows,
        "series": special,
    }


def test_namespace_exports():
    for name in cusum.__all__:
        assert getattr(fp.sia, name) is getattr(cusum, name)
    assert {"cusum_init", "cusum_update", "cusum_reset", "cusum_threshold", "rolling_kurtosis",
            "CusumState", "CusumInfo"} <= set(cusum.__all__)


def test_gaussian_false_alarms(runs):
    counts = runs["gaussian"].sum(axis=1)
    print(f"Gaussian false alarms per 10 000 steps, {SEEDS} seeds: {counts.tolist()}")
    # "At most a handful": the defaults give about 1 per 10 000 (ARL0 ~ 1e4).
    assert counts.max() <= 5


def test_student_t_false_alarms_within_twice_gaussian(runs):
    gaussian = int(runs["gaussian"].sum())
    student = int(runs["student"].sum())
    print(f"false alarms over {SEEDS}×10 000 steps: Gaussian {gaussian}, Student-t(3) {student}")
    assert gaussian > 0  # otherwise the comparison below would be vacuous
    assert student <= 2 * gaussian


def test_scale_shift_detected_quickly(runs):
    alarms = runs["shift"]
    delays = [int(np.argmax(row[SHIFT_AT:])) if row[SHIFT_AT:].any() else None for row in alarms]
    print(f"detection delays after σ 1 → 3 at t = {SHIFT_AT}: {delays}")
    assert all(delay is not None and delay < 100 for delay in delays)
    # One change, one alarm: the reset's fast re-adaptation of σ prevents a
    # cascade over the ~1/α steps the plain EMA would need.
    assert alarms[:, SHIFT_AT : SHIFT_AT + 300].sum(axis=1).max() == 1


def test_statistic_and_threshold_units(runs):
    info = jax.tree_util.tree_map(lambda leaf: np.asarray(leaf[: 3 * SEEDS]), runs["info"])
    assert info.threshold.min() >= float(HP.cusum_h)
    # distance_to_alarm is exactly h_t − G⁺ (same units, no σ inside): one
    # subtraction, so ulp-level agreement.
    np.testing.assert_allclose(info.distance_to_alarm, info.threshold - info.drift, rtol=0.0, atol=1e-12)
    assert np.all(np.isfinite(info.kurtosis)) and np.all(info.drift >= 0.0)
    # Student-t(3) windows are heavy-tailed: their thresholds widen.
    gaussian = info.threshold[:SEEDS, 500:].mean()
    student = info.threshold[SEEDS : 2 * SEEDS, 500:].mean()
    print(f"mean adaptive threshold: Gaussian {gaussian:.2f}, t(3) {student:.2f}")
    assert student > gaussian * 1.3


def test_score_has_null_mean_zero_and_unit_variance():
    z = np.random.default_rng(7).standard_normal(400_000)
    scores = np.asarray(scale_score(jnp.asarray(z)))
    standard_error = scores.std() / np.sqrt(scores.size)
    # Monte Carlo: 5 standard errors for the mean (≈ 8e-3); the variance of
    # a variance estimate ≈ (μ4 − 1)/n with μ4 < 6 here, so 5·√(5/n) ≈ 0.018.
    assert abs(scores.mean()) < 5 * standard_error
    assert abs(scores.var() - 1.0) < 5 * np.sqrt(5.0 / scores.size)
    # Winsorised: a 1e12 error scores exactly the 5σ value.
    cap_score = (5 - np.sqrt(2 / np.pi)) / np.sqrt(1 - 2 / np.pi)
    np.testing.assert_allclose(float(scale_score(jnp.asarray(1e12))), cap_score, rtol=1e-15, atol=0.0)


def _row(runs, name):
    row = runs["rows"][name]
    info = jax.tree_util.tree_map(lambda leaf: np.asarray(leaf[row]), runs["info"])
    return runs["series"][name], info


def test_sigma_starts_as_running_mean_and_warmup_is_silent(runs):
    errors, info = _row(runs, "init")
    # Rate max(α, 1/(n+1)) = 1/(n+1) for n ≤ 1/α − 1 = 49: plain running
    # mean of e² for the first 50 errors (winsorisation at 5σ never bites on
    # these N(0, 4) errors); a float64 recursion over ≤ 50 terms: 1e-12.
    expected = np.sqrt(np.cumsum(errors**2) / np.arange(1, errors.size + 1))
    np.testing.assert_allclose(info.sigma[:50], expected[:50], rtol=1e-12, atol=0.0)
    assert np.all(info.drift[:WARMUP] == 0.0)
    assert not np.any(info.alarm)


def test_kurtosis_matches_scipy_on_a_wrapped_ring_buffer(runs):
    errors, info = _row(runs, "kurtosis")
    # After WINDOW + 37 errors the buffer holds exactly the last WINDOW; the
    # padding steps after them are missing and change nothing.
    expected = scipy.stats.kurtosis(errors[-WINDOW:], fisher=False, bias=True)
    # Same moments, different summation order and a rescaling: 1e-12 relative.
    np.testing.assert_allclose(info.kurtosis[errors.size - 1], expected, rtol=1e-12, atol=0.0)
    np.testing.assert_allclose(info.kurtosis[-1], expected, rtol=1e-12, atol=0.0)
    # Partially filled: the first 20 errors only.
    expected = scipy.stats.kurtosis(errors[:20], fisher=False, bias=True)
    np.testing.assert_allclose(info.kurtosis[19], expected, rtol=1e-12, atol=0.0)
    # Fewer than 8 errors, or no spread: neutral κ = 3.
    assert info.kurtosis[6] == 3.0
    window = jnp.full((WINDOW,), 2.5)
    assert float(rolling_kurtosis(window, jnp.asarray(WINDOW, jnp.int32))) == 3.0


def test_threshold_never_below_h():
    h = jnp.asarray(8.0)
    kurtosis = jnp.array([1.0, 1.8, 2.999, 3.0, 9.0, 64.0])
    threshold = np.asarray(jax.vmap(cusum_threshold, in_axes=(0, None))(kurtosis, h))
    expected = 8.0 * (1.0 + np.maximum(0.0, np.log(np.asarray(kurtosis) / 3.0)))
    # A log and a multiply: ulp level.
    np.testing.assert_allclose(threshold, expected, rtol=1e-15, atol=0.0)
    assert threshold.min() == 8.0


def _update_args(error, valid=True):
    return jnp.asarray(error, jnp.float64), jnp.asarray(valid), HP.cusum_h, HP.cusum_k, HP.error_alpha


def test_missing_error_leaves_state_unchanged():
    state = cusum_init(WINDOW)
    for error in (0.5, -1.2, 0.3):
        state, _ = _update(state, *_update_args(error))
    for error, valid in ((7.0, False), (np.nan, True), (np.inf, True)):
        new_state, info = _update(state, *_update_args(error, valid))
        for new_leaf, old_leaf in zip(jax.tree_util.tree_leaves(new_state), jax.tree_util.tree_leaves(state)):
            assert np.array_equal(np.asarray(new_leaf), np.asarray(old_leaf))
        assert not bool(info.alarm)
        assert float(info.standardized_error) == 0.0


def test_extreme_errors_stay_finite(runs):
    for name in ("glitch", "zeros", "zeros-then-noise", "all-huge", "max-float"):
        _, info = _row(runs, name)
        for leaf in jax.tree_util.tree_leaves(info):
            assert np.all(np.isfinite(leaf)), name
    for leaf in jax.tree_util.tree_leaves(runs["states"]):
        assert np.all(np.isfinite(np.asarray(leaf)))
    # One winsorised glitch adds at most ≈ 6.97 < h to G⁺ and inflates σ² by
    # at most 1 + 24α: no alarm, and σ grows by at most that factor.
    _, info = _row(runs, "glitch")
    assert not np.any(info.alarm[400:])
    # One multiply-add of float64: 1e-12 relative slack on the bound.
    assert info.sigma[400] <= info.sigma[399] * np.sqrt(1 + 24 * float(HP.error_alpha)) * (1 + 1e-12)
    # Constant zero errors: σ = 0, no alarm; noise after them is a change.
    _, info = _row(runs, "zeros")
    assert info.sigma[599] == 0.0 and not np.any(info.alarm)
    _, info = _row(runs, "zeros-then-noise")
    assert np.any(info.alarm[300:310])
    # After that alarm σ re-learns the N(0, 1) scale (reset): an EMA with
    # ~1/α = 50 effective samples has ~10% relative error, so 30% is 3 sd.
    np.testing.assert_allclose(info.sigma[599], 1.0, rtol=0.3, atol=0.0)


def test_reset_restarts_detection():
    errors = np.concatenate([np.random.default_rng(9).standard_normal(100), np.full(5, 4.0)])
    state = cusum_init(WINDOW)
    for error in errors:
        state, info = _update(state, *_update_args(error))
    assert float(state.drift) > 0.0
    reset = _reset(state)
    assert float(reset.drift) == 0.0 and int(reset.count) == 1
    assert float(reset.variance) == float(state.variance)
    assert np.array_equal(np.asarray(reset.window), np.asarray(state.window))
    # Muted while σ re-adapts: WARMUP − 1 more errors keep G⁺ at 0.
    for _ in range(WARMUP - 1):
        reset, info = _update(reset, *_update_args(4.0))
        assert float(info.drift) == 0.0
    assert isinstance(reset, CusumState) and isinstance(info, CusumInfo)


def test_vmap_equals_loop(runs):
    for name in ("loop-0", "loop-1"):
        errors, batched = _row(runs, name)
        state = cusum_init(WINDOW)
        for t, error in enumerate(errors):
            state, info = _update(state, *_update_args(error))
            # vmap+scan vs single jitted calls: identical arithmetic up to XLA
            # fusion, guaranteed to 1e-12.
            np.testing.assert_allclose(batched.drift[t], float(info.drift), rtol=0.0, atol=1e-12)
            np.testing.assert_allclose(batched.sigma[t], float(info.sigma), rtol=1e-12, atol=0.0)
            assert batched.alarm[t] == bool(info.alarm)
            state = jax.tree_util.tree_map(lambda r, s: jnp.where(info.alarm, r, s), _reset(state), state)


def test_init_validates_window():
    with pytest.raises(ValueError, match="window"):
        cusum_init(4)
