r"""Quantiles of a weighted mixture of predictive laws, by a bounded root find.

The ensemble's law is :math:`F(x) = \sum_k \rho_k F_k(x)` (ρ the kernel
weights). Its quantile at level p solves F(x) = p. A mixture's quantile lies
between its components' quantiles at the same level,

.. math:: \min_k F_k^{-1}(p) \le F^{-1}(p) \le \max_k F_k^{-1}(p)

(at the min every F_k is <= p, at the max every F_k is >= p), so the
components' quantile brackets give a bracket for each level with no search.
Inside it, Chandrupatla's method (Chandrupatla 1997; the variant of Scherer,
"Computational Physics", 2010, also in SciPy's ``_chandrupatla``): inverse
quadratic interpolation when the last three points make it safe, bisection
otherwise, so it never leaves the bracket and converges superlinearly on a
smooth CDF. Every level is solved at once, each iteration one evaluation of
the mixture CDF at all levels; a level that has converged is frozen, and the
loop stops when all have (a ``while_loop`` bounded by ``iterations``).
Zero-weight kernels are left out of the bracket (a collapsed kernel with a
wild forecast would only widen it).

Why a bounded ``while_loop`` and not a ``fori_loop`` of fixed length (STYLE
lists a data-dependent ``while_loop`` in a vmapped step as an anti-pattern,
since a batched loop runs until its slowest lane converges): on the bundled
S&P 500 the default step needs 9 iterations on average and the full 16 on
1 % of steps. A single asset's ``predict`` stops early; under ``vmap`` the
batched loop runs at most the same 16 iterations as the fixed loop, and
measured per asset-step over 256 assets it was not slower (211.6 against
218.7 µs, ``benchmarks/step_speed.py --baseline``). The loop has no reverse
mode of its own, so the quantiles are differentiated by the implicit
function theorem (:func:`stacked_mixture_quantiles`).
"""

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .laws import AbstractLaw

__all__ = ["mixture_cdf", "mixture_bracket", "mixture_quantiles", "stacked_mixture_quantiles"]


def mixture_cdf(laws: tuple[AbstractLaw, ...], weights: Float[Array, " kernels"], x: Float[Array, " probs"]):
    """Σ_k ρ_k F_k(x) at each point of ``x``."""
    total = jnp.zeros_like(x)
    for k, law in enumerate(laws):
        total = total + weights[k] * law.cdf(x)
    return total


def mixture_bracket(laws, weights, levels):
    """``(low, high)`` per level: the extreme component brackets among kernels with positive weight."""
    lows, highs = [], []
    for k, law in enumerate(laws):
        low, high = law.quantile_bracket(levels)
        used = weights[k] > 0.0
        lows.append(jnp.where(used, low, jnp.inf))
        highs.append(jnp.where(used, high, -jnp.inf))
    return jnp.min(jnp.stack(lows), axis=0), jnp.max(jnp.stack(highs), axis=0)


def mixture_quantiles(
    laws: tuple[AbstractLaw, ...],
    weights: Float[Array, " kernels"],
    levels: Float[Array, " probs"],
    iterations: int = 16,
) -> Float[Array, " probs"]:
    """The mixture's quantiles at ``levels`` (each in (0, 1)).

    Args:
        laws: one law per kernel (any mix of law types).
        weights: ``(kernels,)`` on the simplex.
        levels: ``(probs,)``.
        iterations: the most Chandrupatla iterations (static). 16 reach float64
            round-off on the built-in laws' CDFs from the component bracket
            even when one kernel sits 100 scales from the others (tested
            against SciPy's ``brentq`` in ``tests/intervals``; 12 left a CDF
            error of 8e-4 in that case); bisection alone would need about 50.

    Returns:
        ``(probs,)`` quantiles, inside the component bracket of each level.
        They are not forced monotone here: see
        :func:`fnpredict.intervals.conformal.rearrange`.
    """
    return stacked_mixture_quantiles(((laws, weights, levels),), iterations)[0]


