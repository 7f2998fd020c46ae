"""Energies of the kernel weights: per-kernel losses and their gradient.

The weight flow (:mod:`fnpredict.orchestrator.jko`) descends the energy

.. math::

    E(\\rho) = \\sum_k \\rho_k\\, \\ell\\big((f_k - y)/\\sigma\\big),

the ``ρ``-weighted loss of each kernel's forecast ``f_k`` against the realised
target ``y``, measured in units of the error scale ``σ`` (the exponentially
weighted error standard deviation kept by :mod:`fnpredict.sia.cusum`). ``E``
is linear in ``ρ``, so its gradient is the vector of standardized losses,
``∂E/∂ρ_k = ℓ(z_k)``; it does not depend on ``ρ``.

Two losses, selected by a traced integer (``loss_type``, as in the telemetry):

* ``0`` (MSE): ``ℓ(z) = z²/2``;
* ``1`` (Huber, robust mode): ``ℓ_δ(z) = z²/2`` for ``|z| ≤ δ`` and
  ``δ(|z| − δ/2)`` beyond, with ``δ = huber_delta_scale`` in σ units (that
  is, ``δ·σ`` in the units of the series).

Both carry the factor ½ so that they coincide for ``|z| ≤ δ``: switching to
robust mode changes how outliers count, not the effective step size ``τ`` of
the flow for ordinary errors.
"""

import jax.numpy as jnp
from jaxtyping import Array, Float, Int

__all__ = ["LOSS_MSE", "LOSS_HUBER", "STANDARDIZED_ERROR_CAP", "mse", "huber", "energy_gradient"]

#: ``loss_type`` code of the squared-error loss.
LOSS_MSE = 0
#: ``loss_type`` code of the Huber loss.
LOSS_HUBER = 1

#: Largest standardized error |z| the energy sees. An error of a million
#: standard deviations is already decisive for the weights (``exp(-τ ℓ)``
#: underflows to 0 for any ``τ > 1e-9``), while ``ℓ ≤ 5e11`` keeps
#: ``τ·ℓ`` finite for any ``τ < 1e296`` in float64 and ``ℓ`` itself far
#: below the float32 maximum (3.4e38). Without the cap a 1e12 outlier over a
#: σ of 1e-300 would give z = inf and ``inf − inf = NaN`` later.
STANDARDIZED_ERROR_CAP = 1e6


def mse(z: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """Half squared error of a standardized error.

    .. math:: \\ell(z) = z^2 / 2

    Args:
        z: standardized errors ``(f − y)/σ`` (dimensionless), any shape.

    Returns:
        ``z²/2``, elementwise, same shape.
    """
    return 0.5 * jnp.square(z)


def huber(z: Float[Array, "*shape"], delta: Float[Array, ""]) -> Float[Array, "*shape"]:
    """Huber loss of a standardized error, continuous with MSE inside the band.

    .. math::

        \\ell_\\delta(z) = \\begin{cases} z^2/2 & |z| \\le \\delta \\
        \\delta(|z| - \\delta/2) & |z| > \\delta \\end{cases}

    It grows linearly beyond ``δ``, so one outlier moves the weights by an
    amount proportional to its size rather than its square.

    Args:
        z: standardized errors (dimensionless), any shape.
        delta: the transition point ``δ > 0`` in σ units (``huber_delta_scale``;
            1.345 gives 95% efficiency under Gaussian errors).

    Returns:
        ``ℓ_δ(z)`` elementwise, same shape as ``z``.
    """
    absolute = jnp.abs(z)
    quadratic = 0.5 * jnp.square(z)
    linear = delta * (absolute - 0.5 * delta)
    return jnp.where(absolute <= delta, quadratic, linear)


def energy_gradient(
    kernel_predictions: Float[Array, " kernels"],
    target: Float[Array, ""],
    sigma: Float[Array, ""],
    loss_type: Int[Array, ""],
    huber_delta_scale: Float[Array, ""],
) -> Float[Array, " kernels"]:
    """Gradient of the weight energy: the standardized loss of each kernel.

    With ``z_k = (f_k − y)/σ``, clipped to ``|z_k| ≤ 1e6``
    (:data:`STANDARDIZED_ERROR_CAP`),

    .. math:: \\frac{\\partial E}{\\partial \\rho_k} = \\ell(z_k),

    ``ℓ`` the half squared error (``loss_type == 0``) or the Huber loss with
    ``δ = huber_delta_scale`` (``loss_type == 1``). ``σ`` is floored at the
    smallest positive normal number of the dtype, so a zero error scale (a
    constant series) gives capped, not infinite or NaN, losses. The result is
    finite and non-negative for any finite inputs; its largest possible value
    is ``1e12/2`` (MSE) or ``1e6·δ`` (Huber).

    Args:
        kernel_predictions: each kernel's forecast of ``target``.
        target: the realised observation ``y``.
        sigma: the error scale ``σ ≥ 0`` in the units of the series.
        loss_type: 0 for MSE, 1 for Huber (any other value is treated as MSE).
        huber_delta_scale: Huber ``δ`` in σ units (> 0).

    Returns:
        ``∇E``, one non-negative loss per kernel (dimensionless).

    Example:
        >>> energy_gradient(jnp.array([1.0, 3.0]), jnp.array(1.0), jnp.array(2.0),
        ...                 jnp.array(0), jnp.array(1.345))   # z = (0, 1)
        Array([0. , 0.5], dtype=float64)
    """
    dtype = jnp.result_type(kernel_predictions, target, sigma)
    safe_sigma = jnp.maximum(sigma, jnp.finfo(dtype).tiny)
    # The difference of two finite numbers can overflow to ±inf; the clip maps
    # it (and any overflowing quotient) back onto the cap.
    z = jnp.clip((kernel_predictions - target) / safe_sigma, -STANDARDIZED_ERROR_CAP, STANDARDIZED_ERROR_CAP)
    return jnp.where(loss_type == LOSS_HUBER, huber(z, huber_delta_scale), mse(z))


def linearized_losses(
    kernel_predictions: Float[Array, " kernels"],
    weights: Float[Array, " kernels"],
    target: Float[Array, ""],
    sigma: Float[Array, ""],
    loss_type: Int[Array, ""],
    huber_delta_scale: Float[Array, ""],
) -> Float[Array, " kernels"]:
    """The "gradient trick" losses: ∂/∂ρ_k of the mixture's standardized loss.

    With ``z_k = (f_k − y)/σ`` (capped as in :func:`energy_gradient`) and the
    mixture's ``z_ρ = Σ_k ρ_k z_k``,

    .. math:: \\tilde\\ell_k = \\ell'(z_\\rho)\\, z_k,

    ``ℓ'(z) = z`` for the half squared error and ``clip(z, −δ, δ)`` for Huber.
    A rule run on these linear losses competes with the best convex
    combination of the kernels (Cesa-Bianchi & Lugosi 2006, §2.5; Gaillard,
    Stoltz & van Erven 2014), not only with the best single kernel.
    """
    dtype = jnp.result_type(kernel_predictions, target, sigma)
    safe_sigma = jnp.maximum(sigma, jnp.finfo(dtype).tiny)
    z = jnp.clip((kernel_predictions - target) / safe_sigma, -STANDARDIZED_ERROR_CAP, STANDARDIZED_ERROR_CAP)
    z_mix = jnp.dot(weights, z)
    slope = jnp.where(loss_type == LOSS_HUBER, jnp.clip(z_mix, -huber_delta_scale, huber_delta_scale), z_mix)
    return slope * z
