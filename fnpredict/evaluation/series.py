"""The series a lab run scores on: observed data or synthetic families with known truth.

Host-side. A synthetic *family* is a generator of :mod:`fnpredict.synthetic`
at its defaults; its seeds are the family's members, and members of equal
length run as one ``vmap`` (:mod:`fnpredict.evaluation.runner`).
"""

import dataclasses

import numpy as np

from .. import synthetic

__all__ = ["EvalSeries", "FAMILIES", "synthetic_family", "observed"]

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
    """

    name: str
    family: str
    values: np.ndarray
    conditional_mean: np.ndarray | None = None
    change_points: np.ndarray | None = None


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
