"""The DGM mode-collapse monitor: differential entropy of V(t, ·) against the payoff.

A network that has *collapsed* has lost its dependence on the state: V(t, ·)
is (nearly) constant across the box. The monitor measures how spread out the
values :math:`Y_t = V(t, X)` are, for X over a fixed set of sample points, by
their differential entropy :math:`H[Y_t]`, and compares it with the terminal
baseline :math:`H[g(X)]`:

.. math::

    \\text{collapsed} \\iff \\exp\\Big(\\int_0^T H[V(t, X)]\\,\\tfrac{dt}{T}\\Big)
        < \\gamma\\,\\exp\\big(H[g(X)]\\big)
    \\iff \\overline{H}[V] - H[g] < \\log\\gamma .

Why the exponential scale: differential entropy is not a positive quantity
(a uniform law on an interval shorter than 1 has negative entropy) and it
shifts by :math:`\\log|a|` when the values are scaled by ``a``, so
":math:`\\overline{H}[V] < \\gamma H[g]`" read literally would change meaning
with the units of V, and flip when H[g] < 0. :math:`e^{H}` is an effective
width (the length of the uniform distribution with the same entropy; for a
Gaussian :math:`\\sigma\\sqrt{2\\pi e}`), positive and scale-equivariant, so
the comparison above says "V's values are spread over less than γ times the
width of the payoff's values", whatever the units. The monitor therefore
reports the *entropy gap* :math:`\\overline{H}[V] - H[g]` (nats; 0 = as
spread as the payoff, −∞ = constant) and trips below :math:`\\log\\gamma`.

The time average uses Gauss–Legendre nodes on [0, T] (n nodes integrate
polynomials of degree 2n − 1 in t exactly): for a healthy linear problem
(OU conditional mean) :math:`H[V(t)] = H[g] - \\kappa(T - t)` is linear in
t, which the single midpoint node already integrates exactly.

Estimator: the m-spacing estimator of Vasicek (1976) with the boundary
correction of Ebrahimi, Pflughoeft & Soofi (1994),

.. math::

    \\hat H = \\frac1n\\sum_{i=1}^n \\log\\Big(\\frac{n}{c_i m}\\,
        \\big(Y_{(i+m)} - Y_{(i-m)}\\big)\\Big),\\quad
    c_i = 1 + \\tfrac{\\min(i-1,\\, n-i,\\, m)}{m},

with :math:`Y_{(j)}` clamped to :math:`Y_{(1)}, Y_{(n)}` outside 1..n and
:math:`m = \\lfloor\\sqrt n + \\tfrac12\\rfloor`. Chosen over a histogram because
it has no bin width to pick (a Freedman–Diaconis width collapses to 0 with
the IQR and must be floored, and bin edges make the estimate jump as values
cross them), it is exactly scale-equivariant (:math:`\\hat H[aY + b] = \\hat H[Y]
+ \\log|a|`, so an affine V gives exactly the entropy gap
:math:`\\log|a|` against the same points), and on the deterministic uniform
grids the kernel uses, it is exact for a uniform law. Its cost is one sort of
n values. A constant V gives zero spacings; they are floored at one ulp of the
values (:math:`\\epsilon\\max|Y|`, plus the smallest normal number for
:math:`Y \\equiv 0`): spacings below the values' resolution are rounding noise,
and the floor keeps the entropy finite (very negative) instead of −∞.

References:
    O. Vasicek, "A test for normality based on sample entropy", JRSS B 38
    (1976) 54–59. N. Ebrahimi, K. Pflughoeft, E. S. Soofi, "Two measures of
    sample entropy", Stat. Probab. Lett. 20 (1994) 225–234.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from ..sorting import sort

__all__ = [
    "EntropyInfo",
    "collapse_check",
    "entropy_monitor",
    "gauss_legendre_nodes",
    "terminal_entropy",
    "value_entropy",
    "vasicek_entropy",
]


def gauss_legendre_nodes(count: int, horizon: float, dtype=jnp.float64) -> tuple[
    Float[Array, " nodes"], Float[Array, " nodes"]
]:
    """Gauss–Legendre nodes on [0, T] and weights normalised to sum to 1.

    ``count`` nodes integrate polynomials of degree ``2 count - 1`` in t
    exactly; the weights average (∫ · dt / T), not integrate.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    nodes, weights = np.polynomial.legendre.leggauss(count)
    return (
        jnp.asarray(0.5 * horizon * (nodes + 1.0), dtype),
        jnp.asarray(weights / weights.sum(), dtype),
    )


