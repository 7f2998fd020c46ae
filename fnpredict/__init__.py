"""fnpredict: online one-step-ahead prediction of rough, jumpy time series.

The whole predictor is one pure function over one immutable PyTree::

    import fnpredict as fp
    cfg = fp.PredictorConfig()
    state = fp.init(cfg, key)
    state, out = fp.step(state, obs, key)
"""

import importlib
from importlib.metadata import PackageNotFoundError, version as _version

from .runtime.precision import enable_float64

enable_float64()

from .config import Hyperparams, PredictorConfig  # noqa: E402

try:
    __version__ = _version("fnpredict")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+local"

_LAZY_SUBMODULES = {
    "sia", "kernels", "orchestrator", "guards", "solvers", "training", "evaluation", "synthetic", "params", "results",
    "tuning", "runtime", "data", "cli", "engine", "state", "telemetry", "backtest",
}
_LAZY_ATTRIBUTES = {
    "PredictorState": "state",
    "StepOutput": "telemetry",
    "Telemetry": "telemetry",
    "init": "engine",
    "step": "engine",
    "fit": "engine",
    "predict": "engine",
    "save_snapshot": "runtime.snapshot",
    "load_snapshot": "runtime.snapshot",
    "SnapshotError": "runtime.snapshot",
}


def __getattr__(name):
    # Lazy: `import fnpredict` stays cheap; optuna, diffrax & co load on use.
    if name in _LAZY_ATTRIBUTES:
        module = importlib.import_module(f".{_LAZY_ATTRIBUTES[name]}", __name__)
        return getattr(module, name)
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fnpredict' has no attribute {name!r}")


__all__ = [
    "Hyperparams", "PredictorConfig", "PredictorState", "StepOutput", "Telemetry",
    "init", "step", "fit", "predict", "save_snapshot", "load_snapshot", "SnapshotError",
    "__version__",
]
