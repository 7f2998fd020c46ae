"""Synthetic generators: reproducible, and their optimal predictors are optimal (Monte Carlo, SE-based)."""

import math

import numpy as np
import pytest

from fnpredict import synthetic

GENERATORS = {
    "ou": lambda n, seed: synthetic.ou(n, seed),
    "ou_jumps": lambda n, seed: synthetic.ou_jumps(n, seed),
    "drift_flip": lambda n, seed: synthetic.drift_flip(n, seed),
    "ar2_increments": lambda n, seed: synthetic.ar2_increments(n, seed),
    "stable_increments": lambda n, seed: synthetic.stable_increments(n, seed),
}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_reproducible_by_seed(name):
    a, b, c = GENERATORS[name](500, 7), GENERATORS[name](500, 7), GENERATORS[name](500, 8)
    for field in ("values", "conditional_mean", "conditional_std", "conditional_median", "change_points", "regimes"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.values, c.values)
    assert a.values.shape == a.conditional_mean.shape == a.conditional_std.shape == (500,)
    assert np.isnan(a.conditional_mean[0]) and np.all(np.isfinite(a.values))


def _block_ratio(optimal_errors, random_walk_errors, blocks=50):
    """Ratio of MSEs and its standard error from ``blocks`` contiguous block ratios (robust to serial correlation)."""
    a = np.array_split(optimal_errors**2, blocks)
    b = np.array_split(random_walk_errors**2, blocks)
    ratios = np.array([x.mean() / y.mean() for x, y in zip(a, b)])
    total = (optimal_errors**2).mean() / (random_walk_errors**2).mean()
    return total, ratios.std(ddof=1) / math.sqrt(blocks)


@pytest.mark.parametrize(
    "name, series, start, expected",
    [
        # OU with φ = e^{-0.5} = 0.607: MSE ratio (1 + φ)/2.
        ("ou", lambda seed: synthetic.ou(50_000, seed, kappa=0.5), 1, (1 + math.exp(-0.5)) / 2),
        # AR(2) increments φ = (0.6, -0.3): (1 + φ₂)((1 − φ₂)² − φ₁²)/(1 − φ₂).
        ("ar2", lambda seed: synthetic.ar2_increments(50_000, seed), 3, 0.7 * (1.3**2 - 0.36) / 1.3),
    ],
)
def test_conditional_mean_beats_random_walk_by_theoretical_ratio(name, series, start, expected):
    for seed in range(3):
        s = series(seed)
        optimal = s.values[start:] - s.conditional_mean[start:]
        random_walk = s.values[start:] - s.values[start - 1 : -1]
        ratio, standard_error = _block_ratio(optimal, random_walk)
        print(f"{name} seed {seed}: MSE ratio {ratio:.4f} (theory {expected:.4f}, SE {standard_error:.4f})")
        # 4 SE: a two-sided 6e-5 false-failure probability per seed under normality of the block mean.
        assert abs(ratio - expected) < 4 * standard_error


def test_gaussian_conditional_std_matches_residuals():
    s = synthetic.ou(50_000, 3)
    residual = (s.values[1:] - s.conditional_mean[1:]) / s.conditional_std[1:]
    # Var of a sample variance of n standard normals is 2/n: 4 SE = 4 √(2/n) ≈ 0.025.
    assert abs(residual.var() - 1.0) < 4 * math.sqrt(2.0 / residual.size)


@pytest.mark.parametrize("seed", range(3))
def test_ou_jumps_conditional_mean_unbiased(seed):
    s = synthetic.ou_jumps(100_000, seed, jump_intensity=0.05, jump_mean=-0.02, jump_std=0.03)
    residual = s.values[1:] - s.conditional_mean[1:]
    # Residuals are independent innovations: SE = std/√n.
    standard_error = residual.std(ddof=1) / math.sqrt(residual.size)
    print(f"ou_jumps seed {seed}: mean residual {residual.mean():.2e} (SE {standard_error:.2e})")
    assert abs(residual.mean()) < 4 * standard_error
    # Without the jump term λμ_J = -1e-3 the bias would be ≫ 4 SE (≈ 4e-5 here): the test has power.
    assert abs(residual.mean() - 0.05 * 0.02) > 4 * standard_error
    np.testing.assert_allclose(residual.std(), s.conditional_std[1], rtol=0.03)  # ≈ 4 SE of a heavy-ish std


@pytest.mark.parametrize("seed", range(3))
def test_drift_flip_regime_lengths(seed):
    s = synthetic.drift_flip(400_000, seed, mean_regime_length=256)
    lengths = np.diff(s.change_points)  # complete regimes only (the first and last are censored)
    standard_error = lengths.std(ddof=1) / math.sqrt(lengths.size)
    print(f"drift_flip seed {seed}: {lengths.size} regimes, mean length {lengths.mean():.1f} (SE {standard_error:.1f})")
    assert abs(lengths.mean() - 256) < 4 * standard_error
    assert set(np.unique(s.regimes)) == {-1, 1}
    assert np.all(s.regimes[s.change_points] != s.regimes[s.change_points - 1])
    residual = s.values[1:] - s.conditional_mean[1:]
    assert abs(residual.mean()) < 4 * residual.std() / math.sqrt(residual.size)


def test_stable_median_predictor():
    s = synthetic.stable_increments(40_000, 0, alpha=1.7, beta=0.0)
    residual = s.values[1:] - s.conditional_median[1:]
    # Sign test: P(residual > 0) = 1/2 at the median; SE √(1/(4n)).
    fraction = np.mean(residual > 0)
    assert abs(fraction - 0.5) < 4 * math.sqrt(0.25 / residual.size)
    skewed = synthetic.stable_increments(40_000, 1, alpha=1.5, beta=0.8)
    fraction = np.mean(skewed.values[1:] - skewed.conditional_median[1:] > 0)
    assert abs(fraction - 0.5) < 4 * math.sqrt(0.25 / (skewed.values.size - 1))
    assert np.all(np.isnan(synthetic.stable_increments(100, 2, alpha=0.9).conditional_mean))
