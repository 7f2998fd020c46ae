r"""Scores of predictive quantiles: coverage, pinball loss, width, VaR exceptions; baselines.

Host-side numpy, never traced. Conventions (the engine's): ``quantiles[t]``
(shape ``(time, levels)``) are issued at step t for ``obs[t + 1]``; a step is
scored when ``warmup <= t <= T - 2`` and the target and every quantile
compared are finite.

* **coverage** at level p: the frequency of :math:`y_{t+1} \le q_{t,p}`
  (nominal p); **central coverage** of a pair (p, 1 - p): the frequency of
  :math:`q_{t,p} \le y_{t+1} \le q_{t,1-p}` (nominal 1 - 2p).
* **pinball loss** :math:`\rho_p(u) = u\,(p - \mathbb 1\{u < 0\})`,
  u = y - q, averaged over steps and levels (a proper scoring rule for
  quantiles: its expectation is minimised by the true conditional quantile).
* **VaR exceptions**: the one-day 99 % VaR is the 0.01 quantile; an
  exception is :math:`y_{t+1} < q_{t,0.01}`. Basel's traffic light counts
  them over 250 days: green 0-4, yellow 5-9, red >= 10 (BCBS, "Supervisory
  framework for the use of backtesting", 1996, Table 2). Windows are the
  trailing 250 scored days at every day (rolling) and, separately, the
  consecutive non-overlapping blocks.

Baselines:

* :func:`rolling_gaussian_quantiles`: the random walk's location (the last
  valid observation) plus a Gaussian with the standard deviation of the last
  ``window`` real increments.
"""

import math
from statistics import NormalDist

import numpy as np

__all__ = [
    "BASEL_WINDOW", "pinball", "score_quantiles", "rolling_gaussian_quantiles", "var_windows",
    "traffic_light",
]

#: Days per Basel backtesting window.
BASEL_WINDOW = 250


