"""Regime reset: a regime-change alarm resets the weights to uniform and restarts the rule."""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool

from ..kernels.base import EmptyState
from .base import AbstractGuard, Decision, Signals


class RegimeResetInfo(eqx.Module):
    """Attributes: reset: the weights were reset this step."""

    reset: Bool[Array, ""]


class RegimeReset(AbstractGuard):
    """On an alarm of the regime detector (the CUSUM), uniform weights and a fresh rule state.

    The alarm makes what the rule has learnt about the kernels' relative
    merit stale; starting from uniform lets it relearn at once.
    """

    name: ClassVar[str] = "regime_reset"
    precedence: ClassVar[int] = 10

    def init(self, n_kernels, dtype):
        return EmptyState()

    def apply(self, decision: Decision, signals: Signals, state, hyperparams):
        n = signals.previous_weights.shape[0]
        uniform = jnp.full((n,), 1.0 / n, signals.previous_weights.dtype)
        alarm = signals.alarm
        decision = decision.override(alarm, uniform, reset_rule=True, regime_reset=True)
        return decision, state, RegimeResetInfo(reset=alarm)
