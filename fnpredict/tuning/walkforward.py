"""Walk-forward validation: every window is one lane of a ``vmap``.

A series is cut into ``n_windows`` equal windows; in each, the predictor is
warmed up on the first ``train`` steps (``fit``) and scored on the rest
(``predict``): the forecast made at step t against the observation at t+1,
and the random walk (last observation) as the baseline. All windows (and, for
a population, all hyperparameter members) run in one compiled program.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .. import engine
from ..config import Hyperparams, PredictorConfig


class WalkForwardResult(eqx.Module):
    """Scores per window; ``batch`` is ``(windows,)`` or ``(population, windows)``.

    Attributes:
        mse, mae: the ensemble's one-step errors on each test segment.
        random_walk_mse: the last-value forecast's MSE on the same steps.
        mse_ratio: ``mse / random_walk_mse`` (scale-free; < 1 beats the random walk).
        n_scored: steps scored per window.
    """

    mse: Float[Array, "*batch"]
    mae: Float[Array, "*batch"]
    random_walk_mse: Float[Array, "*batch"]
    mse_ratio: Float[Array, "*batch"]
    n_scored: Int[Array, "*batch"]


def make_windows(data, n_windows: int, train: int | None = None) -> tuple[np.ndarray, int]:
    """Cut ``data`` ((time,) or (time, channels)) into ``n_windows`` equal, consecutive windows.

    Returns the stacked windows ``(windows, length[, channels])`` and ``train``
    (default: half a window).
    """
    data = np.asarray(data, dtype=np.float64)
    if n_windows < 1:
        raise ValueError(f"n_windows must be >= 1, got {n_windows}")
    length = data.shape[0] // n_windows
    train = length // 2 if train is None else train
    if length < 4 or not (1 <= train < length - 1):
        raise ValueError(
            f"{data.shape[0]} steps in {n_windows} windows leaves {length} per window; "
            f"train={train} must be in [1, {length - 2}]"
        )
    windows = np.stack([data[i * length : (i + 1) * length] for i in range(n_windows)])
    return windows, train


def _score_window(config: PredictorConfig, train: int, hyperparams, window, key, checkpoint: int = 0):
    # ``checkpoint``: rematerialisation of the scans for gradients (engine.scan).
    state = engine.init(config, None, hyperparams)
    keys = jax.random.split(key, window.shape[0])
    state, _ = engine.scan(state, window[:train], keys[:train], keep_outputs=False, checkpoint=checkpoint)
    _, outputs = engine.scan(state, window[train:], keys[train:], checkpoint=checkpoint)
    target_series = window[train:] if window.ndim == 1 else window[train:, 0]
    forecast = outputs.prediction[:-1]
    target = target_series[1:]
    last = target_series[:-1]
    mask = jnp.isfinite(target) & jnp.isfinite(last) & jnp.isfinite(forecast)
    n = jnp.maximum(jnp.sum(mask), 1).astype(forecast.dtype)
    error = jnp.where(mask, forecast - target, 0.0)
    rw_error = jnp.where(mask, last - target, 0.0)
    mse = jnp.sum(error**2) / n
    rw_mse = jnp.sum(rw_error**2) / n
    return WalkForwardResult(
        mse=mse,
        mae=jnp.sum(jnp.abs(error)) / n,
        random_walk_mse=rw_mse,
        mse_ratio=mse / jnp.maximum(rw_mse, jnp.finfo(mse.dtype).tiny),
        n_scored=jnp.sum(mask).astype(jnp.int32),
    )


@functools.partial(jax.jit, static_argnums=(0, 1))
def _score_windows(config, train, hyperparams, windows, key):
    keys = jax.random.split(key, windows.shape[0])
    return jax.vmap(lambda w, k: _score_window(config, train, hyperparams, w, k))(windows, keys)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _score_population(config, train, population, windows, key):
    keys = jax.random.split(key, windows.shape[0])
    def per_member(hp):
        return jax.vmap(lambda w, k: _score_window(config, train, hp, w, k))(windows, keys)

    return jax.vmap(per_member)(population)


def walk_forward(
    config: PredictorConfig,
    data,
    key: PRNGKeyArray,
    hyperparams: Hyperparams | None = None,
    n_windows: int = 4,
    train: int | None = None,
    population: bool = False,
) -> WalkForwardResult:
    """Score the predictor on ``n_windows`` walk-forward windows of ``data``.

    Args:
        config: the predictor config.
        data: ``(time,)`` or ``(time, channels)`` series.
        key: PRNG key; window i uses ``split(key, n_windows)[i]``.
        hyperparams: default ``Hyperparams()``; with ``population=True`` its
            leaves carry a leading population axis and every member is scored
            on every window in the same compiled program.
        n_windows: number of equal consecutive windows.
        train: warm-up steps per window (default half a window).

    Returns:
        :class:`WalkForwardResult` with a ``windows`` axis (and a leading
        population axis when ``population``).
    """
    windows, train = make_windows(data, n_windows, train)
    if hyperparams is None:
        hyperparams = Hyperparams(dtype=config.jnp_dtype)
    hyperparams = hyperparams.validate()
    windows = jnp.asarray(windows, config.jnp_dtype)
    if population:
        return _score_population(config, train, hyperparams, windows, key)
    return _score_windows(config, train, hyperparams, windows, key)
