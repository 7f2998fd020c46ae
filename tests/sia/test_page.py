"""Two-sided Page CUSUM: detection rate and false alarms on the drift-flip family, null run, invariances.

The standardized errors come from the engine's signed detector
(:mod:`fnpredict.sia.signed_detector`), whose reference predictor is the
random walk plus an exponentially weighted drift estimate
(``pred_t = y_{t−1} + m_{t−1}``). The bare random walk's errors carry the
regime drift ±0.5σ as a bias, which a CUSUM referenced at 0 cannot tell from
a change (with ``k < 0.5`` it alarms all through every regime, with ``k ≥ 0.5``
it never sees the flip). The drift estimate restarts after each alarm (its rate
``max(r, 1/(n+1))``, n the increments since the restart, as
:func:`fnpredict.sia.cusum.cusum_reset` restarts σ), and the error scale is
the engine's: an EMA of squared errors with rate 0.02 (running mean at the
start). The CUSUM is muted for the first 32 steps while σ forms.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from fnpredict import synthetic
from fnpredict.sia.page import DEFAULT_H, DEFAULT_K, PageState, page_init, page_update
from fnpredict.sia.signed_detector import WARMUP, signed_detector_init, signed_detector_update

#: A flip counts as detected by an alarm in the right direction within this many steps.
WINDOW = 50


@jax.jit
def monitor(values, h, k):
    """Run the engine's signed detector (reference predictor + Page CUSUM) over ``values``."""
    increments = jnp.diff(values)

    def body(state, increment):
        state, info = signed_detector_update(state, increment, jnp.asarray(True), h, k)
        return state, (info.alarm, info.direction)

    _, (alarms, directions) = jax.lax.scan(body, signed_detector_init(values.dtype), increments)
    # Entry t - 1 of the outputs is the error of y_t: shift back to the values' index.
    pad = lambda a: jnp.concatenate([jnp.zeros((1,), a.dtype), a])  # noqa: E731
    return pad(alarms), pad(directions)


def flip_figures(series, alarms, directions):
    """(detected flips, scored flips, false alarms, monitored steps) for one series."""
    alarms, directions = np.asarray(alarms), np.asarray(directions)
    n = alarms.size
    covered = np.zeros(n, bool)
    detected = scored = 0
    for cp in series.change_points:
        covered[cp : cp + WINDOW] = True
        if cp < WARMUP or cp + WINDOW > n:
            continue
        scored += 1
        # A flip to r = −1 lowers the increments: the errors move down (direction −1).
        expected = series.regimes[cp]
        window = slice(cp, cp + WINDOW)
        detected += bool(np.any(alarms[window] & (directions[window] == expected)))
    false_alarms = int(np.sum(alarms & ~covered))
    return detected, scored, false_alarms, n - WARMUP


def test_drift_flip_detection_and_false_alarms():
    totals = np.zeros(4, int)
    for seed in range(8):
        series = synthetic.drift_flip(20_000, seed, sigma=0.01, mean_regime_length=256)
        alarms, directions = monitor(jnp.asarray(series.values), DEFAULT_H, DEFAULT_K)
        figures = flip_figures(series, alarms, directions)
        totals += figures
        detected, scored, false_alarms, steps = figures
        print(f"seed {seed}: detected {detected}/{scored} = {detected / scored:.2f} within {WINDOW} steps, "
              f"{false_alarms} false alarms = {1000 * false_alarms / steps:.2f} per 1000 steps")
        # Per seed ≈ 75 scored flips: the binomial SE of the ≈ 0.70 rate is 0.05, so 0.6 is 2 SE
        # below it; the seeds are fixed, so this is a regression check on the measured figures.
        assert detected / scored >= 0.6
        assert 1000 * false_alarms / steps <= 1.0
    detected, scored, false_alarms, steps = totals
    print(f"all seeds: detection {detected / scored:.3f}, "
          f"false alarms per 1000 steps {1000 * false_alarms / steps:.3f}")


