"""Circuit breaker: a singular window (low Hölder exponent) moves the weight to one kernel."""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int

from ..orchestrator.losses import LOSS_HUBER, LOSS_MSE
from .base import AbstractGuard, Decision, Signals


class BreakerState(eqx.Module):
    """Attributes:
        emergency: the breaker was tripped at the previous observed step.
        calm_streak: consecutive steps with h_min at or above the threshold;
            robust (Huber) mode ends when it reaches ``calm_window``.
    """

    emergency: Bool[Array, ""]
    calm_streak: Int[Array, ""]


class BreakerInfo(eqx.Module):
    """Attributes: tripped (this step), released (tripped before, regular now), calm_streak."""

    tripped: Bool[Array, ""]
    released: Bool[Array, ""]
    calm_streak: Int[Array, ""]


class CircuitBreaker(AbstractGuard):
    """The seed's breaker: h_min < ``holder_threshold`` (or a confirmed crash-sized jump) puts the weight on one kernel.

    On a trip the weights become ``1 − floor·(K−1)`` on ``kernel`` and
    ``floor`` (``weight_floor``) elsewhere, and the loss switches to Huber
    (robust mode). The emergency allocation is imposed, not learned: when the
    breaker releases, the weights restart from uniform and the rule is reset
    instead of crawling back from the floor. Robust mode ends once h_min has
    stayed above the threshold for ``calm_window`` steps (so the error window
    of the CUSUM and the kurtosis no longer see the singular stretch).

    Attributes:
        kernel: name of the emergency kernel; ``None``: ``"signature"`` when
            on, else the last kernel.
        calm_window: steps of calm that end robust mode (the config's
            ``cusum_window`` when built by name).
        on_confirmed_jump: also trip on a jump the bad-tick filter confirmed
            (:attr:`Signals.jump_confirmed`): a persistent level shift beyond
            the bad-tick threshold is a crash whatever the Hölder exponent
            says; a reverted spike is discarded, not confirmed, so it cannot trip.
    """

    name: ClassVar[str] = "circuit_breaker"
    precedence: ClassVar[int] = 20
    kernel: str | None = eqx.field(static=True, default=None)
    calm_window: int = eqx.field(static=True, default=64)
    on_confirmed_jump: bool = eqx.field(static=True, default=True)

    def check(self, kernel_names):
        if self.kernel is not None and self.kernel not in kernel_names:
            raise ValueError(
                f"PredictorConfig.guards: circuit_breaker kernel {self.kernel!r} "
                f"is not among the kernels {kernel_names}"
            )

    def _index(self, names) -> int:
        if self.kernel is not None:
            return names.index(self.kernel)
        return names.index("signature") if "signature" in names else len(names) - 1

    def init(self, n_kernels, dtype):
        return BreakerState(emergency=jnp.zeros((), bool), calm_streak=jnp.zeros((), jnp.int32))

    def apply(self, decision: Decision, signals: Signals, state: BreakerState, hyperparams):
        weights = signals.previous_weights
        n = weights.shape[0]
        dtype = weights.dtype
        floor = hyperparams.weight_floor
        threshold = hyperparams.holder_threshold
        index = self._index(list(signals.kernel_names))
        # A singular window, or a crash-sized jump the input filter just confirmed
        # (which the WTMM can miss for a single step in a long calm window).
        trip = signals.observed & (
            (signals.holder_ready & (signals.holder < threshold)) | (self.on_confirmed_jump & signals.jump_confirmed)
        )
        released = state.emergency & ~trip & signals.observed
        emergency_weights = jnp.where(jnp.arange(n) == index, 1.0 - floor * (n - 1), floor).astype(dtype)
        uniform = jnp.full((n,), 1.0 / n, dtype)
        decision = decision.override(released & ~trip, uniform, reset_rule=True)
        decision = decision.override(trip, emergency_weights, emergency=True)
        calm = signals.holder_ready & (signals.holder >= threshold)
        calm_streak = jnp.where(calm, state.calm_streak + 1, jnp.where(trip, 0, state.calm_streak))
        loss_type = jnp.where(
            trip, LOSS_HUBER, jnp.where(calm_streak >= self.calm_window, LOSS_MSE, decision.loss_type)
        )
        decision = eqx.tree_at(lambda d: d.loss_type, decision, loss_type.astype(jnp.int32))
        new_state = BreakerState(
            emergency=jnp.where(signals.observed, trip, state.emergency),
            calm_streak=calm_streak.astype(jnp.int32),
        )
        return decision, new_state, BreakerInfo(tripped=trip, released=released, calm_streak=new_state.calm_streak)
