"""Kernel A: α-stable increments, estimated in-graph and simulated by Monte Carlo.

Three pieces, each usable on its own:

* :func:`sample_stable` draws α-stable variates by the Chambers–Mallows–Stuck
  (CMS) method, α = 1 included, in the S1 parametrisation of
  ``scipy.stats.levy_stable`` (its default) or in the continuous S0 one.
* :func:`estimate_stable` estimates (α, β, γ, δ) from a masked vector of
  increments by McCulloch's quantile method: one sort, five quantiles and four
  table look-ups, so its cost is fixed and it traces, vmaps and differentiates
  like any other JAX function.
* :class:`LevyKernel` fits the last ``levy_window`` increments of the target,
  draws ``levy_paths`` next increments and forecasts the last value plus their
  median; :meth:`LevyKernel.predictive_quantiles` reads any quantile off the
  same draws.

Parametrisations (Nolan 2020, Definitions 1.7 and 1.8). A stable law is given
by its characteristic function ``E exp(itX) = exp(-|γt|^α (1 - iβ sign(t) Φ)
+ itδ)`` with

* **S1** (Samorodnitsky–Taqqu; scipy's default): ``Φ = tan(πα/2)`` for
  α ≠ 1 and ``Φ = -(2/π) log|t|`` for α = 1. Location-scale family except at
  α = 1, where ``γZ + δ`` has location ``δ + (2/π) β γ log γ``; the location is
  discontinuous in α at α = 1 when β ≠ 0 (``β γ tan(πα/2)`` diverges).
* **S0** (Zolotarev's M): ``Φ = -tan(πα/2)(|γt|^{1-α} - 1)`` for α ≠ 1 and
  ``-(2/π) log|γt|`` for α = 1. Jointly continuous in all four parameters and a
  location-scale family for every α; ``δ₀ = δ₁ + β γ tan(πα/2)`` (α ≠ 1),
  ``δ₀ = δ₁ + (2/π) β γ log γ`` (α = 1). The kernel works in S0 because an
  estimate of α that wanders across 1 must not move the forecast.

References:
    Chambers, Mallows, Stuck (1976), "A method for simulating stable random
    variables", JASA 71(354). Weron (1996), "On the Chambers–Mallows–Stuck
    method for simulating skewed stable random variables", Statist. Probab.
    Lett. 28. McCulloch (1986), "Simple consistent estimators of stable
    distribution parameters", Commun. Statist. Simul. 15(4). Nolan (2020),
    "Univariate Stable Distributions", Springer.
"""

import math
from typing import ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray, Real

from ..config import PredictorConfig
from ..intervals.laws import EmpiricalLaw
from ..sorting import sort
from .base import AbstractKernel, EmptyState, Forecast, History

__all__ = ["LevyKernel", "LevyInfo", "StableEstimate", "estimate_stable", "sample_stable"]

# Lower clamp of the estimated α. McCulloch's tables stop at ν_α = 25, where
# α ≈ 0.51-0.59, and he states the method for α >= 0.6; below that the
# interpolated tables are extrapolation and CMS draws reach 1e25 and beyond.
STABILITY_MIN = 0.6

# Below this many real increments the 5 % and 95 % sample quantiles would be
# clamped to the sample extremes (the order statistic x_(i) estimates the
# (i - 1/2)/n quantile, so x_(1) sits at 0.5/n > 0.05 when n < 10).
MIN_INCREMENTS = 10

# A scale (IQR of the increments) within 64 ulps of the level is rounding
# noise of the subtraction y_t - y_{t-1}, not a fluctuation: the kernel then
# reports a fallback (a constant series lands here with IQR = 0). The level is
# the smallest |value| in the window, so that a single 1e12 outlier cannot
# declare the window degenerate (64 ulps of 1e12 is 8e6 in float32).
_ROUNDING_ULPS = 64.0

# Half-width of the band around α = 1 where the S0 sampler uses the α = 1
# formula. S0 is continuous in α, so treating α as 1 there errs by
# O(|α - 1|); the α != 1 formula subtracts two terms of size β tan(πα/2) ~
# 1/|α - 1| and loses O(eps / |α - 1|). sqrt(eps) balances the two.
def _alpha_one_band(dtype) -> float:
    return float(math.sqrt(np.finfo(dtype).eps))


