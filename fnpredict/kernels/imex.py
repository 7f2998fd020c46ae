r"""Kernel C: a jump-diffusion fitted in-graph, forecast by solving its backward Kolmogorov PIDE.

Two pieces, each usable on its own:

* :func:`fit_jump_diffusion` fits an Ornstein–Uhlenbeck jump-diffusion

  .. math:: dX_t = \kappa(\theta - X_t)\,dt + \sigma\,dW_t + dJ_t,

  :math:`J` compound Poisson with rate :math:`\lambda` and normal jump sizes
  :math:`N(\mu_J, s_J^2)` (time unit: one observation step), to the real
  increments :math:`\Delta_t = y_t - y_{t-1}` of a window:

  1. **Jumps** are separated from diffusion by a robust threshold: with the
     median m and the MAD-σ :math:`\hat s = 1.4826\,\mathrm{MAD}` of the
     increments, :math:`\Delta_t` is a jump when
     :math:`|\Delta_t - m| > c\,\hat s` (c = ``imex_jump_threshold``).
     When the MAD is 0 (most increments equal), every increment that
     differs from the median is a jump: a pure-jump series.
  2. **Drift** by least squares on the diffusive increments,
     :math:`\Delta_t = a + \beta (y_{t-1} - \bar y) + \varepsilon_t` (centred
     at their mean level :math:`\bar y`), read as the exact discretisation of
     the OU drift: :math:`1 + \beta = e^{-\kappa}`, so
     :math:`\kappa = -\log(1 + \beta)`, clipped to
     :math:`e^{-\kappa} \in [0.01, 1]`. An OU drift rather than a constant
     one because the kernel is meant for mean-reverting series (spreads,
     rates, volatility) as well as trending ones, and the OU family contains
     the constant drift (κ = 0, reached smoothly: the drift at
     :math:`\bar y` is :math:`a\,\kappa/(1 - e^{-\kappa}) \to a`). On
     a random walk it pays for estimating κ (noise of order 1/n of the
     variance, plus the small-sample bias of κ̂ toward reversion): on the
     S&P 500 log closes (1999-2018, 128-point window) its one-step MSE is
     2 % above the random walk's.
  3. **Diffusion** from the residual variance :math:`v` of the diffusive
     increments (n - 2 degrees of freedom):
     :math:`\sigma^2 = v \cdot 2\kappa/(1 - e^{-2\kappa})`.
  4. **Jumps' law** from the flagged increments' regression residuals, the
     drift line evaluated at the level clipped to the range of levels it was
     fitted on (a spike's level would extrapolate it wildly): with
     p the flagged fraction, :math:`\lambda = -\log(1 - p)` (the probability
     of at least one jump in a step is p), :math:`\lambda\mu_J\,d(\kappa) = p\,m`
     with m the mean flagged size and :math:`d(\kappa) = (1 -
     e^{-\kappa})/\kappa` the mean decay, by the end of the step, of a jump
     arriving at a uniform time in it — so the model's one-step jump
     contribution equals the observed one, whatever the number of jumps per
     step — and :math:`s_J` = sqrt((variance of the flagged sizes) - v,
     floored at 0) / d(κ) (approximate: two jumps in one step, and the
     spread of the decay, inflate it). λ is capped at ``imex_steps`` so that
     the explicit jump step stays monotone (λΔτ <= 1), with μ_J rescaled to
     keep :math:`\lambda\mu_J`.

* :class:`IMEXKernel` solves, for a one-step horizon, the backward Kolmogorov
  PIDE of the fitted model with terminal condition g(x) = x (so u is the
  conditional mean) by :func:`.pide.solve_backward_kolmogorov`, on a grid
  centred on the last value :math:`y_t` in units of the MAD-σ,
  :math:`\xi = (x - y_t)/\hat s`, spanning
  :math:`\pm[8(\max(\sigma/\hat s, 1) + s_J/\hat s) + |\mu_J|/\hat s + |b(y_t)|/\hat s]`:
  8 standard deviations of the diffusion and of the jumps (a normal tail
  beyond 8 sd holds 6e-16, below float64 resolution), the mean jump and the
  drift over one step. With the default ``reach = pad = N // 2`` the jump
  lattice reaches the half-width, so no jump is truncated or wraps. The
  forecast is :math:`y_t + \hat s\,u(1, 0)`, u read off the grid at
  ξ = 0 by linear interpolation.

For this affine model the exact answer is
:math:`\theta' + (y_t - \theta')e^{-\kappa}`,
:math:`\theta' = \theta + \lambda\mu_J/\kappa`; the PIDE reproduces it up to
the first-order time error of ``imex_steps`` IMEX Euler steps (the linear
terminal condition keeps u linear, so space is exact). The solver is what
makes the kernel extensible to a nonlinear drift or payoff.

Cost per step: one fit (two sorts of the ``buffer_size - 1`` increments
and a few masked reductions) and one PIDE solve of fixed cost
(``imex_steps`` × ``imex_max_iter`` fixed-point slots on ``imex_grid`` nodes,
the FFT on ``2 imex_grid``); ``update`` repeats the fit only.

Fallback (``history.last``, ``fallback`` True): fewer than
``MIN_INCREMENTS`` real increments, a scale within rounding noise of the
level (a constant series), or a non-finite result. A fixed point that does
not reach ``imex_tol`` within ``imex_max_iter`` is reported by ``converged``
False but its result is still used: every iterate of the defect correction
is itself a consistent, monotone implicit step (the first is the fully
upwind one), so an unconverged iterate is less accurate, not unusable.
"""

