"""Tests for fnpredict.greeks: the Bismut–Elworthy–Li Delta, pathwise and finite-difference Greeks.

Oracles: Black–Scholes closed forms (digital and call Delta, call Vega), a
large finite-difference run for a basket digital, central differences of the
simulated terminal state for the tangent flow, and a hand-written numpy
Euler–Maruyama loop on the very same Brownian increments for the whole
augmented system (state, tangent, BEL weight).

Prices are discounted inside the payoff (the library differentiates
E[f(X_T)] and discounts nothing itself), so every closed form below is the
Delta of the discounted price.

Monte Carlo checks use |estimate - exact| <= 3 standard errors: with the seeds
fixed the tests are deterministic, and 3 s.e. is the two-sided 99.7% band, so a
correct estimator passes it for all but 0.3% of seeds, while the errors it is
there to catch are far outside it at 65,536 paths: the seed's drift-Jacobian
weight (r W_T / (S vol T) for GBM) is off by ~80 standard errors, a missing
discount factor by ~9.

The coefficient and payoff functions are defined once at module level: the
estimators compile once per function object, so reusing them keeps the whole
file to about a dozen compilations.
"""

import math

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

import fnpredict as fp
from fnpredict.greeks.flow import number_of_steps, validate_problem

greeks = fp.greeks

# Black–Scholes market, at the money.
RATE, VOL, SPOT, STRIKE, HORIZON = 0.05, 0.2, 100.0, 100.0, 1.0
DISCOUNT = math.exp(-RATE * HORIZON)
# Euler step: 50 steps a year. Euler's weak error is O(dt); a 2^20-path run
# measured the digital-Delta bias at dt = 0.02 as (-3.5 ± 2.7)e-5, a third of
# the standard error at 65,536 paths (1.1e-4), so it cannot move a 3-s.e. test.
DT = 0.02
# n and 4n for the 1/sqrt(n) check; 16,384 paths give a digital-Delta s.e. of
# ~1.2% of the value, 65,536 give ~0.6%.
N_SMALL = 16_384
N_LARGE = 4 * N_SMALL
Z_TOLERANCE = 3.0

SPOT_ARRAY = np.array([SPOT])


def gbm_drift(s):
    return RATE * s


def gbm_diffusion(s):
    return VOL * jnp.diag(s)


def gbm_vega_direction(s):
    # d/d(vol) of the diffusion vol * diag(s).
    return jnp.diag(s)


def discounted_digital(s):
    return DISCOUNT * jnp.where(s[0] > STRIKE, 1.0, 0.0)


def discounted_call(s):
    return DISCOUNT * jnp.maximum(s[0] - STRIKE, 0.0)


def _d1_d2():
    d1 = (math.log(SPOT / STRIKE) + (RATE + 0.5 * VOL**2) * HORIZON) / (VOL * math.sqrt(HORIZON))
    return d1, d1 - VOL * math.sqrt(HORIZON)


def digital_delta_closed_form() -> float:
    _, d2 = _d1_d2()
    return DISCOUNT * norm.pdf(d2) / (SPOT * VOL * math.sqrt(HORIZON))


def call_delta_closed_form() -> float:
    d1, _ = _d1_d2()
    return norm.cdf(d1)


def call_vega_closed_form() -> float:
    d1, _ = _d1_d2()
    return SPOT * norm.pdf(d1) * math.sqrt(HORIZON)


def z_score(estimate, exact) -> float:
    return float(np.max(np.abs((np.asarray(estimate.value) - exact) / np.asarray(estimate.stderr))))


def path_variance(estimate) -> np.ndarray:
    """Per-path sample variance recovered from the standard error."""
    return np.asarray(estimate.stderr) ** 2 * int(estimate.n_valid)


# ---------------------------------------------------------------------------
# Black–Scholes digital: Malliavin vs closed form, 1/sqrt(n), vs finite differences


@pytest.fixture(scope="module")
def digital_small():
    return greeks.malliavin_delta(
        gbm_drift, gbm_diffusion, SPOT_ARRAY, HORIZON, discounted_digital, jax.random.key(0),
        n_paths=N_SMALL, dt=DT,
    )


@pytest.fixture(scope="module")
def digital_large():
    return greeks.malliavin_delta(
        gbm_drift, gbm_diffusion, SPOT_ARRAY, HORIZON, discounted_digital, jax.random.key(1),
        n_paths=N_LARGE, dt=DT,
    )


