"""Tuned hyperparameters as a JSON file: written by ``fnpredict tune``, read by
``fnpredict backtest --params`` and ``fnpredict stream --params``.

Format (``"format": "fnpredict-params/1"``)::

    {"format": "fnpredict-params/1",
     "hyperparams": {"jko_tau": 0.8, ...},        # names of fp.Hyperparams
     "objective": "mean walk-forward MSE ratio to the random walk",
     "value": 0.97, "study_name": "...", "n_trials": 16}

A plain ``{"name": value}`` object is accepted too.
"""

import json
import os
import tempfile

from ..config import Hyperparams

PARAMS_FORMAT = "fnpredict-params/1"


def write_params(path: str | os.PathLike, hyperparams: dict, **meta) -> None:
    """Write ``hyperparams`` (name -> float) and ``meta`` to ``path`` atomically."""
    payload = dict(meta, format=PARAMS_FORMAT, hyperparams={k: float(v) for k, v in hyperparams.items()})
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".params-", dir=directory)
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(temp, path)


def read_params(path: str | os.PathLike) -> dict[str, float]:
    """The hyperparameters of a params file, validated against :class:`Hyperparams`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, an unknown name, or a value out of range (the
            message names the field).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such params file: {path!r}")
    try:
        with open(path) as handle:
            payload = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a JSON params file: {error}") from error
    values = payload.get("hyperparams", payload) if isinstance(payload, dict) else None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object of hyperparameters")
    values = {k: v for k, v in values.items() if k != "format"}
    spec = Hyperparams.spec()
    unknown = sorted(set(values) - set(spec))
    if unknown:
        raise ValueError(f"{path}: unknown hyperparameter(s) {unknown}; known: {sorted(spec)}")
    values = {k: float(v) for k, v in values.items()}
    Hyperparams(**values)  # range check, names the field
    return values


def load_hyperparams(path: str | os.PathLike) -> Hyperparams:
    """:func:`read_params` as a :class:`Hyperparams` (defaults for names not in the file)."""
    return Hyperparams(**read_params(path))


__all__ = ["write_params", "read_params", "load_hyperparams", "PARAMS_FORMAT"]
