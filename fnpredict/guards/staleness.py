"""Staleness: after too many missing observations the weights freeze (degraded inference)."""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int

from .base import AbstractGuard, Decision, Signals


class StalenessState(eqx.Module):
    """Attributes: missing_streak, fresh_streak (consecutive valid observations), degraded."""

    missing_streak: Int[Array, ""]
    fresh_streak: Int[Array, ""]
    degraded: Bool[Array, ""]


class StalenessFreeze(AbstractGuard):
    """Degraded after ``ttl_max`` consecutive missing observations; cleared after ``ttl_recovery`` valid ones.

    While degraded the weights stay as they were and the rule learns nothing
    (the hysteresis keeps one stray observation from unfreezing them).

    Attributes:
        ttl_max: consecutive misses that set degraded mode.
        ttl_recovery: consecutive valid observations that clear it.
    """

    name: ClassVar[str] = "staleness"
    precedence: ClassVar[int] = 30
    ttl_max: int = eqx.field(static=True, default=5)
    ttl_recovery: int = eqx.field(static=True, default=3)

    def init(self, n_kernels, dtype):
        zero = jnp.zeros((), jnp.int32)
        return StalenessState(missing_streak=zero, fresh_streak=zero, degraded=jnp.zeros((), bool))

    def apply(self, decision: Decision, signals: Signals, state: StalenessState, hyperparams):
        observed = signals.observed
        missing_streak = jnp.where(observed, 0, state.missing_streak + 1).astype(jnp.int32)
        fresh_streak = jnp.where(observed, state.fresh_streak + 1, 0).astype(jnp.int32)
        degraded = jnp.where(state.degraded, fresh_streak < self.ttl_recovery, missing_streak >= self.ttl_max)
        decision = decision.override(degraded, signals.previous_weights, reset_rule=False, degraded=True)
        new_state = StalenessState(missing_streak=missing_streak, fresh_streak=fresh_streak, degraded=degraded)
        return decision, new_state, new_state