def test_digital_malliavin_delta_matches_closed_form(digital_small, digital_large):
    exact = digital_delta_closed_form()
    for estimate, n in ((digital_small, N_SMALL), (digital_large, N_LARGE)):
        z = z_score(estimate, exact)
        print(f"digital Malliavin n={n}: {float(estimate.value[0]):.6f} ± {float(estimate.stderr[0]):.6f}"
              f" (closed form {exact:.6f}, |z| = {z:.2f})")
        assert estimate.value.shape == (1,) and estimate.stderr.shape == (1,)
        assert int(estimate.n_valid) == n and int(estimate.n_nan) == 0
        assert z <= Z_TOLERANCE


def test_digital_stderr_shrinks_like_inverse_sqrt_n(digital_small, digital_large):
    ratio = float(digital_small.stderr[0] / digital_large.stderr[0])
    print(f"s.e.(n={N_SMALL}) / s.e.(n={N_LARGE}) = {ratio:.3f} (1/sqrt(n) predicts 2)")
    # The s.e. estimate itself has relative sampling error ~sqrt((kurtosis-1)/(4n)),
    # about 1% here, so [1.7, 2.3] is >10 of those wide around 2 while still
    # excluding 1/n scaling (ratio 4) and no shrinkage (ratio 1).
    assert 1.7 <= ratio <= 2.3


@pytest.fixture(scope="module")
def digital_finite_difference():
    # Bump h = 1% of spot = 1.0 (the default): the central difference's bias,
    # ~h^2/6 * d^3u/dS^3, is -6.3e-6 here (3% of an s.e.), and with common random
    # numbers its per-path variance for a digital grows like 1/h. Same key as
    # `digital_small`: the same Brownian paths.
    return greeks.finite_difference_delta(
        gbm_drift, gbm_diffusion, SPOT_ARRAY, HORIZON, discounted_digital, jax.random.key(0),
        n_paths=N_SMALL, dt=DT, relative_bump=0.01,
    )


def test_digital_malliavin_variance_below_finite_difference(digital_small, digital_finite_difference):
    finite_difference = digital_finite_difference
    exact = digital_delta_closed_form()
    malliavin_variance = float(path_variance(digital_small)[0])
    finite_difference_variance = float(path_variance(finite_difference)[0])
    print(f"digital Delta per-path variance: Malliavin {malliavin_variance:.3e}, "
          f"central FD with CRN (h = 1.0) {finite_difference_variance:.3e}, "
          f"ratio FD/Malliavin {finite_difference_variance / malliavin_variance:.2f}")
    print(f"digital FD n={N_SMALL}: {float(finite_difference.value[0]):.6f} ± "
          f"{float(finite_difference.stderr[0]):.6f} (|z| = {z_score(finite_difference, exact):.2f})")
    # Both variances are estimated from 16,384 paths to a few per cent, and the
    # true ratio is ~10, so "lower" is decided far from the noise.
    assert malliavin_variance < finite_difference_variance
    assert z_score(finite_difference, exact) <= Z_TOLERANCE


def test_finite_difference_uses_common_random_numbers(digital_finite_difference):
    # With independent paths for the two bumps the per-path variance of
    # (f(S+) - f(S-))/2h would be 2 Var(f)/(2h)^2 = e^{-2rT} p(1-p)/(2h^2) with
    # p = N(d2), i.e. ~0.11 at h = 1. With common random numbers only paths
    # ending within ~h of the strike differ (~0.008 measured). A factor-5
    # margin separates the two regimes with room for the few-per-cent
    # sampling error of the measured variance.
    _, d2 = _d1_d2()
    probability = norm.cdf(d2)
    bump = 0.01 * SPOT
    independent_variance = DISCOUNT**2 * probability * (1.0 - probability) / (2.0 * bump**2)
    measured = float(path_variance(digital_finite_difference)[0])
    print(f"FD per-path variance {measured:.3e} vs {independent_variance:.3e} without common random numbers")
    assert measured < independent_variance / 5.0


# ---------------------------------------------------------------------------
# Black–Scholes call: Malliavin and pathwise Delta, pathwise Vega


