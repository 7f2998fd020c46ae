r"""Finite Lévy measures (compound-Poisson jumps) and their lattice discretisation.

A compound-Poisson jump part has a finite Lévy measure :math:`\nu = \lambda\,
F_Y`: jumps arrive at rate :math:`\lambda = \nu(\mathbb R)` per unit time and
their sizes :math:`Y` follow the law :math:`F_Y`. The jump term of a
backward Kolmogorov equation,

.. math:: \int \bigl(u(x + z) - u(x)\bigr)\,\nu(dz),

is discretised on a uniform lattice :math:`z_k = k h`, :math:`|k| \le K`, by
projecting :math:`\nu` onto the piecewise-linear "hat" functions
:math:`\phi_k(z) = \max(1 - |z - z_k|/h, 0)`:

.. math:: w_k = \int \phi_k(z)\,\nu(dz).

Because :math:`\sum_k \phi_k = 1` and :math:`\sum_k z_k \phi_k(z) = z` on
:math:`[-Kh, Kh]`, the lattice measure keeps the mass **and the mean** of the
jumps exactly (the variance grows by at most :math:`h^2/4`, on average
:math:`h^2/6`); so a PIDE with a linear terminal condition (a conditional mean)
sees the exact first moment of the jumps. Jumps beyond :math:`(K+1)h` are
dropped; :meth:`AbstractLevyMeasure.lattice_weights` returns their mass.

Every weight comes from one function of the measure, its *stop-loss
transform* :math:`C(t) = \int (z - t)^+\,\nu(dz)`: writing
:math:`\phi_k = \bigl[(z - z_k + h)^+ - 2 (z - z_k)^+ + (z - z_k - h)^+\bigr]/h`,

.. math:: w_k = \bigl[C(z_k - h) - 2\,C(z_k) + C(z_k + h)\bigr] / h.

A new measure therefore only states :math:`C` in closed form (and its mass and
first two moments, for callers that size grids).

Measures here: :class:`NormalJumps` (Merton 1976) and
:class:`DoubleExponentialJumps` (Kou 2002). Infinite-activity measures
(α-stable, variance-gamma) need a small-jump diffusion correction and are not
provided.

References:
    Merton (1976), "Option pricing when underlying stock returns are
    discontinuous", J. Financial Economics 3. Kou (2002), "A jump-diffusion
    model for option pricing", Management Science 48(8). Cont & Voltchkova
    (2005), "A finite difference scheme for option pricing in jump diffusion
    and exponential Lévy models", SIAM J. Numer. Anal. 43(4).
"""

import abc

import equinox as eqx
import jax.numpy as jnp
from jax.scipy.special import ndtr
from jaxtyping import Array, ArrayLike, Float

__all__ = ["AbstractLevyMeasure", "DoubleExponentialJumps", "NormalJumps"]

_INV_SQRT_2PI = 0.3989422804014327  # 1/sqrt(2π), the standard normal density at 0


class AbstractLevyMeasure(eqx.Module):
    """A finite Lévy measure ν = λ F_Y on ℝ (compound-Poisson jumps).

    Subclasses hold their parameters as array leaves (so they trace and vmap)
    and implement the stop-loss transform; the lattice weights follow.
    """

    @abc.abstractmethod
    def intensity(self) -> Float[Array, ""]:
        """λ = ν(ℝ), the jump rate per unit time (>= 0)."""

    @abc.abstractmethod
    def jump_mean(self) -> Float[Array, ""]:
        """E[Y], the mean jump size (so ∫ z ν(dz) = λ E[Y])."""

    @abc.abstractmethod
    def jump_variance(self) -> Float[Array, ""]:
        """Var[Y], the variance of one jump."""

    @abc.abstractmethod
    def stop_loss(self, level: Float[Array, "*levels"]) -> Float[Array, "*levels"]:
        """C(t) = ∫ (z - t)^+ ν(dz) = λ E[(Y - t)^+], elementwise in ``level``."""

    def lattice_weights(
        self, step: Float[ArrayLike, ""], reach: int
    ) -> tuple[Float[Array, " offsets"], Float[Array, ""]]:
        """Hat-function projection of ν on the lattice z_k = k·step, k = -reach..reach.

        Args:
            step: lattice spacing h > 0 (the PIDE grid step).
            reach: K, the largest offset represented (a static int >= 0).

        Returns:
            ``(weights, truncated_mass)``: ``weights[k + reach]`` = w_k >= 0
            (jump rate to offset k, per unit time), and λ - Σ w_k, the rate of
            the jumps the lattice drops (those beyond (K + 1) h, partly beyond
            K h). Mass and mean are exact when the truncated mass is zero.
        """
        step = jnp.asarray(step)
        offsets = jnp.arange(-reach, reach + 1, dtype=step.dtype) * step
        second_difference = (
            self.stop_loss(offsets - step) - 2.0 * self.stop_loss(offsets) + self.stop_loss(offsets + step)
        ) / step
        # The exact weights are >= 0; far in the tails C(t) ≈ λ(E[Y] - t) and
        # the second difference cancels to rounding noise of either sign.
        weights = jnp.maximum(second_difference, 0.0)
        truncated = jnp.maximum(self.intensity() - jnp.sum(weights), 0.0)
        return weights, truncated