def test_null_gaussian_false_alarms():
    counts = []
    for seed in range(5):
        z = np.random.default_rng(100 + seed).standard_normal(10_000)

        @jax.jit
        def run(z):
            def body(state, zt):
                state, info = page_update(state, zt, jnp.asarray(True), DEFAULT_H, DEFAULT_K)
                return state, info.alarm

            return jax.lax.scan(body, page_init(), z)[1]

        counts.append(int(np.sum(run(jnp.asarray(z)))))
    print("false alarms in 10 000 N(0,1) steps, by seed:", counts, f"(expected ≈ {10_000 / 20_600:.2f})")
    assert max(counts) <= 2
    # And on a driftless random walk through the whole predictor pipeline.
    walk = np.cumsum(0.01 * np.random.default_rng(200).standard_normal(10_001))
    alarms, _ = monitor(jnp.asarray(walk), DEFAULT_H, DEFAULT_K)
    print("false alarms on a 10 000-step driftless random walk (pipeline):", int(np.sum(alarms)))
    assert int(np.sum(alarms)) <= 2


def test_gross_outliers_cannot_alarm_alone():
    state = page_init()
    for z in (1e12, 1e300, jnp.inf):
        state, info = page_update(state, jnp.asarray(z), jnp.asarray(True))
        assert bool(jnp.isfinite(info.statistic_up))
    # Three capped glitches: 3 × 4.65 = 13.95 > 12 (two give 9.3 < 12).
    assert bool(info.alarm) and int(info.direction) == 1
    state = page_init()
    for _ in range(2):
        state, info = page_update(state, jnp.asarray(-1e12), jnp.asarray(True))
        assert not bool(info.alarm)
    state, info = page_update(state, jnp.asarray(jnp.nan), jnp.asarray(True))
    assert not bool(info.alarm)
    np.testing.assert_allclose(float(state.g_minus), 9.3, rtol=0, atol=1e-12)  # NaN counted as missing


def test_alarm_resets_both_statistics():
    state = PageState(g_plus=jnp.asarray(11.9), g_minus=jnp.asarray(3.0))
    state, info = page_update(state, jnp.asarray(1.0), jnp.asarray(True))
    assert bool(info.alarm) and int(info.direction) == 1
    np.testing.assert_allclose(float(info.statistic_up), 12.55, rtol=0, atol=1e-12)  # 11.9 + 1 − 0.35
    assert float(state.g_plus) == 0.0 and float(state.g_minus) == 0.0


def test_missing_steps_leave_state_unchanged():
    z = np.random.default_rng(1).standard_normal(300) + 0.3
    valid = np.random.default_rng(2).random(300) > 0.3
    z_with_garbage = np.where(valid, z, 1e9)

    def run(z, valid):
        def body(state, step):
            state, info = page_update(state, step[0], step[1])
            return state, (state, info)

        return jax.lax.scan(body, page_init(), (z, valid))[1]

    states, infos = jax.jit(run)(jnp.asarray(z_with_garbage), jnp.asarray(valid))
    compact_states, _ = jax.jit(run)(jnp.asarray(z[valid]), jnp.ones(valid.sum(), bool))
    # The states at the valid steps equal those of the series with the missing steps removed.
    np.testing.assert_array_equal(np.asarray(states.g_plus)[valid], np.asarray(compact_states.g_plus))
    np.testing.assert_array_equal(np.asarray(states.g_minus)[valid], np.asarray(compact_states.g_minus))
    assert not np.any(np.asarray(infos.alarm)[~valid])
    assert np.all(np.asarray(infos.direction)[~valid] == 0)


def test_vmap_equals_loop():
    values = np.stack([synthetic.drift_flip(3000, seed).values for seed in range(4)])
    batched = jax.vmap(lambda v: monitor(v, DEFAULT_H, DEFAULT_K))(jnp.asarray(values))
    for i in range(4):
        single = monitor(jnp.asarray(values[i]), DEFAULT_H, DEFAULT_K)
        for b, s in zip(batched, single):
            # rtol 1e-12: the same float64 operations, batched.
            np.testing.assert_allclose(np.asarray(b)[i], np.asarray(s), rtol=1e-12, atol=0)
    h = jnp.asarray([10.0, 12.0, 14.0])
    swept = jax.vmap(lambda hh: monitor(jnp.asarray(values[0]), hh, DEFAULT_K)[0])(h)
    for j in range(3):
        single = monitor(jnp.asarray(values[0]), h[j], DEFAULT_K)[0]
        np.testing.assert_array_equal(np.asarray(swept[j]), np.asarray(single))
    assert math.isfinite(float(np.sum(np.asarray(swept))))