def test_call_malliavin_and_pathwise_delta_match_n_d1():
    exact = call_delta_closed_form()
    key = jax.random.key(2)
    malliavin = greeks.malliavin_delta(
        gbm_drift, gbm_diffusion, SPOT_ARRAY, HORIZON, discounted_call, key, n_paths=N_SMALL, dt=DT
    )
    pathwise = greeks.pathwise_delta(
        gbm_drift, gbm_diffusion, SPOT_ARRAY, HORIZON, discounted_call, key, n_paths=N_SMALL, dt=DT
    )
    for name, estimate in (("Malliavin", malliavin), ("pathwise", pathwise)):
        print(f"call {name}: {float(estimate.value[0]):.5f} ± {float(estimate.stderr[0]):.5f}"
              f" (N(d1) = {exact:.5f}, |z| = {z_score(estimate, exact):.2f})")
        assert z_score(estimate, exact) <= Z_TOLERANCE


def test_call_pathwise_vega_matches_closed_form():
    exact = call_vega_closed_form()
    vega = greeks.pathwise_vega(
        gbm_drift, gbm_diffusion, gbm_vega_direction, SPOT_ARRAY, HORIZON, discounted_call,
        jax.random.key(3), n_paths=N_SMALL, dt=DT,
    )
    print(f"call pathwise Vega: {float(vega.value):.4f} ± {float(vega.stderr):.4f}"
          f" (S phi(d1) sqrt(T) = {exact:.4f}, |z| = {z_score(vega, exact):.2f})")
    assert vega.value.shape == ()
    assert z_score(vega, exact) <= Z_TOLERANCE


def test_virtual_brownian_tree_gives_the_same_delta():
    # The VirtualBrownianTree alternative must estimate the same quantity
    # (different random numbers, so compared through the closed form).
    estimate = greeks.malliavin_delta(
        gbm_drift, gbm_diffusion, SPOT_ARRAY, HORIZON, discounted_digital, jax.random.key(5),
        n_paths=4096, dt=DT, brownian="virtual",
    )
    print(f"digital Malliavin (VirtualBrownianTree) n=4096: {float(estimate.value[0]):.6f} ± "
          f"{float(estimate.stderr[0]):.6f} (|z| = {z_score(estimate, digital_delta_closed_form()):.2f})")
    assert z_score(estimate, digital_delta_closed_form()) <= Z_TOLERANCE


# ---------------------------------------------------------------------------
# Two correlated assets: basket digital vs a large finite-difference run

BASKET_SPOTS = np.array([100.0, 95.0])
BASKET_WEIGHTS = np.array([0.5, 0.5])
BASKET_STRIKE = 100.0
BASKET_RATE = 0.02
BASKET_DISCOUNT = math.exp(-BASKET_RATE * HORIZON)
_VOLS, _CORRELATION = (0.25, 0.35), 0.5
# Lower Cholesky factor of the covariance: dS_i = r S_i dt + S_i (A dW)_i.
BASKET_CHOLESKY = np.array(
    [[_VOLS[0], 0.0], [_CORRELATION * _VOLS[1], _VOLS[1] * math.sqrt(1.0 - _CORRELATION**2)]]
)


def basket_drift(s):
    return BASKET_RATE * s


def basket_diffusion(s):
    return s[:, None] * jnp.asarray(BASKET_CHOLESKY)


def basket_digital(s):
    return BASKET_DISCOUNT * jnp.where(jnp.dot(jnp.asarray(BASKET_WEIGHTS), s) > BASKET_STRIKE, 1.0, 0.0)


def test_basket_digital_malliavin_delta_matches_large_finite_difference():
    malliavin = greeks.malliavin_delta(
        basket_drift, basket_diffusion, BASKET_SPOTS, HORIZON, basket_digital, jax.random.key(6),
        n_paths=32_768, dt=DT,
    )
    # The reference: 4x the paths and a 2% bump (~2 per asset). The bump's
    # bias, ~h^2/6 * d^3u/dS^3 with d/dS ~ 1/(S vol sqrt(T)), is ~1e-3 relative
    # (< 0.1 s.e.); the larger bump halves the FD variance relative to 1%.
    # An independent key makes the two estimates independent, so the
    # combined s.e. is sqrt(se_M^2 + se_FD^2).
    reference = greeks.finite_difference_delta(
        basket_drift, basket_diffusion, BASKET_SPOTS, HORIZON, basket_digital, jax.random.key(7),
        n_paths=131_072, dt=DT, relative_bump=0.02,
    )
    combined = np.hypot(np.asarray(malliavin.stderr), np.asarray(reference.stderr))
    z = np.abs(np.asarray(malliavin.value) - np.asarray(reference.value)) / combined
    print(f"basket digital Delta: Malliavin {np.asarray(malliavin.value)} ± {np.asarray(malliavin.stderr)}; "
          f"FD {np.asarray(reference.value)} ± {np.asarray(reference.stderr)}; |z| = {z}")
    assert malliavin.value.shape == (2,)
    assert np.all(z <= Z_TOLERANCE)


