"""Numerical solvers the kernels use, each usable on its own.

* :mod:`.pide`: the IMEX backward-Kolmogorov PIDE solver (kernel C);
* :mod:`.anderson`: Anderson-accelerated fixed points;
* :mod:`.levy_measures`: jump measures (Merton, Kou) for the PIDE;
* :mod:`.dgm`: the Deep Galerkin network, problem and loss (kernel B);
* :mod:`.hamiltonians`: generic Hamiltonians for the DGM solver;
* :mod:`.entropy`: the entropy monitor and collapse check.

Offline training of a DGM network is in :mod:`fnpredict.training.dgm`.
"""

import importlib

_MODULES = {"pide", "anderson", "levy_measures", "dgm", "hamiltonians", "entropy"}


def __getattr__(name):
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(name)
