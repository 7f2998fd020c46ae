"""The one immutable PyTree that holds everything the predictor knows."""

import equinox as eqx
from jaxtyping import Array, Bool, Float, Int

from .config import Hyperparams, PredictorConfig


class PredictorState(eqx.Module):
    """All predictor state; ``step`` maps it to the next one and nothing else.

    The config is a static field (part of the tree structure: a different
    config is a different compiled program); every other field is an array
    leaf, so the state scans, vmaps over assets and hyperparameter populations,
    and serialises as a whole.

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
        cusum: the CUSUM / error-scale / kurtosis-window state.
        loss_type: 0 = MSE, 1 = Huber (robust mode).
        calm_streak: consecutive steps with the Hölder exponent at or above its
            threshold; robust mode ends when it reaches ``cusum_window``.
        missing_streak: consecutive missing observations (staleness).
        fresh_streak: consecutive valid observations (recovery hysteresis).
        degraded: degraded-inference mode (weights frozen).
        emergency: the circuit breaker was tripped at the previous step.
        collapse_count: consecutive collapsed DGM checks.
        kernel_states: each enabled kernel's learned state, in config order.
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
    loss_type: Int[Array, ""]
    calm_streak: Int[Array, ""]
    missing_streak: Int[Array, ""]
    fresh_streak: Int[Array, ""]
    degraded: Bool[Array, ""]
    emergency: Bool[Array, ""]
    collapse_count: Int[Array, ""]
    kernel_states: tuple
