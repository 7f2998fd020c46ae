"""Weight orchestration: losses, the JKO flow, and weight rules as components.

Rules are values: pass an :class:`AbstractWeightRule` object as
``PredictorConfig(rule=...)``; the registry below maps the short names
(``fnpredict backtest --rule NAME``) to rule objects built from a config.
"""

import importlib

from .base import AbstractWeightRule, RuleInput
from .jko import JKOInfo, default_cost, entropic_transport_cost, jko_step, proximal_coupling
from .losses import LOSS_HUBER, LOSS_MSE, STANDARDIZED_ERROR_CAP, energy_gradient, huber, mse

# name -> (module, class). Adding a rule is its module plus one line here.
_REGISTRY: dict[str, tuple[str, str]] = {
    "jko_faithful": ("jko_rules", "FaithfulJKO"),
    "jko_proximal": ("jko_rules", "ProximalJKO"),
    "uniform": ("uniform", "Uniform"),
    "ewa": ("ewa", "EWA"),
    "fixed_share": ("fixed_share", "FixedShare"),
    "boa": ("boa", "BOA"),
    "mlpol": ("mlpol", "MLPol"),
}


def registered_rules() -> tuple[str, ...]:
    """The rule names ``PredictorConfig(rule=...)`` accepts (``"jko"``: the JKO flow in ``jko_mode``)."""
    return ("jko",) + tuple(_REGISTRY)


def rule_class(name: str) -> type[AbstractWeightRule]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown rule {name!r}; choose from {registered_rules()}")
    module_name, class_name = _REGISTRY[name]
    return getattr(importlib.import_module(f".{module_name}", __name__), class_name)


def rule_from_name(name: str, config) -> AbstractWeightRule:
    """The rule object behind a name, with the config's settings (``"jko"`` follows ``jko_mode``)."""
    if name == "jko":
        name = f"jko_{config.jko_mode}"
    if name == "jko_faithful":
        return rule_class(name)(iterations=config.sinkhorn_iterations)
    return rule_class(name)()


def __getattr__(name):
    for module_name, class_name in _REGISTRY.values():
        if name == class_name:
            return getattr(importlib.import_module(f".{module_name}", __name__), class_name)
    raise AttributeError(name)


__all__ = [
    "AbstractWeightRule", "RuleInput", "registered_rules", "rule_class", "rule_from_name",
    "JKOInfo", "jko_step", "default_cost", "entropic_transport_cost", "proximal_coupling",
    "LOSS_MSE", "LOSS_HUBER", "STANDARDIZED_ERROR_CAP", "mse", "huber", "energy_gradient",
]
