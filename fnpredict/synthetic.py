"""Seeded synthetic series with a known one-step-optimal predictor (host-side test data, never traced).

Every generator takes an integer ``seed`` and draws from a
``numpy.random.Generator`` (``numpy.random.default_rng(seed)``, PCG64): the
same seed gives bit-identical series on every platform, and the data never
touches JAX's PRNG (so it cannot collide with the keys the predictor uses).
Each returns a :class:`SyntheticSeries` whose ``values`` are levels (think
log-prices) and whose ``conditional_mean[t] = E[y_t | y_{<t}]`` (or the
oracle's, for regime series) is the one-step predictor that minimizes the
expected squared error; NaN where the past is too short.

Laws (``ε_t`` i.i.d. N(0, 1) throughout):

* :func:`ou` — exact discretization of ``dX = κ(θ − X)dt + σ dW``:
  ``y_t = θ + φ (y_{t−1} − θ) + s ε_t``, ``φ = e^{−κ dt}``,
  ``s² = σ²(1 − φ²)/(2κ)``, stationary start.
* :func:`ou_jumps` — the same plus a compound-Poisson jump
  ``J_t = Σ_{i ≤ N_t} Y_i``, ``N_t ~ Poisson(λ dt)``, ``Y_i ~ N(μ_J, s_J²)``,
  added at the end of each step (a jump is not mean-reverted within its step).
* :func:`drift_flip` — random walk with a regime drift ``y_t = y_{t−1} +
  r_t d + σ ε_t``, ``r_t = ±1`` flipping with probability ``1/L`` each step
  (geometric regime lengths, mean ``L``).
* :func:`ar2_increments` — increments ``Δ_t = φ₁Δ_{t−1} + φ₂Δ_{t−2} + σ ε_t``
  (stationary AR(2), burn-in), ``y = cumsum Δ``.
* :func:`stable_increments` — i.i.d. α-stable increments (S1 parametrization,
  location 0), ``y = cumsum Δ``.
"""

import dataclasses
import math

import numpy as np
import scipy.stats

__all__ = ["SyntheticSeries", "ou", "ou_jumps", "drift_flip", "ar2_increments", "stable_increments"]

#: Scalar arguments: ints are accepted where a float is meant (``L=256``).
Number = int | float

#: Burn-in steps of the AR(2) recursion: with the default roots (modulus
#: √0.3 ≈ 0.55) the start's influence decays like 0.55^500 ≈ 1e-130.
_AR_BURN_IN = 500


@dataclasses.dataclass(frozen=True)
class SyntheticSeries:
    """A synthetic series and its optimal one-step predictor.

    Attributes:
        values: ``(T,)`` the observed levels ``y_t``.
        conditional_mean: ``(T,)`` ``E[y_t | y_{<t}]`` (oracle regime for
            :func:`drift_flip`); NaN where undefined (``t = 0``, too short a
            past, or no mean: stable with α ≤ 1).
        conditional_std: ``(T,)`` standard deviation of ``y_t`` given the past
            (NaN where infinite or unknown).
        conditional_median: ``(T,)`` the median of ``y_t`` given the past, the
            optimal point predictor under absolute loss.
        change_points: indices ``t`` whose regime differs from ``t − 1``
            (empty for series without regimes).
        regimes: ``(T,)`` the regime sign ``r_t = ±1`` (0 for series without regimes).
    """

    values: np.ndarray
    conditional_mean: np.ndarray
    conditional_std: np.ndarray
    conditional_median: np.ndarray
    change_points: np.ndarray
    regimes: np.ndarray


def _series(values, mean, std, median=None, change_points=None, regimes=None) -> SyntheticSeries:
    n = values.shape[0]
    return SyntheticSeries(
        values=values,
        conditional_mean=mean,
        conditional_std=np.broadcast_to(np.asarray(std, float), (n,)).copy(),
        conditional_median=mean.copy() if median is None else median,
        change_points=np.zeros(0, np.int64) if change_points is None else change_points,
        regimes=np.zeros(n, np.int64) if regimes is None else regimes,
    )


