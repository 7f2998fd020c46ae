"""A general Deep Galerkin (DGM) solver for terminal-value parabolic PDEs.

The solver finds a neural network V_φ(t, x, p) that approximately solves

.. math::

    \\partial_t v(t, x) + H\\big(t, x, v, \\nabla_x v, \\nabla_x^2 v; p\\big) = 0,
    \\qquad (t, x) \\in [0, T) \\times \\Omega,
    \\qquad v(T, x) = g(x; p),

on a box :math:`\\Omega = \\prod_i [\\ell_i, u_i] \\subset \\mathbb{R}^d`, with
optional Dirichlet values :math:`v = b(t, x; p)` on :math:`\\partial\\Omega`.
``p`` is a vector of model parameters drawn from a box too, so that one
network serves a whole family of PDEs (Sirignano & Spiliopoulos 2018, §4: the
"parametric" DGM). The Deep Galerkin loss is the Monte Carlo estimate

.. math::

    L(\\phi) = \\mathbb{E}\\,|\\partial_t V + H|^2
             + w_T\\, \\mathbb{E}\\,|V(T, x) - g(x)|^2
             + w_B\\, \\mathbb{E}\\,|V(t, x_B) - b(t, x_B)|^2

over uniform collocation points, redrawn from a PRNG key every iteration. The
derivatives come from ``jax.grad`` and ``jax.hessian`` of the network at each
point (``vmap``-ed), so ``x`` may have any dimension ``d``.

The Hamiltonian is any callable ``H(t, x, v, grad, hess, params) -> scalar``;
two families come ready-made:

* :class:`KolmogorovHamiltonian` (linear, Feynman–Kac):
  :math:`H = b\\cdot\\nabla v + \\tfrac12\\operatorname{tr}(\\sigma\\sigma^\\top\\nabla^2 v)
  - r\\,v + f` for a diffusion :math:`dX = b\\,dt + \\sigma\\,dW`;
* :class:`LQHamiltonian` (linear–quadratic control, HJB):
  :math:`H = \\min_u\\{(Ax + Bu)\\cdot\\nabla v + x^\\top Q x + u^\\top R u\\}
  + \\tfrac12\\operatorname{tr}(\\sigma\\sigma^\\top\\nabla^2 v)
  = Ax\\cdot\\nabla v - \\tfrac14 \\nabla v^\\top B R^{-1} B^\\top \\nabla v
  + x^\\top Q x + \\tfrac12\\operatorname{tr}(\\sigma\\sigma^\\top\\nabla^2 v)`.

Training (:func:`fnpredict.training.dgm.train`, offline) is an Optax loop compiled once: ``lax.scan`` over a
chunk of steps inside one ``eqx.filter_jit``; between chunks the entropy
monitor of :mod:`fnpredict.solvers.entropy` checks for mode collapse and
re-initialises the network (or stops) when it trips.

Shape names used here beyond the glossary of ``_types.py``: ``dim`` (the
state dimension d), ``params`` (model parameters p), ``noise`` (Brownian
dimension), ``controls`` (control dimension), ``points`` (collocation or
monitor points), ``steps`` (optimiser iterations).

References:
    J. Sirignano, K. Spiliopoulos, "DGM: A deep learning algorithm for solving
    partial differential equations", J. Comput. Phys. 375 (2018) 1339–1364.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .hamiltonians import KolmogorovHamiltonian, LQHamiltonian

__all__ = [
    "DGMNetwork",
    "DGMProblem",
    "KolmogorovHamiltonian",
    "LQHamiltonian",
    "LossParts",
    "dgm_loss",
    "pde_residual",
    "sample_box",
    "sample_boundary",
]


# --------------------------------------------------------------------------


class DGMProblem(eqx.Module):
    """A terminal-value problem :math:`v_t + H = 0`, :math:`v(T) = g`, on a box.

    Attributes:
        hamiltonian: ``H(t, x, v, grad, hess, params) -> scalar`` (any callable,
            e.g. :class:`KolmogorovHamiltonian` or :class:`LQHamiltonian`).
        terminal: ``g(x, params) -> scalar``.
        horizon: T > 0, in the problem's time units.
        x_lower, x_upper: ``(dim,)`` corners of the spatial box Ω.
        param_lower, param_upper: ``(params,)`` corners of the parameter box
            (shape ``(0,)`` for a problem without parameters). A degenerate side
            (lower == upper) fixes that parameter.
        boundary: optional Dirichlet values ``b(t, x, params) -> scalar`` on ∂Ω;
            ``None`` drops the boundary term (appropriate when the drift points
            into Ω at the faces, so no characteristic enters from outside, and
            the diffusion boundary layer, of width ~σ√T, is thin).
    """

    hamiltonian: Callable
    terminal: Callable
    horizon: float = eqx.field(static=True)
    x_lower: Float[Array, " dim"]
    x_upper: Float[Array, " dim"]
    param_lower: Float[Array, " params"]
    param_upper: Float[Array, " params"]
    boundary: Callable | None = None

    def __check_init__(self):
        if not (isinstance(self.horizon, (float, int)) and self.horizon > 0):
            raise ValueError(f"DGMProblem.horizon must be a positive number, got {self.horizon!r}")
        if self.x_lower.shape != self.x_upper.shape or self.x_lower.ndim != 1 or self.x_lower.size == 0:
            raise ValueError("DGMProblem.x_lower/x_upper must be matching non-empty 1-D arrays")
        if self.param_lower.shape != self.param_upper.shape or self.param_lower.ndim != 1:
            raise ValueError("DGMProblem.param_lower/param_upper must be matching 1-D arrays")
        if not isinstance(self.x_lower, jax.core.Tracer):
            if not np.all(np.asarray(self.x_upper) > np.asarray(self.x_lower)):
                raise ValueError("DGMProblem.x_upper must exceed x_lower in every coordinate")
            if not np.all(np.asarray(self.param_upper) >= np.asarray(self.param_lower)):
                raise ValueError("DGMProblem.param_upper must be >= param_lower in every coordinate")

    @property
    def dim(self) -> int:
        return self.x_lower.shape[0]

    @property
    def n_params(self) -> int:
        return self.param_lower.shape[0]


def _to_unit(value, lower, upper):
    """Affine map of a box onto [-1, 1]; a degenerate side maps to 0."""
    width = upper - lower
    safe = jnp.where(width > 0, width, 1.0)
    return jnp.where(width > 0, 2.0 * (value - lower) / safe - 1.0, 0.0)


class DGMNetwork(eqx.Module):
    """The value network V(t, x, p): an MLP on box-normalised inputs.

    The inputs ``(t, x, p)`` are mapped affinely onto ``[-1, 1]`` (time by
    ``2t/T - 1``, x and p by their boxes) so that the first layer sees O(1)
    numbers whatever the units; the MLP has ``tanh`` activations, which are
    smooth (the PDE residual needs second derivatives; ReLU's would vanish)
    and bounded. Output = ``output_scale * mlp(z) + output_shift``, a fixed
    affine map chosen from the terminal condition's range so that the
    network's raw output is O(1) too.

    Attributes:
        mlp: the ``eqx.nn.MLP`` (in ``1 + dim + params``, out scalar).
        horizon: T, as a scalar array of the network's dtype.
        x_lower, x_upper, param_lower, param_upper: the boxes of
            :class:`DGMProblem` (the normalisation, not a constraint).
        output_scale, output_shift: the fixed output affine map.
    """

    mlp: eqx.nn.MLP
    horizon: Float[Array, ""]
    x_lower: Float[Array, " dim"]
    x_upper: Float[Array, " dim"]
    param_lower: Float[Array, " params"]
    param_upper: Float[Array, " params"]
    output_scale: Float[Array, ""]
    output_shift: Float[Array, ""]

    def __init__(
        self,
        problem: DGMProblem,
        width: int,
        depth: int,
        *,
        key: PRNGKeyArray,
        dtype=jnp.float64,
        output_scale: float = 1.0,
        output_shift: float = 0.0,
    ):
        """Build a network for ``problem``.

        Args:
            problem: fixes the input dimension and the normalisation boxes.
            width: hidden units per layer.
            depth: number of hidden layers.
            key: initialisation key (Equinox's default: uniform ±1/√fan_in).
            dtype: parameter dtype.
            output_scale, output_shift: fixed output affine map (see above).
        """
        in_size = 1 + problem.dim + problem.n_params
        self.mlp = eqx.nn.MLP(
            in_size, "scalar", width, depth, activation=jnp.tanh, key=key, dtype=dtype
        )
        self.horizon = jnp.asarray(problem.horizon, dtype)
        self.x_lower = jnp.asarray(problem.x_lower, dtype)
        self.x_upper = jnp.asarray(problem.x_upper, dtype)
        self.param_lower = jnp.asarray(problem.param_lower, dtype)
        self.param_upper = jnp.asarray(problem.param_upper, dtype)
        self.output_scale = jnp.asarray(output_scale, dtype)
        self.output_shift = jnp.asarray(output_shift, dtype)

    @property
    def dtype(self):
        return self.horizon.dtype

    def __call__(
        self, t: Float[Array, ""], x: Float[Array, " dim"], params: Float[Array, " params"]
    ) -> Float[Array, ""]:
        """V(t, x; p) for one point (``vmap`` for many)."""
        z = jnp.concatenate(
            [
                (2.0 * t / self.horizon - 1.0)[None],
                _to_unit(x, self.x_lower, self.x_upper),
                _to_unit(params, self.param_lower, self.param_upper),
            ]
        )
        return self.output_scale * self.mlp(z) + self.output_shift

    def reinitialised(self, key: PRNGKeyArray) -> "DGMNetwork":
        """The same architecture and normalisation with fresh random weights."""
        fresh = eqx.nn.MLP(
            self.mlp.in_size,
            "scalar",
            self.mlp.width_size,
            self.mlp.depth,
            activation=jnp.tanh,
            key=key,
            dtype=self.dtype,
        )
        return eqx.tree_at(lambda net: net.mlp, self, fresh)

    def astype(self, dtype) -> "DGMNetwork":
        """Every floating leaf cast to ``dtype`` (e.g. float32 weights into a float64 kernel)."""
        return jax.tree_util.tree_map(
            lambda leaf: leaf.astype(dtype) if eqx.is_inexact_array(leaf) else leaf, self
        )


# --------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------


def pde_residual(
    network: Callable,
    problem: DGMProblem,
    t: Float[Array, ""],
    x: Float[Array, " dim"],
    params: Float[Array, " params"],
) -> Float[Array, ""]:
    """The PDE residual :math:`\\partial_t V + H(t, x, V, \\nabla V, \\nabla^2 V; p)` at one point.

    Args:
        network: any ``V(t, x, params) -> scalar`` (a :class:`DGMNetwork`, or
            a closed form when checking a Hamiltonian).
        problem: supplies the Hamiltonian.
        t, x, params: the point.

    Returns:
        The residual (0 for an exact solution).
    """
    def value(t_, x_):
        return network(t_, x_, params)

    def space_gradient(x_):
        # ∇ₓV, carrying (V, ∂ₜV) along so that one forward-over-reverse sweep
        # yields every derivative: this is jax.hessian (= jacfwd ∘ grad) with
        # the by-products kept instead of recomputed by separate passes.
        v_, (v_t_, v_x_) = jax.value_and_grad(value, argnums=(0, 1))(t, x_)
        return v_x_, (v_, v_t_, v_x_)

    v_xx, (v, v_t, v_x) = jax.jacfwd(space_gradient, has_aux=True)(x)
    return v_t + problem.hamiltonian(t, x, v, v_x, v_xx, params)


class LossParts(eqx.Module):
    """The three mean-square terms of the DGM loss (before weighting)."""

    interior: Float[Array, ""]
    terminal: Float[Array, ""]
    boundary: Float[Array, ""]


def sample_box(
    key: PRNGKeyArray, lower: Float[Array, " n"], upper: Float[Array, " n"], count: int
) -> Float[Array, "count n"]:
    """``count`` points in the box [lower, upper] by Latin hypercube sampling.

    Each coordinate is cut into ``count`` equal strata holding one point each
    (uniform within its stratum), and the strata are paired across
    coordinates by independent random permutations. Every point is still
    uniform on the box, so Monte Carlo means stay unbiased, but the
    one-dimensional projections are evenly covered, which lowers the variance
    of the loss (and of its gradient) at the same point count (McKay,
    Beckman & Conover 1979). A degenerate side (lower == upper) yields that
    constant.
    """
    n = lower.shape[0]
    key_jitter, key_perm = jax.random.split(key)
    jitter = jax.random.uniform(key_jitter, (count, n), dtype=lower.dtype)
    strata = jax.vmap(lambda k: jax.random.permutation(k, count), out_axes=1)(
        jax.random.split(key_perm, n)
    )
    unit = (strata.astype(lower.dtype) + jitter) / count
    return lower + unit * (upper - lower)


def sample_boundary(key, lower, upper, count):
    """Uniform points on the faces of the box: one random coordinate pinned to a random side."""
    key_point, key_face, key_side = jax.random.split(key, 3)
    points = sample_box(key_point, lower, upper, count)
    face = jax.random.randint(key_face, (count,), 0, lower.shape[0])
    side = jax.random.bernoulli(key_side, 0.5, (count,))
    pinned = jnp.where(side, upper[face], lower[face])
    return points.at[jnp.arange(count), face].set(pinned)


def dgm_loss(
    network: Callable,
    problem: DGMProblem,
    key: PRNGKeyArray,
    n_interior: int,
    n_terminal: int,
    n_boundary: int = 0,
    terminal_weight: float = 1.0,
    boundary_weight: float = 1.0,
) -> tuple[Float[Array, ""], LossParts]:
    """The Deep Galerkin loss on fresh uniform collocation points.

    Args:
        network: ``V(t, x, params) -> scalar``.
        problem: the PDE.
        key: draws the collocation points (interior: t ~ U[0, T], x ~ U(Ω),
            p ~ U(param box); terminal: t = T; boundary: x on a random face).
        n_interior, n_terminal, n_boundary: point counts (static). The
            boundary term is 0 when ``problem.boundary`` is None or
            ``n_boundary`` is 0.
        terminal_weight, boundary_weight: w_T and w_B.

    Returns:
        ``(loss, parts)``: the weighted total and the unweighted mean squares.
    """
    dtype = problem.x_lower.dtype
    horizon = jnp.asarray(problem.horizon, dtype)
    keys = jax.random.split(key, 8)
    t_in = jax.random.uniform(keys[0], (n_interior,), dtype=dtype) * horizon
    x_in = sample_box(keys[1], problem.x_lower, problem.x_upper, n_interior)
    p_in = sample_box(keys[2], problem.param_lower, problem.param_upper, n_interior)
    residual = jax.vmap(lambda t, x, p: pde_residual(network, problem, t, x, p))(t_in, x_in, p_in)
    interior = jnp.mean(residual**2)

    x_T = sample_box(keys[3], problem.x_lower, problem.x_upper, n_terminal)
    p_T = sample_box(keys[4], problem.param_lower, problem.param_upper, n_terminal)
    v_T = jax.vmap(lambda x, p: network(horizon, x, p))(x_T, p_T)
    g_T = jax.vmap(problem.terminal)(x_T, p_T)
    terminal = jnp.mean((v_T - g_T) ** 2)

    if problem.boundary is not None and n_boundary > 0:
        t_B = jax.random.uniform(keys[5], (n_boundary,), dtype=dtype) * horizon
        x_B = sample_boundary(keys[6], problem.x_lower, problem.x_upper, n_boundary)
        p_B = sample_box(keys[7], problem.param_lower, problem.param_upper, n_boundary)
        v_B = jax.vmap(network)(t_B, x_B, p_B)
        b_B = jax.vmap(problem.boundary)(t_B, x_B, p_B)
        boundary = jnp.mean((v_B - b_B) ** 2)
    else:
        boundary = jnp.zeros((), dtype)
    total = interior + terminal_weight * terminal + boundary_weight * boundary
    return total, LossParts(interior=interior, terminal=terminal, boundary=boundary)