import math
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from ..config import PredictorConfig
from ..params import HyperparameterSpec
from ..intervals.laws import NormalMixtureLaw, jump_diffusion_law
from .base import AbstractKernel, EmptyState, Forecast, History
from ..solvers.levy_measures import NormalJumps
from ..solvers.pide import PIDEInfo, PIDESolution, UniformGrid, solve_backward_kolmogorov
from ..sorting import sort

__all__ = ["IMEXKernel", "IMEXInfo", "JumpDiffusionFit", "fit_jump_diffusion"]

# Fewer real increments than this leave the fit unidentified: the MAD of
# fewer than 8 points breaks down with 4 outliers, and the two-parameter
# drift regression would keep fewer than 6 residual degrees of freedom.
MIN_INCREMENTS = 8

# 1/Φ⁻¹(3/4): makes the MAD a consistent estimator of a normal σ.
_MAD_TO_SIGMA = 1.482602218505602

# A scale within 64 ulps of the last level is rounding noise of y_t - y_{t-1}
# (and below what y_t + move can resolve), not a fluctuation; a constant
# series lands here with scale 0.
_ROUNDING_ULPS = 64.0

# Smallest one-step AR coefficient e^{-κ} the drift fit accepts. A regression
# slope below -0.99 means the level is forgotten within one step (or is
# anti-correlated, which no OU process does); κ = log(100) ≈ 4.6 per step
# then already pulls 99 % of the way to θ.
_MIN_PERSISTENCE = 0.01

# Standard deviations of diffusion and jumps the grid spans on each side:
# a normal tail beyond 8 sd holds 6e-16 of the mass.
_TAIL_SDS = 8.0


class JumpDiffusionFit(eqx.Module):
    """An OU jump-diffusion fitted to a window (units of the series; time unit one step).

    The drift is b(x) = ``drift`` - ``reversion`` · (x - ``level``).

    Attributes:
        intensity: λ, jumps per step (0 when no increment is flagged).
        jump_mean: μ_J, the mean jump size.
        jump_std: s_J >= 0, the jump-size standard deviation.
        volatility: σ >= 0, the diffusion coefficient per sqrt(step).
        reversion: κ >= 0, the mean-reversion rate per step (0: constant drift).
        drift: b at ``level`` (per step).
        level: ȳ, the mean level of the diffusive increments' starting points.
        scale: the MAD-σ of the increments (their standard deviation when
            the MAD is 0), the grid's unit.
        valid: enough real increments and a scale above rounding noise; the
            other fields are 0 (scale 1) when False.
    """

    intensity: Float[Array, ""]
    jump_mean: Float[Array, ""]
    jump_std: Float[Array, ""]
    volatility: Float[Array, ""]
    reversion: Float[Array, ""]
    drift: Float[Array, ""]
    level: Float[Array, ""]
    scale: Float[Array, ""]
    valid: Bool[Array, ""]

    def conditional_mean(
        self, value: Float[ArrayLike, ""], horizon: Float[ArrayLike, ""] = 1.0
    ) -> Float[Array, ""]:
        r"""E[X_{t+h} | X_t = value] in closed form: θ' + (value - θ') e^{-κh}, or value + (b + λμ_J) h at κ = 0.

        Written without θ' so that κ → 0 is continuous:
        :math:`\text{value} + (b(\text{value}) + \lambda\mu_J)(1 - e^{-\kappa h})/\kappa`.
        """
        value = jnp.asarray(value, self.level.dtype)
        horizon = jnp.asarray(horizon, self.level.dtype)
        kappa = self.reversion
        safe = jnp.where(kappa > 0.0, kappa, 1.0)
        factor = jnp.where(kappa > 0.0, -jnp.expm1(-safe * horizon) / safe, horizon)
        local_drift = self.drift - kappa * (value - self.level)
        return value + (local_drift + self.intensity * self.jump_mean) * factor