# ---------------------------------------------------------------------------
# The augmented system itself: nonlinear 2-D SDE with state-dependent,
# non-diagonal, non-commuting noise, checked against independent computations.

FLOW_X0 = np.array([0.3, -0.2])
FLOW_HORIZON, FLOW_DT, FLOW_PATHS = 1.0, 0.05, 64


def flow_drift(x):
    return jnp.stack([-0.5 * x[0] + 0.3 * jnp.sin(x[1]), 0.2 * x[0] - 0.4 * x[1]])


def flow_diffusion(x):
    # Diagonal >= 0.5 and small off-diagonal terms keep it invertible on the paths.
    return jnp.array([[0.6 + 0.1 * x[0] ** 2, 0.2 * jnp.sin(x[1])], [0.1 * x[1], 0.5 + 0.05 * x[0] ** 2]])


def _flow_drift_numpy(x):
    return np.array([-0.5 * x[0] + 0.3 * np.sin(x[1]), 0.2 * x[0] - 0.4 * x[1]])


def _flow_diffusion_numpy(x):
    return np.array([[0.6 + 0.1 * x[0] ** 2, 0.2 * np.sin(x[1])], [0.1 * x[1], 0.5 + 0.05 * x[0] ** 2]])


def _flow_drift_jacobian(x):
    return np.array([[-0.5, 0.3 * np.cos(x[1])], [0.2, -0.4]])


def _flow_diffusion_derivative(x):
    # [i, j, k] = d sigma_ij / d x_k, written out by hand.
    derivative = np.zeros((2, 2, 2))
    derivative[0, 0, 0] = 0.2 * x[0]
    derivative[0, 1, 1] = 0.2 * np.cos(x[1])
    derivative[1, 0, 1] = 0.1
    derivative[1, 1, 0] = 0.1 * x[0]
    return derivative


@pytest.fixture(scope="module")
def flow():
    return greeks.simulate_tangent_flow(
        flow_drift, flow_diffusion, FLOW_X0, FLOW_HORIZON, jax.random.key(8), n_paths=FLOW_PATHS, dt=FLOW_DT
    )


