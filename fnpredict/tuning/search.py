"""Hyperparameter search with Optuna's TPE, evaluated as vmapped populations.

Optuna proposes ``batch_size`` trials at a time (``study.ask``); they are
stacked into one :class:`Hyperparams` population and scored together by
:func:`walk_forward` in one compiled program, then told back. The objective
is the mean over windows of MSE / random-walk MSE (scale-free, < 1 is better
than the random walk). Trials spread over processes or hosts by giving every
process the same ``storage``:

- a path (or ``journal:PATH``): an Optuna journal file, for workers on one
  machine (file locks, no server);
- an RDB URL (``sqlite:///tune.db``, ``postgresql://user@host/db``): for
  workers on several machines.

With shared storage every worker sends a heartbeat for the trials it runs
(every ``heartbeat`` seconds, kept as a trial system attribute, so journal
files, which have no heartbeat of Optuna's, and RDBs behave the same). A
trial whose heartbeat is older than ``3 × heartbeat`` (its worker was killed)
is marked FAIL by the next worker that looks (at start and after every
batch), and re-queued once with the same parameters (Optuna's
``RetryHeartbeatStaleTrialCallback``); a later ``ask`` of any worker runs it.
"""

import math
import os
import threading
import time
import warnings

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


#: Heartbeat seconds of a shared storage when none is given.
DEFAULT_HEARTBEAT = 10
_HEARTBEAT_ATTR = "fnpredict:heartbeat"


def _retry_callback():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)


#: Attempts at opening a relational storage whose schema another worker is creating.
_SCHEMA_ATTEMPTS = 8


def _rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """An ``RDBStorage``, retried while concurrent first starts race on its schema.

    Optuna creates its tables, its version row and its alembic stamp without a
    lock, so two workers started together on an empty database can both see no
    ``studies`` table and one fails with a duplicate table (or a duplicate key on
    the version row). The loser's retry finds the schema complete and only
    checks it; any other error, or a race lasting all attempts, is raised.
    """
    import sqlalchemy.exc

    kwargs = {"pool_pre_ping": True} if not url.startswith("sqlite") else None
    rng = np.random.default_rng()
    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except (sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.IntegrityError) as error:
            text = str(error).lower()
            racing = "already exists" in text or "duplicate" in text or "unique" in text
            if not racing or attempt == _SCHEMA_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * 2**attempt * (1 + rng.random()))  # jitter: the racers must not retry in step
    raise AssertionError("unreachable")


def make_storage(storage):
    """An Optuna storage from a URL or a journal path (``None`` stays in memory)."""
    if storage is None or isinstance(storage, optuna.storages.BaseStorage):
        return storage
    storage = os.fspath(storage)
    if "://" in storage and not storage.startswith("journal:"):
        result = _rdb_storage(storage)
    else:
        path = storage[len("journal:"):] if storage.startswith("journal:") else storage
        path = path[2:] if path.startswith("//") else path
        result = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    return result


def fail_stale_trials(study: optuna.Study, heartbeat: float | int = DEFAULT_HEARTBEAT) -> list[int]:
    """Fail, and re-queue once, the running trials whose worker stopped beating.

    A trial is stale when its last beat (or its start, if it never beat) is
    older than 3 × the storage's heartbeat. Failing is a state transition the
    storage makes atomically, so two workers cannot both fail (and retry) one
    trial. Returns the numbers of the trials this call failed.
    """
    storage = study._storage
    now = time.time()
    retry = _retry_callback()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        last = trial.system_attrs.get(_HEARTBEAT_ATTR)
        if last is None and trial.datetime_start is not None:
            last = trial.datetime_start.timestamp()
        if last is None or now - last <= 3 * heartbeat:
            continue
        try:
            if storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL):
                failed.append(trial.number)
                retry(study, storage.get_trial(trial._trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker failed it first
    return failed


def _beat(storage, trial_id) -> None:
    try:
        storage.set_trial_system_attr(trial_id, _HEARTBEAT_ATTR, time.time())
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # failed by another worker meanwhile; our tell will be refused too


class _Heartbeat:
    """Beats for this worker's running trials while a population is evaluated."""

    def __init__(self, storage, trial_ids, interval):
        self.storage, self.trial_ids = storage, list(trial_ids)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if self.trial_ids:
            self._thread = threading.Thread(target=self._run, name="tune-heartbeat", daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            for trial_id in self.trial_ids:
                _beat(self.storage, trial_id)

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


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
    heartbeat: int | None = None,
) -> dict:
    """Tune the hyperparameters by walk-forward MSE ratio with Optuna TPE.

    The objective is the mean over windows of MSE / random-walk MSE (lower
    is better, 1 = the random walk). This worker evaluates ``n_trials``
    trials; with a shared ``storage`` other workers add theirs to the same
    study, and re-queued trials of dead workers count among them.

    Args:
        heartbeat: seconds between heartbeats with a shared storage (default
            ``DEFAULT_HEARTBEAT``); a trial silent for 3 × that is failed and
            retried once.

    Returns a dict: ``best_params``, ``best_value``, ``n_trials`` (trials in
    the study), ``trials`` (number, params and value of each complete one),
    ``study_name``, ``storage``, ``objective``, ``failed_stale`` (numbers of
    the dead workers' trials this worker failed).
    """
    if n_trials < 1 or batch_size < 1:
        raise ValueError(f"n_trials and batch_size must be >= 1, got {n_trials}, {batch_size}")
    space = default_search_space() if search_space is None else dict(search_space)
    _validate_space(space)
    make_windows(data, n_windows, train)  # shape errors before any trial starts
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna_storage = make_storage(storage)
    heartbeat = DEFAULT_HEARTBEAT if heartbeat is None else heartbeat
    # Workers sharing a study must not propose the same startup trials: seed by process too.
    sampler_seed = seed if storage is None else int(np.random.SeedSequence([seed, os.getpid()]).generate_state(1)[0])
    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=sampler_seed),
        storage=optuna_storage, study_name=study_name, load_if_exists=storage is not None,
    )
    failed_stale = fail_stale_trials(study, heartbeat) if storage is not None else []
    defaults = {name: float(np.asarray(getattr(Hyperparams(), name))) for name in Hyperparams.spec()}
    bar = tqdm(total=n_trials, desc="tune", unit="trial", disable=not progress, leave=False)
    done = 0
    while done < n_trials:
        count = min(batch_size, n_trials - done)
        trials = []
        for _ in range(count):
            trials.append(study.ask())
            if optuna_storage is not None:
                _beat(optuna_storage, trials[-1]._trial_id)
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
        beats = [t._trial_id for t in trials] if storage is not None else []
        with _Heartbeat(optuna_storage, beats, heartbeat):
            result = walk_forward(config, data, key, population, n_windows=n_windows, train=train, population=True)
            objective = np.asarray(jnp.mean(result.mse_ratio, axis=-1))
        for trial, value in zip(trials, objective[:count]):
            try:
                if math.isfinite(float(value)):
                    study.tell(trial, float(value))
                else:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # judged stale by another worker meanwhile (and re-queued)
        done += count
        if storage is not None:
            failed_stale += fail_stale_trials(study, heartbeat)
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
        "storage": None if storage is None else str(storage),
        "objective": "mean walk-forward MSE ratio to the random walk",
        "failed_stale": failed_stale,
    }



__all__ = ["tune", "default_search_space", "DEFAULT_SEARCH_SPACE", "make_storage", "fail_stale_trials"]
