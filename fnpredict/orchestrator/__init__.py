"""Weight orchestration: energies (losses) and the JKO Wasserstein gradient flow."""

from .jko import JKOInfo, default_cost, entropic_transport_cost, jko_step, proximal_coupling
from .losses import LOSS_HUBER, LOSS_MSE, STANDARDIZED_ERROR_CAP, energy_gradient, huber, mse

__all__ = [
    "JKOInfo", "jko_step", "default_cost", "entropic_transport_cost", "proximal_coupling",
    "LOSS_MSE", "LOSS_HUBER", "STANDARDIZED_ERROR_CAP", "mse", "huber", "energy_gradient",
]
