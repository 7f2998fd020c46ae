"""Bad-tick filter: gross and reverting spikes discarded, level shifts confirmed, Gaussian data untouched.

The caller is simulated as the engine would run it: a ring buffer of the
last 64 accepted increments gives the MAD scale (floored at 1e-8, a tick far
below any log-price move), and confirmed values are pushed held-first.
"""

import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnpredict.sia.badtick import (
    ACCEPT,
    CONFIRM,
    CONFIRM_HOLD,
    DEFAULT_THRESHOLD,
    DISCARD,
    HOLD,
    REJECT,
    badtick_init,
    badtick_update,
    mad_scale,
)

#: Accepted increments the scale is computed from (≈ a quarter of trading days).
WINDOW = 64
#: Scale floor for log-levels (1e-8 ≪ one basis point).
SCALE_FLOOR = 1e-8


def _push(buffer, mask, index, last, value, do):
    increment = value - last
    ok = do & jnp.isfinite(last)
    buffer = buffer.at[index].set(jnp.where(ok, increment, buffer[index]))
    mask = mask.at[index].set(mask[index] | ok)
    index = jnp.where(ok, (index + 1) % WINDOW, index)
    return buffer, mask, index, jnp.where(do, value, last)


@functools.partial(jax.jit, static_argnames=())
def run_filter(obs, threshold=DEFAULT_THRESHOLD):
    """Filter a series; returns decision codes, the last accepted value after each step, and the decisions."""

    def body(carry, y):
        state, last, buffer, mask, index = carry
        scale = jnp.maximum(mad_scale(buffer, mask), SCALE_FLOOR)
        state, decision = badtick_update(state, y, last, scale, threshold)
        buffer, mask, index, last = _push(buffer, mask, index, last, decision.held_value, decision.push_held)
        buffer, mask, index, last = _push(buffer, mask, index, last, y, decision.push_obs)
        return (state, last, buffer, mask, index), (decision.code, last, decision, state)

    carry = (
        badtick_init(obs.dtype), jnp.asarray(jnp.nan, obs.dtype), jnp.zeros((WINDOW,), obs.dtype),
        jnp.zeros((WINDOW,), bool), jnp.asarray(0, jnp.int32),
    )
    return jax.lax.scan(body, carry, obs)[1]


def _walk(n, seed, sigma=0.01):
    return np.log(100.0) + np.cumsum(sigma * np.random.default_rng(seed).standard_normal(n))


def _finite(tree):
    leaves = jax.tree_util.tree_leaves(tree)
    return all(bool(np.all(np.isfinite(np.asarray(leaf)) | np.isnan(np.asarray(leaf)))) for leaf in leaves)


@pytest.mark.parametrize("spike", [1e12, 1e300, -1e300, 1.7e308])
def test_gross_spike_held_then_discarded(spike):
    y = _walk(300, 0)
    y[200] = spike
    codes, last, decisions, states = run_filter(jnp.asarray(y))
    codes, last = np.asarray(codes), np.asarray(last)
    assert codes[200] == HOLD and codes[201] == DISCARD
    assert np.all(np.isin(codes[:200], [ACCEPT])) and np.all(codes[202:] == ACCEPT)
    assert np.all(np.abs(last - np.log(100.0)) < 1.0)  # the spike never became the accepted level
    assert np.all(np.isfinite(np.asarray(decisions.jump))) and np.all(np.isfinite(np.asarray(states.pending_value)))


def test_reverting_fifty_percent_spike_discarded():
    y = _walk(300, 1)
    y[150] += math.log(1.5)  # +50% for one day, then back (a 40σ move at 1% volatility)
    codes = np.asarray(run_filter(jnp.asarray(y))[0])
    assert codes[150] == HOLD and codes[151] == DISCARD
    assert np.sum(codes != ACCEPT) == 2


def test_persistent_level_shift_confirmed_next_step():
    y = _walk(300, 2)
    y[180:] += 20 * 0.01  # a 20σ jump (above the 12σ threshold) that stays
    codes, last, decisions, _ = run_filter(jnp.asarray(y))
    codes, last = np.asarray(codes), np.asarray(last)
    assert codes[180] == HOLD and codes[181] == CONFIRM
    assert float(np.asarray(decisions.held_value)[181]) == y[180]
    assert last[181] == y[181] and np.all(codes[182:] == ACCEPT)


