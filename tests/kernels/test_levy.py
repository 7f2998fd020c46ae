"""Kernel A: the CMS sampler against scipy, McCulloch's estimator, the kernel's guards."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import fnpredict as fp
from fnpredict.kernels import kernel_class
from fnpredict.kernels.base import EmptyState, Forecast, History
from fnpredict.kernels.levy import (
    MIN_INCREMENTS,
    STABILITY_MIN,
    LevyInfo,
    LevyKernel,
    estimate_stable,
    sample_stable,
)

N_KS = 20_000
# Exact scipy cdf at this many order statistics of the sample, linear in
# between (see _ks_pvalue).
N_NODES = 1001
GAMMA, DELTA = 1.5, 0.3  # not (1, 0): the S1 location shift γ log γ at α = 1 must show

# Traced parameters: one compilation serves every (α, β, γ, δ), α = 1 included.
sample_jit = jax.jit(sample_stable, static_argnames=("shape", "parameterization", "dtype"))
# Everything else jitted too: eager mode would compile each primitive apart.
estimate_jit = jax.jit(estimate_stable)


@eqx.filter_jit
def _step(kernel, state, history, hp, key):
    return kernel.step(state, history, hp, key)


def _forecast(kernel, state, history, hp, key):
    return _step(kernel, state, history, hp, key)[1]


@eqx.filter_jit
def _fit(kernel, history):
    return kernel.fit(history)


@eqx.filter_jit
def _quantiles(kernel, state, history, hp, key, probs):
    return kernel.predictive_quantiles(state, history, hp, key, probs)


def _scipy_stable(alpha, beta, loc, scale, parameterization):
    dist = scipy.stats.levy_stable(alpha, beta, loc=loc, scale=scale)
    dist.parameterization = parameterization  # the frozen copy only
    # scipy's piecewise cdf evaluates every x with |x0 - ζ| < 0.005 α^(1/α) at
    # ζ itself: a flat spot worth ~0.002 of probability near the mode at
    # α = 1.9. A tighter snap keeps the oracle smooth (same integrals).
    dist.dist.piecewise_x_tol_near_zeta = 1e-6
    return dist


def _ks_pvalue(draws: np.ndarray, dist) -> float:
    """KS p-value of the draws against ``dist``, its cdf evaluated at 1001 order statistics.

    The cdf is exact at the nodes and linearly interpolated between them;
    since the true cdf is monotone, the interpolant errs inside a cell by at
    most the cell's probability, which is asserted to be under 1/3 of the
    1 % critical KS distance 1.63/sqrt(n) = 0.0115. Evaluating scipy's
    piecewise-integration cdf at all 20 000 draws would take ~8 s per case.
    """
    draws = np.sort(draws)
    nodes = draws[np.linspace(0, draws.size - 1, N_NODES).round().astype(int)]
    cdf = dist.cdf(nodes)
    assert np.all(np.diff(cdf) >= 0.0)
    assert np.max(np.diff(cdf)) < 1.63 / np.sqrt(draws.size) / 3
    return scipy.stats.kstest(draws, lambda x: np.interp(x, nodes, cdf)).pvalue


@pytest.mark.parametrize("beta", [0.0, 0.5])
@pytest.mark.parametrize("alpha", [0.8, 1.0, 1.5, 1.9])
def test_cms_matches_scipy_s1(alpha, beta):
    key = jax.random.key(int(100 * alpha + 10 * beta))
    draws = np.asarray(sample_jit(key, alpha, beta, GAMMA, DELTA, (N_KS,)))
    assert np.all(np.isfinite(draws))
    pvalue = _ks_pvalue(draws, _scipy_stable(alpha, beta, DELTA, GAMMA, "S1"))
    print(f"KS S1 alpha={alpha} beta={beta}: p = {pvalue:.4f}")
    assert pvalue > 0.01, f"KS p = {pvalue:.4f} for alpha={alpha}, beta={beta} (S1)"


@pytest.mark.parametrize("alpha", [1.0, 1.5])
def test_cms_matches_scipy_s0(alpha):
    beta = 0.5
    key = jax.random.key(7 + int(10 * alpha))
    draws = np.asarray(sample_jit(key, alpha, beta, GAMMA, DELTA, (N_KS,), "S0"))
    pvalue = _ks_pvalue(draws, _scipy_stable(alpha, beta, DELTA, GAMMA, "S0"))
    print(f"KS S0 alpha={alpha} beta={beta}: p = {pvalue:.4f}")
    assert pvalue > 0.01, f"KS p = {pvalue:.4f} for alpha={alpha}, beta={beta} (S0)"


def test_s0_is_continuous_at_alpha_one():
    # Same key, α a hair away from 1: S0 draws move by O(|α - 1|) (observed
    # median ~0.8 |α - 1|). Without the α = 1 band, or in S1, they would move
    # by ~β γ · 2/(π |α - 1|), i.e. by 3e5 at |α - 1| = 1e-6.
    key = jax.random.key(3)
    at_one = np.asarray(sample_jit(key, 1.0, 0.5, 1.0, 0.0, (4000,), "S0"))
    for offset in (-1e-4, -1e-6, -1e-9, 1e-9, 1e-6, 1e-4):
        near = np.asarray(sample_jit(key, 1.0 + offset, 0.5, 1.0, 0.0, (4000,), "S0"))
        assert np.median(np.abs(near - at_one)) <= 10 * abs(offset)


def test_sampler_traced_alpha_one_under_vmap():
    alphas = jnp.asarray([0.6, 1.0, 1.0 + 1e-12, 2.0])
    batched = jax.jit(jax.vmap(lambda a: sample_stable(jax.random.key(0), a, 0.7, 2.0, -1.0, (512,))))(alphas)
    assert np.all(np.isfinite(np.asarray(batched)))
    for i, alpha in enumerate(np.asarray(alphas)):
        single = sample_jit(jax.random.key(0), float(alpha), 0.7, 2.0, -1.0, (512,))
        # vmap vs a single call may reassociate float64 arithmetic: a few ulps
        # relative, amplified by at most the pow/tan conditioning (1e-9 is ample).
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(single), rtol=1e-9, atol=1e-12)
    # α = 2 is Gaussian with variance 2γ²: the sample variance of 512 draws has
    # relative standard error sqrt(2/511) = 0.063; allow 4 of them.
    gaussian = np.asarray(batched[3])
    assert abs(gaussian.var() / (2 * 2.0**2) - 1) < 4 * np.sqrt(2 / 511)


@pytest.mark.parametrize("alpha", [0.8, 1.0, 1.5, 1.9])
def test_mcculloch_recovers_parameters(alpha):
    beta, gamma, delta = 0.3, 2.0, 1.0
    draws = sample_jit(jax.random.key(int(1000 * alpha)), alpha, beta, gamma, delta, (5000,), "S0")
    estimate = estimate_jit(draws)
    assert bool(estimate.valid)
    print(f"McCulloch alpha={alpha}: " + ", ".join(
        f"{name} {float(getattr(estimate, name)):.4f}" for name in ("stability", "skewness", "scale", "location")
    ))
    # Sampling s.d. of McCulloch's α at n = 5000 (20 replications): 0.02
    # (α <= 1.5) to 0.06 (α = 1.9); of γ/γ: 0.02-0.05; of δ₀/γ: 0.03; of β:
    # 0.04 for α <= 1.5, but 0.2 at α = 1.9, where β hardly changes the law.
    assert abs(float(estimate.stability) - alpha) <= 0.1
    assert abs(float(estimate.scale) / gamma - 1) <= 0.15
    assert abs(float(estimate.location) - delta) <= 0.3 * gamma
    if alpha <= 1.5:
        assert abs(float(estimate.skewness) - beta) <= 0.2


def test_mcculloch_ignores_masked_entries():
    clean = sample_jit(jax.random.key(11), 1.6, 0.0, 1.0, 0.0, (80,))
    junk = jnp.asarray([1e12, -1e12, jnp.nan, 0.0] * 4)
    # The real values at the end, or reversed at the start; junk elsewhere.
    tail = estimate_jit(jnp.concatenate([junk, clean]), jnp.arange(96) >= 16)
    head = estimate_jit(jnp.concatenate([clean[::-1], -junk]), jnp.arange(96) < 80)
    # Same order statistics, same arithmetic: bitwise equal.
    for field in ("stability", "skewness", "scale", "location", "valid"):
        np.testing.assert_array_equal(np.asarray(getattr(tail, field)), np.asarray(getattr(head, field)))
    assert bool(tail.valid)


def test_mcculloch_degenerate_input_is_flagged_and_finite():
    everything = jnp.ones(96, bool)
    cases = {
        "constant": (jnp.zeros(96), everything),
        "too few": (jnp.arange(96.0), jnp.arange(96) >= 96 - (MIN_INCREMENTS - 1)),
        "all masked": (jnp.arange(96.0), jnp.zeros(96, bool)),
    }
    for name, (values, mask) in cases.items():
        estimate = estimate_jit(values, mask)
        assert not bool(estimate.valid), name
        leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(estimate)]
        assert all(np.all(np.isfinite(x)) for x in leaves if x.dtype != bool), name
    # Clamps: tails far heavier than any table entry (ν_α = 1e9) give α at
    # its floor, not an extrapolation.
    heavy = jnp.concatenate([1e-3 * jnp.arange(76.0), jnp.full(10, 1e6), jnp.full(10, -1e6)])
    estimate = estimate_jit(heavy, everything)
    assert bool(estimate.valid)
    assert float(estimate.stability) == STABILITY_MIN
    assert -1.0 <= float(estimate.skewness) <= 1.0


def _history(values, count=None, observed=True, dtype=jnp.float64) -> History:
    values = jnp.asarray(values, dtype).reshape(-1, 1)
    count = values.shape[0] if count is None else count
    return History(values=values, count=jnp.asarray(count), observed=jnp.asarray(observed))


def _stable_walk(config, key, alpha=1.7, beta=0.0, gamma=0.5):
    increments = sample_jit(key, alpha, beta, gamma, 0.0, (config.buffer_size,), "S0")
    return 100.0 + jnp.cumsum(increments)


def test_registry_and_protocol():
    config = fp.PredictorConfig()
    assert kernel_class("levy") is LevyKernel and LevyKernel.name == "levy"
    kernel = LevyKernel.from_config(config)
    state = kernel.init(fp.Hyperparams(), jnp.float64)
    assert isinstance(state, EmptyState)
    history = _history(_stable_walk(config, jax.random.key(1)))
    new_state, forecast, info = _step(kernel, state, history, fp.Hyperparams(), jax.random.key(2))
    assert isinstance(forecast, Forecast) and isinstance(new_state, EmptyState) and isinstance(info, LevyInfo)
    assert not bool(forecast.fallback) and np.isfinite(float(forecast.value))
    # The step's info reports this window's fit.
    assert bool(info.fitted) and float(info.scale) > 0
    # (The same arithmetic compiled apart: equal up to fused-operation rounding.)
    fit = _fit(kernel, history)
    assert bool(fit.valid)
    for name in ("stability", "skewness", "scale", "location"):
        np.testing.assert_allclose(float(getattr(info, name)), float(getattr(fit, name)), rtol=1e-12, atol=1e-15)
    # The kernel's own group or the full Hyperparams: the same step.
    _, by_group, _ = _step(kernel, state, history, fp.Hyperparams().component("levy"), jax.random.key(2))
    np.testing.assert_allclose(float(by_group.value), float(forecast.value), rtol=1e-14, atol=0)


def test_predictive_quantiles_match_the_fitted_law():
    config = fp.PredictorConfig()
    kernel = LevyKernel.from_config(config)
    hp = fp.Hyperparams()
    state = kernel.init(hp, jnp.float64)
    history = _history(_stable_walk(config, jax.random.key(5), alpha=1.5, beta=0.5))
    key = jax.random.key(6)
    probs = jnp.asarray([0.1, 0.5, 0.9])
    quantiles, fallback = _quantiles(kernel, state, history, hp, key, probs)
    forecast = _forecast(kernel, state, history, hp, key)
    assert not bool(fallback)
    assert np.all(np.diff(np.asarray(quantiles)) > 0)
    # Same draws, same interpolation: the median is the forecast (1e-14:
    # only the order of fused float operations may differ).
    np.testing.assert_allclose(float(quantiles[1]), float(forecast.value), rtol=1e-14, atol=0)

    fit = _fit(kernel, history)
    law = _scipy_stable(
        float(fit.stability), float(fit.skewness), float(history.last + fit.location), float(fit.scale), "S0"
    )
    for p, q in zip(np.asarray(probs), np.asarray(quantiles)):
        exact = law.ppf(p)
        # Monte Carlo standard error of a sample quantile from n draws:
        # sqrt(p(1-p)/n) / f(q_p); 4 of them.
        standard_error = np.sqrt(p * (1 - p) / config.levy_paths) / law.pdf(exact)
        assert abs(q - exact) < 4 * standard_error, (p, q, exact, standard_error)


def test_fallbacks_and_finiteness():
    config = fp.PredictorConfig()
    kernel = LevyKernel.from_config(config)
    hp = fp.Hyperparams()
    state = kernel.init(hp, jnp.float64)
    key = jax.random.key(0)
    walk = _stable_walk(config, jax.random.key(9))
    n = config.buffer_size

    def run(history):
        new_state, forecast, info = _step(kernel, state, history, hp, key)
        floats = [np.asarray(x) for x in jax.tree_util.tree_leaves((new_state, info)) if np.asarray(x).dtype != bool]
        assert np.isfinite(float(forecast.value)) and all(np.all(np.isfinite(x)) for x in floats)
        return forecast, info

    # Empty buffer, first observation, too few increments: fallback to last.
    for count, values in ((0, jnp.zeros(n)), (1, jnp.full(n, 42.0)), (MIN_INCREMENTS, walk)):
        forecast, _ = run(_history(values, count))
        assert bool(forecast.fallback)
        assert float(forecast.value) == float(values[-1])
    forecast, _ = run(_history(walk, MIN_INCREMENTS + 1))
    assert not bool(forecast.fallback)

    # A constant series: zero scale, fallback, no estimate reported.
    forecast, info = run(_history(jnp.full(n, 1234.5)))
    assert bool(forecast.fallback) and float(forecast.value) == 1234.5
    assert not bool(info.fitted)

    # A 1e12 spike inside the window barely moves the quantile fit ...
    spiked = walk.at[n - 20].set(1e12)
    forecast, _ = run(_history(spiked))
    clean_scale = float(_fit(kernel, _history(walk)).scale)
    assert not bool(forecast.fallback)
    assert abs(float(forecast.value) - float(walk[-1])) < 10 * clean_scale
    # Also in float32, where 64 ulps of 1e12 (8e6) dwarf the increments: the
    # degeneracy floor follows the smallest level in the window, not the spike.
    forecast32 = _forecast(kernel, kernel.init(hp, jnp.float32), _history(spiked, dtype=jnp.float32), hp, key)
    assert not bool(forecast32.fallback)
    assert abs(float(forecast32.value) - float(walk[-1])) < 10 * clean_scale
    # ... and as the newest value it stays finite.
    run(_history(walk.at[-1].set(1e12)))


def test_missing_step_keeps_state():
    # Kernel A carries nothing across steps: a missing step returns the empty
    # state, and since the window is unchanged on a missing step, the step
    # repeats the last observed step's fit and forecast exactly.
    config = fp.PredictorConfig()
    kernel = LevyKernel.from_config(config)
    hp = fp.Hyperparams()
    walk = _stable_walk(config, jax.random.key(3))
    key = jax.random.key(4)
    state = kernel.init(hp, jnp.float64)
    seen = _step(kernel, state, _history(walk), hp, key)
    kept = _step(kernel, seen[0], _history(walk, observed=False), hp, key)
    assert isinstance(kept[0], EmptyState) and not jax.tree_util.tree_leaves(kept[0])
    for a, b in zip(jax.tree_util.tree_leaves(kept), jax.tree_util.tree_leaves(seen)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