# McCulloch (1986) Tables III-V and VII, as transcribed in scipy's
# ``_fitstart_S1``. Rows of ψ1 and ψ2 follow ν_α, columns ν_β >= 0.
_NU_ALPHA = np.array([2.439, 2.5, 2.6, 2.7, 2.8, 3.0, 3.2, 3.5, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 25.0])
_NU_BETA = np.array([0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0])
# α = ψ1(ν_α, ν_β)
_PSI1 = np.array([
    [2.000, 2.000, 2.000, 2.000, 2.000, 2.000, 2.000],
    [1.916, 1.924, 1.924, 1.924, 1.924, 1.924, 1.924],
    [1.808, 1.813, 1.829, 1.829, 1.829, 1.829, 1.829],
    [1.729, 1.730, 1.737, 1.745, 1.745, 1.745, 1.745],
    [1.664, 1.663, 1.663, 1.668, 1.676, 1.676, 1.676],
    [1.563, 1.560, 1.553, 1.548, 1.547, 1.547, 1.547],
    [1.484, 1.480, 1.471, 1.460, 1.448, 1.438, 1.438],
    [1.391, 1.386, 1.378, 1.364, 1.337, 1.318, 1.318],
    [1.279, 1.273, 1.266, 1.250, 1.210, 1.184, 1.150],
    [1.128, 1.121, 1.114, 1.101, 1.067, 1.027, 0.973],
    [1.029, 1.021, 1.014, 1.004, 0.974, 0.935, 0.874],
    [0.896, 0.892, 0.884, 0.883, 0.855, 0.823, 0.769],
    [0.818, 0.812, 0.806, 0.801, 0.780, 0.756, 0.691],
    [0.698, 0.695, 0.692, 0.689, 0.676, 0.656, 0.597],
    [0.593, 0.590, 0.588, 0.586, 0.579, 0.563, 0.513],
])
# β = ψ2(ν_α, ν_β); entries above 1 lie outside the attainable (ν_α, ν_β)
# region and only matter through interpolation, after which β is clamped.
_PSI2 = np.array([
    [0.0, 2.160, 1.000, 1.000, 1.000, 1.000, 1.000],
    [0.0, 1.592, 3.390, 1.000, 1.000, 1.000, 1.000],
    [0.0, 0.759, 1.800, 1.000, 1.000, 1.000, 1.000],
    [0.0, 0.482, 1.048, 1.694, 1.000, 1.000, 1.000],
    [0.0, 0.360, 0.760, 1.232, 2.229, 1.000, 1.000],
    [0.0, 0.253, 0.518, 0.823, 1.575, 1.000, 1.000],
    [0.0, 0.203, 0.410, 0.632, 1.244, 1.906, 1.000],
    [0.0, 0.165, 0.332, 0.499, 0.943, 1.560, 1.000],
    [0.0, 0.136, 0.271, 0.404, 0.689, 1.230, 2.195],
    [0.0, 0.109, 0.216, 0.323, 0.539, 0.827, 1.917],
    [0.0, 0.096, 0.190, 0.284, 0.472, 0.693, 1.759],
    [0.0, 0.082, 0.163, 0.243, 0.412, 0.601, 1.596],
    [0.0, 0.074, 0.147, 0.220, 0.377, 0.546, 1.482],
    [0.0, 0.064, 0.128, 0.191, 0.330, 0.478, 1.362],
    [0.0, 0.056, 0.112, 0.167, 0.285, 0.428, 1.274],
])
# Rows of φ3 and φ5 follow α ascending (0.5 ... 2.0), columns β >= 0.
_ALPHA = np.linspace(0.5, 2.0, 16)
_BETA = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
# ν_c = φ3(α, β) = (x_.75 - x_.25) / γ; published with α descending.
_PHI3 = np.flipud(np.array([
    [1.908, 1.908, 1.908, 1.908, 1.908],
    [1.914, 1.915, 1.916, 1.918, 1.921],
    [1.921, 1.922, 1.927, 1.936, 1.947],
    [1.927, 1.930, 1.943, 1.961, 1.987],
    [1.933, 1.940, 1.962, 1.997, 2.043],
    [1.939, 1.952, 1.988, 2.045, 2.116],
    [1.946, 1.967, 2.022, 2.106, 2.211],
    [1.955, 1.984, 2.067, 2.188, 2.333],
    [1.965, 2.007, 2.125, 2.294, 2.491],
    [1.980, 2.040, 2.205, 2.435, 2.696],
    [2.000, 2.085, 2.311, 2.624, 2.973],
    [2.040, 2.149, 2.461, 2.886, 3.356],
    [2.098, 2.244, 2.676, 3.265, 3.912],
    [2.189, 2.392, 3.004, 3.844, 4.775],
    [2.337, 2.634, 3.542, 4.808, 6.247],
    [2.588, 3.073, 4.534, 6.636, 9.144],
]))
# ν_ζ = φ5(α, β) = (δ₀ - x_.5) / γ; published with α descending.
_PHI5 = np.flipud(np.array([
    [0.0, 0.000, 0.000, 0.000, 0.000],
    [0.0, -0.017, -0.032, -0.049, -0.064],
    [0.0, -0.030, -0.061, -0.092, -0.123],
    [0.0, -0.043, -0.088, -0.132, -0.179],
    [0.0, -0.056, -0.111, -0.170, -0.232],
    [0.0, -0.066, -0.134, -0.206, -0.283],
    [0.0, -0.075, -0.154, -0.241, -0.335],
    [0.0, -0.084, -0.173, -0.276, -0.390],
    [0.0, -0.090, -0.192, -0.310, -0.447],
    [0.0, -0.095, -0.208, -0.346, -0.508],
    [0.0, -0.098, -0.223, -0.380, -0.576],
    [0.0, -0.099, -0.237, -0.424, -0.652],
    [0.0, -0.096, -0.250, -0.469, -0.742],
    [0.0, -0.089, -0.262, -0.520, -0.853],
    [0.0, -0.078, -0.272, -0.581, -0.997],
    [0.0, -0.061, -0.279, -0.659, -1.198],
]))


