r"""Monte Carlo Greeks of SDE expectations: Malliavin (Bismut–Elworthy–Li), pathwise, finite differences.

All estimators target derivatives of :math:`u(x_0) = \mathbb{E}[f(X_T)]` for
the Itô SDE :math:`dX_t = b(X_t)dt + \sigma(X_t)dW_t`, :math:`X_0 = x_0`, in
:math:`\mathbb{R}^d` with a square diffusion matrix, simulated by
Euler–Maruyama with diffrax (see :mod:`fnpredict.greeks.flow` for the
augmented system, the solver and the Brownian path). Nothing is discounted
implicitly: to get the Delta of a price :math:`e^{-rT}\mathbb{E}[f(X_T)]`,
put the factor :math:`e^{-rT}` into the payoff.

* :func:`malliavin_delta`: :math:`\nabla u(x_0) = \mathbb{E}\bigl[f(X_T)\,
  \frac1T\int_0^T(\sigma^{-1}(X_t)Y_t)^{\top}dW_t\bigr]` with the tangent flow
  :math:`Y_t=\partial X_t/\partial x_0` (Bismut–Elworthy–Li). It needs no
  derivative of :math:`f`, so it is the estimator for discontinuous payoffs
  (digitals, barriers); it needs an invertible :math:`\sigma`.
* :func:`pathwise_delta`: :math:`\nabla u(x_0) = \mathbb{E}[Y_T^{\top}\nabla f(X_T)]`,
  valid for Lipschitz :math:`f` (for an indicator it silently returns 0,
  because :math:`\nabla f = 0` almost everywhere).
* :func:`finite_difference_delta`: central differences
  :math:`(f(X_T^{x_0+h e_i}) - f(X_T^{x_0-h e_i}))/2h` with common random
  numbers (both bumped solves see the same Brownian path).
* :func:`pathwise_vega`: :math:`\partial_\varepsilon\mathbb{E}[f(X^\varepsilon_T)]`
  for the diffusion :math:`\sigma+\varepsilon\tilde\sigma`, as
  :math:`\mathbb{E}[\nabla f(X_T)\cdot Z_T]` with :math:`Z=\partial_\varepsilon X`,
  for Lipschitz payoffs. A Malliavin Vega for discontinuous payoffs needs the
  Skorohod integral of an anticipating process and is not provided.

Every estimator returns a :class:`GreekEstimate`: the sample mean over the
paths whose contribution is finite, its standard error, and how many paths
were used and how many were dropped as non-finite. Inputs are validated in
Python before tracing; the numerical work is one ``eqx.filter_jit``-compiled,
``vmap``-ed program per (coefficients, payoff, grid, ``n_paths``), so define
the coefficient and payoff functions once and reuse them to avoid
recompiling.

References:
    Fournié, Lasry, Lebuchoux, Lions, Touzi (1999), *Applications of Malliavin
    calculus to Monte Carlo methods in finance*, Finance Stoch. 3, 391–412.
    Elworthy, Li (1994), *Formulae for the derivatives of heat semigroups*,
    J. Funct. Anal. 125, 252–286.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .flow import (
    Diffusion,
    Drift,
    Payoff,
    TangentFlow,
    simulate_tangent_flow,
    solve_paths,
    validate_problem,
)

# Default finite-difference step, relative to max(|x0_i|, 1) (the floor keeps
# the step non-zero at x0_i = 0). With common random numbers, a central
# difference has bias O(h^2) and, for a discontinuous payoff, per-path
# variance O(1/h) (only paths ending within O(h) of the discontinuity
# contribute, each by O(1/h)). At 1% of spot the bias of an at-the-money
# Black–Scholes digital Delta is 3e-4 relative (call: smaller), below the
# ~1e-3–1e-2 relative standard error of a 10^4–10^5-path run, while the 1/h
# variance stays moderate.
DEFAULT_RELATIVE_BUMP = 1e-2


class GreekEstimate(eqx.Module):
    r"""A Monte Carlo estimate with its standard error and path accounting.

    Attributes:
        value: the sample mean of the per-path contributions over the valid
            paths; shape ``(d,)`` for a Delta, ``()`` for a Vega. NaN when
            fewer than two paths are valid.
        stderr: the standard error of ``value``,
            :math:`\sqrt{s^2/n_{\mathrm{valid}}}` with the unbiased sample
            variance :math:`s^2`, per component. NaN when fewer than two
            paths are valid.
        n_valid: number of paths whose contribution is finite in every
            component (these, and only these, enter the mean).
        n_nan: number of paths dropped because some component of their
            contribution was NaN or infinite (``n_valid + n_nan == n_paths``).
    """

    value: Float[Array, " *greek"]
    stderr: Float[Array, " *greek"]
    n_valid: Int[Array, ""]
    n_nan: Int[Array, ""]


def _mean_over_valid_paths(samples: Float[Array, "paths *greek"]) -> GreekEstimate:
    """Mean and standard error over the paths whose sample is finite; count the others."""
    n_paths = samples.shape[0]
    flat = samples.reshape(n_paths, -1)
    valid = jnp.all(jnp.isfinite(flat), axis=1)
    n_valid_int = jnp.sum(valid).astype(jnp.int32)
    n_valid = n_valid_int.astype(samples.dtype)  # a float count: it divides float sums
    zeroed = jnp.where(valid[:, None], flat, 0.0)
    mean = jnp.sum(zeroed, axis=0) / n_valid
    squares = jnp.where(valid[:, None], (flat - mean) ** 2, 0.0)
    variance = jnp.sum(squares, axis=0) / (n_valid - 1)
    stderr = jnp.sqrt(variance / n_valid)
    enough = n_valid >= 2
    shape = samples.shape[1:]
    return GreekEstimate(
        value=jnp.where(enough, mean, jnp.nan).reshape(shape),
        stderr=jnp.where(enough, stderr, jnp.nan).reshape(shape),
        n_valid=n_valid_int,
        n_nan=n_paths - n_valid_int,
    )


@eqx.filter_jit
def _malliavin_delta(drift, diffusion, payoff, x0, key, t1, n_steps, n_paths, brownian):
    paths = solve_paths(
        drift, diffusion, x0, key, t1=t1, n_steps=n_steps, n_paths=n_paths, brownian=brownian,
        parts=frozenset({"tangent", "weight"}),
    )
    samples = jax.vmap(payoff)(paths.state)[:, None] * (paths.weight / t1)
    return _mean_over_valid_paths(samples)


@eqx.filter_jit
def _pathwise_delta(drift, diffusion, payoff, x0, key, t1, n_steps, n_paths, brownian):
    paths = solve_paths(
        drift, diffusion, x0, key, t1=t1, n_steps=n_steps, n_paths=n_paths, brownian=brownian,
        parts=frozenset({"tangent"}),
    )
    payoff_gradient = jax.vmap(jax.grad(payoff))(paths.state)
    # (Y_T^T grad f)_k = sum_i df/dx_i dX^i_T/dx0^k.
    samples = jnp.einsum("pi,pik->pk", payoff_gradient, paths.tangent)
    return _mean_over_valid_paths(samples)


@eqx.filter_jit
def _finite_difference_delta(
    drift, diffusion, payoff, x0, key, t1, n_steps, n_paths, brownian, relative_bump
):
    d = x0.shape[0]
    steps = relative_bump * jnp.maximum(jnp.abs(x0), 1.0)
    bumps = jnp.diag(steps)
    starts = jnp.concatenate([x0 + bumps, x0 - bumps], axis=0)  # (2d, d): up moves, then down moves

    def terminal_payoffs(start):
        # Same key => same per-path keys => same Brownian increments for every
        # start: the common random numbers that keep the difference's variance finite.
        paths = solve_paths(
            drift, diffusion, start, key, t1=t1, n_steps=n_steps, n_paths=n_paths, brownian=brownian,
            parts=frozenset(),
        )
        return jax.vmap(payoff)(paths.state)

    values = jax.vmap(terminal_payoffs)(starts)  # (2d, paths)
    samples = ((values[:d] - values[d:]) / (2.0 * steps[:, None])).T
    return _mean_over_valid_paths(samples)


@eqx.filter_jit
def _pathwise_vega(drift, diffusion, diffusion_direction, payoff, x0, key, t1, n_steps, n_paths, brownian):
    paths = solve_paths(
        drift, diffusion, x0, key, t1=t1, n_steps=n_steps, n_paths=n_paths, brownian=brownian,
        parts=frozenset({"variation"}), diffusion_direction=diffusion_direction,
    )
    payoff_gradient = jax.vmap(jax.grad(payoff))(paths.state)
    samples = jnp.einsum("pi,pi->p", payoff_gradient, paths.variation)
    return _mean_over_valid_paths(samples)


def malliavin_delta(
    drift: Drift,
    diffusion: Diffusion,
    x0: Float[ArrayLike, " channels"],
    t1: float,
    payoff: Payoff,
    key: PRNGKeyArray,
    n_paths: int,
    dt: float,
    *,
    brownian: str = "unsafe",
) -> GreekEstimate:
    r"""Delta :math:`\nabla_{x_0}\mathbb{E}[f(X_T)]` by the Bismut–Elworthy–Li formula.

    .. math::

        \nabla_{x_0}\mathbb{E}[f(X_T)]
        = \mathbb{E}\Bigl[f(X_T)\,\frac1T\int_0^T\bigl(\sigma^{-1}(X_t)\,Y_t\bigr)^{\top}dW_t\Bigr],
        \qquad Y_t = \frac{\partial X_t}{\partial x_0}.

    The weight involves only :math:`\sigma^{-1}` and the tangent flow (the
    drift enters through :math:`Y`), and no derivative of :math:`f`, so the
    payoff may be discontinuous. For Black–Scholes,
    :math:`Y_t = S_t/S_0` and the weight reduces to :math:`W_T/(S_0\sigma T)`.

    Args:
        drift: :math:`b:\mathbb{R}^d\to\mathbb{R}^d`.
        diffusion: :math:`\sigma:\mathbb{R}^d\to\mathbb{R}^{d\times d}`;
            column j multiplies :math:`dW^j`.
        x0: initial state :math:`x_0`, shape ``(d,)``.
        t1: horizon T > 0 (a Python number: it fixes the time grid).
        payoff: :math:`f:\mathbb{R}^d\to\mathbb{R}`, including any discount factor.
        key: PRNG key; path p uses ``jax.random.split(key, n_paths)[p]``, so
            every estimator called with the same key, ``n_paths``, ``t1`` and
            ``dt`` uses the same Brownian paths.
        n_paths: number of Monte Carlo paths (>= 2).
        dt: largest Euler step (> 0); the grid has ``ceil(t1/dt)`` uniform steps.
        brownian: ``"unsafe"`` (``diffrax.UnsafeBrownianPath``, default) or
            ``"virtual"`` (``diffrax.VirtualBrownianTree``).

    Returns:
        :class:`GreekEstimate` with ``value`` and ``stderr`` of shape ``(d,)``.
        Paths whose contribution is not finite (e.g. the diffusion became
        singular along the path, or the payoff returned NaN) are counted in
        ``n_nan`` and left out of the mean.

    Raises:
        ValueError: before any tracing, for ``n_paths < 2``, ``t1 <= 0``,
            ``dt <= 0``, coefficient/payoff shapes other than ``(d,)``,
            ``(d, d)``, ``()``, a non-finite ``x0``, or a diffusion matrix at
            ``x0`` that is numerically singular (smallest singular value
            <= largest * d * eps). When ``x0`` is traced by an enclosing
            ``jit`` the value checks are skipped and a singular diffusion
            surfaces as ``n_nan == n_paths``.

    Example:
        >>> r, vol, strike = 0.05, 0.2, 100.0
        >>> digital = lambda s: jnp.exp(-r) * (s[0] > strike).astype(float)
        >>> est = malliavin_delta(lambda s: r * s, lambda s: vol * jnp.diag(s), jnp.array([100.0]),
        ...                       1.0, digital, jax.random.key(0), n_paths=10_000, dt=0.02)
        >>> est.value.shape, int(est.n_nan)
        ((1,), 0)
    """
    x0, n_steps = validate_problem(
        "malliavin_delta", drift, diffusion, x0, t1, n_paths=n_paths, dt=dt, brownian=brownian,
        payoff=payoff, require_invertible_diffusion=True,
    )
    return _malliavin_delta(drift, diffusion, payoff, x0, key, float(t1), n_steps, int(n_paths), brownian)


def pathwise_delta(
    drift: Drift,
    diffusion: Diffusion,
    x0: Float[ArrayLike, " channels"],
    t1: float,
    payoff: Payoff,
    key: PRNGKeyArray,
    n_paths: int,
    dt: float,
    *,
    brownian: str = "unsafe",
) -> GreekEstimate:
    r"""Delta by the pathwise method :math:`\mathbb{E}[Y_T^{\top}\nabla f(X_T)]`.

    Differentiates under the expectation; :math:`\nabla f` comes from
    ``jax.grad``. Unbiased (for the Euler scheme) when :math:`f` is Lipschitz;
    for a discontinuous payoff it misses the mass at the discontinuity (an
    indicator gives 0). No inverse of :math:`\sigma` is needed.

    Args:
        drift: :math:`b:\mathbb{R}^d\to\mathbb{R}^d`.
        diffusion: :math:`\sigma:\mathbb{R}^d\to\mathbb{R}^{d\times d}`;
            column j multiplies :math:`dW^j`.
        x0: initial state :math:`x_0`, shape ``(d,)``.
        t1: horizon T > 0 (a Python number: it fixes the time grid).
        payoff: :math:`f:\mathbb{R}^d\to\mathbb{R}`, including any discount factor.
        key: PRNG key; path p uses ``jax.random.split(key, n_paths)[p]``, so
            every estimator called with the same key, ``n_paths``, ``t1`` and
            ``dt`` uses the same Brownian paths.
        n_paths: number of Monte Carlo paths (>= 2).
        dt: largest Euler step (> 0); the grid has ``ceil(t1/dt)`` uniform steps.
        brownian: ``"unsafe"`` (``diffrax.UnsafeBrownianPath``, default) or
            ``"virtual"`` (``diffrax.VirtualBrownianTree``).

    Returns:
        :class:`GreekEstimate` with ``value`` and ``stderr`` of shape ``(d,)``.

    Raises:
        ValueError: as :func:`malliavin_delta`, except that a singular
            diffusion is allowed.
    """
    x0, n_steps = validate_problem(
        "pathwise_delta", drift, diffusion, x0, t1, n_paths=n_paths, dt=dt, brownian=brownian,
        payoff=payoff,
    )
    return _pathwise_delta(drift, diffusion, payoff, x0, key, float(t1), n_steps, int(n_paths), brownian)


def finite_difference_delta(
    drift: Drift,
    diffusion: Diffusion,
    x0: Float[ArrayLike, " channels"],
    t1: float,
    payoff: Payoff,
    key: PRNGKeyArray,
    n_paths: int,
    dt: float,
    *,
    relative_bump: float = DEFAULT_RELATIVE_BUMP,
    brownian: str = "unsafe",
) -> GreekEstimate:
    r"""Delta by central finite differences with common random numbers.

    .. math::

        \partial_{x_0^i}\mathbb{E}[f(X_T)] \approx
        \mathbb{E}\Bigl[\frac{f(X_T^{x_0+h_ie_i}) - f(X_T^{x_0-h_ie_i})}{2h_i}\Bigr],
        \qquad h_i = \mathrm{relative\_bump}\cdot\max(|x_{0,i}|, 1),

    where both solves of a path use that path's Brownian increments. Bias
    :math:`O(h^2)`; for a discontinuous payoff the per-path variance grows like
    :math:`1/h`. Costs :math:`2d` state-only solves per path.

    Args:
        drift: :math:`b:\mathbb{R}^d\to\mathbb{R}^d`.
        diffusion: :math:`\sigma:\mathbb{R}^d\to\mathbb{R}^{d\times d}`;
            column j multiplies :math:`dW^j`.
        x0: initial state :math:`x_0`, shape ``(d,)``.
        t1: horizon T > 0 (a Python number: it fixes the time grid).
        payoff: :math:`f:\mathbb{R}^d\to\mathbb{R}`, including any discount factor.
        key: PRNG key; path p uses ``jax.random.split(key, n_paths)[p]``, so
            every estimator called with the same key, ``n_paths``, ``t1`` and
            ``dt`` uses the same Brownian paths.
        n_paths: number of Monte Carlo paths (>= 2).
        dt: largest Euler step (> 0); the grid has ``ceil(t1/dt)`` uniform steps.
        brownian: ``"unsafe"`` (``diffrax.UnsafeBrownianPath``, default) or
            ``"virtual"`` (``diffrax.VirtualBrownianTree``).
        relative_bump: :math:`h_i/\max(|x_{0,i}|,1)`, finite and > 0
            (default 1e-2; see ``DEFAULT_RELATIVE_BUMP``).

    Returns:
        :class:`GreekEstimate` with ``value`` and ``stderr`` of shape ``(d,)``.

    Raises:
        ValueError: as :func:`pathwise_delta`, or for a bad ``relative_bump``.
    """
    x0, n_steps = validate_problem(
        "finite_difference_delta", drift, diffusion, x0, t1, n_paths=n_paths, dt=dt, brownian=brownian,
        payoff=payoff,
    )
    if not (isinstance(relative_bump, (int, float)) and np.isfinite(relative_bump) and relative_bump > 0):
        raise ValueError(
            f"finite_difference_delta: relative_bump must be finite and > 0; got {relative_bump!r}."
        )
    return _finite_difference_delta(
        drift, diffusion, payoff, x0, key, float(t1), n_steps, int(n_paths), brownian, float(relative_bump)
    )


def pathwise_vega(
    drift: Drift,
    diffusion: Diffusion,
    diffusion_direction: Diffusion,
    x0: Float[ArrayLike, " channels"],
    t1: float,
    payoff: Payoff,
    key: PRNGKeyArray,
    n_paths: int,
    dt: float,
    *,
    brownian: str = "unsafe",
) -> GreekEstimate:
    r"""Vega :math:`\partial_\varepsilon\mathbb{E}[f(X^\varepsilon_T)]` at :math:`\varepsilon=0`, pathwise.

    :math:`X^\varepsilon` solves the SDE with diffusion
    :math:`\sigma + \varepsilon\tilde\sigma` (Fournié et al.'s definition of
    Vega as a directional derivative in the diffusion). Its variation
    :math:`Z = \partial_\varepsilon X` solves

    .. math::

        dZ_t = b'(X_t)Z_t\,dt + \sum_j\bigl(\sigma_j'(X_t)Z_t + \tilde\sigma_j(X_t)\bigr)dW^j_t,
        \qquad Z_0 = 0,

    and Vega :math:`=\mathbb{E}[\nabla f(X_T)\cdot Z_T]`. For Black–Scholes,
    :math:`\tilde\sigma(S) = \mathrm{diag}(S)` gives
    :math:`\partial/\partial\sigma`. Valid for Lipschitz payoffs only (an
    indicator gives 0); a Malliavin Vega for discontinuous payoffs is not
    implemented.

    Args:
        drift: :math:`b:\mathbb{R}^d\to\mathbb{R}^d`.
        diffusion: :math:`\sigma:\mathbb{R}^d\to\mathbb{R}^{d\times d}`;
            column j multiplies :math:`dW^j`.
        x0: initial state :math:`x_0`, shape ``(d,)``.
        t1: horizon T > 0 (a Python number: it fixes the time grid).
        payoff: :math:`f:\mathbb{R}^d\to\mathbb{R}`, including any discount factor.
        key: PRNG key; path p uses ``jax.random.split(key, n_paths)[p]``, so
            every estimator called with the same key, ``n_paths``, ``t1`` and
            ``dt`` uses the same Brownian paths.
        n_paths: number of Monte Carlo paths (>= 2).
        dt: largest Euler step (> 0); the grid has ``ceil(t1/dt)`` uniform steps.
        brownian: ``"unsafe"`` (``diffrax.UnsafeBrownianPath``, default) or
            ``"virtual"`` (``diffrax.VirtualBrownianTree``).
        diffusion_direction: :math:`\tilde\sigma:\mathbb{R}^d\to\mathbb{R}^{d\times d}`,
            the direction in which the diffusion is perturbed.

    Returns:
        :class:`GreekEstimate` with scalar ``value`` and ``stderr``.

    Raises:
        ValueError: as :func:`pathwise_delta`, or if ``diffusion_direction``
            does not return shape ``(d, d)``.
    """
    x0, n_steps = validate_problem(
        "pathwise_vega", drift, diffusion, x0, t1, n_paths=n_paths, dt=dt, brownian=brownian,
        payoff=payoff,
    )
    direction_shape = jax.eval_shape(diffusion_direction, jax.ShapeDtypeStruct(x0.shape, x0.dtype))
    if getattr(direction_shape, "shape", None) != (x0.shape[0],) * 2:
        raise ValueError(
            f"pathwise_vega: diffusion_direction(x) must return shape {(x0.shape[0],) * 2}; "
            f"got {getattr(direction_shape, 'shape', type(direction_shape).__name__)}."
        )
    return _pathwise_vega(
        drift, diffusion, diffusion_direction, payoff, x0, key, float(t1), n_steps, int(n_paths), brownian
    )


__all__ = [
    "GreekEstimate",
    "TangentFlow",
    "DEFAULT_RELATIVE_BUMP",
    "malliavin_delta",
    "pathwise_delta",
    "finite_difference_delta",
    "pathwise_vega",
    "simulate_tangent_flow",
]