def stacked_mixture_quantiles(problems: tuple[tuple, ...], iterations: int = 16) -> tuple[Array, ...]:
    r""":func:`mixture_quantiles` of several mixtures ``(laws, weights, levels)`` in one root find.

    Each problem is ``(laws, weights, levels)`` as for :func:`mixture_quantiles`
    (its own number of laws and of levels).

    The root find is elementwise, so the levels of every mixture are stacked
    into one vector and each iteration evaluates every mixture's CDF at its
    own points: one loop instead of one per mixture. On one CPU core the
    loop's per-iteration cost is mostly the dispatch of its operations, not
    their arithmetic, so a second loop nearly doubles the cost where the
    stacked one adds only a few CDF evaluations.

    The loop stops as soon as every level has converged, after at most
    ``iterations`` (on the bundled S&P 500 a step needs 9 on average and 16
    on 1 % of steps). Under ``vmap`` the batched loop runs until its slowest
    lane has converged and a converged lane is frozen, so each lane's result
    is the unbatched one, bit for bit.

    Derivatives are those of the exact quantile, by the implicit function
    theorem (a ``custom_jvp``, so forward and reverse mode both work; a
    ``while_loop`` of unknown length has no reverse mode of its own): with
    :math:`G(x, \theta) = F(x; \theta) - p = 0`,

    .. math:: \dot x = -\frac{\partial_\theta G \cdot \dot\theta}{F'(x)},

    both factors from a ``jvp`` of the mixture's CDF at the root. Where the
    density F'(x) is 0 or not finite (the root on a jump or a flat piece of
    an empirical law) the derivative is taken as 0.

    Returns:
        One ``(probs,)`` array of quantiles per problem, in order.
    """
    return _stacked_root_find(int(iterations), tuple(problems))


def _stacked_residual(problems, x):
    """Each problem's CDF at its own slice of the stacked points ``x``, minus its levels."""
    parts, start = [], 0
    for laws, weights, levels in problems:
        stop = start + levels.shape[0]
        parts.append(mixture_cdf(laws, weights, x[start:stop]))
        start = stop
    # One subtraction after the concatenation: XLA then fuses every CDF into
    # one loop fusion per root-find iteration (a subtraction per part split
    # it into 13, and the default step's interval layer cost 3 % more).
    return jnp.concatenate(parts) - jnp.concatenate([problem[2] for problem in problems])


