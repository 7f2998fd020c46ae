"""Adaptive conformal inference: its deterministic coverage bound, and nominal coverage on i.i.d. data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import ndtri

from fnpredict.intervals import aci_update, reading_levels, rearrange

LEVELS = jnp.asarray([0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
GAMMA = 0.005


def _run_aci(outcomes, loc, scale):
    """ACI over a Gaussian law N(loc_t, scale_t²) read at the working levels: the hits per step."""

    def body(working, inputs):
        y, mu, s = inputs
        quantiles = rearrange(mu + s * ndtri(reading_levels(working)))
        working, hits = aci_update(working, LEVELS, quantiles, y, jnp.asarray(True), jnp.asarray(GAMMA))
        return working, (hits, working)

    _, (hits, working) = jax.lax.scan(body, LEVELS, (outcomes, loc, scale))
    return np.asarray(hits), np.asarray(working)


@pytest.fixture(scope="module")
def iid():
    rng = np.random.default_rng(0)
    n = 20_000
    return jnp.asarray(rng.standard_normal(n)), n


def test_aci_reaches_nominal_coverage_with_a_wrong_law(iid):
    # The law is too narrow by 20 % and biased by 0.1 sd: uncalibrated, its
    # 1 % quantile is hit 2.6 % of the time. ACI's identity (Gibbs & Candès
    # 2021, Prop. 4.1; the state is never clipped, only the reading): p̃_{T+1} = p̃_1 + γ Σ_t (p - hit_t),
    # so |mean hit - p| = |p̃_{T+1} - p̃_1|/(γ T) <= (max p̃ - min p̃)/(γ T)
    # for every sequence.
    outcomes, n = iid
    hits, working = _run_aci(outcomes, jnp.full(n, 0.1), jnp.full(n, 0.8))
    coverage = hits.mean(axis=0)
    p = np.asarray(LEVELS)
    # 1e-12: the identity is exact up to the round-off of 20 000 additions.
    np.testing.assert_allclose(p - coverage, (working[-1] - p) / (GAMMA * n), rtol=0, atol=1e-12)
    spread = np.maximum(working.max(axis=0), p) - np.minimum(working.min(axis=0), p)
    assert np.all(np.abs(coverage - p) <= spread / (GAMMA * n) + 1e-12)
    # The bound is informative here: every level within 0.006 of nominal.
    assert np.all(np.abs(coverage - p) < 0.006), coverage
    uncalibrated = np.asarray(outcomes)[:, None] <= 0.1 + 0.8 * np.asarray(ndtri(LEVELS))[None]
    assert abs(uncalibrated.mean(axis=0)[0] - 0.01) > 0.01  # the law alone is far off


def test_aci_on_the_true_law_stays_within_monte_carlo_error(iid):
    outcomes, n = iid
    hits, _ = _run_aci(outcomes, jnp.zeros(n), jnp.ones(n))
    coverage = hits.mean(axis=0)
    p = np.asarray(LEVELS)
    # Binomial standard error of a frequency; 4 SE for 7 levels at once.
    se = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(coverage - p) <= 4 * se), (coverage - p, se)


def test_aci_tracks_a_scale_shift(iid):
    # The outcome scale doubles halfway; the law does not know. The second
    # half's coverage is still nominal up to the deterministic bound.
    outcomes, n = iid
    scale_true = np.where(np.arange(n) < n // 2, 1.0, 2.0)
    hits, working = _run_aci(outcomes * scale_true, jnp.zeros(n), jnp.ones(n))
    half = hits[n // 2:]
    bound = (1.0 + GAMMA) / (GAMMA * half.shape[0])
    assert np.all(np.abs(half.mean(axis=0) - np.asarray(LEVELS)) <= bound)


def test_aci_does_not_move_on_invalid_steps():
    working = LEVELS + 0.001
    moved, hits = aci_update(working, LEVELS, jnp.zeros(7), jnp.asarray(1.0), jnp.asarray(False), jnp.asarray(0.1))
    np.testing.assert_array_equal(np.asarray(moved), np.asarray(working))
    assert np.all(np.isnan(np.asarray(hits)))


def test_pinball_weights_move_to_the_better_law():
    """Two kernels with Student-t laws, one centred on the truth and one 2 sd off: the
    interval mixture's pinball weights go to the first, the ensemble weights stay put."""
    from fnpredict.intervals import interval_init, interval_update
    from fnpredict.kernels import History

    levels = tuple(float(p) for p in LEVELS)
    rng = np.random.default_rng(3)
    outcomes = jnp.asarray(rng.standard_normal(400))
    predictions = jnp.asarray([0.0, 2.0])
    weights = jnp.asarray([0.5, 0.5])

    def body(carry, y):
        state, history = carry
        history = history.push(y[None])
        state, quantiles, info = interval_update(
            state, levels, history, y, jnp.asarray(True), predictions, predictions, (None, None), weights,
            jnp.asarray(GAMMA), jnp.asarray(0.06), 16, "pinball", jnp.asarray(1.0), jnp.asarray(0.99))
        return (state, history), info.mixture_weights

    start = (interval_init(2, levels, jnp.float64), History.empty(64))
    _, mixture_weights = jax.lax.scan(body, start, outcomes)
    assert float(mixture_weights[-1, 0]) > 0.99, np.asarray(mixture_weights[-1])
