"""Walk-forward validation (vmapped windows), Optuna TPE tuning and gradient learning."""

from .walkforward import WalkForwardResult, make_windows, walk_forward

__all__ = ["WalkForwardResult", "make_windows", "walk_forward", "tune", "learn", "LearnResult"]


def __getattr__(name):
    # optuna loads only when tuning is asked for.
    if name in {"tune", "search", "default_search_space"}:
        import importlib

        search = importlib.import_module(".search", __name__)
        return search if name == "search" else getattr(search, name)
    # optax and tqdm load only when learning is asked for.
    if name in {"learn", "LearnResult", "default_learn_space", "DEFAULT_LEARN_SPACE"}:
        import importlib

        return getattr(importlib.import_module(".gradient", __name__), name)
    raise AttributeError(name)
