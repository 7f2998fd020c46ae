"""Hyperparameter groups: the tunable floats a component (kernel, weight rule) owns.

A component declares its hyperparameters once, as a tuple of
:class:`HyperparameterSpec`; :class:`HyperparameterGroup` holds their values as
float array leaves (traced, vmappable, differentiable) and validates them
against the spec when they are concrete. ``Hyperparams`` nests one group per
component under its name, so a population of hyperparameters for a whole
predictor, custom kernels included, is still one PyTree with stacked leaves.
"""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


class HyperparameterSpec(NamedTuple):
    """Declaration of one hyperparameter.

    Attributes:
        name: the field name (unique within its group; the built-in kernels'
            names are also unique across groups, so ``Hyperparams`` can offer
            them flat).
        default: default value.
        lower, upper: the allowed range.
        lower_open, upper_open: whether the bounds are excluded.
        meaning: one line for error messages and the docs.
        differentiable: whether a backtest loss is (almost everywhere)
            differentiable in this value, with a gradient that
            :func:`fnpredict.tuning.learn` can follow. Thresholds of a test
            are not: the loss is piecewise constant in them (zero gradient
            almost everywhere, all the effect in the jumps).
    """

    name: str
    default: float
    lower: float
    upper: float
    lower_open: bool
    upper_open: bool
    meaning: str
    differentiable: bool = True

    def check(self, value, owner: str) -> None:
        """Raise ``ValueError`` naming ``owner.name`` if a concrete ``value`` is out of range."""
        if isinstance(value, jax.core.Tracer):
            return
        array = np.asarray(value)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{owner}.{self.name} ({self.meaning}) must be finite, got {array}")
        too_low = np.any(array <= self.lower) if self.lower_open else np.any(array < self.lower)
        too_high = np.any(array >= self.upper) if self.upper_open else np.any(array > self.upper)
        if too_low or too_high:
            left = "(" if self.lower_open else "["
            right = ")" if self.upper_open else "]"
            raise ValueError(
                f"{owner}.{self.name} ({self.meaning}) must lie in {left}{self.lower}, {self.upper}{right}, "
                f"got {array}"
            )


def as_leaf(value, dtype) -> Float[Array, "..."]:
    """A hyperparameter value as an array leaf of ``dtype`` (tracers are cast, not copied)."""
    if isinstance(value, jax.core.Tracer):
        return value.astype(dtype)
    return jnp.asarray(value, dtype=dtype)


class HyperparameterGroup(eqx.Module):
    """The hyperparameters of one component: ``values[name]`` is a float array leaf.

    Attribute access reads a value (``group.rls_forgetting``). Leaves may carry
    leading batch axes (a population).

    Attributes:
        owner: the component's name (static; used in error messages).
        spec: the component's :class:`HyperparameterSpec` tuple (static).
        values: name -> array leaf.
    """

    owner: str = eqx.field(static=True)
    spec: tuple[HyperparameterSpec, ...] = eqx.field(static=True)
    values: dict[str, Float[Array, "..."]]

    def __getattr__(self, name):
        # Only called when normal lookup fails; guard the fields themselves so
        # that a half-built object (during unflattening) cannot recurse.
        if name in ("owner", "spec", "values") or name.startswith("__"):
            raise AttributeError(name)
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(f"{self.__dict__.get('owner', '?')} has no hyperparameter {name!r}")

    @classmethod
    def build(cls, owner: str, spec, dtype=jnp.float64, **values) -> "HyperparameterGroup":
        """Defaults from ``spec``, overridden by ``values``; unknown names raise ``ValueError``."""
        spec = tuple(HyperparameterSpec(*s) for s in spec)
        known = {s.name for s in spec}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{owner}: unknown hyperparameter(s) {sorted(unknown)}; known: {sorted(known)}")
        leaves = {s.name: as_leaf(values.get(s.name, s.default), dtype) for s in spec}
        group = cls(owner=owner, spec=spec, values=leaves)
        group.validate()
        return group

    def validate(self) -> "HyperparameterGroup":
        for s in self.spec:
            s.check(self.values[s.name], self.owner)
        return self

    def replace(self, **values) -> "HyperparameterGroup":
        dtype = next(iter(self.values.values())).dtype if self.values else jnp.float64
        current = dict(self.values)
        current.update(values)
        return HyperparameterGroup.build(self.owner, self.spec, dtype, **current)


__all__ = ["HyperparameterSpec", "HyperparameterGroup", "as_leaf"]