def test_augmented_system_matches_hand_written_euler_maruyama(flow):
    # Re-derive X, Y and the BEL weight with numpy on the same increments: the
    # documented key schedule (path p uses split(key, n_paths)[p]) and the same
    # grid give bit-identical UnsafeBrownianPath draws.
    n_steps = number_of_steps(FLOW_HORIZON, FLOW_DT)
    grid = jnp.linspace(0.0, FLOW_HORIZON, n_steps + 1)
    path_keys = jax.random.split(jax.random.key(8), FLOW_PATHS)
    increments = jax.vmap(
        lambda path_key: jax.vmap(
            lambda t0, t1: dfx.UnsafeBrownianPath(shape=(2,), key=path_key).evaluate(t0, t1)
        )(grid[:-1], grid[1:])
    )(path_keys)
    increments = np.asarray(increments)
    steps = np.diff(np.asarray(grid))
    for p in range(FLOW_PATHS):
        x, y, h = FLOW_X0.copy(), np.eye(2), np.zeros(2)
        for k in range(n_steps):
            sigma = _flow_diffusion_numpy(x)
            dsigma = _flow_diffusion_derivative(x)
            dw = increments[p, k]
            # Itô: every coefficient at the left end point.
            h_next = h + np.linalg.solve(sigma, y).T @ dw
            y_next = y + _flow_drift_jacobian(x) @ y * steps[k] + sum(
                dsigma[:, j, :] @ y * dw[j] for j in range(2)
            )
            x = x + _flow_drift_numpy(x) * steps[k] + sigma @ dw
            y, h = y_next, h_next
        # Same arithmetic in a different order: ~20 steps x 1e-16 rounding;
        # rtol 1e-10 / atol 1e-12 leave >= three orders of magnitude.
        np.testing.assert_allclose(flow.state[p], x, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(flow.tangent[p], y, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(flow.weight[p], h / FLOW_HORIZON, rtol=1e-10, atol=1e-12)


def test_tangent_flow_is_the_derivative_of_the_terminal_state(flow):
    # Y_T must be dX_T/dx0 of the simulated (Euler) map: compare with central
    # differences of X_T on the same paths (x0 is a traced argument, so the
    # bumped solves reuse the compiled program). Step 1e-5: truncation
    # ~h^2 * (third derivative) ~ 1e-10 and rounding ~eps/h ~ 1e-11, so
    # rtol 1e-6 / atol 1e-8 is loose by two orders yet far below a wrong term
    # in the tangent (O(0.1)).
    step = 1e-5
    columns = []
    for k in range(2):
        bump = step * np.eye(2)[k]
        up, down = (
            greeks.simulate_tangent_flow(
                flow_drift, flow_diffusion, FLOW_X0 + sign * bump, FLOW_HORIZON, jax.random.key(8),
                n_paths=FLOW_PATHS, dt=FLOW_DT,
            ).state
            for sign in (1.0, -1.0)
        )
        columns.append((np.asarray(up) - np.asarray(down)) / (2.0 * step))
    np.testing.assert_allclose(flow.tangent, np.stack(columns, axis=-1), rtol=1e-6, atol=1e-8)


def _nan_above_threshold_payoff(x):
    return jnp.where(x[0] > 0.2, jnp.nan, jnp.where(x[1] > -0.1, 1.0, 0.0))


def test_nan_paths_are_counted_and_excluded(flow):
    estimate = greeks.malliavin_delta(
        flow_drift, flow_diffusion, FLOW_X0, FLOW_HORIZON, _nan_above_threshold_payoff, jax.random.key(8),
        n_paths=FLOW_PATHS, dt=FLOW_DT,
    )
    # Same key, grid and n_paths as `flow`: the same paths, so the expected
    # answer is computable exactly from the simulated flow.
    state, weight = np.asarray(flow.state), np.asarray(flow.weight)
    invalid = state[:, 0] > 0.2
    assert 0 < invalid.sum() < FLOW_PATHS  # the test exercises both kinds of path
    payoffs = np.where(state[:, 1] > -0.1, 1.0, 0.0)
    samples = payoffs[~invalid, None] * weight[~invalid]
    assert int(estimate.n_nan) == invalid.sum()
    assert int(estimate.n_valid) == FLOW_PATHS - invalid.sum()
    # Identical arithmetic up to summation order: rtol 1e-12.
    np.testing.assert_allclose(estimate.value, samples.mean(axis=0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        estimate.stderr, samples.std(axis=0, ddof=1) / np.sqrt(len(samples)), rtol=1e-12, atol=1e-15
    )


def test_estimator_is_jittable_and_reports_singular_noise_as_nan(digital_small):
    @jax.jit
    def delta(x0):
        return greeks.malliavin_delta(
            gbm_drift, gbm_diffusion, x0, HORIZON, discounted_digital, jax.random.key(0),
            n_paths=N_SMALL, dt=DT,
        )

    traced = delta(jnp.asarray(SPOT_ARRAY))
    # Same program up to XLA's fusion choices: rtol 1e-12.
    np.testing.assert_allclose(traced.value, digital_small.value, rtol=1e-12, atol=0.0)
    np.testing.assert_allclose(traced.stderr, digital_small.stderr, rtol=1e-12, atol=0.0)
    # Under jit x0 is unknown at validation time; sigma(0) = 0 then shows up as
    # non-finite weights on every path, never as a number.
    singular = delta(jnp.zeros(1))
    assert int(singular.n_nan) == N_SMALL and int(singular.n_valid) == 0
    assert np.all(np.isnan(np.asarray(singular.value))) and np.all(np.isnan(np.asarray(singular.stderr)))


# ---------------------------------------------------------------------------
# Bad input: clear ValueErrors before anything is traced


class _CallRecorder:
    """Wraps a function and records every call (concrete or traced)."""

    def __init__(self, function):
        self.function = function
        self.calls = 0
        self.traced_calls = 0

    def __call__(self, x):
        self.calls += 1
        self.traced_calls += isinstance(x, jax.core.Tracer)
        return self.function(x)


ESTIMATORS = {
    "malliavin_delta": greeks.malliavin_delta,
    "pathwise_delta": greeks.pathwise_delta,
    "finite_difference_delta": greeks.finite_difference_delta,
}


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"t1": 0.0}, "t1 must be finite and > 0"),
        ({"t1": -1.0}, "t1 must be finite and > 0"),
        ({"t1": math.inf}, "t1 must be finite and > 0"),
        ({"dt": 0.0}, "dt must be finite and > 0"),
        ({"dt": -0.01}, "dt must be finite and > 0"),
        ({"n_paths": 1}, "n_paths must be an integer >= 2"),
        ({"n_paths": 0}, "n_paths must be an integer >= 2"),
        ({"x0": np.array([np.nan])}, "x0 must be finite"),
        ({"brownian": "exact"}, "brownian must be one of"),
    ],
)
def test_bad_input_raises_before_tracing(name, overrides, message):
    drift, diffusion, payoff = (
        _CallRecorder(gbm_drift), _CallRecorder(gbm_diffusion), _CallRecorder(discounted_digital)
    )
    arguments = {"x0": SPOT_ARRAY, "t1": HORIZON, "n_paths": 16, "dt": DT, "brownian": "unsafe", **overrides}
    with pytest.raises(ValueError, match=f"{name}: {message}"):
        ESTIMATORS[name](
            drift, diffusion, arguments["x0"], arguments["t1"], payoff, jax.random.key(0),
            n_paths=arguments["n_paths"], dt=arguments["dt"], brownian=arguments["brownian"],
        )
    assert drift.calls == diffusion.calls == payoff.calls == 0


