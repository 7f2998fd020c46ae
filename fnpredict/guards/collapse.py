"""Collapse mute: a kernel whose own monitor keeps reporting collapse gets weight 0."""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int

from .base import AbstractGuard, Decision, Signals


class CollapseState(eqx.Module):
    """Attributes: count: consecutive steps the kernel's ``Info.collapsed`` was True."""

    count: Int[Array, ""]


class CollapseInfo(eqx.Module):
    """Attributes: warning (the kernel is muted this step), count."""

    warning: Bool[Array, ""]
    count: Int[Array, ""]


class CollapseMute(AbstractGuard):
    """Mute ``kernel`` after more than ``patience`` consecutive collapsed checks.

    Reads the boolean ``collapsed`` field of the kernel's ``Info`` (kernel B's
    entropy monitor). Applied last, on whichever weights won; with a single
    kernel nothing is muted (the weights must stay on the simplex).

    Attributes:
        kernel: name of the monitored kernel (its ``Info`` has ``collapsed``).
        patience: the seed's "> 10" consecutive checks.
    """

    name: ClassVar[str] = "collapse_mute"
    precedence: ClassVar[int] = 40
    kernel: str = eqx.field(static=True, default="dgm")
    patience: int = eqx.field(static=True, default=10)

    def check(self, kernel_names):
        if self.kernel not in kernel_names:
            raise ValueError(
                f"PredictorConfig.guards: collapse_mute kernel {self.kernel!r} is not among the kernels {kernel_names}"
            )

    def init(self, n_kernels, dtype):
        return CollapseState(count=jnp.zeros((), jnp.int32))

    def apply(self, decision: Decision, signals: Signals, state: CollapseState, hyperparams):
        index = list(signals.kernel_names).index(self.kernel)
        info = signals.kernel_infos[index]
        if not hasattr(info, "collapsed"):
            raise TypeError(f"collapse_mute: the Info of kernel {self.kernel!r} has no 'collapsed' field")
        count = jnp.where(info.collapsed, state.count + 1, 0).astype(jnp.int32)
        warning = count > self.patience
        weights = decision.weights
        n = weights.shape[0]
        muted = jnp.where(jnp.arange(n) == index, 0.0, weights)
        muted = muted / jnp.maximum(jnp.sum(muted), jnp.finfo(weights.dtype).tiny)
        on = warning & (n > 1)
        decision = eqx.tree_at(
            lambda d: (d.weights, d.collapse_warning), decision,
            (jnp.where(on, muted, weights), warning),
        )
        return decision, CollapseState(count=count), CollapseInfo(warning=warning, count=count)
