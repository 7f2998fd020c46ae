r"""An IMEX finite-difference solver for the backward Kolmogorov PIDE of a 1-D jump-diffusion.

For :math:`dX_t = b(X_t)\,dt + \sigma(X_t)\,dW_t + dJ_t`, with :math:`J` a
compound-Poisson process of Lévy measure :math:`\nu` (rate
:math:`\lambda = \nu(\mathbb R)`), the value
:math:`u(t, x) = E[e^{-r(T - t)} g(X_T) \mid X_t = x]` solves

.. math::

    u_t + b\,u_x + \tfrac12 \sigma^2 u_{xx}
        + \int \bigl(u(x + z) - u(x)\bigr)\,\nu(dz) - r\,u = 0,
    \qquad u(T, x) = g(x).

In time to go :math:`\tau = T - t` this is the forward problem
:math:`u_\tau = \mathcal D u + \mathcal J u - r u`, :math:`u(0) = g`, which
:func:`solve_backward_kolmogorov` integrates over ``horizon`` with
``n_steps`` IMEX Euler steps of :math:`\Delta\tau`:

.. math::

    \frac{u^{n+1} - u^n}{\Delta\tau}
        = \mathcal D_h u^{n+1} - r\,u^{n+1} + \mathcal J_h u^n .

* **Implicit**: the local operator (drift, diffusion, discount). The drift is
  possibly stiff (a strongly mean-reverting OU drift, a coarse grid), so it is
  not stepped explicitly. :math:`\mathcal D_h` is "central differencing as
  much as possible" (Wang & Forsyth 2008): central drift differences where
  they keep positive coefficients, i.e. where the cell Péclet number
  :math:`|b| h / \sigma^2 \le 1`, upwind elsewhere; so it is second order in
  h wherever diffusion dominates and monotone everywhere.
* **Explicit**: the jump integral, one FFT convolution per step of the padded
  grid with the lattice Lévy measure (:mod:`.levy_measures`), minus
  :math:`\lambda_h u^n`, :math:`\lambda_h = \sum_k w_k` (so the discrete
  operator annihilates constants exactly). The explicit part is a positive
  operator, hence the step monotone, when :math:`\lambda_h \Delta\tau \le 1`
  (Cont & Voltchkova 2005).

The scheme is first order in :math:`\Delta\tau` (backward Euler plus an
O(Δτ) splitting error of the explicit jump term) and second order in h where
the solution is smooth and central differences are used.

**The implicit stage as a fixed point.** :math:`(I - \Delta\tau(\mathcal
D_h - r)) v = \text{rhs}` is solved by the defect-correction iteration

.. math::

    v \mapsto \Phi(v) = M^{-1}\bigl(\text{rhs}
        + \Delta\tau\,(\mathcal D_h - \mathcal D_h^{\text{up}})\,v\bigr),
    \qquad M = I - \Delta\tau(\mathcal D_h^{\text{up}} - r),

where :math:`\mathcal D_h^{\text{up}}` is the fully upwind operator: M is a
tridiagonal M-matrix for every drift and step (a stable Thomas/LAPACK
``gtsv`` solve), and the difference of the two operators is
:math:`-\tfrac{|b|}{2h}\,\delta^2` on the central nodes. The contraction factor
is about :math:`\mathrm{Pe}/(1 + \mathrm{Pe}) \le 1/2` (Pe the cell Péclet
number), so few iterations are needed; they are accelerated by Anderson
mixing (:func:`.anderson.anderson_fixed_point`, which says why it is not
jaxopt's). On a linear terminal condition :math:`\delta^2 v = 0` and the
first iterate is exact. The target operator is itself tridiagonal in 1-D; the
fixed point keeps the implicit stage open to terms a tridiagonal solve cannot
take (non-local or nonlinear implicit terms), with the always-stable upwind
solve as its preconditioner.

**Fixed cost.** Time steps are a ``lax.scan`` of ``n_steps``; each implicit
stage is exactly ``max_iter`` fixed-point slots (a converged stage skips its
remaining slots unbatched and idles through them in lock step under
``vmap``; no ``while_loop`` waits on the slowest lane). A stage has
converged when :math:`\|\Phi(v) - v\|_2 \le \text{tol}\,\|\Phi(v)\|_2`;
verifying convergence takes one evaluation more than reaching it, so a
linear problem reports 2 iterations.

**Padding rule (the wrap-around defect).** An FFT convolution is circular:
on the bare grid, jumps that leave one end re-enter at the other. The grid
of ``N`` nodes is extended by ``pad`` nodes on each side (values from the
boundary condition) and the lattice measure has offsets ``|k| <= reach``;
the circular convolution of length ``N + 2·pad`` then equals the linear one
on every grid node as long as ``pad >= reach`` (node i reads extended indices
``i + pad + k ∈ [0, N + 2·pad)``). The default is ``reach = pad = N // 2``:
jumps up to half the domain width are represented, none wraps. Jumps beyond
the reach are dropped and their rate is reported as ``truncated_mass``.

**Boundary conditions.** :class:`LinearBoundary`: :math:`u_{xx} = 0` at both
ends (Windcliff, Forsyth & Vetzal 2004), the drift term there a one-sided
difference, and the solution continued linearly beyond the grid for the jump
integral; exact for a linear :math:`u` (e.g. a conditional mean under an
affine drift) and the standard far-field assumption otherwise. It assumes the
drift at an end does not point out of the domain faster than
:math:`h/\Delta\tau` (else that row loses diagonal dominance).
:class:`DirichletBoundary`: a user far-field :math:`f(\tau, x)` gives the
end values at each new step and the values beyond the grid for the jump
integral (e.g. the call's asymptote :math:`e^x - K e^{-r\tau}` above and 0
below).

References:
    Cont & Voltchkova (2005), SIAM J. Numer. Anal. 43(4). d'Halluin, Forsyth
    & Vetzal (2005), "Robust numerical methods for contingent claims under
    jump diffusion processes", IMA J. Numer. Anal. 25. Wang & Forsyth (2008),
    "Maximal use of central differencing for Hamilton-Jacobi-Bellman PDEs in
    finance", SIAM J. Numer. Anal. 46(3). Windcliff, Forsyth & Vetzal (2004),
    "Analysis of the stability of the linear boundary condition for the
    Black-Scholes equation", J. Comput. Finance 8. Walker & Ni (2011),
    "Anderson acceleration for fixed-point iterations", SIAM J. Numer. Anal.
    49(4).
"""