def _masked_median(values: Float[Array, " n"], mask: Bool[Array, " n"]) -> Float[Array, ""]:
    """Median of ``values[mask]`` (0 when the mask is empty)."""
    count = jnp.sum(mask)
    ordered = sort(jnp.where(mask, values, jnp.inf))  # jnp.sort's result, vmap-fast
    low = ordered[jnp.maximum((count - 1) // 2, 0)]
    high = ordered[jnp.maximum(count // 2, 0)]
    return jnp.where(count > 0, 0.5 * (low + high), 0.0)


def _masked_mean(values: Float[Array, " n"], mask: Bool[Array, " n"]) -> Float[Array, ""]:
    return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1).astype(jnp.asarray(values).dtype)


def fit_jump_diffusion(
    levels: Float[Array, " buffer"],
    mask: Bool[Array, " buffer"],
    threshold: Float[ArrayLike, ""],
    max_intensity: Float[ArrayLike, ""] = jnp.inf,
) -> JumpDiffusionFit:
    """Fit the OU jump-diffusion to the increments between consecutive real levels.

    See the module docstring for the estimators. Fixed cost: two sorts of
    ``buffer - 1`` increments and masked reductions; no data-dependent shapes.

    Args:
        levels: the window, oldest first (finite).
        mask: True where ``levels`` holds a real observation; an increment
            counts when both its ends do.
        threshold: c, the jump threshold in MAD-σ units (> 0).
        max_intensity: cap on λ (jumps per step); μ_J is rescaled so that
            λμ_J is unchanged.

    Returns:
        :class:`JumpDiffusionFit` (see its ``valid`` flag).
    """
    dtype = levels.dtype
    threshold = jnp.asarray(threshold, dtype)
    previous = levels[:-1]
    increments = jnp.diff(levels)
    real = mask[1:] & mask[:-1] & jnp.isfinite(increments) & jnp.isfinite(previous)
    increments = jnp.where(real, increments, 0.0)
    previous = jnp.where(real, previous, 0.0)
    # Counts as floats: they divide float sums (strict dtype promotion).
    count = jnp.sum(real).astype(dtype)

    median = _masked_median(increments, real)
    deviation = jnp.abs(increments - median)
    mad_sigma = _MAD_TO_SIGMA * _masked_median(deviation, real)
    spread = jnp.sqrt(_masked_mean((increments - _masked_mean(increments, real)) ** 2, real))
    # Rounding noise of the forecast y_t + move, at the last level.
    floor = _ROUNDING_ULPS * jnp.finfo(dtype).eps * jnp.abs(levels[-1])
    # The MAD-σ measures the bulk of the increments; only when the bulk does
    # not move at all (MAD = 0: most increments equal) is the standard
    # deviation, which the jumps dominate, the scale. A bulk within rounding
    # noise of the level makes the fit invalid, whatever the jumps.
    scale = jnp.where(mad_sigma > 0.0, mad_sigma, spread)
    valid = (count >= MIN_INCREMENTS) & (scale > floor) & jnp.isfinite(scale)

    jump = real & (deviation > threshold * mad_sigma)
    diffusive = real & ~jump
    n_diffusive = jnp.sum(diffusive).astype(dtype)

    # Centred least squares: the intercept at the mean level does not depend
    # on the slope, so clipping the slope leaves it valid.
    level = _masked_mean(previous, diffusive)
    mean_increment = _masked_mean(increments, diffusive)
    centred = jnp.where(diffusive, previous - level, 0.0)
    sxx = jnp.sum(centred**2)
    sxy = jnp.sum(centred * (increments - mean_increment))
    identified = (n_diffusive >= 3) & (sxx > 0.0)
    slope = jnp.where(identified, sxy / jnp.where(identified, sxx, 1.0), 0.0)
    persistence = jnp.clip(1.0 + slope, _MIN_PERSISTENCE, 1.0)
    reversion = -jnp.log(persistence)
    # κ/(1 - e^{-κ}) -> 1 as κ -> 0 (the constant-drift limit).
    reverting = persistence < 1.0
    safe_reversion = jnp.where(reverting, reversion, 1.0)
    drift = mean_increment * jnp.where(reverting, safe_reversion / -jnp.expm1(-safe_reversion), 1.0)

    residual = increments - mean_increment - (persistence - 1.0) * (previous - level)
    residual_variance = jnp.sum(jnp.where(diffusive, residual**2, 0.0)) / jnp.maximum(n_diffusive - 2, 1)
    # Var of a one-step OU increment is σ²(1 - e^{-2κ})/(2κ).
    variance_factor = jnp.where(reverting, 2.0 * safe_reversion / -jnp.expm1(-2.0 * safe_reversion), 1.0)
    volatility = jnp.sqrt(residual_variance * variance_factor)

    n_jumps = jnp.sum(jump).astype(dtype)
    fraction = n_jumps / jnp.maximum(count, 1)
    # Jump sizes are regression residuals, the drift line evaluated at the
    # level clipped to the range it was fitted on. Unclipped, a 1e12 spike's
    # extrapolated pull is booked as a jump (a fake mean jump of -5e10);
    # without the level term at all, the diffusive moves that cross the
    # threshold right after a jump (a strong pull back) bias the jump mean
    # by about -3 % (measured on OU with κ = 0.3).
    lowest = jnp.min(jnp.where(diffusive, previous, jnp.inf))
    highest = jnp.max(jnp.where(diffusive, previous, -jnp.inf))
    fitted_level = jnp.where(n_diffusive > 0, jnp.clip(previous, lowest, highest), level)
    jump_size = increments - mean_increment - (persistence - 1.0) * (fitted_level - level)
    jump_residual_mean = _masked_mean(jump_size, jump)
    jump_residual_variance = _masked_mean((jump_size - jump_residual_mean) ** 2, jump)
    # -log1p(-p) is +inf at p = 1; the cap below (or the p < 1 of any window
    # with a diffusive increment) keeps it finite.
    intensity = jnp.minimum(-jnp.log1p(-jnp.minimum(fraction, 1.0 - jnp.finfo(dtype).eps)), max_intensity)
    # A jump at a uniform time s in the step has decayed by e^{-κ(1-s)} when
    # observed, on average by (1 - e^{-κ})/κ; undo it so that the model's
    # one-step jump contribution λμ_J(1 - e^{-κ})/κ equals the observed p·m.
    mean_decay = jnp.where(reverting, -jnp.expm1(-safe_reversion) / safe_reversion, 1.0)
    safe_intensity = jnp.where(intensity > 0.0, intensity, 1.0)
    jump_mean = jnp.where(intensity > 0.0, fraction * jump_residual_mean / (safe_intensity * mean_decay), 0.0)
    jump_std = jnp.sqrt(jnp.maximum(jump_residual_variance - residual_variance, 0.0)) / mean_decay

    fields = dict(
        intensity=intensity, jump_mean=jump_mean, jump_std=jump_std, volatility=volatility,
        reversion=reversion, drift=drift, level=level,
    )
    fields = {name: jnp.asarray(jnp.where(valid, value, 0.0), dtype) for name, value in fields.items()}
    valid = valid & jnp.all(jnp.stack([jnp.isfinite(value) for value in fields.values()]))
    fields = {name: jnp.where(valid, value, 0.0) for name, value in fields.items()}
    return JumpDiffusionFit(**fields, scale=jnp.where(valid, scale, 1.0).astype(dtype), valid=valid)


class IMEXInfo(eqx.Module):
    """Diagnostics of kernel C for one step.

    Attributes:
        fit: this step's :class:`JumpDiffusionFit` of the window.
        solver: the PIDE solve's :class:`~fnpredict.solvers.pide.PIDEInfo`
            (convergence, fixed-point iterations and residual, truncated mass).
    """

    fit: JumpDiffusionFit
    solver: PIDEInfo


class IMEXKernel(AbstractKernel):
    """Kernel C: OU jump-diffusion fit + IMEX PIDE solve for the one-step conditional mean.

    See the module docstring for the model, the grid and the fallback rules.

    Attributes:
        grid_size: nodes of the PIDE grid (``imex_grid``).
        n_steps: IMEX Euler steps over the one-step horizon (``imex_steps``).
        max_iter: fixed-point slots per step (``imex_max_iter``).
        tol: relative fixed-point tolerance (``imex_tol``).
    """

    name: ClassVar[str] = "imex"
    hyperparameters: ClassVar[tuple] = (
        HyperparameterSpec("imex_jump_threshold", 4.0, 0.0, math.inf, True, True,
                           "jump if |increment| > this * MAD-sigma", False),
    )
    grid_size: int = eqx.field(static=True, default=96)
    n_steps: int = eqx.field(static=True, default=2)
    max_iter: int = eqx.field(static=True, default=4)
    tol: float = eqx.field(static=True, default=1e-10)

    @classmethod
    def from_config(cls, config: PredictorConfig) -> "IMEXKernel":
        return cls(grid_size=config.imex_grid, n_steps=config.imex_steps, max_iter=config.imex_max_iter,
                   tol=float(config.imex_tol))

    def init(self, params, dtype) -> EmptyState:
        """Kernel C learns nothing across steps: each step refits the window."""
        return EmptyState()

    def fit(self, history: History, hyperparams) -> JumpDiffusionFit:
        """The fit of the target's window (λ capped at ``n_steps``, see the module docstring)."""
        levels = history.target
        threshold = jnp.asarray(hyperparams.imex_jump_threshold, levels.dtype)
        return fit_jump_diffusion(levels, history.valid_mask(), threshold, float(self.n_steps))

    def solve(
        self, history: History, hyperparams
    ) -> tuple[Forecast, JumpDiffusionFit, PIDESolution]:
        """The forecast with the fit and the PIDE solution behind it (grid in ξ units).

        Returns:
            ``(forecast, fit, solution)``; ``solution.info`` has the
            fixed-point iteration count and residual.
        """
        fit = self.fit(history, hyperparams)
        dtype = history.values.dtype
        last = history.last
        scale = fit.scale
        # In ξ = (x - y_t)/scale units the drift is b0 - κ ξ.
        drift_here = (fit.drift - fit.reversion * (last - fit.level)) / scale
        volatility = fit.volatility / scale
        jump_mean = fit.jump_mean / scale
        jump_std = fit.jump_std / scale
        half_width = (
            _TAIL_SDS * (jnp.maximum(volatility, 1.0) + jump_std) + jnp.abs(jump_mean) + jnp.abs(drift_here)
        )
        step = 2.0 * half_width / (self.grid_size - 1)
        grid = UniformGrid(lower=-half_width, step=step, size=self.grid_size)
        points = grid.points()
        solution = solve_backward_kolmogorov(
            points, grid, drift_here - fit.reversion * points, volatility,
            NormalJumps(fit.intensity, jump_mean, jump_std), jnp.ones((), dtype),
            n_steps=self.n_steps, max_iter=self.max_iter, tol=self.tol,
        )
        move = jnp.interp(jnp.zeros((), dtype), points, solution.values)
        forecast = Forecast.guarded(
            last + scale * move, history, fallback=~fit.valid, converged=solution.info.converged
        )
        return forecast, fit, solution

    def step_with_law(self, state: EmptyState, history: History, params, key: PRNGKeyArray):
        """:meth:`step` and the fitted model's one-step transition law
        (:func:`~fnpredict.intervals.laws.jump_diffusion_law`: a Poisson mixture over jump counts)."""
        forecast, fit, solution = self.solve(history, params)
        law = jump_diffusion_law(fit, history.last)
        finite = jnp.all(jnp.isfinite(law.means)) & jnp.all(jnp.isfinite(law.stds)) & jnp.all(jnp.isfinite(law.weights))
        valid = fit.valid & finite & ~forecast.fallback
        law = NormalMixtureLaw(
            weights=jnp.where(finite, law.weights, jnp.eye(law.weights.shape[0], 1, dtype=law.weights.dtype)[:, 0]),
            means=jnp.where(finite, law.means, history.last),
            stds=jnp.where(finite, law.stds, 1.0),
        )
        return state, forecast, IMEXInfo(fit=fit, solver=solution.info), (law, valid)

    def step(self, state: EmptyState, history: History, params, key: PRNGKeyArray):
        """One fit and one PIDE solve: the one-step conditional mean of the fitted jump-diffusion."""
        forecast, fit, solution = self.solve(history, params)
        return state, forecast, IMEXInfo(fit=fit, solver=solution.info)