class NormalJumps(AbstractLevyMeasure):
    r"""Merton's jumps: rate λ, sizes Y ~ N(μ, s²).

    Stop-loss transform, with :math:`d = (\mu - t)/s`:
    :math:`C(t) = \lambda\,[(\mu - t)\,\Phi(d) + s\,\varphi(d)]`, which tends
    to :math:`\lambda(\mu - t)^+` as s → 0 (a point mass; s = 0 is allowed).

    Attributes:
        rate: λ >= 0, jumps per unit time.
        mean: μ, the mean jump size.
        std: s >= 0, the standard deviation of a jump.
    """

    rate: Float[Array, ""]
    mean: Float[Array, ""]
    std: Float[Array, ""]

    def __init__(self, rate: Float[ArrayLike, ""], mean: Float[ArrayLike, ""], std: Float[ArrayLike, ""]):
        self.rate = jnp.asarray(rate)
        self.mean = jnp.asarray(mean, self.rate.dtype)
        self.std = jnp.asarray(std, self.rate.dtype)

    def intensity(self) -> Float[Array, ""]:
        return self.rate

    def jump_mean(self) -> Float[Array, ""]:
        return self.mean

    def jump_variance(self) -> Float[Array, ""]:
        return self.std**2

    def stop_loss(self, level: Float[Array, "*levels"]) -> Float[Array, "*levels"]:
        # A floor on s keeps d finite for a point mass: at s = tiny, Φ(d) is a
        # step and s φ(d) vanishes, the exact s = 0 limit (μ - t)^+.
        std = jnp.maximum(self.std, jnp.finfo(level.dtype).tiny)
        gap = self.mean - level
        d = gap / std
        return self.rate * (gap * ndtr(d) + std * _INV_SQRT_2PI * jnp.exp(-0.5 * d**2))


class DoubleExponentialJumps(AbstractLevyMeasure):
    r"""Kou's jumps: rate λ, sizes Y with density p η₊ e^{-η₊ y} (y > 0) + (1 - p) η₋ e^{η₋ y} (y < 0).

    Stop-loss transform: :math:`C(t) = \lambda\,p\,e^{-\eta_+ t}/\eta_+` for
    t >= 0 and :math:`C(t) = \lambda\,[E Y - t - (1 - p)\,e^{\eta_- t}/\eta_-]`
    for t < 0, where :math:`(Y - t)^+ = (Y - t) + (t - Y)^+` and only
    downward jumps reach below t: :math:`C(t) = \lambda\,[E Y - t + (1 - p)\,e^{\eta_- t}/\eta_-]`.

    Attributes:
        rate: λ >= 0, jumps per unit time.
        up_probability: p ∈ [0, 1], the probability that a jump is upward.
        up_rate: η₊ > 0 (mean upward jump 1/η₊).
        down_rate: η₋ > 0 (mean downward jump size 1/η₋).
    """

    rate: Float[Array, ""]
    up_probability: Float[Array, ""]
    up_rate: Float[Array, ""]
    down_rate: Float[Array, ""]

    def __init__(
        self,
        rate: Float[ArrayLike, ""],
        up_probability: Float[ArrayLike, ""],
        up_rate: Float[ArrayLike, ""],
        down_rate: Float[ArrayLike, ""],
    ):
        self.rate = jnp.asarray(rate)
        dtype = self.rate.dtype
        self.up_probability = jnp.asarray(up_probability, dtype)
        self.up_rate = jnp.asarray(up_rate, dtype)
        self.down_rate = jnp.asarray(down_rate, dtype)

    def intensity(self) -> Float[Array, ""]:
        return self.rate

    def jump_mean(self) -> Float[Array, ""]:
        return self.up_probability / self.up_rate - (1.0 - self.up_probability) / self.down_rate

    def jump_variance(self) -> Float[Array, ""]:
        p = self.up_probability
        second_moment = 2.0 * p / self.up_rate**2 + 2.0 * (1.0 - p) / self.down_rate**2
        return second_moment - self.jump_mean() ** 2

    def stop_loss(self, level: Float[Array, "*levels"]) -> Float[Array, "*levels"]:
        p = self.up_probability
        # Each branch sees only its own half-line, so neither exponential can
        # overflow in the branch that jnp.where discards.
        up_level = jnp.maximum(level, 0.0)
        down_level = jnp.minimum(level, 0.0)
        upper = p * jnp.exp(-self.up_rate * up_level) / self.up_rate
        below_tail = (1.0 - p) * jnp.exp(self.down_rate * down_level) / self.down_rate
        lower = self.jump_mean() - down_level + below_tail
        return self.rate * jnp.where(level >= 0.0, upper, lower)
