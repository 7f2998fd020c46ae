"""Kernel B (DGM): shipped network against the OU oracle, the fit, the monitor, bad input.

All tests use the SHIPPED weights (``fnpredict/kernels/dgm_weights.eqx``)
except where a closed-form "network" isolates the fit or the monitor from
the network's approximation error.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnpredict as fp
from fnpredict.kernels import EmptyState, History, kernel_class
from fnpredict.kernels.dgm import (
    MIN_COUNT,
    PARAM_BOX,
    X_BOX,
    DGMInfo,
    DGMKernel,
    fit_ou,
    load_network,
    ou_conditional_mean,
    read_metadata,
)

X_RANGE = X_BOX[1] - X_BOX[0]


class ExactOU(eqx.Module):
    """The closed-form solution V = θ + (x − θ)e^{−κ(T−t)}: a perfect network."""

    def __call__(self, t, x, params):
        return ou_conditional_mean(t, x[0], params[0], params[1])


def _history(values, count=None, observed=True, dtype=jnp.float64):
    values = np.asarray(values, float)
    return History(
        values=jnp.asarray(values[:, None], dtype),
        count=jnp.asarray(len(values) if count is None else count, jnp.int32),
        observed=jnp.asarray(observed),
    )


@eqx.filter_jit
def _step(kernel, state, history, hyperparams, key):
    return kernel.step(state, history, hyperparams, key)


def _forecast(kernel, state, history, hyperparams, key):
    return _step(kernel, state, history, hyperparams, key)[1]


def _info(kernel, state, history, hyperparams, key=None):
    """The step's :class:`DGMInfo` (the fit, clipping and the entropy monitor)."""
    return _step(kernel, state, history, hyperparams, jax.random.key(0) if key is None else key)[2]


@pytest.fixture(scope="module")
def config():
    return fp.PredictorConfig()


@pytest.fixture(scope="module")
def kernel(config):
    return DGMKernel.from_config(config)


@pytest.fixture(scope="module")
def exact_kernel(config):
    return DGMKernel.from_config(config, network=ExactOU())


@pytest.fixture(scope="module")
def hyperparams():
    return fp.Hyperparams()


def _ou_levels(seed, n=128, phi=0.9, level=50.0, scale=2.0):
    rng = np.random.default_rng(seed)
    z = np.zeros(n)
    for i in range(1, n):
        z[i] = phi * z[i - 1] + rng.normal()
    return level + scale * z


def _random_walk(seed, n=128):
    return 100.0 + np.cumsum(np.random.default_rng(seed).normal(size=n))


# ------------------------------------------------------------ the shipped network


@pytest.mark.parametrize(
    "kappa, theta, sigma",
    [(0.05, 0.0, 0.2), (0.3, 1.5, 0.5), (0.8, -2.0, 0.9), (1.0, 2.9, 0.05)],
)
def test_shipped_network_matches_ou_conditional_mean(kappa, theta, sigma):
    """Acceptance: max_x |V(0, x) − θ − (x − θ)e^{−κT}| <= 1 % of the x-range, x over the box."""
    network = load_network(jnp.float64)
    xs = jnp.linspace(X_BOX[0], X_BOX[1], 401)
    params = jnp.asarray([kappa, theta, sigma])
    values = jax.jit(jax.vmap(lambda x: network(jnp.zeros(()), x[None], params)))(xs)
    error = float(jnp.max(jnp.abs(values - ou_conditional_mean(0.0, xs, kappa, theta)))) / X_RANGE
    print(f"(kappa, theta, sigma) = ({kappa}, {theta}, {sigma}): max error / x-range = {error:.3%}")
    assert error <= 0.01


def test_shipped_metadata_matches_the_kernel():
    metadata = read_metadata()
    assert tuple(metadata["problem"]["x_box"]) == X_BOX
    assert tuple(tuple(side) for side in metadata["problem"]["param_box"]) == PARAM_BOX
    # The training script's own validation over a 5×5×3 parameter grid.
    assert metadata["validation"]["max_error_over_x_range"] <= 0.01
    assert kernel_class("dgm") is DGMKernel and DGMKernel.name == "dgm"


