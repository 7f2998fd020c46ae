"""The evaluation lab: variants × series, scored against the random walk, the kernels and the truth.

Host-side (only :func:`~fnpredict.evaluation.runner.run_population` is
traced). One concept per module:

* :mod:`.variants` — a variant = (label, config, hyperparameters); the grids;
* :mod:`.series` — observed data and synthetic families with known truth;
* :mod:`.runner` — one compiled ``vmap(vmap(scan))`` per distinct config;
* :mod:`.simplex` — the best convex combination of forecasts in hindsight;
* :mod:`.metrics` — ratios, regrets, baselines, regime detection;
* :mod:`.lab` — run and score; per-family means;
* :mod:`.report` — table, CSV, JSON, PNG.

Example:
    >>> from fnpredict import evaluation as ev
    >>> result = ev.evaluate(ev.grid("default"), ev.synthetic_family("ou", 3, 2000))
    >>> print(ev.format_table(ev.summary_rows(result)))
"""

from .lab import LabResult, error_curve, evaluate, family_means
from .metrics import detection_stats, ewa_forecasts, random_walk_forecasts, score, uniform_forecasts
from .report import format_markdown, format_table, summary_rows, write_all
from .runner import RunOutput, run_population, run_variants
from .series import FAMILIES, EvalSeries, observed, synthetic_family, with_bad_ticks, with_missing_bursts
from .simplex import best_convex_weights, project_to_simplex
from .variants import DEFAULT_LABEL, GRIDS, Variant, grid, group_by_config, select

__all__ = [
    "LabResult", "error_curve", "evaluate", "family_means",
    "detection_stats", "ewa_forecasts", "random_walk_forecasts", "score", "uniform_forecasts",
    "format_markdown", "format_table", "summary_rows", "write_all",
    "RunOutput", "run_population", "run_variants",
    "FAMILIES", "EvalSeries", "observed", "synthetic_family",
    "best_convex_weights", "project_to_simplex",
    "with_missing_bursts", "with_bad_ticks", "DEFAULT_LABEL", "GRIDS", "Variant", "grid", "group_by_config", "select",
]
