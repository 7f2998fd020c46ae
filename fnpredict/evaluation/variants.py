"""Variants: a label, a :class:`~fnpredict.PredictorConfig` and a :class:`~fnpredict.Hyperparams`.

Two variants whose configs compare equal are the same compiled program; they
differ only in hyperparameters and run as one ``vmap`` over a stacked
population (:func:`group_by_config`). The default grids:

* ``rules``: the rules jko (default), ewa, boa, mlpol, fixed_share, uniform ×
  the kernel sets "default" (levy, dgm, imex, signature, persistence: the
  library's default) and "-persistence" (the same without the random walk
  as an expert);
* ``guards``: the default variant with all guards, with each guard off in
  turn, and with none; each registered guard that is off by default switched
  on (``jko+collapse_mute``); then the two input-side defenses off in turn: the
  bad-tick filter (``jko-no-bad_tick_filter``) and the regime window
  (``jko-no-regime_window``: kernels keep the whole buffer after a signed
  alarm);
* ``all``: both (the default variant once): 19 configs;
* ``default``: the CLI's grid, small enough for the bundled S&P 500 (5031
  days) in about 3 minutes on 2 cores (each config compiles in ~20 s and runs
  in ~8 s): jko, ewa, boa and uniform with the default kernels, jko without
  persistence and jko with no guards (6 configs; the 8-config version took
  4.5 minutes on a loaded machine, too close to the 5-minute budget).
"""

import dataclasses

from ..config import DEFAULT_KERNELS, Hyperparams, PredictorConfig
from ..guards import guard_from_name, registered_guards

__all__ = ["Variant", "RULES", "KERNEL_SETS", "DEFAULT_LABEL", "rule_grid", "guard_grid", "grid",
           "GRIDS", "group_by_config", "select"]

#: The rules of the grid (``fixed_share``, ``boa`` and ``mlpol`` are the
#: aggregation rules of the online-learning literature; ``uniform`` is the
#: no-learning reference).
RULES: tuple[str, ...] = ("jko", "ewa", "boa", "mlpol", "fixed_share", "uniform")

#: The rules of the CLI's small ``default`` grid.
DEFAULT_GRID_RULES: tuple[str, ...] = ("jko", "ewa", "boa", "uniform")

#: Kernel sets by label.
KERNEL_SETS: dict[str, tuple[str, ...]] = {
    "default": DEFAULT_KERNELS,
    "-persistence": tuple(k for k in DEFAULT_KERNELS if k != "persistence"),
}

