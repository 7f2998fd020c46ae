"""Scores of one run on one series: ratios to the random walk, regrets, oracle, regime detection.

Host-side numpy, never traced. Conventions (the engine's): the forecast made
at step ``t`` (``prediction[t]``, ``kernel_predictions[t]``) is of
``obs[t + 1]``; a step is scored when ``warmup ≤ t ≤ T − 2`` and the target
and every forecast compared are finite (the same steps for every
forecaster, so ratios compare like with like). The random walk forecasts
``obs[t + 1]`` by the last valid observation up to ``t``.

Baselines built from the same kernel forecasts:

* **uniform**: the plain average of the kernels' forecasts;
* **EWA** with a fixed learning rate: weights ``∝ exp(−η L_{t,k})``,
  ``L_{t,k} = Σ_{s<t} (f_{s,k} − y_{s+1})² / σ²`` the cumulative squared error
  in units of ``σ²`` = the mean squared increment of the warm-up steps
  (known before scoring starts), ``η =`` :data:`EWA_LEARNING_RATE`;
  accumulated from step 0, so it is causal and untuned;
* **best single kernel** and **best convex combination in hindsight**
  (:func:`~fnpredict.evaluation.simplex.best_convex_weights`) on the scored
  steps: not achievable online, the targets for regret.
"""

import math

import numpy as np

from .simplex import best_convex_weights

__all__ = [
    "EWA_LEARNING_RATE", "DETECTION_WINDOW", "random_walk_forecasts", "uniform_forecasts",
    "ewa_forecasts", "detection_stats", "score",
]

#: η of the EWA baseline, per unit of normalized squared loss (one unit = the
#: random walk's typical squared error). Kernels differ by a few per cent of
#: that per step, so η = 0.5 moves the weights over tens to hundreds of steps:
#: neither frozen nor follow-the-leader at the first step. Fixed, not tuned.
EWA_LEARNING_RATE = 0.5

#: A regime alarm detects a change point c when it fires at c ≤ t < c + 50.
DETECTION_WINDOW = 50


def random_walk_forecasts(obs: np.ndarray) -> np.ndarray:
    """The last valid observation up to each step (NaN before the first)."""
    obs = np.asarray(obs, float)
    valid = np.isfinite(obs)
    index = np.where(valid, np.arange(obs.size), -1)
    index = np.maximum.accumulate(index)
    return np.where(index >= 0, obs[np.maximum(index, 0)], np.nan)


def uniform_forecasts(kernel_predictions: np.ndarray) -> np.ndarray:
    """The average of the kernels' forecasts at each step."""
    return np.mean(np.asarray(kernel_predictions, float), axis=1)


def _loss_scale(obs: np.ndarray, warmup: int) -> float:
    increments = np.diff(np.asarray(obs, float)[: max(warmup, 2) + 1])
    increments = increments[np.isfinite(increments)]
    scale = float(np.mean(increments**2)) if increments.size else 0.0
    return scale if scale > 0 else 1.0


def ewa_forecasts(kernel_predictions: np.ndarray, obs: np.ndarray, warmup: int,
                  learning_rate: float = EWA_LEARNING_RATE) -> tuple[np.ndarray, np.ndarray]:
    """Exponentially weighted average of the kernels with a fixed learning rate.

    Returns:
        ``(forecasts, weights)``: ``(time,)`` and ``(time, K)``; the weights at
        ``t`` use only the losses of forecasts already scored at ``t``
        (those made at ``s < t``).
    """
    P = np.asarray(kernel_predictions, float)
    obs = np.asarray(obs, float)
    losses = np.zeros_like(P)
    losses[:-1] = (P[:-1] - obs[1:, None]) ** 2 / _loss_scale(obs, warmup)
    losses = np.where(np.isfinite(losses), losses, 0.0)
    cumulative = np.zeros_like(P)
    cumulative[1:] = np.cumsum(losses[:-1], axis=0)
    logits = -learning_rate * cumulative
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=1, keepdims=True)
    return np.sum(weights * np.where(np.isfinite(P), P, 0.0), axis=1), weights


def detection_stats(alarms: np.ndarray, change_points: np.ndarray, start: int = 0,
                    window: int = DETECTION_WINDOW) -> dict:
    """Detection rate, mean delay and false alarms of a regime detector.

    A change point ``c ≥ start`` is detected by the first alarm at
    ``c ≤ t < c + window`` (delay ``t − c``); an alarm at ``t ≥ start`` is
    false when it is not within ``window`` steps after any change point.
    False alarms are per 1000 steps from ``start`` to the end.
    """
    alarms = np.flatnonzero(np.asarray(alarms, bool))
    changes = np.asarray(change_points, int)
    delays = []
    for c in changes[changes >= start]:
        hits = alarms[(alarms >= c) & (alarms < c + window)]
        if hits.size:
            delays.append(int(hits[0] - c))
    scored_alarms = alarms[alarms >= start]
    explained = np.zeros(scored_alarms.size, bool)
    for c in changes:
        explained |= (scored_alarms >= c) & (scored_alarms < c + window)
    n_changes = int(np.sum(changes >= start))
    return {
        "n_changes": n_changes,
        "n_detected": len(delays),
        "detection_rate": len(delays) / n_changes if n_changes else math.nan,
        "mean_delay": float(np.mean(delays)) if delays else math.nan,
        "n_false_alarms": int(np.sum(~explained)),
    }


def _mse(forecast, target, mask):
    return float(np.mean((forecast[mask] - target[mask]) ** 2)) if mask.any() else math.nan


