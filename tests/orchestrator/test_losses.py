"""Energy gradient of the kernel weights: closed forms, units, extremes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnpredict.orchestrator import losses
from fnpredict.orchestrator.losses import LOSS_HUBER, LOSS_MSE, energy_gradient, huber, mse

DELTA = 1.345


def _numpy_huber(z, delta):
    a = np.abs(z)
    return np.where(a <= delta, 0.5 * z**2, delta * (a - 0.5 * delta))


@pytest.fixture(scope="module")
def jitted_gradient():
    return jax.jit(energy_gradient)


def test_namespace_exports():
    import fnpredict as fp

    assert fp.orchestrator.energy_gradient is energy_gradient
    assert fp.orchestrator.huber is huber


def test_mse_and_huber_closed_forms():
    z = jnp.linspace(-6.0, 6.0, 241)
    # Same float64 arithmetic as the numpy formulas: only rounding of the
    # final multiply can differ, so 1e-15 relative and no absolute slack.
    np.testing.assert_allclose(np.asarray(mse(z)), 0.5 * np.asarray(z) ** 2, rtol=1e-15, atol=0.0)
    np.testing.assert_allclose(
        np.asarray(huber(z, jnp.asarray(DELTA))), _numpy_huber(np.asarray(z), DELTA), rtol=1e-15, atol=0.0
    )
    # Inside the band Huber is MSE exactly (the ½ convention of both).
    inside = jnp.abs(z) <= DELTA
    assert bool(jnp.all(jnp.where(inside, huber(z, jnp.asarray(DELTA)) == mse(z), True)))
    # Beyond it Huber is strictly smaller: outliers count linearly.
    assert bool(jnp.all(jnp.where(~inside, huber(z, jnp.asarray(DELTA)) < mse(z), True)))


def test_huber_is_continuously_differentiable_at_delta():
    delta = jnp.asarray(DELTA)
    for edge in (DELTA, -DELTA):
        below = jnp.asarray(edge * (1 - 1e-12))
        above = jnp.asarray(edge * (1 + 1e-12))
        # Values and slopes on both sides of ±δ agree to the 1e-12 offset
        # (slope there is ±δ, so differences are ~1.3e-12·δ); 1e-10 leaves room.
        np.testing.assert_allclose(
            float(huber(below, delta)), float(huber(above, delta)), rtol=0.0, atol=1e-10
        )
        slope_below = jax.grad(huber)(below, delta)
        slope_above = jax.grad(huber)(above, delta)
        np.testing.assert_allclose(float(slope_below), float(slope_above), rtol=0.0, atol=1e-10)
        np.testing.assert_allclose(float(slope_above), np.sign(edge) * DELTA, rtol=0.0, atol=1e-10)


@pytest.mark.parametrize("loss_type", [LOSS_MSE, LOSS_HUBER])
def test_energy_gradient_is_the_gradient_of_the_energy(jitted_gradient, loss_type):
    rng = np.random.default_rng(0)
    predictions = jnp.asarray(rng.normal(10.0, 2.0, size=4))
    target = jnp.asarray(10.3)
    sigma = jnp.asarray(0.7)
    loss_code = jnp.asarray(loss_type, jnp.int32)
    delta = jnp.asarray(DELTA)
    gradient = jitted_gradient(predictions, target, sigma, loss_code, delta)

    z = (np.asarray(predictions) - 10.3) / 0.7
    expected = 0.5 * z**2 if loss_type == LOSS_MSE else _numpy_huber(z, DELTA)
    # A subtraction and a division away from the numpy value: a few ulp.
    np.testing.assert_allclose(np.asarray(gradient), expected, rtol=1e-14, atol=0.0)

    # E(ρ) = Σ ρ_k ℓ(z_k) is linear in ρ: autodiff of the energy agrees
    # exactly, at any ρ.
    def energy(weights):
        z_k = (predictions - target) / sigma
        per_kernel = jnp.where(loss_code == LOSS_HUBER, huber(z_k, delta), mse(z_k))
        return jnp.dot(weights, per_kernel)

    weights = jnp.asarray(rng.dirichlet(np.ones(4)))
    autodiff = jax.grad(energy)(weights)
    np.testing.assert_allclose(np.asarray(autodiff), np.asarray(gradient), rtol=1e-15, atol=0.0)


def test_huber_delta_is_in_sigma_units():
    # σ²·ℓ_δ(e/σ) is the raw-unit Huber loss of e with threshold δ·σ.
    rng = np.random.default_rng(1)
    errors = rng.normal(0.0, 5.0, size=50)
    sigma = 2.5
    predictions = jnp.asarray(errors)
    gradient = energy_gradient(
        predictions, jnp.asarray(0.0), jnp.asarray(sigma), jnp.asarray(LOSS_HUBER), jnp.asarray(DELTA)
    )
    raw = _numpy_huber(errors, DELTA * sigma)
    # Rescaling by σ² = 6.25 costs a few ulp; 1e-13 relative is ample.
    np.testing.assert_allclose(sigma**2 * np.asarray(gradient), raw, rtol=1e-13, atol=0.0)


def test_loss_type_is_traced_under_vmap(jitted_gradient):
    predictions = jnp.array([0.0, 1.0, 10.0])
    batched = jax.jit(jax.vmap(energy_gradient, in_axes=(None, None, None, 0, None)))
    out = batched(predictions, jnp.asarray(0.0), jnp.asarray(1.0), jnp.array([0, 1]), jnp.asarray(DELTA))
    # 10σ error: MSE 50, Huber 1.345·(10 − 0.6725) = 12.545...
    np.testing.assert_allclose(np.asarray(out[0]), [0.0, 0.5, 50.0], rtol=1e-15, atol=0.0)
    np.testing.assert_allclose(np.asarray(out[1]), [0.0, 0.5, DELTA * (10 - DELTA / 2)], rtol=1e-15, atol=0.0)


@pytest.mark.parametrize("loss_type", [LOSS_MSE, LOSS_HUBER])
def test_energy_gradient_finite_for_extremes(jitted_gradient, loss_type):
    cap = losses.STANDARDIZED_ERROR_CAP
    huge = float(np.finfo(np.float64).max)
    cases = [
        (jnp.array([0.0, 1e12, -1e12, 1.0]), 0.0, 1.0),  # 1e12 outliers
        (jnp.array([0.0, 1e12, -1e12, 1.0]), 0.0, 0.0),  # zero error scale
        (jnp.array([0.0, 1e-300, 1.0, 2.0]), 0.0, 1e-300),  # denormal-ish σ
        (jnp.array([huge, -huge, 0.0, 1.0]), -huge, 1.0),  # differences overflow to ±inf
        (jnp.zeros(4), 0.0, 0.0),  # constant series: 0/0 must not be NaN
    ]
    bound = 0.5 * cap**2 if loss_type == LOSS_MSE else DELTA * cap
    for predictions, target, sigma in cases:
        gradient = jitted_gradient(
            predictions, jnp.asarray(target), jnp.asarray(sigma), jnp.asarray(loss_type), jnp.asarray(DELTA)
        )
        assert bool(jnp.all(jnp.isfinite(gradient))), (predictions, target, sigma, gradient)
        assert bool(jnp.all(gradient >= 0.0))
        assert bool(jnp.all(gradient <= bound))
    # The outlier is penalised at the cap, the perfect kernel not at all:
    gradient = jitted_gradient(
        jnp.array([0.0, 1e12]), jnp.asarray(0.0), jnp.asarray(1.0), jnp.asarray(loss_type), jnp.asarray(DELTA)
    )
    assert float(gradient[0]) == 0.0
    at_cap = 0.5 * cap**2 if loss_type == LOSS_MSE else DELTA * (cap - 0.5 * DELTA)
    # The capped loss is one or two roundings from the closed form at the cap.
    np.testing.assert_allclose(float(gradient[1]), at_cap, rtol=1e-15, atol=0.0)