import abc
import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from .anderson import anderson_fixed_point
from .levy_measures import AbstractLevyMeasure

__all__ = [
    "AbstractBoundary",
    "DirichletBoundary",
    "LinearBoundary",
    "PIDEInfo",
    "PIDESolution",
    "UniformGrid",
    "solve_backward_kolmogorov",
]


class UniformGrid(eqx.Module):
    """The nodes x_i = lower + i·step, i = 0..size-1.

    Attributes:
        lower: x_0.
        step: h > 0.
        size: N, the number of nodes (static; >= 3).
    """

    lower: Float[Array, ""]
    step: Float[Array, ""]
    size: int = eqx.field(static=True)

    @classmethod
    def from_bounds(
        cls, lower: Float[ArrayLike, ""], upper: Float[ArrayLike, ""], size: int
    ) -> "UniformGrid":
        """``size`` equally spaced nodes from ``lower`` to ``upper`` inclusive."""
        if not isinstance(size, int) or size < 3:
            raise ValueError(f"UniformGrid.size must be an int >= 3, got {size!r}")
        lower = jnp.asarray(lower)
        upper = jnp.asarray(upper, lower.dtype)
        return cls(lower=lower, step=(upper - lower) / (size - 1), size=size)

    def points(self) -> Float[Array, " grid"]:
        return self.lower + self.step * jnp.arange(self.size, dtype=self.step.dtype)

    def beyond(self, pad: int) -> tuple[Float[Array, " pad"], Float[Array, " pad"]]:
        """The ``pad`` points below x_0 and the ``pad`` points above x_{N-1}, ascending."""
        offsets = jnp.arange(1, pad + 1, dtype=self.step.dtype) * self.step
        upper = self.lower + (self.size - 1) * self.step
        return self.lower - offsets[::-1], upper + offsets