#: The label of the library's default predictor (jko, default kernels, all guards, default input filter).
DEFAULT_LABEL = "jko"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One predictor to evaluate.

    Attributes:
        label: unique name in tables and files.
        config: the static configuration.
        hyperparams: its hyperparameters (unbatched leaves).
        tags: free-form grouping labels for reports (``"rules"``, ``"guards"``).
    """

    label: str
    config: PredictorConfig
    hyperparams: Hyperparams = dataclasses.field(default_factory=Hyperparams)
    tags: tuple[str, ...] = ()


def _label(rule: str, kernel_set: str) -> str:
    return rule if kernel_set == "default" else f"{rule}{kernel_set}"


def _kernel_sets(kernels) -> dict[str, tuple]:
    if kernels is None:
        return KERNEL_SETS
    kernels = tuple(kernels)
    sets = {"default": kernels}
    if "persistence" in kernels and len(kernels) > 1:
        sets["-persistence"] = tuple(k for k in kernels if k != "persistence")
    elif "persistence" not in kernels:
        sets["+persistence"] = kernels + ("persistence",)
    return sets


def rule_grid(base: PredictorConfig | None = None, rules=RULES, kernel_sets=tuple(KERNEL_SETS),
              kernels: tuple[str, ...] | None = None) -> list[Variant]:
    """Rules × kernel sets, other settings from ``base``.

    ``kernels`` replaces the default kernel set; the second set is then those
    without persistence (``-persistence``) or, when persistence is not among
    them, those plus persistence (``+persistence``).
    """
    base = base or PredictorConfig()
    sets = _kernel_sets(kernels)
    return [
        Variant(_label(rule, ks), base.replace(rule=rule, kernels=sets[ks]), tags=("rules",))
        for ks in kernel_sets if ks in sets for rule in rules
    ]


def guard_grid(base: PredictorConfig | None = None, kernels: tuple[str, ...] | None = None) -> list[Variant]:
    """The default variant with all guards, each guard off in turn, none; then each input-side defense off."""
    base = base or PredictorConfig()
    kernels = _kernel_sets(kernels)["default"]
    # The guards that apply to these kernels (``guards=None`` leaves out a
    # guard whose kernel is off, e.g. collapse_mute without dgm).
    all_guards = tuple(g.name for g in base.replace(rule="jko", kernels=kernels, guards=None).guard_objects)
    out = [Variant(DEFAULT_LABEL, base.replace(rule="jko", kernels=kernels, guards=None), tags=("guards",))]
    for guard in all_guards:
        kept = tuple(g for g in all_guards if g != guard)
        out.append(Variant(f"jko-no-{guard}", base.replace(rule="jko", kernels=kernels, guards=kept),
                           tags=("guards",)))
    out.append(Variant("jko-no-guards", base.replace(rule="jko", kernels=kernels, guards=()), tags=("guards",)))
    # Registered guards that are off by default: the default variant with each switched on.
    with_kernels = base.replace(kernels=kernels, guards=None)
    for guard in registered_guards():
        if guard not in all_guards and guard_from_name(guard, with_kernels, with_kernels.kernel_objects) is not None:
            out.append(Variant(f"jko+{guard}", base.replace(rule="jko", kernels=kernels, guards=all_guards + (guard,)),
                               tags=("guards",)))
    default = base.replace(rule="jko", kernels=kernels, guards=None)
    if default.bad_tick_filter:
        out.append(Variant("jko-no-bad_tick_filter", default.replace(bad_tick_filter=False), tags=("guards",)))
    if default.regime_window:
        out.append(Variant("jko-no-regime_window", default.replace(regime_window=0), tags=("guards",)))
    return out


def _merge(*lists) -> list[Variant]:
    # A label twice (the default variant is in both grids) keeps one variant with both tags.
    merged: dict[str, Variant] = {}
    for variants in lists:
        for v in variants:
            if v.label in merged:
                old = merged[v.label]
                merged[v.label] = dataclasses.replace(old, tags=tuple(dict.fromkeys(old.tags + v.tags)))
            else:
                merged[v.label] = v
    return list(merged.values())


def grid(name: str = "default", base: PredictorConfig | None = None,
         kernels: tuple[str, ...] | None = None) -> list[Variant]:
    """A named grid (see the module docstring): ``default``, ``rules``, ``guards`` or ``all``."""
    if name == "rules":
        return rule_grid(base, kernels=kernels)
    if name == "guards":
        return guard_grid(base, kernels)
    if name == "all":
        return _merge(rule_grid(base, kernels=kernels), guard_grid(base, kernels))
    if name == "default":
        small = rule_grid(base, rules=DEFAULT_GRID_RULES, kernel_sets=("default",), kernels=kernels) + rule_grid(
            base, rules=("jko",), kernel_sets=("-persistence", "+persistence"), kernels=kernels)
        guards = guard_grid(base, kernels)
        return _merge(small, [v for v in guards if v.label in (DEFAULT_LABEL, "jko-no-guards")])
    raise ValueError(f"grid: unknown grid {name!r}; known: {GRIDS}")


GRIDS: tuple[str, ...] = ("default", "rules", "guards", "all")


def select(spec: str, base: PredictorConfig | None = None, kernels: tuple[str, ...] | None = None) -> list[Variant]:
    """Variants from a CLI spec: a grid name, or comma-separated labels of the ``all`` grid."""
    if spec in GRIDS:
        return grid(spec, base, kernels)
    available = {v.label: v for v in grid("all", base, kernels)}
    labels = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in labels if s not in available]
    if unknown:
        raise ValueError(f"--variants: unknown {unknown}; grids {GRIDS} or labels {sorted(available)}")
    return [available[s] for s in labels]


def group_by_config(variants: list[Variant]) -> list[list[Variant]]:
    """Variants with equal configs (one compiled program each), in first-seen order."""
    groups: dict[PredictorConfig, list[Variant]] = {}
    for v in variants:
        groups.setdefault(v.config, []).append(v)
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise ValueError(f"variant labels must be unique, got {labels}")
    return list(groups.values())