def test_weights_load_in_the_config_dtype():
    kernel32 = DGMKernel.from_config(fp.PredictorConfig(dtype="float32"))
    leaves = [leaf for leaf in jax.tree_util.tree_leaves(kernel32) if eqx.is_inexact_array(leaf)]
    assert leaves and all(leaf.dtype == jnp.float32 for leaf in leaves)
    # Loaded once per dtype: a second build reuses the same arrays.
    assert load_network(jnp.float32) is load_network(jnp.float32)


# ------------------------------------------------------------ the fit and the forecast


def test_exact_network_forecast_is_the_least_squares_ar1_forecast(exact_kernel, hyperparams):
    """With V exact, the OU mean through the exact discretisation is the OLS AR(1) forecast."""
    for seed in range(3):
        levels = _ou_levels(seed)
        history = _history(levels)
        fit = jax.jit(fit_ou)(history.target, history.count)
        assert bool(fit.valid) and not bool(fit.clipped)
        slope, intercept = np.polyfit(levels[:-1], levels[1:], 1)
        expected = intercept + slope * levels[-1]
        out = _forecast(exact_kernel, exact_kernel.init(hyperparams, jnp.float64), history, hyperparams,
                        jax.random.key(0))
        # Two float64 least-squares solutions of the same normal equations:
        # agreement to ~1e-12 relative; 1e-10 leaves room for conditioning.
        np.testing.assert_allclose(out.value, expected, rtol=1e-10, atol=0)
        assert not bool(out.fallback) and bool(out.converged)


def test_shipped_forecast_is_close_to_the_exact_one(kernel, exact_kernel, hyperparams):
    """Shipped vs exact V on real-looking windows: within the network's error bound."""
    for seed in range(4):
        levels = _random_walk(seed) if seed % 2 else _ou_levels(seed)
        history = _history(levels)
        fit = fit_ou(history.target, history.count)
        state = kernel.init(hyperparams, jnp.float64)
        shipped = _forecast(kernel, state, history, hyperparams, jax.random.key(0))
        exact = _forecast(exact_kernel, state, history, hyperparams, jax.random.key(0))
        # The acceptance bound (1 % of the x-range) in level units.
        np.testing.assert_allclose(shipped.value, exact.value, rtol=0, atol=0.01 * X_RANGE * float(fit.scale))
        assert not bool(shipped.fallback)


def test_fit_recovers_ou_parameters():
    """A long OU path: fitted κ, σ within a few standard errors of the truth.

    For an AR(1) with φ = 0.9 and n = 128, SE(φ̂) ≈ sqrt((1 − φ²)/n) ≈ 0.039,
    i.e. SE(κ̂) ≈ SE(φ̂)/φ ≈ 0.043; we average 20 paths (SE/√20 ≈ 0.01) and
    allow 4 SE plus the O(1/n) small-sample bias of φ̂ (≈ (1 + 3φ)/n ≈ 0.029
    towards 0, i.e. κ̂ too large by about 0.03).
    """
    kappas, sigma_ratios = [], []
    for seed in range(20):
        levels = _ou_levels(100 + seed)
        fit = fit_ou(jnp.asarray(levels), jnp.asarray(128, jnp.int32))
        kappas.append(float(fit.params[0]))
        # σ in window units: innovations sd (2.0) over the window sd.
        sigma_ratios.append(float(fit.params[2]) * float(fit.scale) / 2.0)
    np.testing.assert_allclose(np.mean(kappas), -math.log(0.9) + 0.03, rtol=0, atol=4 * 0.01 + 0.01)
    # σ·s recovers the level-unit innovation sd (2.0), exact-discretisation corrected: ~3 % SE per path.
    np.testing.assert_allclose(np.mean(sigma_ratios), math.sqrt(2 * -math.log(0.9) / (1 - 0.81)), rtol=0.05, atol=0)


# ------------------------------------------------------------ the monitor


