"""Kernel D: log-signature features + recursive least squares."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import signax

import fnpredict as fp
from fnpredict.kernels import kernel_class
from fnpredict.kernels.base import Forecast, History
from fnpredict.kernels.signature import (
    CLIP,
    SignatureInfo,
    SignatureKernel,
    SignatureState,
    _rls_step,
    logsignature_size,
)

# AR(2) in the increments, Δ_t = φ1 Δ_{t-1} + φ2 Δ_{t-2} + ε_t, ε ~ N(0, 1).
PHI = (0.6, -0.3)
N_STEPS = 3000


def _optimal_mse_ratio(phi1: float, phi2: float) -> float:
    """σ_ε² / Var(Δ): the best one-step MSE over the random walk's (last value) MSE."""
    variance = (1 - phi2) / ((1 + phi2) * ((1 - phi2) ** 2 - phi1**2))
    return 1.0 / variance


def _ar2_levels(seed: int, n: int = N_STEPS, phi=PHI) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(n)
    increments = np.zeros(n)
    for t in range(2, n):
        increments[t] = phi[0] * increments[t - 1] + phi[1] * increments[t - 2] + noise[t]
    return 100.0 + np.cumsum(increments)


def _push(history: History, obs) -> History:
    """The predictor's buffer update: slide by one, back-fill the window on the first observation."""
    observed = jnp.all(jnp.isfinite(obs))
    shifted = jnp.concatenate([history.values[1:], obs[None]], axis=0)
    first = jnp.broadcast_to(obs, history.values.shape)
    candidate = jnp.where(history.count == 0, first, shifted)
    return History(
        values=jnp.where(observed, candidate, history.values),
        count=jnp.where(observed, jnp.minimum(history.count + 1, history.values.shape[0]), history.count),
        observed=observed,
    )


@eqx.filter_jit
def _run(kernel: SignatureKernel, hp: fp.Hyperparams, series, buffer_size: int = 32):
    """lax.scan of push → step (learn, then forecast) over ``series`` (time, channels).

    Returns the final state, the forecasts, the fallback flags and, per step,
    whether every state leaf was finite.
    """
    dtype = series.dtype
    history = History(
        values=jnp.zeros((buffer_size, series.shape[1]), dtype), count=jnp.asarray(0, jnp.int32),
        observed=jnp.asarray(False),
    )
    state = kernel.init(hp, dtype)
    key = jax.random.key(0)  # kernel D ignores the key

    def body(carry, obs):
        history, state = carry
        history = _push(history, obs)
        state, forecast, _ = kernel.step(state, history, hp, key)
        finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(state)]))
        return (history, state), (forecast.value, forecast.fallback, finite)

    (_, state), (values, fallback, finite) = jax.lax.scan(body, (history, state), series)
    return state, values, fallback, finite


def _mse_ratio(levels: np.ndarray, forecasts: np.ndarray, start: int) -> float:
    """MSE of the forecasts of y_{t+1} over that of the last value y_t, for t >= start."""
    target = levels[start + 1:]
    errors = target - forecasts[start:-1]
    random_walk = target - levels[start:-1]
    return float(np.mean(errors**2) / np.mean(random_walk**2))


def test_registry_and_feature_count():
    assert kernel_class("signature") is SignatureKernel and SignatureKernel.name == "signature"
    for dim, depth in ((2, 1), (2, 3), (3, 3), (4, 2), (2, 5)):
        path = jnp.linspace(0.0, 1.0, 4 * dim).reshape(4, dim) ** 2
        assert signax.logsignature(path, depth).shape == (logsignature_size(dim, depth),)
    kernel = SignatureKernel.from_config(fp.PredictorConfig(n_channels=2))
    state = kernel.init(fp.Hyperparams(rls_ridge=4.0), jnp.float64)
    assert isinstance(state, SignatureState)
    n = logsignature_size(3, 3)  # 14: bias in place of the constant time increment
    assert kernel.n_features == n and state.weights.shape == (n,) and state.covariance.shape == (n, n)
    np.testing.assert_array_equal(np.asarray(state.covariance), np.eye(n) / 4.0)


def test_rls_step_solves_weighted_ridge():
    # Oracle: after n updates from w = 0, P = I/ridge, RLS with forgetting λ
    # minimises Σ_i λ^{n-i} (z_i - wᵀφ_i)² + λ^n ridge |w|² (Haykin 2002,
    # §9.3), in closed form w = (Σ λ^{n-i} φ_i φ_iᵀ + λ^n ridge I)^{-1} Σ λ^{n-i} φ_i z_i.
    # Random features excite every direction, so P's trace only shrinks and
    # the trace cap never binds.
    rng = np.random.default_rng(0)
    n, dim, forgetting, ridge = 60, 5, 0.97, 2.0
    phis = rng.standard_normal((n, dim))
    targets = phis @ rng.standard_normal(dim) + 0.3 * rng.standard_normal(n)
    step = jax.jit(_rls_step)
    weights, covariance = jnp.zeros(dim), jnp.eye(dim) / ridge
    lam, rho = jnp.asarray(forgetting), jnp.asarray(ridge)
    for phi, z in zip(phis, targets):
        weights, covariance = step(weights, covariance, jnp.asarray(phi), jnp.asarray(z), lam, rho)
    decay = forgetting ** np.arange(n - 1, -1, -1)
    gram = (phis * decay[:, None]).T @ phis + forgetting**n * ridge * np.eye(dim)
    expected = np.linalg.solve(gram, (phis * decay[:, None]).T @ targets)
    # Both sides are float64 solutions of a system with condition number
    # < 1e3: 1e-9 relative leaves room for 60 rank-one updates' rounding.
    np.testing.assert_allclose(np.asarray(weights), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(covariance), np.linalg.inv(gram), rtol=1e-9, atol=1e-12)


