"""The IMEX PIDE solver, its Lévy measures and its Anderson fixed point, against closed forms.

Oracles: the OU-with-jumps conditional mean (affine, derived below), Merton's
series for a European call, first-order convergence in Δτ, the wrap-around
defect of an unpadded FFT, exact moments of the lattice measures, and a
dense linear solve for the Anderson iteration.

Every problem's parameters are traced arguments of one jitted function, so a
module compiles each static shape (grid, step count, padding) once.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import fnpredict  # noqa: F401  (float64)
from fnpredict.solvers.anderson import anderson_fixed_point
from fnpredict.solvers.levy_measures import DoubleExponentialJumps, NormalJumps
from fnpredict.solvers.pide import (
    DirichletBoundary,
    LinearBoundary,
    UniformGrid,
    solve_backward_kolmogorov,
)

# ---------------------------------------------------------------------------
# OU with compound-Poisson normal jumps.
#
# dX = κ(θ - X)dt + σ dW + dJ, J of rate λ and jumps N(μ_J, s_J²). With
# m(t) = E[X_t | X_0 = x]: m' = κ(θ - m) + λ μ_J = κ(θ' - m), θ' = θ + λμ_J/κ,
# so m(T) = θ' + (x - θ') e^{-κT}: the jump mean is folded into the level.
# The backward PIDE with g(x) = x has this u(T, x) as its solution (u is
# linear in x, so u_xx = 0 and the jump term is λ μ_J u_x).
# ---------------------------------------------------------------------------
OU_LOWER, OU_UPPER, OU_NODES = -3.0, 7.0, 201  # h = 0.05
# First-order time error: about 3e-4 relative at 800 steps (measured; it
# halves with Δτ), a 3x margin under the 1e-3 acceptance bound.
OU_STEPS = 800
OU_PARAMS = dict(reversion=0.5, level=2.0, volatility=0.4, rate=0.5, jump_mean=0.3, jump_std=0.2, horizon=1.0)
# Central half of [-3, 7]; there u >= 0.6 (no relative error blows up near a root).
CENTRAL = slice(OU_NODES // 4, 3 * OU_NODES // 4 + 1)


def _ou_closed_form(x, reversion, level, rate, jump_mean, horizon, **_):
    shifted_level = level + rate * jump_mean / reversion
    return shifted_level + (x - shifted_level) * np.exp(-reversion * horizon)


def _ou_solve(params, pad=None):
    grid = UniformGrid.from_bounds(OU_LOWER, OU_UPPER, OU_NODES)
    x = grid.points()
    return x, solve_backward_kolmogorov(
        x, grid,
        drift=params["reversion"] * (params["level"] - x),
        volatility=params["volatility"],
        measure=NormalJumps(params["rate"], params["jump_mean"], params["jump_std"]),
        horizon=params["horizon"],
        # 3 slots: the linear problem converges at its 2nd evaluation.
        n_steps=OU_STEPS, max_iter=3, tol=1e-10, pad=pad,
    )


def _as_arrays(params):
    return {name: jnp.asarray(value, jnp.float64) for name, value in params.items()}


@pytest.fixture(scope="module")
def ou_padded():
    return jax.jit(_ou_solve)


# ---------------------------------------------------------------------------
# Merton's European call, in log-price x = log S with g(x) = (e^x - K)^+.
# Risk-neutral drift r - σ²/2 - λk, k = E[e^Y] - 1, discount r.
# ---------------------------------------------------------------------------
MERTON = dict(rate=0.05, volatility=0.2, intensity=0.5, jump_mean=-0.1, jump_std=0.15, maturity=1.0)
STRIKE = 1.0
# h = 0.005 on [-4, 4]: the O(h²) space error (~7e-6 relative at the money)
# is 60x below the time error at 100 steps, so Δτ convergence shows cleanly.
MERTON_NODES = 1601
MERTON_HALF_WIDTH = 4.0


def _black_scholes_call(spot, strike, maturity, rate, volatility):
    d1 = (np.log(spot / strike) + (rate + 0.5 * volatility**2) * maturity) / (volatility * np.sqrt(maturity))
    d2 = d1 - volatility * np.sqrt(maturity)
    return spot * scipy.stats.norm.cdf(d1) - strike * np.exp(-rate * maturity) * scipy.stats.norm.cdf(d2)


def _merton_call(spot, strike, rate, volatility, intensity, jump_mean, jump_std, maturity):
    """Merton (1976), eq. (16): a Poisson mixture of Black-Scholes prices."""
    k = np.exp(jump_mean + 0.5 * jump_std**2) - 1.0
    mixed_intensity = intensity * (1.0 + k)
    total = 0.0
    # 60 terms: the Poisson(0.47) tail beyond n = 60 is below 1e-80.
    for n in range(60):
        weight = np.exp(-mixed_intensity * maturity) * (mixed_intensity * maturity) ** n / math.factorial(n)
        total += weight * _black_scholes_call(
            spot, strike, maturity,
            rate - intensity * k + n * np.log1p(k) / maturity,
            np.sqrt(volatility**2 + n * jump_std**2 / maturity),
        )
    return total


def _merton_solve(params, n_steps):
    grid = UniformGrid.from_bounds(-MERTON_HALF_WIDTH, MERTON_HALF_WIDTH, MERTON_NODES)
    x = grid.points()
    rate, volatility = params["rate"], params["volatility"]
    k = jnp.exp(params["jump_mean"] + 0.5 * params["jump_std"] ** 2) - 1.0
    # Far field: 0 deep out of the money; e^x - K e^{-rτ} deep in the money
    # (the discounted forward of the spot, exact under the risk-neutral drift).
    boundary = DirichletBoundary(lambda tau, x: jnp.maximum(jnp.exp(x) - STRIKE * jnp.exp(-rate * tau), 0.0))
    solution = solve_backward_kolmogorov(
        jnp.maximum(jnp.exp(x) - STRIKE, 0.0), grid,
        drift=rate - 0.5 * volatility**2 - params["intensity"] * k,
        volatility=volatility,
        measure=NormalJumps(params["intensity"], params["jump_mean"], params["jump_std"]),
        horizon=params["maturity"],
        n_steps=n_steps, max_iter=8, tol=1e-10, discount=rate, boundary=boundary,
    )
    # x = 0 is S = K, at the money.
    return solution.values[MERTON_NODES // 2], solution.values[jnp.array([0, -1])], solution.info


@pytest.fixture(scope="module")
def merton_errors():
    reference = _merton_call(1.0, STRIKE, **MERTON)
    errors, ends = {}, {}
    for n_steps in (25, 50, 100):
        price, ends[n_steps], info = jax.jit(lambda p, n=n_steps: _merton_solve(p, n))(_as_arrays(MERTON))
        assert bool(info.converged)
        errors[n_steps] = (float(price) - reference) / reference
    return errors, ends


def test_ou_conditional_mean_matches_closed_form(ou_padded):
    x, solution = ou_padded(_as_arrays(OU_PARAMS))
    exact = _ou_closed_form(np.asarray(x), **OU_PARAMS)
    # 1e-3 relative (the acceptance bound); the first-order time error at
    # 800 steps is about 3e-4, the space discretisation is exact for linear u.
    np.testing.assert_allclose(np.asarray(solution.values)[CENTRAL], exact[CENTRAL], rtol=1e-3, atol=0)
    assert bool(solution.info.converged)
    # u stays linear: the first defect-correction iterate is exact and the
    # second evaluation verifies it.
    assert int(solution.info.iterations) == 2
    assert float(solution.info.truncated_mass) == 0.0


def test_solver_vmaps_over_parameters(ou_padded):
    # Fixed shapes and fixed iteration slots: a batch of models is one
    # vmapped solve whose lanes match the single solves.
    reversions = jnp.asarray([0.1, 0.5, 2.0])
    batch = {name: jnp.broadcast_to(value, (3,)) for name, value in _as_arrays(OU_PARAMS).items()}
    batch["reversion"] = reversions
    _, batched = jax.jit(jax.vmap(_ou_solve))(batch)
    for lane in range(3):
        _, single = ou_padded(dict(_as_arrays(OU_PARAMS), reversion=reversions[lane]))
        # vmap and a single call are not bitwise equal in XLA: 1e-12 relative
        # is float64 rounding accumulated over 800 steps.
        np.testing.assert_allclose(np.asarray(batched.values[lane]), np.asarray(single.values),
                                   rtol=1e-12, atol=1e-12)
        assert int(batched.info.iterations[lane]) == int(single.info.iterations)


def test_merton_call_at_the_money(merton_errors):
    errors, _ = merton_errors
    # Acceptance: within 1e-3 relative of Merton's series at 100 steps.
    assert abs(errors[100]) < 1e-3, errors


def test_first_order_convergence_in_time(merton_errors):
    merton_errors, _ = merton_errors
    ratios = [merton_errors[25] / merton_errors[50], merton_errors[50] / merton_errors[100]]
    # Backward Euler + explicit jumps: halving Δτ halves the error (the
    # space error at h = 0.005 is 60x smaller than the smallest time error).
    assert all(1.7 <= ratio <= 2.3 for ratio in ratios), (merton_errors, ratios)


def test_padding_removes_wrap_around(ou_padded):
    # Large upward jumps N(2, 0.35²): from the top of the central half
    # (x = 4.5) a jump leaves [-3, 7] with probability P(Z > 1.43) ≈ 8 %. The
    # default reach = pad = 100 nodes (5.0) covers μ + 8 s = 4.8.
    params = dict(OU_PARAMS, jump_mean=2.0, jump_std=0.35)
    errors = {}
    x, padded = ou_padded(_as_arrays(params))
    with pytest.warns(UserWarning, match="wrap"):  # raised when the solver is traced
        _, unpadded = jax.jit(lambda p: _ou_solve(p, pad=0))(_as_arrays(params))
    exact = _ou_closed_form(np.asarray(x), **params)
    for label, solution in (("padded", padded), ("unpadded", unpadded)):
        errors[label] = np.abs(np.asarray(solution.values) / exact - 1.0)[CENTRAL]
    # Unpadded, mass that jumps off the top re-enters at the bottom, where u
    # is 10 × slope lower: a large error near the edge of the reported region.
    assert errors["unpadded"].max() > 1e-2, errors["unpadded"].max()
    assert errors["unpadded"][-1] > errors["unpadded"][len(errors["unpadded"]) // 2]
    # Padded, the same problem meets the closed form to the time error alone.
    assert errors["padded"].max() < 1e-3, errors["padded"].max()


def test_dirichlet_boundary_is_imposed(merton_errors):
    _, ends = merton_errors
    maturity, rate = MERTON["maturity"], MERTON["rate"]
    ends_x = np.array([-MERTON_HALF_WIDTH, MERTON_HALF_WIDTH])
    expected = np.maximum(np.exp(ends_x) - STRIKE * np.exp(-rate * maturity), 0.0)
    # The end values are f(τ = T, x_end), set in the right-hand side; the
    # pivoting tridiagonal solve mixes in neighbours' rounding: a few ulps of
    # the larger value e^4 ≈ 55 (1e-13 absolute) at either end.
    np.testing.assert_allclose(np.asarray(ends[100]), expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_steps=0), "n_steps"),
    (dict(max_iter=0), "max_iter"),
    (dict(tol=0.0), "tol"),
    (dict(memory=0), "memory"),
    (dict(reach=30, pad=0), "lattice offsets"),
])
def test_invalid_static_arguments_raise(kwargs, match):
    grid = UniformGrid.from_bounds(0.0, 1.0, 11)
    x = grid.points()
    arguments = dict(n_steps=2, max_iter=4, tol=1e-10)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        solve_backward_kolmogorov(x, grid, 0.0, 0.1, None, 1.0, **arguments)


def test_boundary_extension_is_linear():
    grid = UniformGrid.from_bounds(0.0, 1.0, 5)
    values = 2.0 * grid.points() - 1.0
    extended = LinearBoundary().extend(values, grid, 3, jnp.zeros(()))
    expected = 2.0 * (grid.lower + grid.step * jnp.arange(-3, 8, dtype=jnp.float64)) - 1.0
    # Linear continuation of a linear function: exact up to a few ulps.
    np.testing.assert_allclose(np.asarray(extended), np.asarray(expected), rtol=0, atol=1e-14)


# ---------------------------------------------------------------------------
# Lattice measures: mass and mean kept exactly, variance within h²/4.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("measure", [
    NormalJumps(0.7, -0.23, 0.11),
    NormalJumps(0.7, 0.137, 0.0),  # a point mass between lattice nodes
    DoubleExponentialJumps(1.3, 0.4, 12.0, 10.0),
], ids=["normal", "point-mass", "kou"])
def test_lattice_weights_keep_mass_and_mean(measure):
    step, reach = 0.05, 60  # reach 3.0: beyond 13 sd of the normals; Kou tails beyond it hold e^{-30}
    weights, truncated = measure.lattice_weights(step, reach)
    weights = np.asarray(weights)
    offsets = np.arange(-reach, reach + 1) * step
    rate = float(measure.intensity())
    mean = float(measure.jump_mean())
    variance = float(measure.jump_variance())
    assert np.all(weights >= 0.0)
    # The stop-loss second differences telescope: mass and mean are exact up
    # to rounding. C(t) reaches λ(|E Y| + 3) ≈ 4, so each weight carries
    # ~4 eps·4/h ≈ 7e-14 of rounding; summed over 121 nodes (times offsets up
    # to 3 for the mean) that bounds the errors by 1e-11 and 3e-11.
    assert float(truncated) < 1e-11
    np.testing.assert_allclose(weights.sum(), rate, rtol=0, atol=1e-11)
    np.testing.assert_allclose((weights * offsets).sum() / rate, mean, rtol=0, atol=3e-11)
    # Hat projection adds the variance (z - z_k)(z_{k+1} - z) <= h²/4 per jump.
    lattice_variance = (weights * offsets**2).sum() / rate - mean**2
    assert variance - 1e-10 <= lattice_variance <= variance + step**2 / 4 + 1e-10


def test_point_mass_splits_onto_its_two_nodes():
    weights, _ = NormalJumps(2.0, 0.137, 0.0).lattice_weights(0.05, 4)
    expected = np.zeros(9)
    # 0.137 = 0.10 + 0.74 h: weight 0.26 λ at 0.10 (k = 2), 0.74 λ at 0.15 (k = 3).
    expected[4 + 2], expected[4 + 3] = 2.0 * 0.26, 2.0 * 0.74
    np.testing.assert_allclose(np.asarray(weights), expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------
# Anderson fixed point.
# ---------------------------------------------------------------------------
def _slow_contraction(size=40, factor=0.95):
    """x = A x + b with A = factor × (averaging of neighbours): spectral radius ≈ 0.95."""
    a = np.zeros((size, size))
    idx = np.arange(size - 1)
    a[idx, idx + 1] = a[idx + 1, idx] = 0.5 * factor
    b = np.linspace(-1.0, 1.0, size) ** 2
    return jnp.asarray(a), jnp.asarray(b)


def _plain_iterations(a, b, tol):
    """Evaluations plain iteration x <- A x + b needs for the same relative test."""
    a, b = np.asarray(a), np.asarray(b)
    x = np.zeros_like(b)
    for count in range(1, 5000):
        image = a @ x + b
        if np.linalg.norm(image - x) <= tol * np.linalg.norm(image):
            return count
        x = image
    raise AssertionError("plain iteration did not converge")


def test_anderson_solves_a_slow_contraction():
    a, b = _slow_contraction()
    exact = np.linalg.solve(np.eye(a.shape[0]) - np.asarray(a), np.asarray(b))
    solve = jax.jit(lambda a, b: anderson_fixed_point(lambda x: a @ x + b, jnp.zeros_like(b),
                                                      max_iter=150, tol=1e-10, memory=6))
    x, info = solve(a, b)
    assert bool(info.converged)
    # Plain iteration needs about log(1e-10)/log(0.947) ≈ 420 evaluations;
    # Anderson with 6 differences needs under a third of that.
    plain = _plain_iterations(a, b, 1e-10)
    assert int(info.iterations) < plain / 3, (int(info.iterations), plain)
    # Residual 1e-10 relative, amplified by ‖(I - A)^{-1}‖ ≈ 1/(1 - 0.947) ≈ 19.
    np.testing.assert_allclose(np.asarray(x), exact, rtol=0, atol=1e-8 * np.abs(exact).max())


def test_anderson_reports_non_convergence_and_nan():
    a, b = _slow_contraction()
    x, info = jax.jit(lambda a, b: anderson_fixed_point(lambda x: a @ x + b, jnp.zeros_like(b),
                                                        max_iter=3, tol=1e-10))(a, b)
    assert not bool(info.converged)
    assert int(info.iterations) == 3
    assert np.isfinite(float(info.residual)) and float(info.residual) > 1e-10
    x, info = jax.jit(lambda b: anderson_fixed_point(lambda x: x * jnp.nan, b, max_iter=3, tol=1e-10))(b)
    assert not bool(info.converged)
    assert np.isnan(float(info.residual))


def test_anderson_stops_updating_once_converged():
    # cos has a fixed point 0.739...; after convergence further slots must
    # not move the iterate (lanes frozen at their first converged value).
    solve = jax.jit(lambda x0, n: anderson_fixed_point(jnp.cos, x0, max_iter=n, tol=1e-12), static_argnums=1)
    few, info_few = solve(jnp.ones(()), 12)
    many, info_many = solve(jnp.ones(()), 30)
    assert bool(info_few.converged)
    assert int(info_few.iterations) == int(info_many.iterations)
    assert float(few) == float(many)