def sample_stable(
    key: PRNGKeyArray,
    alpha: Real[ArrayLike, ""],
    beta: Real[ArrayLike, ""],
    gamma: Real[ArrayLike, ""],
    delta: Real[ArrayLike, ""],
    shape: tuple[int, ...] = (),
    parameterization: Literal["S1", "S0"] = "S1",
    dtype=None,
) -> Float[Array, "..."]:
    r"""Draw α-stable variates by Chambers–Mallows–Stuck, α = 1 included.

    With :math:`V \sim U(-\pi/2, \pi/2)` and :math:`W \sim \mathrm{Exp}(1)`
    independent, a standard S1 variate (γ = 1, δ = 0) is (Weron 1996)

    .. math::

        Z = S \frac{\sin \alpha(V + B)}{(\cos V)^{1/\alpha}}
            \left(\frac{\cos(V - \alpha(V + B))}{W}\right)^{(1-\alpha)/\alpha},
        \quad B = \frac{\arctan(\beta \tan\frac{\pi\alpha}{2})}{\alpha},
        \quad S = \left(1 + \beta^2 \tan^2\tfrac{\pi\alpha}{2}\right)^{1/(2\alpha)}

    for α ≠ 1 and, for α = 1 (where the formula above would divide by
    ``α - 1`` through B and S),

    .. math::

        Z = \frac{2}{\pi}\left[\left(\frac{\pi}{2} + \beta V\right)\tan V
            - \beta \log\frac{\frac{\pi}{2} W \cos V}{\frac{\pi}{2} + \beta V}\right].

    Then S1 returns :math:`\gamma Z + \delta` (plus
    :math:`\frac{2}{\pi}\beta\gamma\log\gamma` at α = 1), exactly
    ``scipy.stats.levy_stable(alpha, beta, loc=delta, scale=gamma)`` with
    scipy's default ``parameterization = "S1"``. S0 returns
    :math:`\gamma (Z - \beta\tan\frac{\pi\alpha}{2}) + \delta` (α ≠ 1) or
    :math:`\gamma Z + \delta` (α = 1), scipy's ``"S0"``; within
    :math:`\sqrt{\epsilon}` of α = 1 it uses the α = 1 formula (S0 is continuous
    there, the α ≠ 1 formula cancels two terms of size 1/|α - 1|).

    The branch is a ``lax.cond`` on the (traced) α, with the α != 1 formula
    evaluated at a harmless α where α is 1, so α, β, γ, δ may be traced and
    the function jits and vmaps (under ``vmap`` both branches run and are
    selected).
    V is drawn in the open interval and ``cos V`` and ``W`` are floored at the
    machine epsilon, so no draw divides by zero.

    Args:
        key: PRNG key.
        alpha: stability, in (0, 2].
        beta: skewness, in [-1, 1].
        gamma: scale, > 0.
        delta: location (S1 or S0, see ``parameterization``).
        shape: output shape.
        parameterization: ``"S1"`` (scipy's default) or ``"S0"``.
        dtype: floating dtype of the draws; default the promoted parameter type.

    Returns:
        Draws of shape ``shape``. Parameters out of range give NaN or
        meaningless values (no check inside traced code).

    Example:
        >>> x = sample_stable(jax.random.key(0), 1.5, 0.5, 1.0, 0.0, (1000,))
    """
    if parameterization not in ("S1", "S0"):
        raise ValueError(f"parameterization must be 'S1' or 'S0', got {parameterization!r}")
    if dtype is None:
        dtype = jnp.result_type(alpha, beta, gamma, delta, float)
    alpha, beta, gamma, delta = (jnp.asarray(p, dtype) for p in (alpha, beta, gamma, delta))
    finfo = jnp.finfo(dtype)
    key_angle, key_exponential = jax.random.split(key)
    # V on the open interval: u in [eps, 1) keeps V away from -π/2 too.
    u = jax.random.uniform(key_angle, shape, dtype, minval=finfo.eps, maxval=1.0)
    v = jnp.pi * (u - 0.5)
    w = jnp.maximum(jax.random.exponential(key_exponential, shape, dtype), finfo.eps)
    cos_v = jnp.maximum(jnp.cos(v), finfo.eps)
    half_pi = jnp.pi / 2

    if parameterization == "S1":
        is_one = alpha == 1.0
    else:
        is_one = jnp.abs(alpha - 1.0) < _alpha_one_band(dtype)

    def alpha_one(_):
        # Weron (1996), eq. (3.1) with σ = 1, μ = 0.
        shifted = half_pi + beta * v
        log_arg = (half_pi * w * cos_v) / jnp.where(shifted > 0, shifted, 1.0)
        return (2.0 / jnp.pi) * (shifted * jnp.tan(v) - beta * jnp.log(jnp.maximum(log_arg, finfo.tiny)))

    def alpha_other(_):
        # Evaluated at a harmless α where α is (treated as) 1: under vmap
        # lax.cond becomes a select that runs both branches.
        a = jnp.where(is_one, 0.5, alpha)
        tan_term = beta * jnp.tan(half_pi * a)
        b = jnp.arctan(tan_term) / a
        s = (1.0 + tan_term**2) ** (1.0 / (2.0 * a))
        inner = jnp.maximum(jnp.cos(v - a * (v + b)), finfo.tiny)
        z = s * jnp.sin(a * (v + b)) / cos_v ** (1.0 / a) * (inner / w) ** ((1.0 - a) / a)
        return z if parameterization == "S1" else z - tan_term

    # A real branch for one parameter set: only one formula's transcendentals run.
    z = jax.lax.cond(is_one, alpha_one, alpha_other, None)
    if parameterization == "S1":
        log_gamma = jnp.log(jnp.where(gamma > 0, gamma, 1.0))
        shift = jnp.where(is_one, (2.0 / jnp.pi) * beta * gamma * log_gamma, 0.0)
        return gamma * z + delta + shift
    return gamma * z + delta


