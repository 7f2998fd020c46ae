"""The bad-tick filter in the predictor: the hedge of a held jump, its odds, and the window's tail index.

Oracles: Hill's estimator written out in numpy; the posterior odds written out
in plain Python from the module docstring's formula; and, end to end, the
forecast made while a value is held equals the forecast made when that
observation is missing, plus the hedge (a held step is a missing step for
everything else), for the point forecast, every kernel and every quantile.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnpredict as fp
from fnpredict import input_filter as filt
from fnpredict.data import load_sp500, log_levels
from fnpredict.kernels.base import History

THRESHOLD = 12.0


def _history(values):
    values = jnp.asarray(values, jnp.float64)
    return History(values=values[:, None], count=jnp.asarray(values.shape[0]), observed=jnp.asarray(True))


def _hill(values, k=filt.TAIL_ORDER):
    x = np.sort(np.abs(np.diff(values)))[::-1]
    return k / np.sum(np.log(x[:k] / x[k]))


@pytest.mark.parametrize("alpha", [1.5, 3.0])
def test_window_tail_index_is_hill(alpha):
    rng = np.random.default_rng(int(alpha * 10))
    increments = rng.pareto(alpha, 127) * rng.choice([-1.0, 1.0], 127)
    values = np.concatenate([[0.0], np.cumsum(increments)])
    got = float(filt.window_tail_index(_history(values)))
    assert got == pytest.approx(_hill(values), rel=1e-12)


def test_window_tail_index_prior_when_short_or_flat():
    assert float(filt.window_tail_index(_history(np.cumsum(np.ones(20))))) == filt.PRIOR_TAIL_INDEX
    assert float(filt.window_tail_index(_history(np.zeros(128)))) == filt.PRIOR_TAIL_INDEX


def _odds_probability(jump, confirmed, discarded, log_excess, prior_index):
    index = (confirmed + filt.PRIOR_TAIL_WEIGHT) / (log_excess + filt.PRIOR_TAIL_WEIGHT / prior_index)
    prior = (confirmed + filt.PRIOR_WEIGHT * filt.PRIOR_REAL) / (confirmed + discarded + filt.PRIOR_WEIGHT)
    log_odds = (math.log(prior / (1 - prior)) + math.log(index * filt.GLITCH_DECADES * math.log(10.0))
                - index * math.log(max(jump / filt.TAIL_REFERENCE, 1.0)))
    return 1.0 / (1.0 + math.exp(-log_odds)) if log_odds > -700 else 0.0


def _walk(n=128, seed=0, sigma=0.01):
    return 4.6 + np.cumsum(np.random.default_rng(seed).normal(0.0, sigma, n))


def _hold(values, obs, state=None):
    history = _history(values)
    state = filt.filter_init(1, jnp.float64) if state is None else state
    return filt.filter_observation(state, jnp.asarray([obs]), jnp.asarray(True), history, jnp.asarray(THRESHOLD))


@pytest.mark.parametrize("sigmas", [30.0, 60.0, 1e12])
def test_hedge_is_the_posterior_mean_shift(sigmas):
    values = _walk()
    scale = float(filt.robust_scale(_history(values)))
    obs = values[-1] + sigmas * scale if sigmas < 1e6 else 1e12
    state, history, use, info = _hold(values, obs)
    assert bool(info.held) and not bool(use) and int(history.count) == 128
    expected = _odds_probability(abs(obs - values[-1]) / scale, 0.0, 0.0, 0.0,
                                 float(filt.window_tail_index(_history(values))))
    assert float(info.real_probability) == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert float(info.hedge) == pytest.approx(expected * (obs - values[-1]), rel=1e-9, abs=1e-300)
    if sigmas > 1e6:
        assert abs(float(info.hedge)) < 1e-9  # a glitch moves the forecast by nothing
    else:
        assert 0.5 < float(info.real_probability) < 1.0


def test_outcomes_teach_the_odds():
    values = _walk()
    scale = float(filt.robust_scale(_history(values)))
    jump = values[-1] + 30 * scale
    state, _, _, first = _hold(values, jump)
    # Reverted: discarded, and the next 30σ hold is believed less.
    state, _, _, info = _hold(values, values[-1], state)
    assert bool(info.discarded) and float(state.discarded) == 1.0 and float(state.confirmed) == 0.0
    _, _, _, second = _hold(values, jump, state)
    assert float(second.real_probability) < float(first.real_probability)
    # Confirmed: counted, its excess enters Hill's statistic.
    state, _, _, _ = _hold(values, jump)
    state, history, use, info = _hold(values, jump + 0.1 * scale, state)
    assert bool(info.confirmed) and bool(use) and float(state.confirmed) == 1.0
    assert float(state.log_excess) == pytest.approx(math.log(30.0 / filt.TAIL_REFERENCE), rel=1e-6)


CONFIG = fp.PredictorConfig(buffer_size=64, kernels=("levy", "imex", "signature", "persistence"), levy_paths=64)


@pytest.fixture(scope="module")
def held_and_missing():
    prices = log_levels(load_sp500().values)[:200]
    at = 150
    sigma = np.std(np.diff(prices[:at]))
    held = prices.copy()
    held[at] = prices[at - 1] + 25 * sigma  # a jump the filter holds, then a revert
    missing = held.copy()
    missing[at] = np.nan
    key = jax.random.key(0)
    state = fp.init(CONFIG, key)
    runs = [jax.device_get(fp.predict(state, jnp.asarray(v), key)[1]) for v in (held, missing)]
    return at, held, runs


def test_forecast_while_held_is_missing_plus_hedge(held_and_missing):
    at, held, (with_hold, with_gap) = held_and_missing
    info = with_hold.telemetry.input_filter
    assert bool(info.held[at]) and bool(info.discarded[at + 1])
    hedge = float(info.hedge[at])
    assert 0.5 * (held[at] - held[at - 1]) < hedge < held[at] - held[at - 1]
    np.testing.assert_allclose(with_hold.prediction[at], with_gap.prediction[at] + hedge, rtol=0, atol=1e-12)
    np.testing.assert_allclose(with_hold.kernel_predictions[at], with_gap.kernel_predictions[at] + hedge,
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(with_hold.quantiles[at], with_gap.quantiles[at] + hedge, rtol=0, atol=1e-10)
    # Before the hold nothing differs; no hedge on any other step.
    np.testing.assert_array_equal(with_hold.prediction[:at], with_gap.prediction[:at])
    assert np.count_nonzero(info.hedge) == 1
