"""Kernel C: the in-graph jump-diffusion fit and the PIDE forecast, against an oracle and bad input.

The forecasting tests share one vmapped compilation: every window (the
simulated OU-with-jumps series and the adversarial ones) is a lane of one
batch.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnpredict as fp
from fnpredict.kernels import kernel_class
from fnpredict.kernels.base import EmptyState, History
from fnpredict.kernels.imex import MIN_INCREMENTS, IMEXInfo, IMEXKernel, fit_jump_diffusion

CONFIG = fp.PredictorConfig()
BUFFER = CONFIG.buffer_size

# OU with compound-Poisson normal jumps, time unit one observation step.
# κ = 0.4 makes mean reversion matter: the random walk's excess MSE over the
# oracle is (1 - e^{-κ})/(1 + e^{-κ}) ≈ 20 %, so "within 10 % of the oracle"
# separates a model that learns the reversion from one that does not.
TRUE = dict(reversion=0.4, level=1.0, volatility=0.01, rate=0.04, jump_mean=0.03, jump_std=0.03)
SERIES_LENGTH = 3000


def _simulate_ou_jumps(length, reversion, level, volatility, rate, jump_mean, jump_std, seed):
    """Exact simulation of dX = κ(θ - X)dt + σ dW + dJ on a unit grid.

    Jumps arrive at uniform times s within a step and have decayed by
    e^{-κ(1 - s)} at its end; the Gaussian part is the exact OU transition.
    """
    rng = np.random.default_rng(seed)
    decay = np.exp(-reversion)
    noise_sd = volatility * np.sqrt((1.0 - decay**2) / (2.0 * reversion))
    x = np.empty(length)
    x[0] = level
    for t in range(1, length):
        n_jumps = rng.poisson(rate)
        sizes = rng.normal(jump_mean, jump_std, n_jumps)
        times = rng.uniform(size=n_jumps)
        jumps = np.sum(sizes * np.exp(-reversion * (1.0 - times)))
        x[t] = level + (x[t - 1] - level) * decay + noise_sd * rng.standard_normal() + jumps
    return x


def _oracle_mean(x, reversion, level, rate, jump_mean, **_):
    """E[X_{t+1} | X_t = x] = θ' + (x - θ')e^{-κ}, θ' = θ + λμ_J/κ (see test_pide)."""
    shifted = level + rate * jump_mean / reversion
    return shifted + (x - shifted) * np.exp(-reversion)


def _windows_of(series):
    return np.lib.stride_tricks.sliding_window_view(series, BUFFER)


