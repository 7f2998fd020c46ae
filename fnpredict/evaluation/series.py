"""The series a lab run scores on: observed data or synthetic families with known truth.

Host-side. A synthetic *family* is a generator of :mod:`fnpredict.synthetic`
at its defaults; its seeds are the family's members, and members of equal
length run as one ``vmap`` (:mod:`fnpredict.evaluation.runner`).
"""

import dataclasses

import numpy as np

from .. import synthetic

__all__ = ["with_missing_bursts", "with_bad_ticks", "EvalSeries", "FAMILIES", "synthetic_family", "observed"]

#: Synthetic families by name (all at their documented defaults).
FAMILIES = {
    "ou": synthetic.ou,
    "ou_jumps": synthetic.ou_jumps,
    "drift_flip": synthetic.drift_flip,
    "ar2_increments": synthetic.ar2_increments,
    "stable_increments": synthetic.stable_increments,
}


@dataclasses.dataclass(frozen=True)
class EvalSeries:
    """One series to score on.

    Attributes:
        name: unique label (``"ou/seed0"``, ``"sp500"``).
        family: the family it averages into (the name itself for observed data).
        values: ``(time,)`` observations (levels; NaN = missing).
        conditional_mean: ``(time,)`` the true one-step conditional mean, or None.
        change_points: the known change points, or None.
        truth: ``(time,)`` the clean values the forecasts are scored against
            when the observations are corrupted (:func:`with_bad_ticks`);
            None scores against ``values``.
    """

    name: str
    family: str
    values: np.ndarray
    conditional_mean: np.ndarray | None = None
    change_points: np.ndarray | None = None
    truth: np.ndarray | None = None


def synthetic_family(family: str, seeds: int, steps: int) -> list[EvalSeries]:
    """Seeds ``0 .. seeds−1`` of a family of :data:`FAMILIES`, ``steps`` long each."""
    if family not in FAMILIES:
        raise ValueError(f"unknown synthetic family {family!r}; known: {sorted(FAMILIES)}")
    out = []
    for seed in range(seeds):
        s = FAMILIES[family](steps, seed)
        regimes = family == "drift_flip"
        out.append(EvalSeries(f"{family}/seed{seed}", family, np.asarray(s.values, float),
                              np.asarray(s.conditional_mean, float),
                              np.asarray(s.change_points) if regimes else None))
    return out


def observed(name: str, values) -> EvalSeries:
    """Observed data (no truth known)."""
    values = np.asarray(values, float)
    if values.ndim != 1:
        raise ValueError(f"observed: need a (time,) series, got shape {values.shape}")
    return EvalSeries(name, name, values)


def with_missing_bursts(series: EvalSeries, bursts: int = 40, min_length: int = 3, max_length: int = 12,
                        start: int = 300, seed: int = 0) -> EvalSeries:
    """A copy of ``series`` with ``bursts`` runs of missing (NaN) observations, named ``<name>+gaps``.

    Burst lengths are uniform on ``[min_length, max_length]``, their starts
    uniform on ``[start, time − max_length)`` (seeded): with the defaults about
    300 of the S&P's 5031 days go missing, in runs long enough that the
    staleness guard (``ttl_max = 5``) triggers on about half of them. This is
    the series on which the staleness guard can show what it is worth; the
    truth (``conditional_mean``) is kept where the values are.
    """
    rng = np.random.default_rng(seed)
    values = np.array(series.values, float)
    for begin in rng.integers(start, values.size - max_length, size=bursts):
        values[begin:begin + int(rng.integers(min_length, max_length + 1))] = np.nan
    return EvalSeries(f"{series.name}+gaps", f"{series.family}+gaps", values, series.conditional_mean,
                      series.change_points, series.truth)


def with_bad_ticks(series: EvalSeries, ticks: int = 8, min_size: float = 15.0, max_size: float = 60.0,
                   start: int = 300, seed: int = 0) -> EvalSeries:
    """A copy of ``series`` with ``ticks`` one-step spikes (bad prints), named ``<name>+ticks``.

    Each spike replaces one observation ``y_t`` by ``y_t ± m σ``, with ``σ``
    the standard deviation of the clean increments, ``m`` uniform on
    ``[min_size, max_size]`` and a random sign, at steps uniform on
    ``[start, time − 1)`` (seeded); the next observation is clean again. The
    defaults are glitches a magnitude test must catch (above the bad-tick
    filter's 12 robust σ) yet plausible as moves (a +50% print on a 1%-vol
    series is 40σ). The forecasts are scored against the clean values
    (:attr:`EvalSeries.truth`): this is the series on which the bad-tick
    filter can show what it is worth.
    """
    rng = np.random.default_rng(seed)
    clean = np.array(series.values if series.truth is None else series.truth, float)
    values = np.array(series.values, float)
    sigma = float(np.nanstd(np.diff(clean)))
    at = rng.choice(np.arange(start, values.size - 1), size=ticks, replace=False)
    sizes = rng.uniform(min_size, max_size, size=ticks) * rng.choice([-1.0, 1.0], size=ticks)
    values[at] = values[at] + sizes * sigma
    return EvalSeries(f"{series.name}+ticks", f"{series.family}+ticks", values, series.conditional_mean,
                      series.change_points, clean)

