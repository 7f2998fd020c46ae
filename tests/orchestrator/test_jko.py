"""JKO step: the faithful mode is Hedge, the proximal mode solves the JKO problem."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn
from scipy.optimize import minimize

import fnpredict as fp
from fnpredict.orchestrator.jko import (
    DEFAULT_THRESHOLD,
    JKOInfo,
    default_cost,
    entropic_transport_cost,
    jko_step,
    proximal_coupling,
)

K = 4
HP = fp.Hyperparams()
CFG = fp.PredictorConfig()
TAU = float(HP.jko_tau)
EPSILON = float(HP.sinkhorn_epsilon)


def _hedge(weights, gradient, tau):
    log_target = np.log(weights) - tau * (gradient - gradient.min())
    target = np.exp(log_target - log_target.max())
    return target / target.sum()


@functools.partial(jax.jit, static_argnames=("mode", "iterations"))
def _step(weights, gradient, tau, epsilon, threshold, cost, *, mode, iterations):
    return jko_step(
        weights, gradient, tau, epsilon, mode=mode, cost=cost, iterations=iterations, threshold=threshold
    )


def _run(weights, gradient, tau=TAU, epsilon=EPSILON, *, mode="faithful", cost=None, iterations=None,
         threshold=DEFAULT_THRESHOLD):
    weights = jnp.asarray(weights, jnp.float64)
    cost = default_cost(weights.shape[-1]) if cost is None else jnp.asarray(cost, jnp.float64)
    return _step(
        weights, jnp.asarray(gradient, jnp.float64), jnp.asarray(tau, jnp.float64),
        jnp.asarray(epsilon, jnp.float64), jnp.asarray(threshold, jnp.float64), cost,
        mode=mode, iterations=CFG.sinkhorn_iterations if iterations is None else iterations,
    )


@functools.partial(jax.jit, static_argnames=("mode",))
def _batched(weights, gradients, tau, epsilon, *, mode):
    return jax.vmap(lambda w, g: jko_step(w, g, tau, epsilon, mode=mode, iterations=CFG.sinkhorn_iterations))(
        weights, gradients
    )


@pytest.fixture(scope="module")
def batch():
    """64 realistic inputs: Dirichlet weights (spread and concentrated), half squared z-errors."""
    rng = np.random.default_rng(0)
    weights = np.concatenate([rng.dirichlet(np.ones(K), 32), rng.dirichlet(0.3 * np.ones(K), 32)])
    z = rng.standard_normal((64, K)) * rng.uniform(0.3, 3.0, (64, 1))
    return weights, 0.5 * z**2


@pytest.fixture(scope="module")
def batched_steps(batch):
    """Both modes vmapped over the batch at the default hyperparameters (compiled once per mode)."""
    weights, gradients = batch
    return {
        mode: _batched(jnp.asarray(weights), jnp.asarray(gradients), TAU, EPSILON, mode=mode)
        for mode in ("faithful", "proximal")
    }


# ---------------------------------------------------------------- ott-jax oracle


@functools.partial(jax.jit, static_argnames=())
def _ott_entropic_cost(a, b, cost, epsilon):
    """W_ε(a, b) = ⟨C,P⟩ − εH(P) at the Sinkhorn optimum, and its b-gradient (the g potential)."""
    geom = geometry.Geometry(cost_matrix=cost, epsilon=epsilon)
    solver = sinkhorn.Sinkhorn(threshold=1e-13, max_iterations=20_000)
    with jax.numpy_dtype_promotion("standard"):  # ott-jax mixes int64 counters with floats
        out = solver(linear_problem.LinearProblem(geom, a=a, b=b))
    return out.ent_reg_cost, out.g, out.converged


def _ott_objective(rho, a, gradient, tau, epsilon, cost, check=True):
    """J(ρ) = ⟨∇E, ρ⟩ + W_ε(a, ρ)/τ and its gradient, W_ε by ott-jax."""
    value, potential, converged = _ott_entropic_cost(
        jnp.asarray(a), jnp.asarray(rho), jnp.asarray(cost), epsilon
    )
    # SLSQP may probe a vertex (weights 1e-12) where Sinkhorn is slow; only
    # the points compared in the assertions must be converged solves.
    assert bool(converged) or not check
    # ∂W_ε/∂b is ott's column potential g (up to a constant, irrelevant on the simplex).
    jacobian = gradient + np.asarray(potential) / tau
    return float(np.dot(gradient, rho) + float(value) / tau), jacobian


# ---------------------------------------------------------------- faithful mode


def test_namespace_exports():
    assert fp.orchestrator.jko_step is jko_step
    assert fp.orchestrator.JKOInfo is JKOInfo


def test_faithful_is_hedge_at_the_defaults(batch, batched_steps):
    weights, gradients = batch
    new, info = batched_steps["faithful"]
    # At the default ε and iteration count every one of these converges
    # (some through the 2ε retry), and none falls back.
    assert bool(jnp.all(info.converged)) and not bool(jnp.any(info.fell_back))
    hedge = np.stack([_hedge(w, g, TAU) for w, g in zip(weights, gradients)])
    deviation = np.abs(np.asarray(new) - hedge).max()
    print(f"faithful vs Hedge: max |Δw| = {deviation:.2e}, retried {float(info.retried.mean()):.0%}")
    # Converged means ‖Pᵀ1 − b‖₁ ≤ 1e-6: the acceptance bound, no slack.
    assert deviation <= 1e-6
    assert bool(jnp.all(info.marginal_error <= DEFAULT_THRESHOLD))


def test_faithful_retry_rescues():
    weights = np.array([0.4, 0.3, 0.2, 0.1])
    gradient = np.array([0.1, 2.0, 0.5, 3.0])
    # ε = 0.1 with 50 iterations misses 1e-6; the annealed 2ε = 0.2 meets it.
    new, info = _run(weights, gradient, 0.5, 0.1, iterations=50)
    assert bool(info.retried) and bool(info.converged) and not bool(info.fell_back)
    # Same acceptance bound as above: converged within the threshold.
    np.testing.assert_allclose(np.asarray(new), _hedge(weights, gradient, 0.5), rtol=0.0, atol=1e-6)


# Two ways to force failure: a Gibbs kernel e^{−1/ε} that underflows to 0 off
# the diagonal (no mass can move, ε = 1e-3), and an unreachable threshold of 0.
@pytest.mark.parametrize("epsilon, threshold", [(1e-3, DEFAULT_THRESHOLD), (EPSILON, 0.0)])
def test_faithful_falls_back_to_uniform(epsilon, threshold):
    weights = np.array([0.4, 0.3, 0.2, 0.1])
    gradient = np.array([0.1, 2.0, 0.5, 3.0])
    new, info = _run(weights, gradient, 0.5, epsilon, threshold=threshold)
    assert bool(info.retried) and bool(info.fell_back) and not bool(info.converged)
    assert float(info.marginal_error) > threshold
    # Uniform is 1/4 exactly, column sums of ρ⊗u then renormalised: ulp level.
    np.testing.assert_allclose(np.asarray(new), np.full(K, 0.25), rtol=0.0, atol=1e-15)
    # Free energy on fallback: the product coupling ρ_k ⊗ uniform at ε.
    product = weights[:, None] * np.full(K, 0.25)[None, :]
    expected = gradient @ np.full(K, 0.25) + (
        np.sum((1 - np.eye(K)) * product) + epsilon * np.sum(product * np.log(product))
    ) / 0.5
    # A handful of float64 sums: 1e-12 relative.
    np.testing.assert_allclose(float(info.free_energy), expected, rtol=1e-12, atol=0.0)


def test_faithful_free_energy_is_the_jko_objective():
    rng = np.random.default_rng(5)
    weights = rng.dirichlet(np.ones(K))
    gradient = rng.exponential(size=K)
    new, info = _run(weights, gradient, TAU, 0.5)
    assert bool(info.converged) and not bool(info.retried)
    expected, _ = _ott_objective(np.asarray(new), weights, gradient, TAU, 0.5, np.asarray(default_cost(K)))
    # The Sinkhorn plan has Gibbs form with marginals (ρ_k, ρ_new), so its
    # ⟨C,P⟩ − εH(P) is W_ε(ρ_k, ρ_new) up to the oracle's 1e-13 tolerance.
    np.testing.assert_allclose(float(info.free_energy), expected, rtol=0.0, atol=1e-10)


# ---------------------------------------------------------------- proximal mode


def _squared_distance_cost(seed):
    x = np.random.default_rng(seed).uniform(0.0, 1.0, K)
    cost = (x[:, None] - x[None, :]) ** 2
    return cost / cost.max()


PROXIMAL_CASES = {
    "default-cost": (1, 0.5, 0.2, None),
    "squared-distance": (2, 0.3, 0.2, _squared_distance_cost(3)),
    "long-step-blurry": (3, 2.0, 0.5, _squared_distance_cost(4)),
}


@pytest.mark.parametrize("case", sorted(PROXIMAL_CASES))
def test_proximal_solves_the_jko_problem(case):
    seed, tau, epsilon, cost = PROXIMAL_CASES[case]
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(K))
    gradient = rng.exponential(size=K)
    cost = np.asarray(default_cost(K)) if cost is None else cost
    new, info = _run(weights, gradient, tau, epsilon, mode="proximal", cost=cost)
    new = np.asarray(new)

    # Independent solver: SLSQP over the simplex, W_ε from ott-jax's Sinkhorn.
    def objective(rho, check=True):
        return _ott_objective(rho, weights, gradient, tau, epsilon, cost, check)

    result = minimize(
        lambda r: objective(r, False)[0],
        np.full(K, 1.0 / K),
        jac=lambda r: objective(r, False)[1],
        method="SLSQP",
        bounds=[(1e-12, 1.0)] * K,
        constraints=[{"type": "eq", "fun": lambda r: r.sum() - 1.0, "jac": lambda r: np.ones(K)}],
        options={"ftol": 1e-15, "maxiter": 500},
    )
    assert result.success, result.message
    closed_value, _ = objective(new)
    objective(result.x)  # the SLSQP minimiser's W_ε must be a converged solve too
    gap = closed_value - result.fun
    print(f"{case}: |ρ_closed − ρ_SLSQP|∞ = {np.abs(new - result.x).max():.1e}, J gap = {gap:.1e}")
    # The closed form is the exact minimiser: SLSQP cannot beat it beyond the
    # oracle's 1e-13 Sinkhorn tolerance, and stops within ~1e-12 of it.
    assert gap <= 1e-11
    assert abs(gap) <= 1e-10
    # A strictly convex objective with curvature ~ε/(τρ): a 1e-12 objective
    # gap allows ~1e-6 in the minimiser; SLSQP in practice lands ~1e-9 away.
    np.testing.assert_allclose(new, result.x, rtol=0.0, atol=1e-6)
    # The reported free energy is that objective (W_ε exact for the Gibbs plan).
    np.testing.assert_allclose(float(info.free_energy), closed_value, rtol=0.0, atol=1e-10)
    # And the coupling's ⟨C,P⟩ − εH(P) is ott's W_ε between its marginals.
    coupling = proximal_coupling(
        jnp.asarray(weights), jnp.asarray(gradient), jnp.asarray(tau), jnp.asarray(epsilon), jnp.asarray(cost)
    )
    oracle, _, _ = _ott_entropic_cost(jnp.asarray(weights), jnp.asarray(new), jnp.asarray(cost), epsilon)
    # Same quantity by two routes; the oracle converges to 1e-13 in L1.
    np.testing.assert_allclose(
        float(entropic_transport_cost(coupling, jnp.asarray(cost), jnp.asarray(epsilon))), float(oracle),
        rtol=0.0, atol=1e-10,
    )
    assert bool(info.converged) and not bool(info.retried) and not bool(info.fell_back)


def test_proximal_limits():
    weights = np.array([0.4, 0.3, 0.2, 0.1])
    gradient = np.array([0.7, 0.2, 1.5, 0.9])
    epsilon = 0.05
    # τ → 0: only the Gibbs-kernel blur remains, ‖ρ' − ρ‖₁ ≤ 2(K−1)e^{−1/ε}.
    new, _ = _run(weights, gradient, 1e-12, epsilon, mode="proximal")
    blur_bound = 2 * (K - 1) * np.exp(-1.0 / epsilon)
    assert np.abs(np.asarray(new) - weights).sum() <= blur_bound
    # At ε = 0.2 the blur is exactly a row-stochastic kernel with diagonal
    # 1/(1 + (K−1)e^{−1/ε}): check the closed form of the limit.
    epsilon = 0.2
    new, _ = _run(weights, gradient, 1e-12, epsilon, mode="proximal")
    off = np.exp(-1.0 / epsilon) / (1 + (K - 1) * np.exp(-1.0 / epsilon))
    keep = 1 - (K - 1) * off
    expected = keep * weights + off * (1 - weights)
    # τ = 1e-12 perturbs the kernel by ~τ·∇E/ε ~ 1e-11.
    np.testing.assert_allclose(np.asarray(new), expected, rtol=0.0, atol=1e-10)
    # τ → ∞: all the weight on argmin ∇E (index 1); others ~ exp(−τΔ/ε) = 0.
    new, _ = _run(weights, gradient, 1e3, 0.2, mode="proximal")
    np.testing.assert_allclose(np.asarray(new), np.eye(K)[1], rtol=0.0, atol=1e-12)


# ---------------------------------------------------------------- both modes


@pytest.mark.parametrize("mode", ["faithful", "proximal"])
def test_simplex_and_finite_for_extreme_inputs(mode):
    cases = [
        (np.full(K, 0.25), np.array([0.0, 1e300, -1e300, 5.0]), 0.5, EPSILON),
        (np.full(K, 0.25), np.array([1e12, 1e12, 1e12, 1e12]), 0.5, EPSILON),
        (np.array([1.0, 0.0, 0.0, 0.0]), np.array([5.0, 0.0, 1.0, 2.0]), 0.5, EPSILON),
        (np.array([0.0, 0.5, 0.5, 0.0]), np.array([0.0, 5e11, 0.0, 1.0]), 1e6, 1e-3),
        (np.array([1e-300, 1.0 - 2e-300, 1e-300, 0.0]), np.array([-3.0, 2.0, 0.0, 1e-300]), 1e-6, 10.0),
    ]
    for weights, gradient, tau, epsilon in cases:
        new, info = _run(weights, gradient, tau, epsilon, mode=mode)
        new = np.asarray(new)
        assert np.all(np.isfinite(new)) and np.all(new >= 0.0), (weights, gradient, new)
        # Renormalised by its own sum: one rounding per entry.
        np.testing.assert_allclose(new.sum(), 1.0, rtol=0.0, atol=1e-14)
        assert np.isfinite(float(info.free_energy)) and np.isfinite(float(info.marginal_error))
        for leaf in (info.converged, info.retried, info.fell_back):
            assert leaf.dtype == jnp.bool_ and leaf.shape == ()


@pytest.mark.parametrize("mode", ["faithful", "proximal"])
def test_vmap_equals_loop(batch, batched_steps, mode):
    weights, gradients = batch
    new, info = batched_steps[mode]
    for i in range(0, weights.shape[0], 8):
        single, single_info = _run(weights[i], gradients[i], TAU, EPSILON, mode=mode)
        # vmap and a single call fuse differently in XLA (lax.cond becomes a
        # select): equal to float64 rounding accumulated over 50 Sinkhorn
        # sweeps, guaranteed to 1e-12.
        np.testing.assert_allclose(np.asarray(new[i]), np.asarray(single), rtol=0.0, atol=1e-12)
        np.testing.assert_allclose(
            float(info.free_energy[i]), float(single_info.free_energy), rtol=1e-10, atol=1e-12
        )
        assert bool(info.converged[i]) == bool(single_info.converged)


def test_jit_compiles_once_for_new_hyperparameters():
    weights = np.full(K, 0.25)
    gradient = np.array([0.1, 0.4, 0.2, 0.0])
    first, _ = _run(weights, gradient, 0.5, 0.2)
    compiled = _step._cache_size()
    # τ, ε and the threshold are traced: new values reuse the compiled step.
    second, _ = _run(weights, gradient, 1.0, 0.3, threshold=1e-8)
    third, _ = _run(weights, gradient, 0.1, 0.5)
    assert _step._cache_size() == compiled
    assert not np.allclose(np.asarray(first), np.asarray(second))
    assert not np.allclose(np.asarray(second), np.asarray(third))


def test_invalid_arguments_raise():
    weights = jnp.full(K, 0.25)
    gradient = jnp.zeros(K)
    with pytest.raises(ValueError, match="mode"):
        jko_step(weights, gradient, 0.5, 0.2, mode="sinkhorn")
    with pytest.raises(ValueError, match="iterations"):
        jko_step(weights, gradient, 0.5, 0.2, iterations=0)
    # jaxtyping (in the tests) or the function itself rejects the shape.
    with pytest.raises((ValueError, TypeError), match="cost"):
        jko_step(weights, gradient, 0.5, 0.2, cost=jnp.zeros((3, 3)))


# ---------------------------------------------------------------- Sinkhorn parity


def _ott_plan(a, b, cost, epsilon, iterations):
    """The log-domain solver the scaling form replaced: ott-jax, fixed count."""
    geom = geometry.Geometry(cost_matrix=cost, epsilon=epsilon)
    solver = sinkhorn.Sinkhorn(lse_mode=True, threshold=1e-6, min_iterations=iterations, max_iterations=iterations,
                               inner_iterations=iterations, implicit_diff=None)
    with jax.numpy_dtype_promotion("standard"):
        return solver(linear_problem.LinearProblem(geom, a=a, b=b)).matrix


@pytest.mark.parametrize("epsilon, iterations", [(EPSILON, CFG.sinkhorn_iterations), (0.1, 50), (0.05, 7), (0.5, 3)])
def test_scaling_sinkhorn_is_otts_log_domain_solver(batch, epsilon, iterations):
    from fnpredict.orchestrator.jko import _sinkhorn_plan

    weights, gradients = batch
    rng = np.random.default_rng(1)
    cost = jnp.asarray(rng.uniform(0.0, 1.0, (K, K)) * (1 - np.eye(K)))
    worst = 0.0
    for w, g in zip(weights[:16], gradients[:16]):
        target = jnp.asarray(_hedge(w, g, TAU))
        for c in (default_cost(K), cost):
            ours, _ = _sinkhorn_plan(jnp.asarray(w), target, c, epsilon, iterations, DEFAULT_THRESHOLD)
            theirs = _ott_plan(jnp.asarray(w), target, c, epsilon, iterations)
            worst = max(worst, float(jnp.max(jnp.abs(ours - theirs))))
    print(f"scaling vs log-domain Sinkhorn: max |ΔP| = {worst:.1e}")
    # Same iterates in exact arithmetic; 50 iterations of K×K products and
    # exp/log in the other: a few hundred ulps of entries of size <= 1.
    assert worst <= 1e-13