def _ou_path(rng, n, kappa, theta, sigma, dt, jumps):
    if kappa <= 0 or sigma <= 0 or dt <= 0:
        raise ValueError(f"ou: kappa, sigma and dt must be > 0, got {kappa}, {sigma}, {dt}")
    phi = math.exp(-kappa * dt)
    step_std = sigma * math.sqrt((1.0 - phi**2) / (2.0 * kappa))
    values = np.empty(n)
    values[0] = theta + sigma / math.sqrt(2.0 * kappa) * rng.standard_normal()
    noise = step_std * rng.standard_normal(n)
    for t in range(1, n):
        values[t] = theta + phi * (values[t - 1] - theta) + noise[t] + jumps[t]
    mean = np.full(n, np.nan)
    mean[1:] = theta + phi * (values[:-1] - theta)
    return values, mean, step_std


def ou(n: int, seed: int, kappa: Number = 0.05, theta: Number = 0.0, sigma: Number = 0.01, dt: Number = 1.0):
    """Ornstein–Uhlenbeck levels, exactly discretized (see the module docstring).

    Optimal predictor: ``E[y_t | y_{<t}] = θ + e^{−κ dt}(y_{t−1} − θ)``, with
    Gaussian conditional law of std ``σ √((1 − e^{−2κdt})/(2κ))``. Its MSE
    relative to the random walk's (predict ``y_{t−1}``) is ``(1 + φ)/2``.
    Defaults: κ = 0.05 per step (half-life ≈ 14 steps), σ = 0.01 (a daily
    log-price scale).
    """
    rng = np.random.default_rng(seed)
    values, mean, step_std = _ou_path(rng, n, kappa, theta, sigma, dt, np.zeros(n))
    std = np.full(n, step_std)
    std[0] = np.nan
    return _series(values, mean, std)


def ou_jumps(
    n: int, seed: int, kappa: Number = 0.05, theta: Number = 0.0, sigma: Number = 0.01, dt: Number = 1.0,
    jump_intensity: Number = 0.02, jump_mean: Number = -0.01, jump_std: Number = 0.03,
):
    """OU levels plus compound-Poisson normal jumps (see the module docstring).

    Optimal predictor: ``E[y_t | y_{<t}] = θ + φ(y_{t−1} − θ) + λ dt μ_J`` (the
    jump term is the mean of the compound Poisson sum); conditional variance
    ``s² + λ dt (s_J² + μ_J²)``. The law is a Poisson mixture of normals, so
    its median is not the mean; ``conditional_median`` is left at the mean
    (close for λ dt ≪ 1). Defaults: one jump per 50 steps of mean −1% and
    std 3% (crash-like, skewed down).
    """
    if jump_intensity < 0 or jump_std < 0:
        raise ValueError(f"ou_jumps: jump_intensity and jump_std must be >= 0, got {jump_intensity}, {jump_std}")
    rng = np.random.default_rng(seed)
    counts = rng.poisson(jump_intensity * dt, n)
    # Σ of N i.i.d. N(μ, s²) is exactly N(Nμ, N s²).
    jumps = counts * jump_mean + np.sqrt(counts) * jump_std * rng.standard_normal(n)
    jumps[0] = 0.0
    values, mean, step_std = _ou_path(rng, n, kappa, theta, sigma, dt, jumps)
    mean[1:] += jump_intensity * dt * jump_mean
    std = np.full(n, math.sqrt(step_std**2 + jump_intensity * dt * (jump_std**2 + jump_mean**2)))
    std[0] = np.nan
    return _series(values, mean, std)


def drift_flip(
    n: int, seed: int, sigma: Number = 0.01, drift: Number | None = None, mean_regime_length: Number = 256.0
):
    """Random walk whose drift ``±d`` flips sign at geometric times (see the module docstring).

    Optimal (oracle) predictor: ``y_{t−1} + r_t d``, the conditional mean
    given the *true* current regime ``r_t``; Gaussian with std σ. (A
    predictor that only sees the past values can at best track ``r_t``; the
    oracle is the benchmark a regime detector is measured against.)
    ``change_points`` are the steps where ``r_t ≠ r_{t−1}``. Defaults: d =
    σ/2, the flips a CUSUM should find in tens of steps; L = 256 steps
    (about a trading year).
    """
    if mean_regime_length < 1:
        raise ValueError(f"drift_flip: mean_regime_length must be >= 1, got {mean_regime_length}")
    drift = 0.5 * sigma if drift is None else drift
    rng = np.random.default_rng(seed)
    flips = rng.random(n) < 1.0 / mean_regime_length
    flips[0] = False
    first = 1 if rng.random() < 0.5 else -1
    regimes = first * np.where(np.cumsum(flips) % 2 == 0, 1, -1)
    increments = regimes * drift + sigma * rng.standard_normal(n)
    values = np.cumsum(increments)
    mean = np.full(n, np.nan)
    mean[1:] = values[:-1] + regimes[1:] * drift
    std = np.full(n, sigma)
    std[0] = np.nan
    return _series(values, mean, std, change_points=np.flatnonzero(flips), regimes=regimes)