class StableEstimate(eqx.Module):
    """McCulloch estimate of an α-stable law, S0 parametrisation.

    Attributes:
        stability: α, clamped to [``STABILITY_MIN``, 2].
        skewness: β, clamped to [-1, 1].
        scale: γ (> 0 when ``valid``; 0 otherwise).
        location: δ₀, the S0 location (McCulloch's ζ).
        valid: False when there were fewer than ``MIN_INCREMENTS`` valid
            increments or the interquartile range was not above
            ``scale_floor``; the other fields then hold the sentinels
            α = 2, β = 0, γ = 0, δ = 0.
    """

    stability: Float[Array, ""]
    skewness: Float[Array, ""]
    scale: Float[Array, ""]
    location: Float[Array, ""]
    valid: Bool[Array, ""]


def _sorted_quantile(
    sorted_values: Float[Array, " _sample"], n_valid: Int[Array, ""], prob: Float[Array, "*probs"]
) -> Float[Array, "*probs"]:
    """Quantile of the first ``n_valid`` sorted entries, x_(i) at level (i - 1/2)/n.

    The (i - 1/2)/n plotting position is McCulloch's small-sample correction;
    levels outside [1/(2n), 1 - 1/(2n)] clamp to the extremes.
    """
    n = jnp.maximum(n_valid, 1).astype(sorted_values.dtype)
    position = jnp.clip(prob * n - 0.5, 0.0, n - 1.0)
    lower = jnp.floor(position).astype(jnp.int32)
    upper = jnp.minimum(lower + 1, (jnp.maximum(n_valid, 1) - 1).astype(jnp.int32))
    fraction = position - lower.astype(position.dtype)
    return sorted_values[lower] + fraction * (sorted_values[upper] - sorted_values[lower])


