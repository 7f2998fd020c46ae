"""Hyperparameter search with Optuna's TPE, evaluated as vmapped populations.

Optuna proposes ``batch_size`` trials at a time (``study.ask``); they are
stacked into one :class:`Hyperparams` population and scored together by
:func:`walk_forward` in one compiled program, then told back. The objective
is the mean over windows of MSE / random-walk MSE (scale-free, < 1 is better
than the random walk). Trials spread over processes or hosts by giving every
process the same ``storage`` (an SQLite or journal file on one machine,
PostgreSQL beyond).
"""

import math

import jax.numpy as jnp
import numpy as np
import optuna
from tqdm.auto import tqdm

from ..config import Hyperparams, PredictorConfig
from .walkforward import make_windows, walk_forward

#: name -> (low, high, log scale)
DEFAULT_SEARCH_SPACE: dict[str, tuple[float, float, bool]] = {
    "jko_tau": (0.05, 5.0, True),
    "sinkhorn_epsilon": (0.01, 0.5, True),
    "cusum_h": (3.0, 20.0, False),
    "cusum_k": (0.1, 1.5, False),
    "error_alpha": (0.005, 0.2, True),
    "huber_delta_scale": (0.5, 3.0, False),
    "rls_forgetting": (0.95, 0.9995, False),
    "rls_ridge": (0.01, 100.0, True),
}


def default_search_space() -> dict[str, tuple[float, float, bool]]:
    """A copy of the default search space (name -> (low, high, log))."""
    return dict(DEFAULT_SEARCH_SPACE)


def _validate_space(space):
    spec = Hyperparams.spec()
    for name, (low, high, _log) in space.items():
        if name not in spec:
            raise ValueError(f"search space: unknown hyperparameter {name!r}; known: {sorted(spec)}")
        if not low < high:
            raise ValueError(f"search space: {name} needs low < high, got ({low}, {high})")
        Hyperparams(**{name: low}), Hyperparams(**{name: high})  # range check names the field


def tune(
    config: PredictorConfig,
    data,
    key,
    n_trials: int = 16,
    batch_size: int = 4,
    n_windows: int = 4,
    train: int | None = None,
    search_space: dict | None = None,
    storage: str | None = None,
    study_name: str = "fnpredict",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Tune the hyperparameters by walk-forward MSE ratio with Optuna TPE.

    Returns a dict: ``best_params``, ``best_value``, ``n_trials``, ``trials``
    (params and value of each), ``study_name``, ``storage``.
    """
    if n_trials < 1 or batch_size < 1:
        raise ValueError(f"n_trials and batch_size must be >= 1, got {n_trials}, {batch_size}")
    space = default_search_space() if search_space is None else dict(search_space)
    _validate_space(space)
    make_windows(data, n_windows, train)  # shape errors before any trial starts
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed),
        storage=storage, study_name=study_name, load_if_exists=storage is not None,
    )
    defaults = {name: float(np.asarray(getattr(Hyperparams(), name))) for name in Hyperparams.spec()}
    bar = tqdm(total=n_trials, desc="tune", unit="trial", disable=not progress, leave=False)
    done = 0
    while done < n_trials:
        count = min(batch_size, n_trials - done)
        trials = [study.ask() for _ in range(count)]
        members = []
        for trial in trials:
            values = dict(defaults)
            for name, (low, high, log) in space.items():
                values[name] = trial.suggest_float(name, low, high, log=log)
            members.append(values)
        # Pad to a fixed population size so every batch reuses one compilation.
        members += [members[-1]] * (batch_size - count)
        population = Hyperparams(**{
            name: jnp.asarray([m[name] for m in members], config.jnp_dtype) for name in defaults
        })
        result = walk_forward(config, data, key, population, n_windows=n_windows, train=train, population=True)
        objective = np.asarray(jnp.mean(result.mse_ratio, axis=-1))
        for trial, value in zip(trials, objective[:count]):
            if math.isfinite(float(value)):
                study.tell(trial, float(value))
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
        done += count
        bar.update(count)
    bar.close()
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError("tune: every trial failed (non-finite objective)")
    return {
        "best_params": dict(study.best_params),
        "best_value": float(study.best_value),
        "n_trials": len(study.trials),
        "trials": [{"number": t.number, "params": t.params, "value": t.value} for t in completed],
        "study_name": study_name,
        "storage": storage,
    }


__all__ = ["tune", "default_search_space", "DEFAULT_SEARCH_SPACE"]
