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


def write_report(path: str | os.PathLike, result: BacktestResult, title: str = "fnpredict backtest") -> None:
    """Four panels: series and forecast; stacked weights; Hölder exponent vs its
    threshold with circuit-breaker trips; CUSUM statistic vs its adaptive
    threshold with regime alarms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, mdates = _x_axis(result.labels)
    telemetry = result.telemetry
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["write_report"]