def test_crash_run_stays_live():
    """Several consecutive 15σ down days are accepted with a one-step delay, never frozen."""
    y = _walk(300, 3)
    y[200:] -= 0.15 * np.minimum(np.arange(100), 4)  # four consecutive −15% days, then a new level
    y[200:204] -= 0.15
    codes, last, _, _ = run_filter(jnp.asarray(y))
    codes = np.asarray(codes)
    print("codes around the crash:", codes[198:210])
    assert np.all(np.isin(codes[200:204], [HOLD, CONFIRM_HOLD, CONFIRM]))
    assert np.all(codes[210:] == ACCEPT)
    np.testing.assert_allclose(np.asarray(last)[-1], y[-1], rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(3))
def test_gaussian_data_rarely_held(seed):
    n = 100_000
    codes = np.asarray(run_filter(jnp.asarray(_walk(n, 10 + seed)))[0])
    held = np.mean(codes == HOLD)
    print(f"seed {seed}: held fraction {held:.2e}")
    assert held <= 1e-3


def test_sp500_held_days():
    """Real daily log-closes: how many days the default threshold holds (printed; few, and all confirmed)."""
    path = Path(__file__).resolve().parents[2] / "fnpredict" / "data" / "sp500_daily.csv"
    closes = np.loadtxt(path, delimiter=",", skiprows=1, usecols=1)
    codes = np.asarray(run_filter(jnp.asarray(np.log(closes)))[0])
    print(f"S&P 500, {codes.size} days: held {np.sum(codes == HOLD)}, confirmed {np.sum(codes == CONFIRM)}, "
          f"discarded {np.sum(codes == DISCARD)}")
    assert np.mean(codes == HOLD) <= 5e-3  # at most a few crash days per decade
    assert np.sum(codes == DISCARD) == 0  # no real close reverts like a bad tick


def test_non_finite_observations_rejected():
    y = _walk(100, 4)
    y[50], y[51], y[60] = np.nan, np.inf, -np.inf
    codes, last, decisions, states = run_filter(jnp.asarray(y))
    codes = np.asarray(codes)
    assert codes[50] == REJECT and codes[51] == REJECT and codes[60] == REJECT
    assert np.all(np.isfinite(np.asarray(last))) and _finite(decisions) and _finite(states)
    # A missing step while a value is held keeps it held.
    state, _ = badtick_update(badtick_init(), jnp.asarray(5.0), jnp.asarray(0.0), jnp.asarray(0.1))
    state2, decision = badtick_update(state, jnp.asarray(jnp.nan), jnp.asarray(0.0), jnp.asarray(0.1))
    assert bool(state2.pending) and float(state2.pending_value) == 5.0 and int(decision.code) == REJECT


def test_warmup_and_degenerate_scales():
    state = badtick_init()
    for scale in (jnp.inf, jnp.nan):
        _, decision = badtick_update(state, jnp.asarray(1e12), jnp.asarray(0.0), jnp.asarray(scale))
        assert int(decision.code) == ACCEPT and float(decision.jump) == 0.0
    _, decision = badtick_update(state, jnp.asarray(1.0), jnp.asarray(0.0), jnp.asarray(0.0))
    assert int(decision.code) == HOLD and np.isfinite(float(decision.jump))
    _, decision = badtick_update(state, jnp.asarray(1.0), jnp.asarray(jnp.nan), jnp.asarray(0.1))
    assert int(decision.code) == ACCEPT  # nothing accepted yet: no basis for a test
    mask = jnp.arange(WINDOW) < 5
    assert bool(jnp.isinf(mad_scale(jnp.ones(WINDOW), mask)))  # fewer than 8 increments


def test_mad_scale_matches_numpy():
    x = np.random.default_rng(5).standard_normal(WINDOW)
    mask = np.arange(WINDOW) < 37
    expected = 1.482602218505602 * np.median(np.abs(x[mask] - np.median(x[mask])))
    # rtol 1e-14: the same order statistics, a few ULP of arithmetic.
    np.testing.assert_allclose(float(mad_scale(jnp.asarray(x), jnp.asarray(mask))), expected, rtol=1e-14, atol=0)


def test_vmap_equals_loop():
    ys = np.stack([_walk(400, 20 + i) for i in range(4)])
    ys[1, 100] = 1e12
    ys[2, 300:] += 0.2
    batched = jax.vmap(run_filter)(jnp.asarray(ys))
    for i in range(4):
        single = run_filter(jnp.asarray(ys[i]))
        jax.tree_util.tree_map(
            # Exact: the same float64 operations, batched (NaN sentinels compared equal).
            lambda b, s: np.testing.assert_array_equal(np.asarray(b)[i], np.asarray(s)), batched, single
        )