def ar2_increments(n: int, seed: int, phi: tuple[Number, Number] = (0.6, -0.3), sigma: Number = 0.01):
    """Levels whose increments are a stationary AR(2) (see the module docstring).

    Optimal predictor: ``y_{t−1} + φ₁Δ_{t−1} + φ₂Δ_{t−2}`` with ``Δ_s = y_s −
    y_{s−1}`` (defined from t = 3, when both increments are observed); Gaussian
    with std σ. Its MSE relative to the random walk's is ``σ²/γ₀ =
    (1 + φ₂)((1 − φ₂)² − φ₁²)/(1 − φ₂)`` (0.716 for the default φ = (0.6, −0.3),
    a mildly mean-reverting increment process).
    """
    phi1, phi2 = phi
    # Stationarity triangle of AR(2).
    if not (abs(phi2) < 1 and phi1 + phi2 < 1 and phi2 - phi1 < 1):
        raise ValueError(f"ar2_increments: phi={phi} is not stationary")
    rng = np.random.default_rng(seed)
    noise = sigma * rng.standard_normal(n + _AR_BURN_IN)
    increments = np.zeros(n + _AR_BURN_IN)
    for t in range(2, n + _AR_BURN_IN):
        increments[t] = phi1 * increments[t - 1] + phi2 * increments[t - 2] + noise[t]
    increments = increments[_AR_BURN_IN:]
    values = np.cumsum(increments)
    mean = np.full(n, np.nan)
    observed = np.diff(values)  # observed[s - 1] = Δ_s, s ≥ 1
    mean[3:] = values[2:-1] + phi1 * observed[1:-1] + phi2 * observed[:-2]
    std = np.full(n, sigma)
    std[:3] = np.nan
    return _series(values, mean, std)


def stable_increments(n: int, seed: int, alpha: Number = 1.7, beta: Number = 0.0, scale: Number = 0.01):
    """Levels with i.i.d. α-stable increments S1(α, β, scale, 0) (scipy's ``levy_stable``).

    Optimal predictors: under absolute loss ``y_{t−1} + m`` with ``m`` the
    median of the increment law (0 for β = 0 by symmetry; computed by
    ``levy_stable.ppf(0.5)`` otherwise); under squared loss, when α > 1, the
    mean exists and equals the location, so ``E[y_t | y_{<t}] = y_{t−1}``
    (NaN for α ≤ 1). The variance is infinite for α < 2 (``conditional_std``
    NaN; ``scale·√2`` at α = 2, the Gaussian case).
    """
    if not (0 < alpha <= 2 and -1 <= beta <= 1 and scale > 0):
        raise ValueError(f"stable_increments: need 0<alpha<=2, -1<=beta<=1, scale>0; got {alpha}, {beta}, {scale}")
    rng = np.random.default_rng(seed)
    increments = scipy.stats.levy_stable.rvs(alpha, beta, loc=0.0, scale=scale, size=n, random_state=rng)
    values = np.cumsum(increments)
    median_increment = 0.0 if beta == 0 else float(scipy.stats.levy_stable.ppf(0.5, alpha, beta, scale=scale))
    previous = np.concatenate([[np.nan], values[:-1]])
    mean = previous.copy() if alpha > 1 else np.full(n, np.nan)
    median = previous + median_increment
    std = np.full(n, scale * math.sqrt(2.0) if alpha == 2 else np.nan)
    std[0] = np.nan
    return _series(values, mean, std, median=median)