def _mae(forecast, target, mask):
    return float(np.mean(np.abs(forecast[mask] - target[mask]))) if mask.any() else math.nan


def _ratio(a, b):
    return a / b if (b and math.isfinite(b)) else math.nan


def score(prediction: np.ndarray, kernel_predictions: np.ndarray, obs: np.ndarray,
          kernel_names: tuple[str, ...], warmup: int = 200, conditional_mean: np.ndarray | None = None,
          change_points: np.ndarray | None = None, alarms: np.ndarray | None = None,
          truth: np.ndarray | None = None) -> dict:
    """Every metric of one run on one series, as a flat dict of floats (NaN when undefined).

    Args:
        prediction: ``(time,)`` the ensemble's forecasts (made at t, of obs t+1).
        kernel_predictions: ``(time, K)`` the kernels' forecasts.
        obs: ``(time,)`` the observations (channel 0).
        kernel_names: the K kernel names (column order).
        warmup: first scored forecast step.
        conditional_mean: ``(time,)`` ``E[obs_t | obs_{<t}]`` when known (synthetic).
        change_points: steps whose regime differs from the previous one, when known.
        alarms: ``(time,)`` the regime detector's alarms (``regime_change_detected``).
        truth: ``(time,)`` clean values to score against when ``obs`` is
            corrupted (bad ticks); the baselines still see only ``obs``.

    Returns:
        Keys: ``mse``, ``mae``, ``rw_mse``, ``mse_ratio_rw``, ``mae_ratio_rw``,
        ``kernel_mse_ratio_rw/<name>``, ``best_kernel`` (its column),
        ``regret_best_kernel`` (MSE difference) and ``regret_ratio_best_kernel``
        (MSE ratio), ``convex_mse``, ``convex_weight/<name>``,
        ``regret_convex``, ``regret_ratio_convex``, ``ewa_mse_ratio_rw``,
        ``uniform_mse_ratio_rw``, ``mse_ratio_best_baseline`` (to the
        minimum of best kernel, EWA, uniform), ``mse_ratio_oracle`` (NaN when
        the truth is unknown), ``n_scored``; with change points also the
        :func:`detection_stats` keys and ``false_alarms_per_1000``.
    """
    obs = np.asarray(obs, float)
    prediction = np.asarray(prediction, float)
    P = np.asarray(kernel_predictions, float)
    T = obs.size
    rw = random_walk_forecasts(obs)
    target = np.full(T, np.nan)
    target[:-1] = (obs if truth is None else np.asarray(truth, float))[1:]
    scored = np.arange(T) >= warmup
    mask = scored & np.isfinite(target) & np.isfinite(prediction) & np.isfinite(rw) & np.all(np.isfinite(P), axis=1)
    ewa, _ = ewa_forecasts(P, obs, warmup)
    uniform = uniform_forecasts(P)
    out = {"n_scored": int(mask.sum())}
    out["mse"] = _mse(prediction, target, mask)
    out["mae"] = _mae(prediction, target, mask)
    out["rw_mse"] = _mse(rw, target, mask)
    out["rw_mae"] = _mae(rw, target, mask)
    out["mse_ratio_rw"] = _ratio(out["mse"], out["rw_mse"])
    out["mae_ratio_rw"] = _ratio(out["mae"], out["rw_mae"])
    kernel_mse = [_mse(P[:, k], target, mask) for k in range(P.shape[1])]
    for name, value in zip(kernel_names, kernel_mse):
        out[f"kernel_mse_ratio_rw/{name}"] = _ratio(value, out["rw_mse"])
    best = int(np.nanargmin(kernel_mse)) if mask.any() else -1
    best_mse = kernel_mse[best] if best >= 0 else math.nan
    out["best_kernel"] = best
    out["best_kernel_mse"] = best_mse
    out["regret_best_kernel"] = out["mse"] - best_mse
    out["regret_ratio_best_kernel"] = _ratio(out["mse"], best_mse)
    if mask.any():
        weights, convex_mse = best_convex_weights(P[mask], target[mask], reference=rw[mask])
    else:
        weights, convex_mse = np.full(P.shape[1], np.nan), math.nan
    out["convex_mse"] = convex_mse
    for name, w in zip(kernel_names, weights):
        out[f"convex_weight/{name}"] = float(w)
    out["regret_convex"] = out["mse"] - convex_mse
    out["regret_ratio_convex"] = _ratio(out["mse"], convex_mse)
    out["ewa_mse_ratio_rw"] = _ratio(_mse(ewa, target, mask), out["rw_mse"])
    out["uniform_mse_ratio_rw"] = _ratio(_mse(uniform, target, mask), out["rw_mse"])
    baseline = min(best_mse, _mse(ewa, target, mask), _mse(uniform, target, mask))
    out["mse_ratio_best_baseline"] = _ratio(out["mse"], baseline)
    out["mse_ratio_oracle"] = math.nan
    if conditional_mean is not None:
        oracle = np.full(T, np.nan)
        oracle[:-1] = np.asarray(conditional_mean, float)[1:]
        oracle_mask = mask & np.isfinite(oracle)
        out["mse_ratio_oracle"] = _ratio(_mse(prediction, target, oracle_mask), _mse(oracle, target, oracle_mask))
    if change_points is not None and alarms is not None:
        stats = detection_stats(alarms, change_points, start=warmup)
        out.update(stats)
        out["false_alarms_per_1000"] = 1000.0 * stats["n_false_alarms"] / max(T - warmup, 1)
    return out