def _interpolate_table(table: np.ndarray, rows: np.ndarray, columns: np.ndarray, x, y):
    """Bilinear interpolation in a table on a rectangular grid, clamped at its edges."""
    dtype = jnp.result_type(x, y)
    table, rows, columns = (jnp.asarray(a, dtype) for a in (table, rows, columns))

    def locate(grid, value):
        value = jnp.clip(value, grid[0], grid[-1])
        # A count over <= 16 nodes: cheaper than searchsorted's loop on CPU.
        index = jnp.clip(jnp.sum(grid <= value) - 1, 0, grid.shape[0] - 2)
        weight = (value - grid[index]) / (grid[index + 1] - grid[index])
        return index, weight

    i, s = locate(rows, x)
    j, t = locate(columns, y)
    return (
        (1 - s) * (1 - t) * table[i, j]
        + s * (1 - t) * table[i + 1, j]
        + (1 - s) * t * table[i, j + 1]
        + s * t * table[i + 1, j + 1]
    )


def estimate_stable(
    increments: Float[Array, " time"],
    mask: Bool[Array, " time"] | None = None,
    scale_floor: Real[ArrayLike, ""] = 0.0,
) -> StableEstimate:
    r"""McCulloch's quantile estimate of (α, β, γ, δ₀), fixed cost and traceable.

    With sample quantiles :math:`x_p` (x_(i) at level (i - 1/2)/n),

    .. math::

        \nu_\alpha = \frac{x_{.95} - x_{.05}}{x_{.75} - x_{.25}}, \qquad
        \nu_\beta = \frac{x_{.95} + x_{.05} - 2 x_{.5}}{x_{.95} - x_{.05}},

    :math:`\alpha = \psi_1(\nu_\alpha, |\nu_\beta|)`,
    :math:`\beta = \operatorname{sign}(\nu_\beta)\,\psi_2(\nu_\alpha, |\nu_\beta|)`,
    :math:`\gamma = (x_{.75} - x_{.25}) / \phi_3(\alpha, |\beta|)`,
    :math:`\delta_0 = x_{.5} + \operatorname{sign}(\beta)\,\gamma\,\phi_5(\alpha, |\beta|)`,
    the ψ, φ being McCulloch's tables, interpolated bilinearly (as scipy's
    ``levy_stable._fitstart`` does). Quantiles ignore the tails beyond 5 % and
    95 %, so a few 1e12 outliers in the window do not move the estimate. Cost:
    one sort of the window.

    Why not the characteristic-function regressions (Koutrouvelis,
    Kogon–Williams)? They need a scale to standardize the data first (the
    quantile estimate), then a least-squares fit whose conditioning depends on
    the data; the quantile method alone is already consistent, bounded in
    influence and branch-free.

    Args:
        increments: the sample (e.g. increments of a series).
        mask: True where an entry is real; default all. Masked entries are
            ignored wherever they sit.
        scale_floor: the interquartile range must exceed this (in the units of
            ``increments``) for the estimate to be valid.

    Returns:
        A :class:`StableEstimate` (S0 location); see its ``valid`` flag.

    Example:
        >>> est = estimate_stable(sample_stable(jax.random.key(0), 1.5, 0.0, 1.0, 0.0, (5000,)))
    """
    dtype = increments.dtype
    if mask is None:
        mask = jnp.ones(increments.shape, bool)
    mask = mask & jnp.isfinite(increments)
    n_valid = jnp.sum(mask).astype(jnp.int32)
    # Masked entries sort to the end (+inf), then are zeroed so nothing below
    # can turn an inf into a NaN; the quantiles only read the first n_valid.
    ordered = sort(jnp.where(mask, increments, jnp.inf))
    ordered = jnp.where(jnp.arange(ordered.shape[0], dtype=jnp.asarray(n_valid).dtype) < n_valid, ordered, 0.0)
    probs = jnp.asarray([0.05, 0.25, 0.5, 0.75, 0.95], dtype)
    q05, q25, q50, q75, q95 = _sorted_quantile(ordered, n_valid, probs)

    iqr = q75 - q25
    spread = q95 - q05
    valid = (n_valid >= MIN_INCREMENTS) & (iqr > jnp.asarray(scale_floor, dtype)) & jnp.isfinite(spread)
    safe_iqr = jnp.where(valid, iqr, 1.0)
    safe_spread = jnp.where(valid & (spread > 0), spread, 1.0)
    nu_alpha = spread / safe_iqr
    nu_beta = jnp.clip((q95 + q05 - 2.0 * q50) / safe_spread, -1.0, 1.0)
    sign_nu = jnp.sign(nu_beta)

    alpha = _interpolate_table(_PSI1, _NU_ALPHA, _NU_BETA, nu_alpha, jnp.abs(nu_beta))
    alpha = jnp.clip(alpha, STABILITY_MIN, 2.0)
    beta = sign_nu * _interpolate_table(_PSI2, _NU_ALPHA, _NU_BETA, nu_alpha, jnp.abs(nu_beta))
    beta = jnp.clip(beta, -1.0, 1.0)
    gamma = safe_iqr / _interpolate_table(_PHI3, _ALPHA, _BETA, alpha, jnp.abs(beta))
    location = q50 + jnp.sign(beta) * gamma * _interpolate_table(_PHI5, _ALPHA, _BETA, alpha, jnp.abs(beta))

    zero = jnp.zeros((), dtype)
    return StableEstimate(
        stability=jnp.where(valid, alpha, 2.0).astype(dtype),
        skewness=jnp.where(valid, beta, zero),
        scale=jnp.where(valid, gamma, zero),
        location=jnp.where(valid, location, zero),
        valid=valid,
    )