def test_healthy_shipped_network_does_not_collapse(kernel, hyperparams):
    for seed in range(3):
        info = _info(kernel, kernel.init(hyperparams, jnp.float64), _history(_random_walk(seed)), hyperparams)
        assert isinstance(info, DGMInfo)
        assert not bool(info.collapsed)
        assert math.log(0.5) < float(info.entropy) <= 0.05  # near 0 for κ ≈ 0 (V ≈ x)


def test_constant_network_collapses_at_kernel_level(config, kernel, hyperparams):
    network = kernel.network
    last = network.mlp.layers[-1]
    constant = eqx.tree_at(lambda n: n.mlp.layers[-1].weight, network, jnp.zeros_like(last.weight))
    collapsed_kernel = DGMKernel.from_config(config, network=constant)
    _, out, info = _step(collapsed_kernel, collapsed_kernel.init(hyperparams, jnp.float64),
                         _history(_random_walk(0)), hyperparams, jax.random.key(0))
    print(f"constant network: entropy {float(info.entropy):.2f}, collapsed {bool(info.collapsed)}")
    assert bool(info.collapsed) and np.isfinite(float(info.entropy)) and float(info.entropy) < -10.0
    assert np.isfinite(float(out.value))


def test_entropy_is_minus_half_kappa_and_gamma_is_traced(exact_kernel, hyperparams):
    """Exact V: entropy gap = −κ̂T/2 exactly; collapsed iff −κ̂/2 < log γ.

    An alternating series has φ̂ < 0, so κ̂ is clipped to 1: entropy −0.5,
    healthy for γ = 0.5 (log γ = −0.69), collapsed for γ = 0.7 (−0.36).
    """
    rng = np.random.default_rng(3)
    levels = 10.0 + (-1.0) ** np.arange(128) + 0.1 * rng.normal(size=128)
    history = _history(levels)
    state = exact_kernel.init(hyperparams, jnp.float64)
    info = _info(exact_kernel, state, history, hyperparams)
    np.testing.assert_allclose(info.params[0], PARAM_BOX[0][1], rtol=0, atol=0)
    assert bool(info.clipped)
    population = jax.vmap(lambda gamma: fp.Hyperparams(dgm_collapse_gamma=gamma))(jnp.asarray([0.5, 0.7]))
    outs = jax.vmap(lambda hp: _info(exact_kernel, state, history, hp))(population)
    # Vasicek is exactly equivariant and the midpoint rule exact for a linear
    # entropy curve: only float64 rounding remains.
    np.testing.assert_allclose(outs.entropy, [-0.5, -0.5], rtol=0, atol=1e-12)
    assert outs.collapsed.tolist() == [False, True]
    # The kernel's own group works as well as the full Hyperparams.
    group = fp.Hyperparams(dgm_collapse_gamma=0.7).component("dgm")
    assert bool(_info(exact_kernel, state, history, group).collapsed)


# ------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "name, values, count",
    [
        ("constant", np.full(128, 42.0), 128),
        ("too short", np.r_[np.full(128 - MIN_COUNT + 1, 3.0), 3.0 + np.arange(MIN_COUNT - 1.0)], MIN_COUNT - 1),
        ("empty", np.zeros(128), 0),
        ("outlier 1e12", np.r_[_random_walk(1)[:-1], 1e12], 128),
    ],
)
def test_degenerate_windows_fall_back_to_the_last_value(kernel, hyperparams, name, values, count):
    history = _history(values, count)
    state = kernel.init(hyperparams, jnp.float64)
    new_state, out, info = _step(kernel, state, history, hyperparams, jax.random.key(0))
    assert bool(out.fallback), name
    np.testing.assert_equal(float(out.value), float(values[-1]))
    assert np.isfinite(float(info.entropy))
    leaves = jax.tree_util.tree_leaves((new_state, info))
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves if leaf.dtype != bool)


def test_constant_series_fit_is_finite_and_invalid():
    fit = fit_ou(jnp.full((128,), 7.0), jnp.asarray(128, jnp.int32))
    assert not bool(fit.valid)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(fit) if leaf.dtype != bool)


