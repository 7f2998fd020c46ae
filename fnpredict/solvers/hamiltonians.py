"""Ready-made Hamiltonians for the DGM solver (:mod:`fnpredict.solvers.dgm`).

* :class:`KolmogorovHamiltonian` (linear, Feynman–Kac):
  H = b·∇v + ½ tr(σσᵀ∇²v) − r v + f for a diffusion dX = b dt + σ dW;
* :class:`LQHamiltonian` (linear–quadratic control, HJB):
  H = Ax·∇v − ¼ ∇vᵀ B R⁻¹ Bᵀ ∇v + xᵀQx + ½ tr(σσᵀ∇²v).

Any callable ``H(t, x, v, grad, hess, params) -> scalar`` works as well.
"""

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["KolmogorovHamiltonian", "LQHamiltonian"]


class KolmogorovHamiltonian(eqx.Module):
    """The linear (backward Kolmogorov / Feynman–Kac) Hamiltonian of a diffusion.

    For :math:`dX_t = b(t, X_t; p)\\,dt + \\sigma(t, X_t; p)\\,dW_t` the function
    :math:`v(t, x) = \\mathbb{E}[e^{-\\int_t^T r}g(X_T) + \\int_t^T e^{-\\int_t^s r} f\\,ds
    \\mid X_t = x]` solves :math:`v_t + H = 0` with

    .. math::

        H = b\\cdot\\nabla v + \\tfrac12\\operatorname{tr}\\big(\\sigma\\sigma^\\top \\nabla^2 v\\big)
            - r\\,v + f .

    Attributes:
        drift: ``b(t, x, params) -> (dim,)``.
        diffusion: ``σ(t, x, params) -> (dim, noise)``.
        discount: optional ``r(t, x, params) -> scalar`` (killing rate); ``None`` is 0.
        running: optional ``f(t, x, params) -> scalar`` (source term); ``None`` is 0.
    """

    drift: Callable
    diffusion: Callable
    discount: Callable | None = None
    running: Callable | None = None

    def __call__(
        self,
        t: Float[Array, ""],
        x: Float[Array, " dim"],
        v: Float[Array, ""],
        grad: Float[Array, " dim"],
        hess: Float[Array, "dim dim"],
        params: Float[Array, " params"],
    ) -> Float[Array, ""]:
        drift = self.drift(t, x, params)
        sigma = self.diffusion(t, x, params)
        # ½ tr(σσᵀ∇²v) = ½ Σ_k σ_kᵀ ∇²v σ_k: contracting σ on both sides avoids
        # forming σσᵀ and works for a rectangular σ (noise ≠ dim).
        second_order = 0.5 * jnp.sum(sigma * (hess @ sigma))
        value = jnp.dot(drift, grad) + second_order
        if self.discount is not None:
            value = value - self.discount(t, x, params) * v
        if self.running is not None:
            value = value + self.running(t, x, params)
        return value


class LQHamiltonian(eqx.Module):
    """The Hamiltonian of linear–quadratic stochastic control (minimisation).

    Dynamics :math:`dX = (AX + Bu)\\,dt + \\sigma\\,dW`, cost
    :math:`\\mathbb{E}[\\int_t^T (X^\\top Q X + u^\\top R u)\\,ds + X_T^\\top C X_T]`. The
    value function solves the HJB equation :math:`v_t + H = 0` with the control
    minimised in closed form, :math:`u^* = -\\tfrac12 R^{-1}B^\\top\\nabla v`:

    .. math::

        H = (Ax)\\cdot\\nabla v - \\tfrac14\\,\\nabla v^\\top B R^{-1} B^\\top \\nabla v
            + x^\\top Q x + \\tfrac12\\operatorname{tr}(\\sigma\\sigma^\\top\\nabla^2 v).

    In 1-D this is :math:`a x v_x - (b v_x)^2/(4r) + q x^2 + \\tfrac12\\sigma^2 v_{xx}`.
    Build it with :meth:`create`, which accepts scalars for the 1-D case. The
    coefficients are array leaves, so they may be traced.

    Attributes:
        a: ``(dim, dim)`` drift matrix A.
        b: ``(dim, controls)`` control matrix B.
        sigma: ``(dim, noise)`` diffusion matrix.
        q: ``(dim, dim)`` running state cost Q (symmetric, PSD).
        r: ``(controls, controls)`` control cost R (symmetric, positive definite).
    """

    a: Float[Array, "dim dim"]
    b: Float[Array, "dim controls"]
    sigma: Float[Array, "dim noise"]
    q: Float[Array, "dim dim"]
    r: Float[Array, "controls controls"]

    @classmethod
    def create(cls, a, b, sigma, q, r, dtype=jnp.float64) -> "LQHamiltonian":
        """Build from arrays or scalars (scalars mean the 1-D problem)."""
        def matrix(value):
            return jnp.atleast_2d(jnp.asarray(value, dtype))

        return cls(a=matrix(a), b=matrix(b), sigma=matrix(sigma), q=matrix(q), r=matrix(r))

    def optimal_control(self, grad: Float[Array, " dim"]) -> Float[Array, " controls"]:
        """The minimiser :math:`u^* = -\\tfrac12 R^{-1}B^\\top\\nabla v`."""
        return -0.5 * jnp.linalg.solve(self.r, self.b.T @ grad)

    def __call__(
        self,
        t: Float[Array, ""],
        x: Float[Array, " dim"],
        v: Float[Array, ""],
        grad: Float[Array, " dim"],
        hess: Float[Array, "dim dim"],
        params: Float[Array, " params"],
    ) -> Float[Array, ""]:
        control = self.optimal_control(grad)
        # At u*, (Bu*)·∇v + u*ᵀRu* = -¼∇vᵀBR⁻¹Bᵀ∇v; writing it through u* keeps
        # one linear solve and is exact for any positive definite R.
        control_term = jnp.dot(self.b @ control, grad) + control @ self.r @ control
        second_order = 0.5 * jnp.sum(self.sigma * (hess @ self.sigma))
        return jnp.dot(self.a @ x, grad) + control_term + x @ self.q @ x + second_order


# --------------------------------------------------------------------------
# Problem and network
