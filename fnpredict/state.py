"""The one immutable PyTree that holds everything the predictor knows."""

import equinox as eqx
from jaxtyping import Array, Float, Int

from .config import Hyperparams, PredictorConfig


class PredictorState(eqx.Module):
    """All predictor state; ``step`` maps it to the next one and nothing else.

    The config is a static field (part of the tree structure: a different
    config, or a config with different component objects, is a different
    compiled program). The kernels, the weight rule and the guards are part of
    the config, so arrays they hold (trained network weights) are constants of
    the compiled step, shared by every asset and never copied into this
    per-asset state. Every other field is an array leaf, so the state scans,
    vmaps over assets and hyperparameter populations, and serialises as a
    whole.

    Attributes:
        config: the static :class:`PredictorConfig`.
        hyperparams: the dynamic :class:`Hyperparams` (float leaves).
        buffer: ``(buffer, channels)`` sliding window of observations, oldest
            first, back-filled with the oldest real observation.
        buffer_count: real observations in ``buffer`` (saturates at its size).
        step_count: steps taken (missing ones included).
        prediction: the last ensemble forecast ŷ_{t+1} (0 before any data).
        kernel_predictions: the last per-kernel forecasts (K,).
        weights: the current kernel weights ρ (K,), on the simplex.
        cusum: the magnitude CUSUM / error-scale / kurtosis-window state.
        page: the signed regime detector (Page CUSUM on its drift reference, :mod:`fnpredict.sia.signed_detector`).
        input_filter: the bad-tick filter's state (a held observation).
        loss_type: 0 = MSE, 1 = Huber (robust mode; set by the guards).
        kernel_states: each kernel's learned state, in column order.
        rule_state: the weight rule's state.
        guard_states: each guard's state, in order of application (the
            staleness counters, the breaker's emergency flag and calm streak,
            the collapse counter).
        intervals: the interval layer's
            :class:`~fnpredict.intervals.IntervalState` (residual scales,
            calibration offsets, the last issued quantiles).
    """

    config: PredictorConfig = eqx.field(static=True)
    hyperparams: Hyperparams
    buffer: Float[Array, "buffer channels"]
    buffer_count: Int[Array, ""]
    step_count: Int[Array, ""]
    prediction: Float[Array, ""]
    kernel_predictions: Float[Array, " kernels"]
    weights: Float[Array, " kernels"]
    cusum: eqx.Module
    page: eqx.Module
    input_filter: eqx.Module
    loss_type: Int[Array, ""]
    kernel_states: tuple
    rule_state: eqx.Module
    guard_states: tuple
    intervals: eqx.Module

    def guard_state(self, name: str) -> eqx.Module:
        """The state of the guard called ``name`` (``KeyError`` if it is off)."""
        for guard, state in zip(self.config.guard_objects, self.guard_states):
            if guard.name == name:
                return state
        raise KeyError(f"guard {name!r} is not in this config's guards")