def pinball(target: np.ndarray, quantiles: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """ρ_p(y - q) per step and level: ``(time, levels)``."""
    u = target[:, None] - quantiles
    return u * (levels[None, :] - (u < 0.0))


def traffic_light(exceptions: int) -> str:
    """Basel's zone for a count of 99 % VaR exceptions in 250 days."""
    return "green" if exceptions <= 4 else ("yellow" if exceptions <= 9 else "red")


def var_windows(exceptions: np.ndarray, window: int = BASEL_WINDOW) -> dict:
    """Exception counts per 250-day window (rolling and non-overlapping) and the share in each zone.

    Args:
        exceptions: ``(n,)`` booleans over the scored days, in order.
    """
    exceptions = np.asarray(exceptions, dtype=np.int64)
    n = len(exceptions)
    if n < window:
        return {"rolling_windows": 0, "rolling_green": math.nan, "rolling_yellow": math.nan,
                "rolling_red": math.nan, "blocks": [], "blocks_green": math.nan, "max_exceptions": math.nan}
    cumulative = np.concatenate([[0], np.cumsum(exceptions)])
    rolling = cumulative[window:] - cumulative[:-window]
    blocks = [int(exceptions[i:i + window].sum()) for i in range(0, n - window + 1, window)]
    return {
        "rolling_windows": int(len(rolling)),
        "rolling_green": float(np.mean(rolling <= 4)),
        "rolling_yellow": float(np.mean((rolling >= 5) & (rolling <= 9))),
        "rolling_red": float(np.mean(rolling >= 10)),
        "blocks": blocks,
        "blocks_green": float(np.mean(np.asarray(blocks) <= 4)),
        "max_exceptions": int(rolling.max()),
    }


def _pairs(levels: np.ndarray) -> list[tuple[int, int]]:
    """Index pairs (i, j) with levels[i] + levels[j] = 1, i < j (central intervals)."""
    pairs = []
    for i, p in enumerate(levels):
        for j in range(i + 1, len(levels)):
            if abs(p + levels[j] - 1.0) < 1e-9 and p < 0.5:
                pairs.append((i, j))
    return pairs


def score_quantiles(
    obs: np.ndarray, quantiles: np.ndarray, levels, warmup: int = 0, labels=None, mask=None
) -> dict:
    """Coverage per level and per central interval, pinball loss, width, VaR windows.

    Args:
        obs: ``(time,)`` observations (NaN = missing).
        quantiles: ``(time, levels)``, row t for obs t + 1.
        levels: the nominal levels.
        warmup: first scored step.
        labels: optional ``(time,)`` dates (``YYYY-…``): adds ``central_90_by_year``.
        mask: optional ``(time - 1,)`` extra condition on the scored steps (so
            several forecasters are scored on the same steps).

    Returns:
        A JSON-able dict: ``n``, ``coverage`` {level: freq}, ``central``
        {"90": {coverage, width}} per symmetric pair, ``pinball`` (mean over
        steps and levels), ``pinball_by_level``, ``var`` (exception rate and
        :func:`var_windows`) when 0.01 is a level.
    """
    levels = np.asarray(levels, dtype=np.float64)
    obs = np.asarray(obs, dtype=np.float64)
    quantiles = np.asarray(quantiles, dtype=np.float64)
    target = obs[1:]
    issued = quantiles[:-1]
    scored = (np.arange(len(target)) >= warmup) & np.isfinite(target) & np.all(np.isfinite(issued), axis=1)
    if mask is not None:
        scored &= np.asarray(mask, bool)
    y, q = target[scored], issued[scored]
    out = {"n": int(scored.sum())}
    if out["n"] == 0:
        return out
    out["coverage"] = {f"{p:g}": float(np.mean(y <= q[:, i])) for i, p in enumerate(levels)}
    loss = pinball(y, q, levels)
    out["pinball"] = float(loss.mean())
    out["pinball_by_level"] = {f"{p:g}": float(loss[:, i].mean()) for i, p in enumerate(levels)}
    central = {}
    for i, j in _pairs(levels):
        name = f"{round(100 * (levels[j] - levels[i])):d}"
        inside = (y >= q[:, i]) & (y <= q[:, j])
        central[name] = {"coverage": float(inside.mean()), "width": float(np.mean(q[:, j] - q[:, i]))}
        if labels is not None:
            years = np.asarray([str(label)[:4] for label in np.asarray(labels)[:-1][scored]])
            central[name]["by_year"] = {
                year: float(inside[years == year].mean()) for year in sorted(set(years))
            }
    out["central"] = central
    var_index = np.flatnonzero(np.abs(levels - 0.01) < 1e-12)
    if var_index.size:
        exceptions = y < q[:, var_index[0]]
        out["var"] = {"exception_rate": float(exceptions.mean()), **var_windows(exceptions)}
    return out


def rolling_gaussian_quantiles(obs: np.ndarray, levels, window: int) -> np.ndarray:
    """The rolling-σ Gaussian baseline's quantiles ``(time, levels)`` for obs t + 1.

    Location: the last valid observation up to t (the random walk). Scale:
    the sample standard deviation of the real increments among the last
    ``window`` steps (NaN with fewer than 2).
    """
    obs = np.asarray(obs, dtype=np.float64)
    levels = np.asarray(levels, dtype=np.float64)
    last = obs.copy()
    for t in range(1, len(last)):
        if not np.isfinite(last[t]):
            last[t] = last[t - 1]
    increments = np.diff(obs, prepend=np.nan)
    real = np.isfinite(increments)
    values = np.where(real, increments, 0.0)
    c1 = np.concatenate([[0.0], np.cumsum(values)])
    c2 = np.concatenate([[0.0], np.cumsum(values**2)])
    cn = np.concatenate([[0], np.cumsum(real)])
    t = np.arange(len(obs)) + 1
    start = np.maximum(t - window, 0)
    n = cn[t] - cn[start]
    s1, s2 = c1[t] - c1[start], c2[t] - c2[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = (s2 - s1**2 / n) / (n - 1)
    sigma = np.where(n >= 2, np.sqrt(np.maximum(variance, 0.0)), np.nan)
    return last[:, None] + sigma[:, None] * np.asarray([NormalDist().inv_cdf(p) for p in levels])[None, :]
