"""The backtest's PNG report (matplotlib, host side, headless)."""

import os

import numpy as np

from .backtest import BacktestResult


def _x_axis(labels):
    import matplotlib.dates as mdates

    try:
        dates = np.array(labels, dtype="datetime64[D]")
        return dates, mdates
    except ValueError:
        return np.arange(len(labels)), None


#: Steps shown in the fan chart (the last ones of the run) and the window of
#: the rolling coverage: one trading year, Basel's backtesting window.
FAN_STEPS = 250
COVERAGE_WINDOW = 250


def _central_pair(levels):
    """Indices of the widest symmetric pair of levels (p, 1 - p), or None."""
    for i, p in enumerate(levels):
        for j in range(len(levels) - 1, i, -1):
            if abs(p + levels[j] - 1.0) < 1e-9:
                return i, j
    return None


def _rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the finite entries of the last ``window`` (NaN until ``window`` are seen)."""
    finite = np.isfinite(values)
    c = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    n = np.concatenate([[0], np.cumsum(finite)])
    t = np.arange(1, len(values) + 1)
    start = np.maximum(t - window, 0)
    count = n[t] - n[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count >= window // 2, (c[t] - c[start]) / count, np.nan)


def _interval_panels(axes, x, result: BacktestResult):
    """The fan chart of the last FAN_STEPS steps and the rolling coverage of the central interval."""
    from .backtest import interval_forecasters

    levels = result.quantile_levels
    q = result.quantiles
    start = max(len(x) - FAN_STEPS, 1)
    ax = axes[0]
    # Row t forecasts obs t+1: drawn at t+1.
    xs = x[start:]
    issued = q[start - 1:-1]
    n_levels = len(levels)
    for i in range(n_levels // 2):
        j = n_levels - 1 - i
        ax.fill_between(xs, issued[:, i], issued[:, j], color="tab:blue", alpha=0.15 + 0.1 * i, lw=0,
                        label=f"{levels[i]:g}–{levels[j]:g}")
    ax.plot(xs, result.obs[start:], lw=0.9, color="black", label="observation")
    pair = _central_pair(levels)
    if pair is not None and pair[0] == 0:
        below = result.obs[start:] < issued[:, 0]
        if np.any(below):
            ax.scatter(xs[below], result.obs[start:][below], s=12, color="tab:red", zorder=3,
                       label=f"below the {levels[0]:g} quantile (VaR exception)")
    ax.set_ylabel("fan chart")
    ax.legend(loc="upper left", fontsize=7, ncol=4)

    ax = axes[1]
    pair = _central_pair(levels)
    if pair is not None:
        i, j = pair
        nominal = levels[j] - levels[i]
        target = result.obs[1:]
        for name, quantiles in interval_forecasters(result).items():
            inside = ((target >= quantiles[:-1, i]) & (target <= quantiles[:-1, j])).astype(float)
            inside[~(np.isfinite(target) & np.all(np.isfinite(quantiles[:-1]), axis=1))] = np.nan
            inside[: result.config.buffer_size] = np.nan
            ax.plot(x[1:], _rolling_mean(inside, COVERAGE_WINDOW), lw=0.8, label=name)
        ax.axhline(nominal, color="black", lw=1, ls="--", label=f"nominal {nominal:.0%}")
        ax.set_ylabel(f"{COVERAGE_WINDOW}-step coverage")
        ax.legend(loc="lower left", fontsize=7, ncol=5)


def write_report(path: str | os.PathLike, result: BacktestResult, title: str = "fnpredict backtest") -> None:
    """Four panels: series and forecast; stacked weights; Hölder exponent vs its
    threshold with circuit-breaker trips; CUSUM statistic vs its adaptive
    threshold with regime alarms. With intervals on, two more: a fan chart of
    the quantiles over the last 250 steps (its own time axis) and the rolling
    250-step coverage of the central interval for fnpredict, the
    uncalibrated mixture and the rolling-σ Gaussian baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, mdates = _x_axis(result.labels)
    telemetry = result.telemetry
    intervals = result.quantiles.shape[1] > 0
    if intervals:
        fig = plt.figure(figsize=(13, 18))
        grid = fig.add_gridspec(6, 1, height_ratios=[3, 1.6, 1.4, 1.4, 1.6, 2.2])
        first = fig.add_subplot(grid[0])
        axes = [first] + [fig.add_subplot(grid[k], sharex=first) for k in (1, 2, 3, 4)]
        fan = fig.add_subplot(grid[5])
        _interval_panels([fan, axes[4]], x, result)
        for ax in axes[:-1]:
            ax.tick_params(labelbottom=False)
    else:
        fig, axes = plt.subplots(4, 1, figsize=(13, 12), sharex=True,
                                 gridspec_kw={"height_ratios": [3, 1.6, 1.4, 1.4]})

    ax = axes[0]
    # The forecast made at t targets t+1: plot it at t+1 so the lines compare.
    ax.plot(x, result.obs, lw=0.8, color="black", label="observation")
    ax.plot(x[1:], result.prediction[:-1], lw=0.8, color="tab:orange", alpha=0.85, label="one-step forecast")
    alarms = telemetry["regime_change_detected"]
    if np.any(alarms):
        ax.scatter(x[alarms], result.obs[alarms], s=14, color="tab:red", zorder=3, label="regime alarm")
    ax.set_ylabel("level")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)

    ax = axes[1]
    ax.stackplot(x, result.weights.T, labels=list(result.kernel_names), alpha=0.85)
    ax.set_ylim(0, 1)
    ax.set_ylabel("kernel weights")
    ax.legend(loc="upper left", fontsize=8, ncol=len(result.kernel_names))

    ax = axes[2]
    threshold = result.hyperparams["holder_threshold"]
    ax.plot(x, telemetry["holder_exponent"], lw=0.7, color="tab:blue", label="Hölder h_min (WTMM)")
    ax.axhline(threshold, color="tab:red", lw=1, ls="--", label=f"threshold {threshold:g}")
    trips = telemetry["emergency_mode"]
    if np.any(trips):
        ax.scatter(x[trips], telemetry["holder_exponent"][trips], s=6, color="tab:red", zorder=3,
                   label="circuit breaker")
    ax.set_ylabel("h_min")
    ax.legend(loc="upper left", fontsize=8)

    ax = axes[3]
    ax.plot(x, telemetry["cusum_drift"], lw=0.7, color="tab:purple", label="CUSUM G⁺")
    ax.plot(x, telemetry["adaptive_threshold"], lw=0.8, color="tab:red", ls="--", label="adaptive threshold")
    ax.set_ylabel("CUSUM")
    ax.legend(loc="upper left", fontsize=8)
    if mdates is not None:
        axes[-1].xaxis.set_major_locator(mdates.YearLocator(2))
        axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%Y"))
        if intervals:
            fan.xaxis.set_major_locator(mdates.MonthLocator())
            fan.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["write_report"]
