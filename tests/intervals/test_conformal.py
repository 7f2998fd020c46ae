"""Conformal quantile tracking: its deterministic coverage identity, and nominal coverage on i.i.d. data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import ndtri

from fnpredict.intervals.conformal import OFFSET_BOUND, level_step_factors, offset_quantiles, tracking_update

LEVELS = jnp.asarray([0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
ETA = 0.005
#: η_p, the step of each level's offset (1/(4p(1-p)) times ETA).
STEPS = ETA * np.asarray(level_step_factors(LEVELS))


def _run_tracking(outcomes, loc, scale, eta=ETA):
    """Tracking over a Gaussian law N(loc_t, scale_t²), offsets in units of scale_t: hits and offsets per step."""

    def body(carry, inputs):
        offsets, issued = carry
        y, mu, s = inputs
        offsets, hits = tracking_update(offsets, LEVELS, issued, y, jnp.asarray(True), jnp.asarray(eta))
        # The quantiles for the *next* outcome, from this step's law.
        return (offsets, offset_quantiles(mu + s * ndtri(LEVELS), offsets, s)), (hits, offsets)

    first = loc[0] + scale[0] * ndtri(LEVELS)
    _, (hits, offsets) = jax.lax.scan(body, (jnp.zeros(7), first), (outcomes[1:], loc[1:], scale[1:]))
    return np.asarray(hits), np.asarray(offsets)


@pytest.fixture(scope="module")
def iid():
    rng = np.random.default_rng(0)
    n = 20_000
    return jnp.asarray(rng.standard_normal(n)), n


def test_tracking_reaches_nominal_coverage_with_a_wrong_law(iid):
    # The law is too narrow by 20 % and biased by 0.1 sd: uncalibrated, its
    # 1 % quantile is hit 2.6 % of the time. The tracking identity (the
    # offsets start at 0 and are never clipped here): θ_{T+1} = η_p Σ_t (p - hit_t),
    # so |mean hit - p| = |θ_{T+1}|/(η_p T) <= (max θ - min θ)/(η_p T) for every sequence.
    outcomes, n = iid
    hits, offsets = _run_tracking(outcomes, jnp.full(n, 0.1), jnp.full(n, 0.8))
    assert np.all(np.abs(offsets) < OFFSET_BOUND)
    coverage = hits.mean(axis=0)
    p = np.asarray(LEVELS)
    steps = hits.shape[0]
    # 1e-12: the identity is exact up to the round-off of 20 000 additions.
    np.testing.assert_allclose(p - coverage, offsets[-1] / (STEPS * steps), rtol=0, atol=1e-12)
    spread = np.maximum(offsets.max(axis=0), 0.0) - np.minimum(offsets.min(axis=0), 0.0)
    assert np.all(np.abs(coverage - p) <= spread / (STEPS * steps) + 1e-12)
    # The bound is informative here: every level within 0.004 of nominal.
    assert np.all(np.abs(coverage - p) < 0.004), coverage
    uncalibrated = np.asarray(outcomes)[:, None] <= 0.1 + 0.8 * np.asarray(ndtri(LEVELS))[None]
    assert abs(uncalibrated.mean(axis=0)[0] - 0.01) > 0.01  # the law alone is far off
    # The offsets found the law's error: the true 1 % quantile is -2.326 sd,
    # the law's 0.1 - 0.8·2.326 = -1.761, so θ ≈ -0.565/0.8 = -0.71 scales.
    assert abs(offsets[-5000:, 0].mean() - (-2.3263 - (0.1 - 0.8 * 2.3263)) / 0.8) < 0.15


def test_tracking_on_the_true_law_stays_within_monte_carlo_error(iid):
    outcomes, n = iid
    hits, _ = _run_tracking(outcomes, jnp.zeros(n), jnp.ones(n))
    coverage = hits.mean(axis=0)
    p = np.asarray(LEVELS)
    # Binomial standard error of a frequency; 4 SE for 7 levels at once.
    se = np.sqrt(p * (1 - p) / hits.shape[0])
    assert np.all(np.abs(coverage - p) <= 4 * se), (coverage - p, se)


def test_tracking_moves_a_quantile_by_at_most_eta_scales_per_step(iid):
    # Unlike a level-space update, one exception moves a tail quantile by at
    # most η_p·(scale) however heavy the law's tail: here the law's scale is 1.
    outcomes, n = iid
    _, offsets = _run_tracking(outcomes * 30.0, jnp.zeros(n), jnp.ones(n))
    assert np.all(np.max(np.abs(np.diff(offsets, axis=0)), axis=0) <= STEPS + 1e-15)
    np.testing.assert_allclose(STEPS[[0, 3, 6]], [ETA * 0.25 / 0.0099, ETA, ETA * 0.25 / 0.0099], rtol=1e-12)


def test_tracking_follows_a_scale_shift(iid):
    # The outcome scale doubles halfway; the law does not know. The second
    # half's coverage is nominal up to the deterministic bound.
    outcomes, n = iid
    scale_true = np.where(np.arange(n) < n // 2, 1.0, 2.0)
    hits, offsets = _run_tracking(outcomes * scale_true, jnp.zeros(n), jnp.ones(n))
    half = slice(n // 2, None)
    steps = hits[half].shape[0]
    bound = (np.ptp(offsets[n // 2 - 1:], axis=0) + STEPS) / (STEPS * steps)
    assert np.all(np.abs(hits[half].mean(axis=0) - np.asarray(LEVELS)) <= bound)
    # The offsets found the new scale: the 99 % quantile is 2·2.326 sd, the
    # law's 2.326, so θ ends near 2.33 law scales. (Steps of at most η scales
    # take thousands of steps to get there; in the layer the residual scale
    # the offsets are measured in follows the shift itself.)
    assert abs(offsets[-2000:, -1].mean() - 2.3263) < 0.3, offsets[-2000:, -1].mean()


def test_offsets_are_bounded_and_do_not_move_on_invalid_steps():
    offsets = jnp.full(7, 0.3)
    moved, hits = tracking_update(offsets, LEVELS, jnp.zeros(7), jnp.asarray(1.0), jnp.asarray(False), jnp.asarray(0.1))
    np.testing.assert_array_equal(np.asarray(moved), np.asarray(offsets))
    assert np.all(np.isnan(np.asarray(hits)))
    far, _ = tracking_update(jnp.full(7, OFFSET_BOUND), LEVELS, jnp.full(7, -1e300), jnp.asarray(0.0),
                             jnp.asarray(True), jnp.asarray(1.0))
    assert np.all(np.asarray(far) <= OFFSET_BOUND)


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
            jnp.asarray(ETA), jnp.asarray(0.06), 16, "pinball", jnp.asarray(1.0), jnp.asarray(0.99))
        return (state, history), info.mixture_weights

    start = (interval_init(2, levels, jnp.float64), History.empty(64))
    _, mixture_weights = jax.lax.scan(body, start, outcomes)
    assert float(mixture_weights[-1, 0]) > 0.99, np.asarray(mixture_weights[-1])
