"""Bundled data and CSV loaders (host side, never traced).

``sp500_daily.csv``: S&P 500 daily adjusted closes, 1999-01-04 to 2018,
columns ``date,close`` (a copy of the project's shared data set).
"""

import csv
import math
import os
from dataclasses import dataclass
from importlib import resources

import numpy as np

SP500_FILE = "sp500_daily.csv"


@dataclass(frozen=True)
class Series:
    """A loaded series: labels (dates or row numbers) and float values."""

    labels: tuple[str, ...]
    values: np.ndarray  # (time,) or (time, channels), float64, NaN where a cell was empty
    columns: tuple[str, ...]
    source: str


def sp500_path() -> str:
    """Filesystem path of the bundled S&P 500 CSV."""
    return str(resources.files(__name__).joinpath(SP500_FILE))


def _parse(cell: str) -> float:
    cell = cell.strip()
    if cell == "" or cell.lower() in {"nan", "na", "null", "none"}:
        return math.nan
    return float(cell)


def load_csv(path: str | os.PathLike, columns: str | list[str] | tuple[str, ...] = "close",
             date_column: str | None = "date") -> Series:
    """Read numeric ``columns`` of a CSV with a header row.

    Empty or ``NaN`` cells become NaN (the predictor treats them as missing).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a named column is absent, a cell is not a number, or the
            file has no data rows. The message names the column and the row.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such CSV file: {path!r}")
    names = [columns] if isinstance(columns, str) else list(columns)
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [name for name in names if name not in header]
        if missing:
            raise ValueError(f"{path}: column(s) {missing} not found; the header has {header}")
        labels, rows = [], []
        for line_number, row in enumerate(reader, start=2):
            try:
                rows.append([_parse(row[name]) for name in names])
            except (TypeError, ValueError) as error:
                raise ValueError(f"{path}:{line_number}: not a number in {names}: {error}") from error
            labels.append(row[date_column] if date_column in header else str(line_number - 2))
    if not rows:
        raise ValueError(f"{path}: no data rows")
    values = np.asarray(rows, dtype=np.float64)
    if values.shape[1] == 1:
        values = values[:, 0]
    return Series(labels=tuple(labels), values=values, columns=tuple(names), source=path)


def load_sp500() -> Series:
    """The bundled S&P 500 daily closes (levels, not logs)."""
    return load_csv(sp500_path(), "close", "date")


def log_levels(values: np.ndarray) -> np.ndarray:
    """Natural log of positive levels; non-positive or missing values become NaN (missing)."""
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log(np.where(values > 0, values, 1.0)), np.nan)


__all__ = ["Series", "load_csv", "load_sp500", "log_levels", "sp500_path"]
