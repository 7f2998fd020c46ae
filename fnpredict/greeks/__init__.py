"""Greeks by Malliavin calculus (Bismut–Elworthy–Li), pathwise and finite differences.

Names resolve lazily from their modules (``malliavin.py``)
so that importing one does not import the others.
"""

import importlib

_MODULES = ("malliavin",)


def __getattr__(name):
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    for module_name in _MODULES:
        module = importlib.import_module(f".{module_name}", __name__)
        if name in getattr(module, "__all__", ()):
            return getattr(module, name)
    raise AttributeError(f"module 'fnpredict.greeks' has no attribute {name!r}")