@pytest.mark.parametrize("name", ["trend", "alternating"])
def test_out_of_box_parameters_are_clipped(kernel, hyperparams, name):
    rng = np.random.default_rng(7)
    if name == "trend":  # drift read as reversion to a far level: θ̂ out of the box
        levels = 0.5 * np.arange(128) + rng.normal(size=128)
    else:  # φ̂ < 0: κ̂ above the box
        levels = (-1.0) ** np.arange(128) + 0.1 * rng.normal(size=128)
    history = _history(levels)
    _, out, info = _step(kernel, kernel.init(hyperparams, jnp.float64), history, hyperparams, jax.random.key(0))
    assert bool(info.clipped) and bool(info.valid)
    lower = np.array([low for low, _ in PARAM_BOX])
    upper = np.array([high for _, high in PARAM_BOX])
    assert np.all((np.asarray(info.params) >= lower) & (np.asarray(info.params) <= upper))
    assert np.isfinite(float(out.value)) and not bool(out.fallback)


def test_step_keeps_state_on_missing_steps(kernel, hyperparams):
    # Kernel B carries nothing across steps; its info is this window's fit
    # (the box centre without a valid one). On a missing step the window is
    # unchanged, so the step repeats the last observed step exactly.
    state = kernel.init(hyperparams, jnp.float64)
    assert isinstance(state, EmptyState)
    centre = np.array([(low + high) / 2.0 for low, high in PARAM_BOX])
    levels = _random_walk(2)
    seen = _step(kernel, state, _history(levels), hyperparams, jax.random.key(0))
    assert bool(seen[2].valid) and not np.allclose(seen[2].params, centre)
    skipped = _step(kernel, seen[0], _history(levels, observed=False), hyperparams, jax.random.key(0))
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool(jnp.all(a == b)), skipped, seen))
    assert isinstance(skipped[0], EmptyState) and isinstance(skipped[2], DGMInfo)


def test_float32_kernel_runs_in_float32(hyperparams, kernel):
    config32 = fp.PredictorConfig(dtype="float32")
    kernel32 = DGMKernel.from_config(config32)
    hp32 = fp.Hyperparams(dtype=jnp.float32)
    levels = _random_walk(4)
    _, out32, info32 = _step(kernel32, kernel32.init(hp32, jnp.float32), _history(levels, dtype=jnp.float32), hp32,
                             jax.random.key(0))
    out64 = _forecast(kernel, kernel.init(hyperparams, jnp.float64), _history(levels), hyperparams,
                      jax.random.key(0))
    assert out32.value.dtype == jnp.float32 and info32.entropy.dtype == jnp.float32
    # float32 regression on a window of sd ~5 around 100: ~1e-6 relative.
    np.testing.assert_allclose(out32.value, out64.value, rtol=1e-5, atol=0)


def test_vmap_over_assets_equals_loop(kernel, hyperparams):
    windows = np.stack([_random_walk(s) for s in range(4)] + [_ou_levels(s) for s in range(2)])
    histories = jax.vmap(lambda v: History(values=v[:, None], count=jnp.asarray(128, jnp.int32),
                                           observed=jnp.asarray(True)))(jnp.asarray(windows))
    state = kernel.init(hyperparams, jnp.float64)
    _, batched, batched_info = jax.vmap(lambda h: _step(kernel, state, h, hyperparams, jax.random.key(0)))(histories)
    for index, levels in enumerate(windows):
        _, single, single_info = _step(kernel, state, _history(levels), hyperparams, jax.random.key(0))
        # vmap and single calls may order float64 reductions differently
        # (DESIGN §5): ~1e-15 relative; 1e-12 is the guarantee we state.
        np.testing.assert_allclose(batched.value[index], single.value, rtol=1e-12, atol=0)
        np.testing.assert_allclose(batched_info.entropy[index], single_info.entropy, rtol=0, atol=1e-12)
        assert bool(batched_info.collapsed[index]) == bool(single_info.collapsed)
