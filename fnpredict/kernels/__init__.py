"""Prediction kernels: A (Lévy), B (DGM), C (IMEX), D (signatures).

``kernel_class(name)`` returns the class registered under a config name; the
modules are imported lazily so that a kernel's heavy dependencies load only
when it is switched on.
"""

import importlib

from .base import AbstractKernel, Forecast, History

_CLASSES: dict[str, tuple[str, str]] = {
    "levy": ("levy", "LevyKernel"),
    "dgm": ("dgm", "DGMKernel"),
    "imex": ("imex", "IMEXKernel"),
    "signature": ("signature", "SignatureKernel"),
}


def kernel_class(name: str) -> type[AbstractKernel]:
    """The kernel class behind a ``PredictorConfig.kernels`` name."""
    if name not in _CLASSES:
        raise ValueError(f"unknown kernel {name!r}; choose from {tuple(_CLASSES)}")
    module_name, class_name = _CLASSES[name]
    module = importlib.import_module(f".{module_name}", __name__)
    return getattr(module, class_name)


def __getattr__(name):
    # fp.kernels.levy etc. as attributes without importing every kernel eagerly.
    if name in {"levy", "dgm", "imex", "signature", "pide", "levy_measures", "anderson",
                "dgm_solver", "dgm_entropy", "dgm_hamiltonians"}:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(name)


__all__ = ["AbstractKernel", "Forecast", "History", "kernel_class"]