def test_ar2_beats_random_walk():
    levels = _ar2_levels(seed=1)
    kernel = SignatureKernel.from_config(fp.PredictorConfig())
    _, forecasts, fallback, finite = _run(kernel, fp.Hyperparams(), jnp.asarray(levels)[:, None])
    forecasts = np.asarray(forecasts)
    assert np.all(np.asarray(finite))
    assert not np.any(np.asarray(fallback)[N_STEPS // 2:])
    ratio = _mse_ratio(levels, forecasts, N_STEPS // 2)
    optimum = _optimal_mse_ratio(*PHI)  # 0.716 for φ = (0.6, -0.3)
    print(f"AR(2) MSE ratio to the random walk: {ratio:.4f} (optimum {optimum:.4f})")
    # 0.7135 with learn-then-forecast (0.7133 when the step forecast with the
    # weights of t - 1: one more RLS update among ~1/(1 - λ) = 200 effective
    # samples hardly moves them). 0.72 is 0.5 % above the optimum 0.716.
    assert ratio <= 0.72
    # No look-ahead: landing 10 % (0.07, about three sampling s.d. of the
    # ratio over 1500 steps) below the Bayes optimum would mean the forecast
    # saw its target.
    assert ratio >= 0.9 * optimum


def test_second_channel_feeds_the_path():
    # y's increment is the previous increment of channel 1 plus noise of the
    # same variance: the best forecast halves the random walk's MSE; channel
    # 0 alone carries no information.
    rng = np.random.default_rng(2)
    n = N_STEPS
    leader = rng.standard_normal(n)
    follower = np.concatenate([[0.0], leader[:-1]]) + rng.standard_normal(n)
    series = np.stack([50.0 + np.cumsum(follower), 10.0 + np.cumsum(leader)], axis=1)
    kernel = SignatureKernel.from_config(fp.PredictorConfig(n_channels=2))
    _, forecasts, _, finite = _run(kernel, fp.Hyperparams(), jnp.asarray(series))
    assert np.all(np.asarray(finite))
    ratio = _mse_ratio(series[:, 0], np.asarray(forecasts), n // 2)
    print(f"two-channel MSE ratio to the random walk: {ratio:.4f} (optimum 0.5)")
    assert ratio <= 0.6, ratio


def test_adversarial_series_stay_finite():
    kernel = SignatureKernel.from_config(fp.PredictorConfig())
    hp = fp.Hyperparams()

    # A constant series: degenerate scale, fallback throughout, and the trace
    # cap keeps P bounded although nothing excites it.
    state, forecasts, fallback, finite = _run(kernel, hp, jnp.full((N_STEPS, 1), 7.25))
    assert np.all(np.asarray(finite)) and np.all(np.asarray(fallback))
    np.testing.assert_array_equal(np.asarray(forecasts), 7.25)
    assert float(jnp.trace(state.covariance)) <= kernel.n_features / float(hp.rls_ridge) * (1 + 1e-12)

    # 1e12 spikes (one observation each) and a missing stretch in an AR(2)
    # series, in both precisions: state finite at every step; away from the
    # spike steps themselves every forecast moves at most CLIP running scales
    # (~1 here, as Var(Δ) = 1.4) from the last value, so the spikes never
    # entered the scale; and the kernel still beats the random walk once they
    # are out of the window.
    levels = _ar2_levels(seed=3)
    spikes = [700, 1200]
    series = levels.copy()
    series[spikes] = 1e12
    series[1300:1305] = np.nan
    for dtype in (jnp.float64, jnp.float32):
        _, forecasts, fallback, finite = _run(kernel, hp, jnp.asarray(series, dtype)[:, None])
        forecasts = np.asarray(forecasts, np.float64)
        assert np.all(np.asarray(finite)) and np.all(np.isfinite(forecasts))
        last = np.asarray(_forward_fill(np.asarray(series, dtype).astype(np.float64)))
        calm = np.ones(N_STEPS, bool)
        calm[spikes] = False
        assert np.max(np.abs(forecasts - last)[calm]) < 20.0
        if dtype == jnp.float64:
            assert _mse_ratio(levels, forecasts, N_STEPS // 2) <= 0.8


def _forward_fill(values: np.ndarray) -> np.ndarray:
    """Forward-fill NaN (the last observed value, as the buffer holds it)."""
    index = np.where(np.isfinite(values), np.arange(values.size), 0)
    return values[np.maximum.accumulate(index)]


@pytest.mark.parametrize("count", [0, 1])
def test_first_steps_fall_back(count):
    kernel = SignatureKernel.from_config(fp.PredictorConfig())
    hp = fp.Hyperparams()
    history = History(
        values=jnp.full((32, 1), 3.0 * count), count=jnp.asarray(count, jnp.int32), observed=jnp.asarray(True)
    )
    state = kernel.init(hp, jnp.float64)
    new_state, forecast, info = eqx.filter_jit(kernel.step)(state, history, hp, jax.random.key(0))
    assert isinstance(forecast, Forecast) and isinstance(info, SignatureInfo)
    assert bool(forecast.fallback) and float(forecast.value) == 3.0 * count
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(new_state))
    assert int(new_state.n_updates) == 0


def test_missing_step_keeps_state():
    kernel = SignatureKernel.from_config(fp.PredictorConfig())
    hp = fp.Hyperparams()
    state, _, _, _ = _run(kernel, hp, jnp.asarray(_ar2_levels(seed=4))[:, None])
    values = jnp.asarray(_ar2_levels(seed=5, n=32))[:, None]
    missing = History(values=values, count=jnp.asarray(32, jnp.int32), observed=jnp.asarray(False))
    kept, _, info = eqx.filter_jit(kernel.step)(state, missing, hp, jax.random.key(0))
    assert not bool(info.learned)
    for a, b in zip(jax.tree_util.tree_leaves(kept), jax.tree_util.tree_leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_learns_before_it_forecasts():
    # The step at t learns z_t = (y_t - y_{t-1}) / s_{t-1} from the stored
    # φ_{t-1}, updates the scale with |y_t - y_{t-1}|, and only then forecasts
    # ŷ_{t+1} = y_t + s_t clip(w_t·φ_t): every factor is read back from the
    # returned state, so the forecast must be that of the moved weights.
    kernel = SignatureKernel.from_config(fp.PredictorConfig())
    hp = fp.Hyperparams()
    levels = _ar2_levels(seed=6, n=400)
    t, buffer_size = 300, 32
    previous, _, _, _ = _run(kernel, hp, jnp.asarray(levels[:t])[:, None], buffer_size)  # window ends at y_{t-1}
    history = History(
        values=jnp.asarray(levels[t - buffer_size + 1:t + 1])[:, None],  # the window ending at y_t
        count=jnp.asarray(buffer_size, jnp.int32),
        observed=jnp.asarray(True),
    )
    step = eqx.filter_jit(kernel.step)
    state, forecast, info = step(previous, history, hp, jax.random.key(0))
    assert bool(previous.features_valid) and int(previous.n_updates) >= kernel.n_features
    assert bool(info.learned) and int(info.n_updates) == int(previous.n_updates) + 1
    assert not bool(forecast.fallback)

    # The weights are the RLS update of the previous ones with the realised y_t.
    y_t, y_prev = float(levels[t]), float(levels[t - 1])
    target = np.clip((y_t - y_prev) / float(previous.feature_scale), -CLIP, CLIP)
    weights, _ = jax.jit(_rls_step)(
        previous.weights, previous.covariance, previous.features, jnp.asarray(target),
        hp.rls_forgetting, hp.rls_ridge,
    )
    # Same float64 arithmetic, jitted apart: a few ulps.
    np.testing.assert_allclose(np.asarray(state.weights), np.asarray(weights), rtol=1e-12, atol=1e-14)
    assert not np.allclose(np.asarray(state.weights), np.asarray(previous.weights), rtol=1e-6, atol=0)

    # The forecast, by hand, from the returned state.
    scale = state.scale()
    np.testing.assert_allclose(float(info.scale), float(scale[0]), rtol=1e-14, atol=0)
    phi = np.asarray(kernel.features(history.values, scale))
    np.testing.assert_allclose(np.asarray(state.features), phi, rtol=1e-12, atol=1e-14)  # stored for t + 1
    by_hand = y_t + float(scale[0]) * np.clip(np.dot(np.asarray(state.weights), phi), -CLIP, CLIP)
    np.testing.assert_allclose(float(forecast.value), by_hand, rtol=1e-12, atol=0)

    # ... and not the forecast of the weights before y_t was learnt: the
    # difference is the RLS correction, far above rounding.
    stale = y_t + float(scale[0]) * np.clip(np.dot(np.asarray(previous.weights), phi), -CLIP, CLIP)
    print(f"learn-then-forecast: {float(forecast.value):.6f}, with the previous weights: {stale:.6f}")
    assert abs(float(forecast.value) - stale) > 1e-6 * float(scale[0])

    # The kernel's own group or the full Hyperparams: the same step.
    state_group, forecast_group, _ = step(previous, history, hp.component("signature"), jax.random.key(0))
    np.testing.assert_allclose(float(forecast_group.value), float(forecast.value), rtol=1e-14, atol=0)
    np.testing.assert_allclose(np.asarray(state_group.weights), np.asarray(state.weights), rtol=1e-12, atol=1e-15)