def vasicek_entropy(samples: Float[Array, " points"], spacing: int | None = None) -> Float[Array, ""]:
    """Differential entropy (nats) of a 1-D sample by the corrected m-spacing estimator.

    Args:
        samples: n >= 2 values (any order).
        spacing: m, 1 <= m < n; default ``round(sqrt(n))`` (Vasicek's and
            Grzegorzewski–Wieczorkowski's recommendation: the bias falls with
            m and the variance with n/m).

    Returns:
        :math:`\\hat H` (see the module docstring); finite for finite input,
        very negative for a constant sample.
    """
    n = samples.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 samples, got {n}")
    m = int(np.floor(np.sqrt(n) + 0.5)) if spacing is None else int(spacing)
    if not 1 <= m < n:
        raise ValueError(f"spacing must lie in [1, {n - 1}], got {m}")
    # A sorting network: jnp.sort's result, vectorised across vmap lanes (fnpredict.sorting).
    ordered = sort(samples)
    index = np.arange(n)
    gaps = ordered[np.minimum(index + m, n - 1)] - ordered[np.maximum(index - m, 0)]
    # Ebrahimi's c_i: how many of the 2m neighbours exist, in units of m.
    coefficient = 1.0 + np.minimum(np.minimum(index, n - 1 - index), m) / m
    dtype = samples.dtype
    floor = jnp.finfo(dtype).eps * jnp.max(jnp.abs(ordered)) + jnp.finfo(dtype).tiny
    gaps = jnp.maximum(gaps, floor)
    return jnp.mean(jnp.log(n / (jnp.asarray(coefficient, dtype) * m) * gaps))


def value_entropy(
    network: Callable,
    x_points: Float[Array, "points dim"],
    param_points: Float[Array, "points params"],
    time_nodes: Float[Array, " nodes"],
    time_weights: Float[Array, " nodes"],
) -> Float[Array, ""]:
    """Time-averaged entropy :math:`\\sum_j w_j \\hat H[V(t_j, X)]` over the sample points.

    Args:
        network: ``V(t, x, params) -> scalar``.
        x_points, param_points: the sample points (row i is one (x, p)).
        time_nodes, time_weights: from :func:`gauss_legendre_nodes`.
    """
    def at_time(t):
        values = jax.vmap(lambda x, p: network(t, x, p))(x_points, param_points)
        return vasicek_entropy(values)

    return jnp.dot(time_weights, jax.vmap(at_time)(time_nodes))


def terminal_entropy(
    terminal: Callable,
    x_points: Float[Array, "points dim"],
    param_points: Float[Array, "points params"],
) -> Float[Array, ""]:
    """The baseline :math:`\\hat H[g(X)]` over the same sample points."""
    return vasicek_entropy(jax.vmap(terminal)(x_points, param_points))


def collapse_check(gap: Float[Array, ""], gamma: Float[Array, ""]) -> Bool[Array, ""]:
    """True when :math:`\\overline{H}[V] - H[g] < \\log\\gamma` (see the module docstring).

    A NaN entropy gap (a network that returned NaN) counts as collapsed:
    a monitor must not read "healthy" from garbage.
    """
    return ~(gap >= jnp.log(gamma))


class EntropyInfo(eqx.Module):
    """The monitor's reading.

    Attributes:
        entropy: :math:`\\overline{H}[V] = \\sum_j w_j \\hat H[V(t_j, X)]` (nats).
        terminal_entropy: :math:`\\hat H[g(X)]` (nats).
        gap: ``entropy - terminal_entropy``, the entropy gap: the log of the
            ratio of effective widths e^H[V] / e^H[g] (not a KL divergence).
        collapsed: ``gap < log(gamma)`` (or NaN).
    """

    entropy: Float[Array, ""]
    terminal_entropy: Float[Array, ""]
    gap: Float[Array, ""]
    collapsed: Bool[Array, ""]


def entropy_monitor(
    network: Callable,
    terminal: Callable,
    x_points: Float[Array, "points dim"],
    param_points: Float[Array, "points params"],
    gamma: Float[Array, ""],
    time_nodes: Float[Array, " nodes"],
    time_weights: Float[Array, " nodes"],
) -> EntropyInfo:
    """Run the collapse check of the module docstring.

    Args:
        network: ``V(t, x, params) -> scalar``.
        terminal: ``g(x, params) -> scalar``.
        x_points, param_points: sample points (row i is one (x, p)).
        gamma: γ ∈ (0, 1].
        time_nodes, time_weights: time-average quadrature.

    Returns:
        An :class:`EntropyInfo`.
    """
    entropy = value_entropy(network, x_points, param_points, time_nodes, time_weights)
    baseline = terminal_entropy(terminal, x_points, param_points)
    gap = entropy - baseline
    return EntropyInfo(
        entropy=entropy,
        terminal_entropy=baseline,
        gap=gap,
        collapsed=collapse_check(gap, gamma),
    )