class AbstractBoundary(eqx.Module):
    """How the solution behaves at and beyond the ends of the grid."""

    @abc.abstractmethod
    def extend(
        self, values: Float[Array, " grid"], grid: UniformGrid, pad: int, tau: Float[Array, ""]
    ) -> Float[Array, " extended"]:
        """``values`` with ``pad`` far-field values prepended and appended (time to go ``tau``)."""

    @abc.abstractmethod
    def edge_values(self, grid: UniformGrid, tau: Float[Array, ""]) -> Float[Array, "2"] | None:
        """Dirichlet values (u(τ, x_0), u(τ, x_{N-1})), or None when the ends obey the PIDE."""


class LinearBoundary(AbstractBoundary):
    """u_xx = 0 at the ends; u continued linearly beyond the grid."""

    def extend(
        self, values: Float[Array, " grid"], grid: UniformGrid, pad: int, tau: Float[Array, ""]
    ) -> Float[Array, " extended"]:
        steps = jnp.arange(1, pad + 1, dtype=values.dtype)
        left = values[0] - steps[::-1] * (values[1] - values[0])
        right = values[-1] + steps * (values[-1] - values[-2])
        return jnp.concatenate([left, values, right])

    def edge_values(self, grid: UniformGrid, tau: Float[Array, ""]) -> None:
        return None


class DirichletBoundary(AbstractBoundary):
    """u = far_field(τ, x) at the end nodes and beyond the grid.

    Attributes:
        far_field: ``f(tau, x) -> u``, elementwise in x (a scalar ``tau`` is
            the time to go). Static: build a new boundary (and recompile) to
            change it, or close over traced arrays inside a jitted caller.
    """

    far_field: Callable = eqx.field(static=True)

    def extend(
        self, values: Float[Array, " grid"], grid: UniformGrid, pad: int, tau: Float[Array, ""]
    ) -> Float[Array, " extended"]:
        below, above = grid.beyond(pad)
        below = self.far_field(tau, below).astype(values.dtype)
        above = self.far_field(tau, above).astype(values.dtype)
        return jnp.concatenate([below, values, above])

    def edge_values(self, grid: UniformGrid, tau: Float[Array, ""]) -> Float[Array, "2"]:
        ends = jnp.stack([grid.lower, grid.lower + (grid.size - 1) * grid.step])
        return self.far_field(tau, ends)


class PIDEInfo(eqx.Module):
    """Diagnostics of one PIDE solve.

    Attributes:
        converged: True when every time step's fixed point met ``tol`` within
            ``max_iter`` evaluations.
        iterations: the most fixed-point evaluations any time step used (its
            first converged one; ``max_iter`` when a step did not converge).
        residual: the largest final relative fixed-point residual over the
            time steps (NaN if an iterate was not finite).
        truncated_mass: rate of the jumps beyond the lattice reach, dropped
            from the jump integral (0 when the reach covers the measure).
    """

    converged: Bool[Array, ""]
    iterations: Int[Array, ""]
    residual: Float[Array, ""]
    truncated_mass: Float[Array, ""]


class PIDESolution(eqx.Module):
    """The solution at time to go ``horizon`` and the solver's diagnostics.

    Attributes:
        values: u(τ = horizon, x_i) on the grid nodes.
        info: see :class:`PIDEInfo`.
    """

    values: Float[Array, " grid"]
    info: PIDEInfo


