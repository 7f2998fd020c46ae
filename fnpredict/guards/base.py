"""The guard protocol: policies that may override the weight rule, in one order of precedence.

After the weight rule has proposed new weights, the guards run in increasing
``precedence``; each reads the identification signals (:class:`Signals`) and
may override the running :class:`Decision`. A later guard overrides an
earlier one, so the table below *is* the policy (and each row can be switched
off in ``PredictorConfig(guards=...)``, an ablation being one config change):

==========  =================  ===============================================  =========================
precedence  guard              when                                             effect on the decision
==========  =================  ===============================================  =========================
(base)      the weight rule    an error to learn from                           rule's weights, rule state kept
10          ``regime_reset``   the CUSUM alarmed                                uniform weights, rule reset
20          ``circuit_breaker`` h_min < ``holder_threshold`` (trip)             emergency weights, Huber loss
20          ``circuit_breaker`` trip released (window regular again)            uniform weights, rule reset
30          ``staleness``      degraded (``ttl_max`` misses, until              previous weights, rule frozen
                               ``ttl_recovery`` valid observations)             (no reset)
40          ``collapse_mute``  > ``patience`` consecutive collapse checks       the muted kernel's weight
                                                                                set to 0, others renormalised
==========  =================  ===============================================  =========================

So: staleness beats the breaker, which beats a regime reset, which beats the
rule; the collapse mute applies on top of whichever weights won. Whenever a
guard overrides the weights the rule's proposal is discarded
(``rule_accepted`` False).
"""

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int


class Signals(eqx.Module):
    """The identification signals of one step, as every guard sees them.

    Attributes:
        observed: this step brought a valid observation.
        error_valid: there was a forecast to score against it.
        holder: h_min of the window (NaN while not ready).
        holder_ready: the Hölder exponent is valid and the buffer full enough.
        alarm: a regime-change detector alarmed this step.
        kernel_infos: each kernel's ``Info``, in column order.
        kernel_names: each kernel's name (static), in column order.
        previous_weights: ρ_t, the weights before this step.
        jump_confirmed: the bad-tick filter confirmed a held jump this step:
            the level really moved by more than ``bad_tick_threshold`` robust
            standard deviations (a crash-sized move; False with the filter off).
    """

    observed: Bool[Array, ""]
    error_valid: Bool[Array, ""]
    holder: Float[Array, ""]
    holder_ready: Bool[Array, ""]
    alarm: Bool[Array, ""]
    kernel_infos: tuple
    kernel_names: tuple[str, ...] = eqx.field(static=True)
    previous_weights: Float[Array, " kernels"]
    jump_confirmed: Bool[Array, ""] = eqx.field(default_factory=lambda: jnp.zeros((), bool))


class Decision(eqx.Module):
    """The running decision the guards pass along.

    Attributes:
        weights: the weights this step will use (and carry).
        rule_accepted: keep the rule's new state (False once a guard overrode).
        reset_rule: reset the rule's state (``rule.reset``) this step.
        loss_type: the loss mode for the next step (0 MSE, 1 Huber).
        emergency: the circuit breaker tripped.
        regime_reset: the weights were reset for a regime change.
        degraded: degraded-inference mode (weights frozen).
        collapse_warning: a kernel is muted for mode collapse.
    """

    weights: Float[Array, " kernels"]
    rule_accepted: Bool[Array, ""]
    reset_rule: Bool[Array, ""]
    loss_type: Int[Array, ""]
    emergency: Bool[Array, ""]
    regime_reset: Bool[Array, ""]
    degraded: Bool[Array, ""]
    collapse_warning: Bool[Array, ""]

    def override(self, when, weights=None, **flags) -> "Decision":
        """The decision with ``weights`` (and any flags given) taken where ``when`` holds."""
        changes = {}
        if weights is not None:
            changes["weights"] = jnp.where(when, weights, self.weights)
            changes["rule_accepted"] = self.rule_accepted & ~when
        for name, value in flags.items():
            changes[name] = jnp.where(when, value, getattr(self, name))
        return eqx.tree_at(lambda d: [getattr(d, n) for n in changes], self, list(changes.values()))


class AbstractGuard(eqx.Module):
    """A policy applied after the weight rule (see the module docstring for the order).

    Class attributes:
        name: short name in ``PredictorConfig(guards=...)``.
        precedence: position in the order of application (higher wins).
    """

    name: eqx.AbstractClassVar[str]
    precedence: eqx.AbstractClassVar[int]

    def check(self, kernel_names: list[str]) -> None:
        """Raise ``ValueError`` when the guard cannot work with these kernels (default: fine)."""

    @abc.abstractmethod
    def init(self, n_kernels: int, dtype) -> eqx.Module:
        """The guard's state before the first step."""

    @abc.abstractmethod
    def apply(
        self, decision: Decision, signals: Signals, state: eqx.Module, hyperparams
    ) -> tuple[Decision, eqx.Module, eqx.Module]:
        """``(decision, state, info)`` after this guard."""
