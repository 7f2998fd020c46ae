"""Predictive laws and the mixture quantile root find against SciPy; the jump-diffusion law."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from fnpredict.intervals import EmpiricalLaw, NormalMixtureLaw, StudentTLaw, jump_diffusion_law, mixture_quantiles
from fnpredict.intervals.laws import student_t4_cdf, student_t4_quantile
from fnpredict.intervals.mixture import mixture_cdf, stacked_mixture_quantiles
from fnpredict.kernels.imex import JumpDiffusionFit

LEVELS = np.array([0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999])


def test_student_t4_closed_forms_match_scipy():
    t = np.concatenate([np.linspace(-60.0, 60.0, 2001), [-1e200, 1e200]])
    # 1e-15: the closed form is exact; the residue is float64 round-off.
    np.testing.assert_allclose(np.asarray(student_t4_cdf(jnp.asarray(t))), scipy.stats.t.cdf(t, 4),
                               rtol=0, atol=1e-15)
    p = np.concatenate([[1e-12, 1e-6], LEVELS, [1 - 1e-6]])
    np.testing.assert_allclose(np.asarray(student_t4_quantile(jnp.asarray(p))), scipy.stats.t.ppf(p, 4),
                               rtol=1e-12, atol=1e-12)


def _scipy_mixture_cdf(x, draws, weights):
    """The same mixture written with SciPy's distributions (independent of fnpredict's laws)."""
    empirical_levels = (np.arange(len(draws)) + 0.5) / len(draws)
    return (
        weights[0] * scipy.stats.t.cdf(x, 4, loc=0.1, scale=0.02)
        + weights[1] * np.interp(x, draws, empirical_levels)
        + weights[2] * (0.9 * scipy.stats.norm.cdf(x, -0.02, 0.01) + 0.1 * scipy.stats.norm.cdf(x, 0.3, 0.05))
        + weights[3] * scipy.stats.t.cdf(x, 4, loc=5.0, scale=0.5)
    )


# One compiled program for every weight vector (laws and weights are arguments).
_QUANTILES = jax.jit(lambda laws, w: mixture_quantiles(laws, w, jnp.asarray(LEVELS), 16))


@pytest.mark.parametrize("weights", [(0.25, 0.25, 0.25, 0.25), (0.7, 0.0, 0.3, 0.0), (0.0, 1.0, 0.0, 0.0),
                                     (0.001, 0.001, 0.001, 0.997)])
def test_mixture_quantiles_match_scipy_brentq(weights):
    rng = np.random.default_rng(0)
    draws = np.sort(0.05 + 0.03 * rng.standard_t(3, 256))
    laws = (
        StudentTLaw(jnp.asarray(0.1), jnp.asarray(0.02)),
        EmpiricalLaw(jnp.asarray(draws)),
        NormalMixtureLaw(jnp.asarray([0.9, 0.1]), jnp.asarray([-0.02, 0.3]), jnp.asarray([0.01, 0.05])),
        StudentTLaw(jnp.asarray(5.0), jnp.asarray(0.5)),
    )
    w = np.asarray(weights)
    got = np.asarray(_QUANTILES(laws, jnp.asarray(w)))
    if w[1] == 1.0:
        # The empirical law alone never reaches levels below 1/(2n) or above
        # 1 - 1/(2n) (its CDF is flat there): those clamp to the extreme draws.
        np.testing.assert_array_equal(got[[0, -1]], draws[[0, -1]])
        got, levels = got[1:-1], LEVELS[1:-1]
    else:
        levels = LEVELS
    want = [scipy.optimize.brentq(lambda x: _scipy_mixture_cdf(x, draws, w) - p, -100.0, 100.0, xtol=1e-15)
            for p in levels]
    # The root is well conditioned (density > 0.1 at every quantile here), so
    # a CDF residual of 1e-13 is a location error below 1e-11; 1e-9 leaves
    # room for the empirical law's kinks, where IQI falls back to bisection.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.asarray(mixture_cdf(laws, jnp.asarray(w), jnp.asarray(got))), levels,
                               rtol=0, atol=1e-9)


def test_mixture_quantiles_vmap_matches_single():
    laws = (StudentTLaw(jnp.asarray(0.0), jnp.asarray(1.0)), StudentTLaw(jnp.asarray(3.0), jnp.asarray(0.3)))
    weights = jnp.asarray([[0.5, 0.5], [0.9, 0.1], [0.1, 0.9]])
    batched = jax.vmap(lambda w: mixture_quantiles(laws, w, jnp.asarray(LEVELS)))(weights)
    for i in range(3):
        single = mixture_quantiles(laws, weights[i], jnp.asarray(LEVELS))
        # 1e-12: vmap and a single call may differ in the last bits (DESIGN §5).
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(single), rtol=1e-12, atol=1e-12)


def _fit(**values):
    fields = dict(intensity=0.0, jump_mean=0.0, jump_std=0.0, volatility=0.01, reversion=0.0, drift=0.0,
                  level=0.0, scale=0.01)
    fields.update(values)
    return JumpDiffusionFit(**{k: jnp.asarray(v, jnp.float64) for k, v in fields.items()}, valid=jnp.asarray(True))


def test_jump_diffusion_law_is_exact_without_reversion():
    # κ = 0: y_{t+1} = y_t + b + σW_1 + Σ_{i<=N} Y_i, a Poisson mixture of normals in closed form.
    lam, mu, sj, sigma, b, last = 0.3, -0.02, 0.04, 0.01, 0.001, 2.0
    fit = _fit(intensity=lam, jump_mean=mu, jump_std=sj, volatility=sigma, drift=b)
    law = jump_diffusion_law(fit, jnp.asarray(last), max_jumps=12)
    x = np.linspace(1.7, 2.2, 301)
    n = np.arange(40)
    pmf = scipy.stats.poisson.pmf(n, lam)
    want = np.sum(pmf[None] * scipy.stats.norm.cdf((x[:, None] - last - b - n * mu) / np.sqrt(sigma**2 + n * sj**2)),
                  axis=1)
    # 1e-10: the truncation at 12 jumps drops P(N > 12) ~ 1e-17 for λ = 0.3.
    np.testing.assert_allclose(np.asarray(law.cdf(jnp.asarray(x))), want, rtol=0, atol=1e-10)


def test_jump_diffusion_law_mean_equals_conditional_mean():
    fit = _fit(intensity=0.05, jump_mean=-0.03, jump_std=0.02, volatility=0.01, reversion=0.2, drift=0.002,
               level=1.0)
    law = jump_diffusion_law(fit, jnp.asarray(1.3))
    mean = float(jnp.sum(law.weights * law.means))
    # The only difference is the Poisson tail beyond 6 jumps (< 1e-10 at λ = 0.05).
    np.testing.assert_allclose(mean, float(fit.conditional_mean(1.3)), rtol=0, atol=1e-12)
    # Against a Monte Carlo of the OU jump-diffusion over one step (fine Euler grid), the
    # variance matches within its Monte Carlo standard error.
    rng = np.random.default_rng(1)
    paths, substeps = 200_000, 200
    dt = 1.0 / substeps
    x = np.full(paths, 1.3)
    for _ in range(substeps):
        jumps = rng.poisson(0.05 * dt, paths)
        x = (x + (0.002 - 0.2 * (x - 1.0)) * dt + 0.01 * np.sqrt(dt) * rng.standard_normal(paths)
             + jumps * -0.03 + np.sqrt(jumps) * 0.02 * rng.standard_normal(paths))
    variance = float(jnp.sum(law.weights * (law.stds**2 + law.means**2)) - mean**2)
    mc_variance = float(np.var(x))
    mc_se = float(np.std((x - x.mean()) ** 2) / np.sqrt(paths))
    # 4 standard errors, plus the Euler bias O(dt) of the variance (relative 0.2 · dt).
    assert abs(variance - mc_variance) <= 4 * mc_se + 0.2 * dt * variance, (variance, mc_variance, mc_se)


def test_stacked_root_find_equals_separate_root_finds():
    # The engine solves the ensemble mixture and kernel C's own law in one
    # loop; each problem's quantiles must equal its own root find's.
    rng = np.random.default_rng(1)
    draws = np.sort(0.05 + 0.03 * rng.standard_t(3, 256))
    mixture = ((StudentTLaw(jnp.asarray(0.1), jnp.asarray(0.02)), EmpiricalLaw(jnp.asarray(draws))),
               jnp.asarray([0.4, 0.6]), jnp.asarray(LEVELS))
    own = ((NormalMixtureLaw(jnp.asarray([0.9, 0.1]), jnp.asarray([-0.02, 0.3]), jnp.asarray([0.01, 0.05])),),
           jnp.ones(1), jnp.asarray(LEVELS[1:4]))
    stacked = jax.jit(lambda a, b: stacked_mixture_quantiles((a, b), 16))(mixture, own)
    assert [q.shape for q in stacked] == [(len(LEVELS),), (3,)]
    for got, problem in zip(stacked, (mixture, own)):
        want = jax.jit(lambda p: mixture_quantiles(*p, 16))(problem)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-15)


@pytest.mark.parametrize("n", [64, 256, 100])
def test_empirical_cdf_counts_like_numpy_with_ties(n):
    # The two-level (blocked) count behind EmpiricalLaw.cdf against NumPy's
    # searchsorted, with tied draws and points on, between and beyond them.
    from fnpredict.intervals.laws import _count_at_or_below

    rng = np.random.default_rng(n)
    draws = np.sort(np.round(rng.standard_normal(n), 1))
    points = np.concatenate([draws, draws + 1e-9, draws - 1e-9, [-1e300, 1e300, np.nan, -np.inf, np.inf]])
    got = np.asarray(_count_at_or_below(jnp.asarray(draws), jnp.asarray(points)))
    want = np.searchsorted(draws, points, side="right")
    want[np.isnan(points)] = 0
    np.testing.assert_array_equal(got, want)


def _smooth_quantiles(theta):
    """Quantiles of a Student-t + normal-mixture mixture as a function of (loc, scale, weight)."""
    loc, scale, weight = theta[0], theta[1], theta[2]
    laws = (StudentTLaw(loc, scale),
            NormalMixtureLaw(jnp.asarray([0.9, 0.1]), jnp.asarray([-0.02, 0.3]), jnp.asarray([0.01, 0.05])))
    return mixture_quantiles(laws, jnp.stack([weight, 1.0 - weight]), jnp.asarray(LEVELS))


def test_mixture_quantile_derivatives_match_finite_differences():
    # The root find stops early (a while_loop) and is differentiated by the
    # implicit function theorem; forward and reverse mode must both give the
    # derivative of the exact quantile.
    theta = jnp.asarray([0.05, 0.02, 0.6])
    forward = np.asarray(jax.jacfwd(_smooth_quantiles)(theta))
    reverse = np.asarray(jax.jit(jax.jacrev(_smooth_quantiles))(theta))
    np.testing.assert_allclose(reverse, forward, rtol=1e-12, atol=1e-14)
    h = 1e-6
    central = np.stack([
        (np.asarray(_smooth_quantiles(theta.at[i].add(h))) - np.asarray(_smooth_quantiles(theta.at[i].add(-h))))
        / (2 * h) for i in range(3)], axis=1)
    # Central differences: truncation O(h²) and rounding ~1e-16/h of the
    # converged quantiles; 1e-6 relative leaves a factor 10 to both.
    np.testing.assert_allclose(forward, central, rtol=1e-6, atol=1e-8)
    assert np.all(np.abs(forward) > 0.0)


def test_mixture_quantiles_move_one_for_one_with_a_common_shift():
    # Moving every law by h moves every quantile by h: dq/dh = 1 for any mix
    # of laws, the empirical law's kinks included.
    rng = np.random.default_rng(2)
    draws = jnp.asarray(np.sort(0.03 * rng.standard_t(3, 256)))

    def shifted(h):
        laws = (StudentTLaw(0.01 + h, jnp.asarray(0.02)), EmpiricalLaw(draws + h),
                NormalMixtureLaw(jnp.asarray([0.9, 0.1]), jnp.asarray([-0.02, 0.3]) + h, jnp.asarray([0.01, 0.05])))
        return mixture_quantiles(laws, jnp.asarray([0.3, 0.4, 0.3]), jnp.asarray(LEVELS))

    np.testing.assert_allclose(np.asarray(jax.grad(lambda h: jnp.sum(shifted(h)))(0.0)), len(LEVELS), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(jax.jacfwd(shifted)(0.0)), np.ones(len(LEVELS)), rtol=1e-10)
