"""Walk-forward validation (vmapped windows) and Optuna TPE tuning."""

from .walkforward import WalkForwardResult, make_windows, walk_forward

__all__ = ["WalkForwardResult", "make_windows", "walk_forward", "tune"]


def __getattr__(name):
    # optuna loads only when tuning is asked for.
    if name in {"tune", "search", "default_search_space"}:
        import importlib

        search = importlib.import_module(".search", __name__)
        return search if name == "search" else getattr(search, name)
    raise AttributeError(name)
