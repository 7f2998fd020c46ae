"""Prediction kernels: A (Lévy), B (DGM), C (IMEX), D (signatures), and the random walk.

Kernels are values: pass objects in ``PredictorConfig(kernels=...)``. The
registry below only maps the short names (and the CLI's ``--kernels``) to
classes; its modules are imported lazily so a kernel's dependencies load only
when it is used.
"""

import importlib

from .base import AbstractKernel, EmptyState, Forecast, History, NoInfo

# name -> (module, class). Adding a built-in kernel is its module plus one line here.
_REGISTRY: dict[str, tuple[str, str]] = {
    "levy": ("levy", "LevyKernel"),
    "dgm": ("dgm", "DGMKernel"),
    "imex": ("imex", "IMEXKernel"),
    "signature": ("signature", "SignatureKernel"),
    "persistence": ("persistence", "PersistenceKernel"),
}


def registered() -> tuple[str, ...]:
    """The registered kernel names, in registry order."""
    return tuple(_REGISTRY)


def kernel_class(name: str) -> type[AbstractKernel]:
    """The kernel class behind a registered name."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown kernel {name!r}; choose from {registered()}")
    module_name, class_name = _REGISTRY[name]
    module = importlib.import_module(f".{module_name}", __name__)
    return getattr(module, class_name)


def __getattr__(name):
    # fp.kernels.levy, fp.kernels.LevyKernel, ... without importing every kernel eagerly.
    for module_name, class_name in _REGISTRY.values():
        if name == class_name:
            return getattr(importlib.import_module(f".{module_name}", __name__), class_name)
    if name in {module for module, _ in _REGISTRY.values()}:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(name)


__all__ = ["AbstractKernel", "EmptyState", "Forecast", "History", "NoInfo", "kernel_class", "registered"]
