"""Weight orchestration: energies (losses) and the JKO Wasserstein gradient flow.

Names resolve lazily from their modules (``losses.py``, ``jko.py``)
so that importing one does not import the others.
"""

import importlib

_MODULES = ("losses", "jko")


def __getattr__(name):
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    for module_name in _MODULES:
        module = importlib.import_module(f".{module_name}", __name__)
        if name in getattr(module, "__all__", ()):
            return getattr(module, name)
    raise AttributeError(f"module 'fnpredict.orchestrator' has no attribute {name!r}")