def _split(problems, x):
    """The stacked vector ``x`` cut back into one array per problem."""
    sizes = [problem[2].shape[0] for problem in problems]
    offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    return tuple(x[offsets[i]:offsets[i + 1]] for i in range(len(problems)))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _stacked_root_find(iterations: int, problems: tuple) -> tuple[Array, ...]:
    """Chandrupatla's method on the stacked levels (:func:`stacked_mixture_quantiles`)."""
    levels = jnp.concatenate([problem[2] for problem in problems])
    dtype = levels.dtype
    eps = jnp.finfo(dtype).eps
    brackets = [mixture_bracket(*problem) for problem in problems]
    low = jnp.concatenate([b[0] for b in brackets])
    high = jnp.concatenate([b[1] for b in brackets])

    def residual(x):
        return _stacked_residual(problems, x)

    f_low, f_high = residual(low), residual(high)
    done = (f_low >= 0.0) | (f_high <= 0.0) | (high <= low)
    # A level solved by its bracket (F(low) >= p: the root is low; F(high)
    # <= p: it is high) starts with both ends there, so the answer read off
    # the final bracket below is that end.
    solved = jnp.where(f_low >= 0.0, low, high)
    # State (Scherer's notation): x1 the last iterate, x2 the other end of
    # the bracket (opposite sign), x3 the previous x1 or x2 dropped.
    x1, x2 = jnp.where(done, solved, high), jnp.where(done, solved, low)
    t = jnp.full_like(levels, 0.5)  # the first step bisects
    carry = (jnp.zeros((), jnp.int32), x1, f_high, x2, f_low, x2, f_low, t, done)

    def ratio(a, b):
        return a / jnp.where(b != 0.0, b, 1.0)

    def closest(x1, f1, x2, f2):
        # The end with the smaller residual, the bracket's width, and
        # SciPy's bisect-like tolerance (Chandrupatla's, with 4 eps relative).
        xm = jnp.where(jnp.abs(f1) < jnp.abs(f2), x1, x2)
        return xm, jnp.abs(x2 - x1), 4.0 * eps * jnp.abs(xm) + jnp.finfo(dtype).tiny

    def body(carry):
        count, x1, f1, x2, f2, x3, f3, t, done = carry
        xt = x1 + t * (x2 - x1)
        ft = residual(xt)
        same = jnp.sign(ft) == jnp.sign(f1)
        # Keep a bracket [xt, other]: if ft has f1's sign, x1 is replaced and
        # x2 stays; otherwise x1 becomes the far end x2.
        x3n = jnp.where(same, x1, x2)
        f3n = jnp.where(same, f1, f2)
        x2n = jnp.where(same, x2, x1)
        f2n = jnp.where(same, f2, f1)
        x1n, f1n = xt, ft
        _, width, tolerance = closest(x1n, f1n, x2n, f2n)
        converged = (ft == 0.0) | (width <= tolerance)
        # The next step t along [x1, x2]: inverse quadratic interpolation
        # through (x3, x1, x2) when the points make it safe (Chandrupatla's
        # condition), else bisection.
        xi = ratio(x1n - x2n, x3n - x2n)
        phi = ratio(f1n - f2n, f3n - f2n)
        alpha = ratio(x3n - x1n, x2n - x1n)
        safe_iqi = ((1.0 - jnp.sqrt(jnp.clip(1.0 - xi, 0.0, None))) < phi) & (phi < jnp.sqrt(jnp.clip(xi, 0.0, None)))
        t_iqi = (ratio(f1n, f1n - f2n) * ratio(f3n, f3n - f2n)
                 - alpha * ratio(f1n, f3n - f1n) * ratio(f2n, f2n - f3n))
        tl = 0.5 * ratio(tolerance, width)
        t_new = jnp.where(safe_iqi & jnp.isfinite(t_iqi), t_iqi, 0.5)
        t_new = jnp.clip(t_new, jnp.minimum(tl, 0.5), jnp.maximum(1.0 - tl, 0.5))

        def keep(new, old):
            return jnp.where(done, old, new)

        return (count + 1, keep(x1n, x1), keep(f1n, f1), keep(x2n, x2), keep(f2n, f2), keep(x3n, x3), keep(f3n, f3),
                keep(t_new, t), done | converged)

    # Rolled, not unrolled: unrolling the 16 iterations made the default
    # step's predict 2.5x slower on CPU (2117 against 842 µs per step, same
    # run) and its compilation 10x longer (137 against 14 s): XLA did not fuse
    # the unrolled copies, so their hundreds of tiny ops each paid dispatch.
    # The answer is not carried: a level's bracket is frozen when it
    # converges, so the end with the smaller residual is read off at the end.
    def unfinished(carry):
        return (carry[0] < iterations) & ~jnp.all(carry[-1])

    _, x1, f1, x2, f2, _, _, _, _ = jax.lax.while_loop(unfinished, body, carry)
    return _split(problems, closest(x1, f1, x2, f2)[0])


@_stacked_root_find.defjvp
def _stacked_root_find_jvp(iterations, primals, tangents):
    (problems,), (problems_dot,) = primals, tangents
    roots = _stacked_root_find(iterations, problems)
    x = jax.lax.stop_gradient(jnp.concatenate(roots))
    # G(x, θ) = 0 at the root: ẋ = -(∂θG·θ̇)/(∂xG), both from jvps at x.
    _, g_dot = jax.jvp(lambda p: _stacked_residual(p, x), (problems,), (problems_dot,))
    # The residual is elementwise in x, so a jvp along ones is the density.
    _, density = jax.jvp(lambda y: _stacked_residual(problems, y), (x,), (jnp.ones_like(x),))
    usable = (density > 0.0) & jnp.isfinite(density)
    x_dot = jnp.where(usable, -g_dot / jnp.where(usable, density, 1.0), 0.0)
    return roots, _split(problems, x_dot)