class LevyInfo(eqx.Module):
    """Diagnostics of kernel A: this step's estimate (S0) of the increments' law.

    Attributes:
        stability, skewness, scale, location: α, β, γ, δ₀ of this step's fit;
            (2, 0, 0, 0) when there was no valid fit (γ = 0 means "no fit").
        fitted: whether this step's window gave a valid fit.
    """

    stability: Float[Array, ""]
    skewness: Float[Array, ""]
    scale: Float[Array, ""]
    location: Float[Array, ""]
    fitted: Bool[Array, ""]


class LevyKernel(AbstractKernel):
    r"""Kernel A: α-stable fit of recent increments + Chambers–Mallows–Stuck Monte Carlo.

    Each call fits (α, β, γ, δ₀) to the last ``levy_window`` increments
    :math:`y_s - y_{s-1}` of the target, masked to those between two real
    observations (:func:`estimate_stable`), draws ``levy_paths`` next
    increments :math:`\Delta^{(m)}` in S0 (continuous in α, so an estimate
    crossing α = 1 does not jump) with the step key, and forecasts

    .. math:: \hat y_{t+1} = y_t + \operatorname{median}_m \Delta^{(m)}.

    The median, not the mean: a stable law has no mean for α <= 1 and an
    infinite variance for α < 2, so the sample mean of the draws is dominated
    by its largest draw; the median exists for every α, is the Bayes forecast
    under absolute loss, and is the 0.5 level of
    :meth:`predictive_quantiles`, which reads the same draws. (For β = 0 and
    α > 1 it is also the mean δ₀.) Its Monte Carlo standard error is
    ``1/(2 f(m) sqrt(levy_paths))``, about 0.11 γ for α in [1.5, 2] and 256
    paths, against an increment spread of at least sqrt(2) γ.

    Falls back to the last value (``fallback``) with fewer than
    ``MIN_INCREMENTS`` real increments or when the interquartile range of the
    increments is within 64 ulps of the level (a constant series). Cost per
    step: one sort of ``levy_window`` increments (the fit, once), ``levy_paths``
    CMS draws and one sort of them. No state is carried: the fit is in the
    step's :class:`LevyInfo`.
    """

    name: ClassVar[str] = "levy"
    n_paths: int = eqx.field(static=True, default=256)
    window: int = eqx.field(static=True, default=96)

    @classmethod
    def from_config(cls, config: PredictorConfig) -> "LevyKernel":
        return cls(n_paths=config.levy_paths, window=config.levy_window)

    def init(self, params, dtype) -> EmptyState:
        """Kernel A learns nothing across steps: each step refits the window."""
        return EmptyState()

    def fit(self, history: History) -> StableEstimate:
        """The S0 estimate from the last ``window`` real increments of the target."""
        target = history.target[-(self.window + 1):]
        increments = jnp.diff(target)
        n_real = jnp.clip(history.count - 1, 0, self.window)
        mask = jnp.arange(self.window, dtype=n_real.dtype) >= self.window - n_real
        floor = _ROUNDING_ULPS * jnp.finfo(target.dtype).eps * jnp.min(jnp.abs(target))
        return estimate_stable(increments, mask, floor)

    def _sorted_draws(
        self, estimate: StableEstimate, history: History, key: PRNGKeyArray
    ) -> Float[Array, " paths"]:
        # Fallback parameters keep the draws finite; their values are discarded.
        gamma = jnp.where(estimate.valid, estimate.scale, 1.0)
        draws = sample_stable(
            key, estimate.stability, estimate.skewness, gamma, estimate.location,
            (self.n_paths,), parameterization="S0", dtype=history.values.dtype,
        )
        # A bitonic network, not jnp.sort: same values, 3-4x faster under vmap
        # (XLA's CPU sort does not vectorise across lanes; fnpredict.sorting).
        return sort(draws)

    def step(
        self, state: EmptyState, history: History, params, key: PRNGKeyArray
    ) -> tuple[EmptyState, Forecast, LevyInfo]:
        """One fit of the window, then the last value plus the median of ``levy_paths`` draws."""
        state, forecast, info, _ = self.step_with_law(state, history, params, key)
        return state, forecast, info

    def step_with_law(self, state: EmptyState, history: History, params, key: PRNGKeyArray):
        """:meth:`step` and its Monte Carlo law: the empirical law of y_t + the same sorted draws."""
        estimate = self.fit(history)
        draws = self._sorted_draws(estimate, history, key)
        median = _sorted_quantile(draws, jnp.asarray(self.n_paths), jnp.asarray(0.5, draws.dtype))
        forecast = Forecast.guarded(history.last + median, history, fallback=~estimate.valid)
        info = LevyInfo(
            stability=estimate.stability, skewness=estimate.skewness, scale=estimate.scale,
            location=estimate.location, fitted=estimate.valid,
        )
        levels = history.last + draws
        valid = estimate.valid & jnp.all(jnp.isfinite(levels))
        law = EmpiricalLaw(draws=jnp.where(valid, levels, history.last))
        return state, forecast, info, (law, valid)

    def predictive_quantiles(
        self,
        state: EmptyState,
        history: History,
        hyperparams,
        key: PRNGKeyArray,
        probs: Float[Array, "*probs"],
    ) -> tuple[Float[Array, "*probs"], Bool[Array, ""]]:
        """Quantiles of the predictive law of y_{t+1}, read off the Monte Carlo draws.

        Uses the same draws as :meth:`step` for the same ``key`` (so the
        0.5 quantile equals the forecast), x_(i) at level (i - 1/2)/n.

        Args:
            state, history, hyperparams, key: as for :meth:`step`.
            probs: levels in [0, 1].

        Returns:
            ``(quantiles, fallback)``: the levels of y_{t+1}, shaped like
            ``probs``; on fallback every quantile is ``history.last``.
        """
        estimate = self.fit(history)
        draws, valid = self._sorted_draws(estimate, history, key), estimate.valid
        levels = _sorted_quantile(draws, jnp.asarray(self.n_paths), probs.astype(draws.dtype))
        quantiles = history.last + levels
        ok = valid & jnp.all(jnp.isfinite(quantiles))
        return jnp.where(ok, quantiles, history.last), ~ok
