"""Lab outputs: the printed table, ``evaluation.csv``, ``evaluation.json``, ``evaluation.png``.

Host-side only (matplotlib with the Agg backend, never traced).
"""

import csv
import json
import math
import os

import numpy as np

from .lab import LabResult, error_curve
from .variants import DEFAULT_LABEL, grid

__all__ = ["TABLE_COLUMNS", "summary_rows", "format_table", "write_csv", "write_json", "write_png", "write_all"]

#: Columns of the printed table (header, row key, format).
TABLE_COLUMNS = (
    ("variant", "variant", "s"), ("series", "series", "s"),
    ("MSE/RW", "mse_ratio_rw", ".4f"), ("MAE/RW", "mae_ratio_rw", ".4f"),
    ("/best k", "regret_ratio_best_kernel", ".4f"), ("/convex", "regret_ratio_convex", ".4f"),
    ("EWA/RW", "ewa_mse_ratio_rw", ".4f"), ("unif/RW", "uniform_mse_ratio_rw", ".4f"),
    ("/oracle", "mse_ratio_oracle", ".4f"), ("detect", "detection_rate", ".2f"),
    ("delay", "mean_delay", ".1f"), ("FA/1k", "false_alarms_per_1000", ".2f"),
    # Intervals (fnpredict.evaluation.lab.interval_row): central 90 % coverage,
    # pinball relative to the rolling-σ Gaussian and to the uncalibrated
    # mixture (below 1: fnpredict better), share of green 250-step VaR windows.
    ("cov90", "coverage_90", ".3f"), ("pin/G20", "pinball_ratio_gaussian", ".4f"),
    ("pin/raw", "pinball_ratio_uncalibrated", ".4f"), ("VaRgrn", "var_green", ".2f"),
    ("s", "seconds", ".0f"),
)


def summary_rows(result: LabResult) -> list:
    """Rows worth printing: family means, and the series of single-member families."""
    means = {r["family"] for r in result.family_rows}
    return [r for r in result.rows if r["family"] not in means] + result.family_rows


def _cell(value, fmt):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value, fmt) if fmt != "s" else str(value)


def format_table(rows: list, columns=TABLE_COLUMNS) -> str:
    """A fixed-width text table of ``rows``."""
    cells = [[header for header, _, _ in columns]]
    cells += [[_cell(r.get(key), fmt) for _, key, fmt in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(rows: list, columns) -> str:
    """A GitHub-flavoured markdown table of ``rows`` (``columns`` as in :data:`TABLE_COLUMNS`)."""
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |",
             "|" + "|".join("---" if f == "s" else "---:" for _, _, f in columns) + "|"]
    lines += ["| " + " | ".join(_cell(r.get(k), f) for _, k, f in columns) + " |" for r in rows]
    return "\n".join(lines)


def _clean(value):
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_csv(path, result: LabResult) -> None:
    """One row per variant × series, then the per-family means (empty cell = undefined)."""
    rows = result.rows + result.family_rows
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if _clean(r.get(k)) is None else _clean(r.get(k))) for k in fields})


def write_json(path, result: LabResult, extra: dict | None = None) -> None:
    """``{"warmup", "seconds", "variants", "rows", "family_means", ...extra}``; NaN as null."""
    payload = {
        "warmup": result.warmup,
        "seconds": result.seconds,
        "variants": [{"label": v.label, "config": v.config.describe(), "tags": list(v.tags)} for v in result.variants],
        "rows": [{k: _clean(v) for k, v in r.items()} for r in result.rows],
        "family_means": [{k: _clean(v) for k, v in r.items()} for r in result.family_rows],
        **(extra or {}),
    }
    with open(path, "w") as handle:
        json.dump(payload, handle, indent=1, sort_keys=False)


def main_variants(result: LabResult, limit: int = 8) -> list[str]:
    """The labels plotted: those of the CLI's default grid present in the result, else the first ``limit``."""
    present = [v.label for v in result.variants]
    preferred = [v.label for v in grid("default") if v.label in present]
    chosen = preferred or present
    if DEFAULT_LABEL in chosen:
        chosen = [DEFAULT_LABEL] + [c for c in chosen if c != DEFAULT_LABEL]
    return chosen[:limit]


def write_png(path, result: LabResult, labels: list[str] | None = None) -> None:
    """Cumulative squared-error difference to the random walk, one panel per family (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or main_variants(result)
    families: dict[str, list] = {}
    for s in result.series.values():
        families.setdefault(s.family, []).append(s)
    n = len(families)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax, (family, members) in zip(axes.flat, families.items()):
        for label in labels:
            if any((label, s.name) not in result.runs for s in members):
                continue  # a variant not run on this family (e.g. merged results)
            curves = [error_curve(result.runs[(label, s.name)], s.values, result.warmup, s.truth) for s in members]
            length = min(c.size for c in curves)
            curve = np.mean([c[:length] for c in curves], axis=0)
            style = {"lw": 2.0, "color": "k"} if label == DEFAULT_LABEL else {"lw": 1.0}
            ax.plot(np.arange(length) + result.warmup, curve, label=label, **style)
        ax.axhline(0.0, color="grey", lw=0.6, ls=":")
        suffix = f" (mean of {len(members)} seeds)" if len(members) > 1 else ""
        ax.set_title(f"{family}{suffix}", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("Σ (e² − e²_RW)  (< 0: beats RW)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    handles, names = max((ax.get_legend_handles_labels() for ax in axes.flat[:n]), key=lambda hn: len(hn[1]))
    # Below the panels, as many columns as fit (~1.3 inch per label).
    ncol = max(1, min(len(names), int(5.2 * cols / 1.3)))
    legend_rows = math.ceil(len(names) / ncol)
    fig.legend(handles, names, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.suptitle("cumulative squared-error difference to the random walk", fontsize=10)
    bottom = (0.2 * legend_rows + 0.1) / (3.6 * rows)  # a legend row is ~0.2 inch at 8 pt
    fig.tight_layout(rect=(0, bottom, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(folder, result: LabResult, extra: dict | None = None) -> dict:
    """Write the CSV, JSON and PNG into ``folder``; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    paths = {name: os.path.join(folder, f"evaluation.{name}") for name in ("csv", "json", "png")}
    write_csv(paths["csv"], result)
    write_json(paths["json"], result, extra)
    write_png(paths["png"], result)
    return paths