def _adversarial_windows():
    rng = np.random.default_rng(7)
    base = 4.0 + np.cumsum(rng.standard_normal(BUFFER) * 0.01)
    windows = {
        # Bounded increments: none exceeds 4 MAD-σ, so λ is estimated 0.
        "no_jumps": 4.0 + np.cumsum(rng.uniform(-0.01, 0.01, BUFFER)),
        "constant": np.full(BUFFER, 3.5),
        "spike": base.copy(),
        "level_shift": base.copy(),
        "newest_huge": base.copy(),
        "normal": base.copy(),
    }
    windows["spike"][BUFFER // 2] = 1e12
    windows["level_shift"][BUFFER - 20:] += 1e12
    windows["newest_huge"][-1] = 1e12
    return windows


@pytest.fixture(scope="module")
def kernel():
    return kernel_class("imex").from_config(CONFIG)


@pytest.fixture(scope="module")
def batch(kernel):
    """One vmapped solve over every window of the module; results by name."""
    series = _simulate_ou_jumps(SERIES_LENGTH, **TRUE, seed=1)
    simulated = _windows_of(series)[:-1]  # each window's next value exists
    adversarial = _adversarial_windows()
    names = list(adversarial)
    # The "normal" window twice more, with jump thresholds 3 and 6.
    values = np.concatenate([simulated, np.stack([adversarial[n] for n in names]),
                             np.stack([adversarial["normal"]] * 2)])
    thresholds = np.full(len(values), float(fp.Hyperparams().imex_jump_threshold))
    thresholds[-2:] = (3.0, 6.0)
    counts = np.full(len(values), BUFFER, np.int32)
    # One short window: the engine's 5th step (4 increments < MIN_INCREMENTS).
    values = np.concatenate([values, adversarial["normal"][None]])
    thresholds = np.append(thresholds, 4.0)
    counts = np.append(counts, 5).astype(np.int32)

    def solve(window, count, threshold):
        history = History(values=window[:, None], count=count, observed=jnp.asarray(True))
        forecast, fit, solution = kernel.solve(history, fp.Hyperparams(imex_jump_threshold=threshold))
        return forecast, fit, solution.info

    arrays = (jnp.asarray(values), jnp.asarray(counts), jnp.asarray(thresholds))
    forecast, fit, info = jax.jit(jax.vmap(solve))(*arrays)
    n_sim = len(simulated)
    index = {name: n_sim + i for i, name in enumerate(names)}
    index.update(threshold_3=n_sim + len(names), threshold_6=n_sim + len(names) + 1, short=len(values) - 1)
    return dict(series=series, n_sim=n_sim, forecast=forecast, fit=fit, info=info, index=index,
                windows=values)


def _lane(tree, i):
    return jax.tree_util.tree_map(lambda leaf: leaf[i], tree)


def test_registry_and_config(kernel):
    assert isinstance(kernel, IMEXKernel)
    assert kernel.name == "imex"
    assert (kernel.grid_size, kernel.n_steps, kernel.max_iter) == (CONFIG.imex_grid, CONFIG.imex_steps,
                                                                    CONFIG.imex_max_iter)
    state = kernel.init(fp.Hyperparams(), jnp.float64)
    assert isinstance(state, EmptyState) and not jax.tree_util.tree_leaves(state)


def test_mse_within_ten_percent_of_oracle(batch):
    series, n_sim = batch["series"], batch["n_sim"]
    last = series[BUFFER - 1 : BUFFER - 1 + n_sim]
    target = series[BUFFER : BUFFER + n_sim]
    prediction = np.asarray(batch["forecast"].value[:n_sim])
    assert not np.any(np.asarray(batch["forecast"].fallback[:n_sim]))
    assert np.all(np.asarray(batch["forecast"].converged[:n_sim]))
    mse_kernel = np.mean((target - prediction) ** 2)
    mse_oracle = np.mean((target - _oracle_mean(last, **TRUE)) ** 2)
    mse_random_walk = np.mean((target - last) ** 2)
    # Acceptance: kernel C within 10 % of the true-parameter conditional mean.
    assert mse_kernel <= 1.1 * mse_oracle, (mse_kernel / mse_oracle, mse_random_walk / mse_oracle)
    # ... a bar the random walk (no reversion learnt) does not clear.
    assert mse_random_walk > 1.1 * mse_oracle


def _scheme_move(fit, last, n_steps):
    """The IMEX scheme's exact one-step move for the fitted affine model.

    With g(x) = x the grid solution stays linear, u^n = α_n (x - y_t) + β_n
    (drift b(x) = b_t - κ(x - y_t), jumps of mean μ_J at rate λ). Implicit
    drift and explicit jumps give α_{n+1} = α_n / (1 + κΔ) and
    β_{n+1} = β_n + Δ(b_t α_{n+1} + λ μ_J α_n), α_0 = 1, β_0 = 0; the
    forecast is y_t + β_N. Derived independently of the grid code.
    """
    dt = 1.0 / n_steps
    kappa = np.asarray(fit.reversion)
    drift_here = np.asarray(fit.drift) - kappa * (last - np.asarray(fit.level))
    jump_drift = np.asarray(fit.intensity) * np.asarray(fit.jump_mean)
    alpha, beta = np.ones_like(last), np.zeros_like(last)
    for _ in range(n_steps):
        new_alpha = alpha / (1.0 + kappa * dt)
        beta = beta + dt * (drift_here * new_alpha + jump_drift * alpha)
        alpha = new_alpha
    return beta


def test_forecast_is_the_schemes_exact_answer(batch):
    # Space is exact for a linear solution (central/upwind drift, linear
    # boundary, mean-preserving jump lattice), so the grid forecast must equal
    # the scheme's closed form to rounding: ~1e-13 of the grid's span W·s
    # (W <= 50 scale units here) is far below 1e-9 of a move of ~1e-3.
    n_sim = batch["n_sim"]
    last = batch["windows"][:n_sim, -1]
    expected = _scheme_move(_lane(batch["fit"], slice(0, n_sim)), last, CONFIG.imex_steps)
    move = np.asarray(batch["forecast"].value[:n_sim]) - last
    np.testing.assert_allclose(move, expected, rtol=1e-9, atol=1e-13)


def test_solver_converges_in_two_evaluations(batch):
    n_sim = batch["n_sim"]
    info = batch["info"]
    # u is linear in ξ: the first iterate is exact and the second verifies.
    assert np.all(np.asarray(info.iterations[:n_sim]) == 2)
    # The grid spans μ_J + 8 s_J, so no jump rate is dropped beyond the
    # rounding of λ - Σ w_k (a few ulps of λ <= imex_steps).
    assert np.all(np.asarray(info.truncated_mass[:n_sim]) <= 1e-13)


def test_no_jumps_window(batch):
    i = batch["index"]["no_jumps"]
    forecast, fit = _lane(batch["forecast"], i), _lane(batch["fit"], i)
    assert float(fit.intensity) == 0.0
    assert bool(fit.valid) and not bool(forecast.fallback) and bool(forecast.converged)
    assert np.isfinite(float(forecast.value))


def test_constant_window_falls_back(batch):
    forecast = _lane(batch["forecast"], batch["index"]["constant"])
    assert bool(forecast.fallback)
    assert float(forecast.value) == 3.5


@pytest.mark.parametrize("case", ["spike", "level_shift", "newest_huge"])
def test_huge_jump_gives_a_finite_forecast(batch, case):
    i = batch["index"][case]
    forecast, fit = _lane(batch["forecast"], i), _lane(batch["fit"], i)
    assert np.isfinite(float(forecast.value))
    assert all(np.isfinite(float(leaf)) for leaf in jax.tree_util.tree_leaves(fit))
    last = float(batch["windows"][i, -1])
    if bool(forecast.fallback):
        # Unusable results are the last value, flagged.
        assert float(forecast.value) == last
    else:
        # A spike up and straight back is two opposite jumps: their mean is ~0,
        # so the forecast stays within a few increment scales of the last value
        # (the drift line must not be evaluated at the spike's level).
        assert abs(float(forecast.value) - last) < 10 * float(fit.scale)


def test_huge_level_shift_is_unusable(batch):
    # After a 1e12 shift the 0.01 moves are below 64 ulps of the level: the
    # fit is rounding noise, so the kernel falls back instead of inventing.
    forecast = _lane(batch["forecast"], batch["index"]["level_shift"])
    assert bool(forecast.fallback)


def test_short_window_falls_back(batch):
    forecast = _lane(batch["forecast"], batch["index"]["short"])
    assert 5 - 1 < MIN_INCREMENTS
    assert bool(forecast.fallback)
    assert float(forecast.value) == float(batch["windows"][batch["index"]["short"], -1])


def test_jump_threshold_is_a_live_hyperparameter(batch):
    index = batch["index"]
    low = float(batch["fit"].intensity[index["threshold_3"]])
    high = float(batch["fit"].intensity[index["threshold_6"]])
    # A lower threshold flags at least as many jumps, and on a Gaussian
    # window of 127 increments 3 MAD-σ flags some (expected 0.27 % · 127 > 0
    # is not guaranteed, so only the order is asserted, strictly for this seed).
    assert low > high


def test_non_convergence_is_reported_not_hidden(batch):
    # One fixed-point slot cannot verify convergence (that takes a second
    # evaluation): converged must say False, yet the first iterate — the
    # fully upwind implicit step, exact for this linear problem — is used.
    i = batch["index"]["normal"]
    window = jnp.asarray(batch["windows"][i])[:, None]
    history = History(values=window, count=jnp.asarray(BUFFER, jnp.int32), observed=jnp.asarray(True))
    capped = IMEXKernel.from_config(CONFIG.replace(imex_max_iter=1))
    forecast, _, solution = jax.jit(lambda h: capped.solve(h, fp.Hyperparams()))(history)
    assert not bool(forecast.converged) and not bool(solution.info.converged)
    assert int(solution.info.iterations) == 1
    assert not bool(forecast.fallback)
    # Same answer as the converged default kernel on this window (its lane of
    # the vmapped batch): 1e-12 relative of a level ~4 is rounding, vmap included.
    reference = _lane(batch["forecast"], i)
    assert bool(reference.converged)
    np.testing.assert_allclose(float(forecast.value), float(reference.value), rtol=1e-12, atol=0)


def test_fit_recovers_the_model_parameters():
    """On a long simulated OU with jumps the estimators are consistent.

    μ_J = 0.1 is 10 diffusion sd, so nearly every jump is flagged (a missed
    jump inflates σ̂: at κ = 0.3, where the pull after a jump widens the
    MAD, ~4 % of jumps hide and σ̂ errs by +5 %; κ = 0.1 keeps that under
    1 %). Tolerances are 4 standard errors at n = 6000. The first moment
    of the jumps is asserted as the identified quantity, the one-step jump
    contribution λ μ_J d(κ): with strong reversion the pull-backs right
    after a jump cross the threshold too (about 2 % of the flags at κ = 0.3),
    adding small "jumps" that raise λ and lower μ_J but keep their product. s_J is not asserted
    (two jumps in one step and the spread of their decay inflate the flagged
    variance: a documented approximation).
    """
    n = 6000
    true = dict(reversion=0.1, level=2.0, volatility=0.01, rate=0.05, jump_mean=0.1, jump_std=0.02)
    x = _simulate_ou_jumps(n, **true, seed=3)
    fit = jax.jit(fit_jump_diffusion)(jnp.asarray(x), jnp.ones(n, bool), 4.0)
    assert bool(fit.valid)
    kappa, sigma, rate, mu = true["reversion"], true["volatility"], true["rate"], true["jump_mean"]
    decay = np.exp(-kappa)
    noise_sd = sigma * np.sqrt((1 - decay**2) / (2 * kappa))
    p = 1 - np.exp(-rate)
    se_rate = np.sqrt(p * (1 - p) / n) / (1 - p)
    assert abs(float(fit.intensity) - rate) < 4 * se_rate
    # A flagged size: a jump N(μ, s²) times its decay e^{-κ(1-U)} (mean
    # d(κ), variance (1 - e^{-2κ})/(2κ) - d²), plus diffusion noise and the
    # level's pull (1 - e^{-κ})(x - θ).
    mean_decay = (1 - decay) / kappa
    decay_sd = np.sqrt((1 - decay**2) / (2 * kappa) - mean_decay**2)
    stationary_sd = noise_sd / np.sqrt(1 - decay**2)
    pull_sd = (1 - decay) * stationary_sd
    flagged_sd = np.sqrt(true["jump_std"] ** 2 + (decay_sd * mu) ** 2 + noise_sd**2 + pull_sd**2)
    # p·(mean flagged size) has standard error sqrt(p E[size²] / n).
    se_mean = np.sqrt(p * ((mu * mean_decay) ** 2 + flagged_sd**2) / n)
    fitted_decay = -np.expm1(-float(fit.reversion)) / float(fit.reversion)
    contribution = float(fit.intensity) * float(fit.jump_mean) * fitted_decay
    assert abs(contribution - rate * mu * mean_decay) < 4 * se_mean, (contribution, rate * mu * mean_decay)
    se_decay = np.sqrt((1 - decay**2) / n)
    assert abs(float(fit.reversion) - kappa) < 4 * se_decay / decay
    # σ̂/σ has relative standard error about 1/sqrt(2n) ≈ 0.9 %.
    assert abs(float(fit.volatility) / sigma - 1) < 4 / np.sqrt(2 * n)
    # The fitted conditional mean at θ and ±2 stationary sd from it: a
    # regression prediction error (~σ_ε/sqrt(n) per unit of leverage, up to
    # 3) plus the jump term's error.
    for x0 in (true["level"] - 2 * stationary_sd, true["level"], true["level"] + 2 * stationary_sd):
        truth = _oracle_mean(x0, **true)
        got = float(fit.conditional_mean(x0))
        tolerance = 4 * (3 * noise_sd / np.sqrt(n) + se_mean)
        assert abs(got - truth) < tolerance, (x0, got, truth, tolerance)


def test_step_reports_the_fit_and_skips_missing_steps(kernel):
    # Kernel C carries nothing across steps: the step's info holds this
    # window's fit and the solver's report, the same as ``solve``'s. On a
    # missing step the window is unchanged, so the step repeats the last
    # observed one exactly.
    hp = fp.Hyperparams()
    state = kernel.init(hp, jnp.float64)
    window = jnp.asarray(_adversarial_windows()["normal"])[:, None]
    seen = History(values=window, count=jnp.asarray(BUFFER, jnp.int32), observed=jnp.asarray(True))
    step = jax.jit(kernel.step)
    key = jax.random.key(0)
    new_state, forecast, info = step(state, seen, hp, key)
    assert isinstance(new_state, EmptyState) and isinstance(info, IMEXInfo)
    assert bool(info.fit.valid) and bool(info.solver.converged) and not bool(forecast.fallback)
    floats = [np.asarray(x) for x in jax.tree_util.tree_leaves((forecast, info)) if np.asarray(x).dtype != bool]
    assert all(np.all(np.isfinite(x)) for x in floats)
    # The same arithmetic compiled apart: equal up to fused-operation rounding.
    solved, fit, solution = jax.jit(kernel.solve)(seen, hp)
    reference = jax.tree_util.tree_leaves((solved, fit, solution.info))
    for a, b in zip(jax.tree_util.tree_leaves((forecast, info)), reference):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-15)
    # The kernel's own group or the full Hyperparams: the same step.
    _, by_group, _ = step(state, seen, hp.component("imex"), key)
    np.testing.assert_allclose(float(by_group.value), float(forecast.value), rtol=1e-14, atol=0)
    missing = History(values=window, count=jnp.asarray(BUFFER, jnp.int32), observed=jnp.asarray(False))
    after = step(new_state, missing, hp, key)
    for a, b in zip(jax.tree_util.tree_leaves(after), jax.tree_util.tree_leaves((new_state, forecast, info))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