@pytest.mark.parametrize(
    ("x0", "diffusion_function"),
    [
        (np.array([0.0]), gbm_diffusion),  # sigma(0) = 0: GBM started at zero
        (np.array([1.0, 2.0]), lambda x: jnp.outer(x, jnp.ones(2))),  # rank one
        (np.array([1.0, 1.0]), lambda x: jnp.array([[1.0, 1.0], [1.0, 1.0 + 1e-17]])),  # singular in float64
    ],
)
def test_singular_diffusion_at_x0_raises(x0, diffusion_function):
    drift, diffusion, payoff = (
        _CallRecorder(lambda x: 0.0 * x), _CallRecorder(diffusion_function), _CallRecorder(lambda x: x[0])
    )
    with pytest.raises(ValueError, match="diffusion\\(x0\\) is singular"):
        greeks.malliavin_delta(drift, diffusion, x0, HORIZON, payoff, jax.random.key(0), n_paths=16, dt=DT)
    with pytest.raises(ValueError, match="diffusion\\(x0\\) is singular"):
        greeks.simulate_tangent_flow(drift, diffusion, x0, HORIZON, jax.random.key(0), n_paths=16, dt=DT)
    # The diffusion was evaluated at x0 concretely, and nothing was traced.
    assert diffusion.calls == 2 and diffusion.traced_calls == 0
    assert drift.calls == payoff.calls == 0


def test_wrong_shapes_and_dtypes_raise():
    key = jax.random.key(0)
    # A scalar x0 is caught by the annotation under the test suite's runtime
    # type checker; the library's own check (what users without one get) is:
    with pytest.raises(ValueError, match="x0 must have shape"):
        validate_problem("malliavin_delta", gbm_drift, gbm_diffusion, np.float64(SPOT), HORIZON,
                         n_paths=16, dt=DT, brownian="unsafe")
    with pytest.raises(ValueError, match="drift\\(x\\) must return an array of shape \\(1,\\)"):
        greeks.malliavin_delta(lambda s: s[0], gbm_diffusion, SPOT_ARRAY, HORIZON, discounted_digital, key,
                               n_paths=16, dt=DT)
    with pytest.raises(ValueError, match="payoff\\(x\\) must return an array of shape \\(\\)"):
        greeks.malliavin_delta(gbm_drift, gbm_diffusion, SPOT_ARRAY, HORIZON, lambda s: s, key,
                               n_paths=16, dt=DT)
    with pytest.raises(ValueError, match="payoff\\(x\\) must return a floating-point array"):
        greeks.malliavin_delta(gbm_drift, gbm_diffusion, SPOT_ARRAY, HORIZON, lambda s: s[0] > STRIKE, key,
                               n_paths=16, dt=DT)
    with pytest.raises(ValueError, match="relative_bump must be finite and > 0"):
        greeks.finite_difference_delta(gbm_drift, gbm_diffusion, SPOT_ARRAY, HORIZON, discounted_digital, key,
                                       n_paths=16, dt=DT, relative_bump=0.0)


def test_time_grid_covers_the_horizon():
    # t1/dt = 11.000000000000002 in floating point: still 11 steps of 0.1.
    assert number_of_steps(1.1, 0.1) == 11
    assert number_of_steps(1.0, 0.02) == 50
    # Not a whole number of steps: the smallest uniform grid with step <= dt.
    assert number_of_steps(1.0, 0.3) == 4
    assert number_of_steps(0.5, 2.0) == 1