def _check_static(n_steps, max_iter, tol, memory, reach, pad, size):
    def integer(name, value, minimum):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"solve_backward_kolmogorov: {name} must be an int >= {minimum}, got {value!r}")

    integer("n_steps", n_steps, 1)
    integer("max_iter", max_iter, 1)
    integer("memory", memory, 1)
    integer("reach", reach, 0)
    integer("pad", pad, 0)
    if not (isinstance(tol, (int, float)) and 0.0 < tol < 1.0):
        raise ValueError(f"solve_backward_kolmogorov: tol must be in (0, 1), got {tol!r}")
    if 2 * reach + 1 > size + 2 * pad:
        raise ValueError(
            f"solve_backward_kolmogorov: 2*reach+1 = {2 * reach + 1} lattice offsets do not fit the "
            f"circular convolution of length size + 2*pad = {size + 2 * pad}"
        )
    if pad < reach:
        warnings.warn(
            f"solve_backward_kolmogorov: pad={pad} < reach={reach}: jumps that leave the grid wrap "
            "around the circular FFT convolution into the other end (use pad >= reach)",
            stacklevel=3,
        )


def solve_backward_kolmogorov(
    terminal: Float[Array, " grid"],
    grid: UniformGrid,
    drift: Float[ArrayLike, " grid"] | Float[ArrayLike, ""],
    volatility: Float[ArrayLike, " grid"] | Float[ArrayLike, ""],
    measure: AbstractLevyMeasure | None,
    horizon: Float[ArrayLike, ""],
    *,
    n_steps: int,
    max_iter: int,
    tol: float,
    discount: Float[ArrayLike, ""] = 0.0,
    boundary: AbstractBoundary = LinearBoundary(),
    reach: int | None = None,
    pad: int | None = None,
    memory: int = 2,
) -> PIDESolution:
    r"""Solve u_τ = b u_x + ½σ² u_xx + ∫(u(x+z) − u(x))ν(dz) − r u, u(0, ·) = g, up to τ = horizon.

    See the module docstring for the scheme, the fixed point, the padding rule
    and the boundary conditions. Cost: ``n_steps`` × (one real FFT pair of
    length N + 2·pad + up to ``max_iter`` tridiagonal solves and Anderson
    mixes of ``memory`` vectors), fixed.

    Args:
        terminal: g(x_i), the terminal condition on the grid.
        grid: the uniform grid.
        drift: b(x_i) (or one value for all nodes).
        volatility: σ(x_i) >= 0 (or one value).
        measure: the Lévy measure ν of the jumps, or None for a diffusion.
        horizon: time to go T - t at which u is returned (> 0).
        n_steps: IMEX Euler steps (static); Δτ = horizon / n_steps.
        max_iter: fixed-point evaluations per step at most (static).
        tol: relative tolerance of the fixed point.
        discount: r, the killing rate (0 for a plain expectation).
        boundary: :class:`LinearBoundary` (default) or :class:`DirichletBoundary`.
        reach: K, the largest jump offset in grid steps (static; default N // 2).
        pad: nodes added on each side for the FFT (static; default ``reach``;
            ``pad < reach`` lets jumps wrap around and warns).
        memory: Anderson memory, past differences mixed (static, >= 1).

    Returns:
        :class:`PIDESolution` with u(horizon, x_i) and :class:`PIDEInfo`.

    Example:
        >>> from fnpredict.solvers.levy_measures import NormalJumps
        >>> grid = UniformGrid.from_bounds(-4.0, 4.0, 201)
        >>> x = grid.points()
        >>> solution = solve_backward_kolmogorov(
        ...     x, grid, drift=-0.5 * x, volatility=0.3, measure=NormalJumps(0.2, 0.1, 0.2),
        ...     horizon=1.0, n_steps=200, max_iter=8, tol=1e-10)
    """
    size = grid.size
    reach = size // 2 if reach is None else reach
    pad = reach if pad is None else pad
    _check_static(n_steps, max_iter, tol, memory, reach, pad, size)

    dtype = terminal.dtype
    h = grid.step.astype(dtype)
    horizon = jnp.asarray(horizon, dtype)
    dt = horizon / n_steps
    discount = jnp.asarray(discount, dtype)
    drift = jnp.broadcast_to(jnp.asarray(drift, dtype), (size,))
    half_variance = 0.5 * jnp.broadcast_to(jnp.asarray(volatility, dtype), (size,)) ** 2

    # --- the implicit operators: upwind (the preconditioner M) and the target.
    interior = (jnp.arange(size) > 0) & (jnp.arange(size) < size - 1)
    up = jnp.maximum(drift, 0.0)
    down = jnp.maximum(-drift, 0.0)
    to_lower = jnp.where(interior, half_variance / h**2 + down / h, 0.0)
    to_upper = jnp.where(interior, half_variance / h**2 + up / h, 0.0)
    dirichlet = boundary.edge_values(grid, jnp.zeros((), dtype)) is not None
    if not dirichlet:
        # u_xx = 0 at the ends: only the one-sided drift term remains.
        to_upper = to_upper.at[0].set(drift[0] / h)
        to_lower = to_lower.at[-1].set(-drift[-1] / h)
    lower = -dt * to_lower
    upper = -dt * to_upper
    diagonal = 1.0 + dt * (to_lower + to_upper + discount)
    if dirichlet:
        # Dirichlet rows: the identity (the right-hand side carries f).
        diagonal = diagonal.at[0].set(1.0).at[-1].set(1.0)
    # Central differences where they keep positive coefficients (|b| h <= σ²);
    # there the target minus the upwind operator is -|b|/(2h) δ².
    central = interior & (jnp.abs(drift) * h <= 2.0 * half_variance)
    correction = jnp.where(central, jnp.abs(drift) / (2.0 * h), 0.0)

    def implicit_solve(rhs: Float[Array, " grid"]) -> Float[Array, " grid"]:
        return jax.lax.linalg.tridiagonal_solve(lower, diagonal, upper, rhs[:, None])[:, 0]

    def fixed_point_map(v: Float[Array, " grid"], rhs: Float[Array, " grid"]) -> Float[Array, " grid"]:
        defect = dt * correction * (jnp.roll(v, 1) - 2.0 * v + jnp.roll(v, -1))
        # The wrapped neighbours of nodes 0 and N-1 meet a zero coefficient.
        return implicit_solve(rhs - defect).astype(dtype)

    # --- the explicit jump operator: lattice weights as a circular kernel.
    length = size + 2 * pad
    if measure is None:
        weights = jnp.zeros((2 * reach + 1,), dtype)
        truncated = jnp.zeros((), dtype)
    else:
        weights, truncated = measure.lattice_weights(h, reach)
        weights = weights.astype(dtype)
        truncated = truncated.astype(dtype)
    lattice_rate = jnp.sum(weights)
    # Node j of the extended array needs Σ_k w_k e[j + k]: a circular
    # convolution with the kernel c[(-k) mod L] = w_k.
    offsets = jnp.arange(-reach, reach + 1)
    circular_kernel = jnp.zeros((length,), dtype).at[(-offsets) % length].add(weights)
    kernel_spectrum = jnp.fft.rfft(circular_kernel)

    def jump_term(u: Float[Array, " grid"], tau: Float[Array, ""]) -> Float[Array, " grid"]:
        extended = boundary.extend(u, grid, pad, tau)
        convolved = jnp.fft.irfft(jnp.fft.rfft(extended) * kernel_spectrum, n=length)
        return convolved[pad : pad + size].astype(dtype) - lattice_rate * u

    # --- one IMEX step, the implicit stage by Anderson-accelerated fixed point.
    def time_step(u, step_index):
        tau = step_index.astype(dtype) * dt
        rhs = u + dt * jump_term(u, tau) if measure is not None else u
        if dirichlet:
            rhs = rhs.at[jnp.array([0, size - 1])].set(boundary.edge_values(grid, tau + dt).astype(dtype))
        # Start from u^n: for a short step the implicit solution is close to it.
        u_next, info = anderson_fixed_point(
            lambda v: fixed_point_map(v, rhs), u, max_iter=max_iter, tol=tol, memory=memory
        )
        return u_next, (info.converged, info.iterations, info.residual)

    values, (done, used, residual) = jax.lax.scan(time_step, terminal, jnp.arange(n_steps))
    # jnp.max propagates NaN, so a non-finite stage shows as a NaN residual.
    worst = jnp.max(residual)
    info = PIDEInfo(
        converged=jnp.all(done),
        iterations=jnp.max(used),
        residual=worst.astype(dtype),
        truncated_mass=truncated,
    )
    return PIDESolution(values=values, info=info)
