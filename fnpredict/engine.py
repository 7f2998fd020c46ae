"""Wiring: ``init``, ``step``, ``fit``, ``predict``.

This module only connects components (like blackjax's ``hmc.py``); the
numerics live in ``sia/``, ``orchestrator/`` and ``kernels/``. One step, in
the order of DESIGN §2, for one asset:

1. error e_t = y_t − ŷ_t (skipped when y_t is missing);
2. CUSUM on the standardized error, kurtosis window, adaptive threshold;
3. energy gradient ∇E of the previous kernel forecasts against y_t;
4. buffer update with y_t;
5. Hölder exponent h_min of the buffer (WTMM);
6. weights: frozen if degraded; else circuit breaker (h_min < threshold:
   weight to kernel D, robust loss); else uniform reset on a CUSUM alarm or
   when the breaker releases; else the JKO step; kernel B's weight forced to
   0 under a collapse warning;
7. kernel forecasts of y_{t+1} and their weighted sum;
8. kernel updates;
9. telemetry.

Every branch is ``jnp.where`` / ``lax.select`` on data, so one compiled step
serves ``scan`` and ``vmap`` alike. Diagnostics sit behind
``lax.stop_gradient``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .config import Hyperparams, PredictorConfig
from .kernels import History, kernel_class
from .orchestrator.jko import jko_step
from .orchestrator.losses import energy_gradient
from .sia.cusum import cusum_init, cusum_reset, cusum_update
from .sia.wtmm import holder_exponent
from .state import PredictorState
from .telemetry import LOSS_HUBER, LOSS_MSE, StepOutput, Telemetry

# More than this many consecutive collapsed DGM checks raise the warning
# (DESIGN §3 / the seed's monitor: "> 10").
COLLAPSE_PATIENCE = 10


@functools.lru_cache(maxsize=None)
def build_kernels(config: PredictorConfig) -> tuple:
    """The enabled kernels for a config, built once per config (they may hold
    shipped weights, which must not be copied into every asset's state)."""
    return tuple(kernel_class(name).from_config(config) for name in config.kernels)


def _check_key(key) -> None:
    if not isinstance(key, jax.Array) or not (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == jnp.uint32 and key.shape == (2,))
    ):
        raise TypeError(
            f"key must be a JAX PRNG key (jax.random.key(seed)), got {type(key).__name__} {getattr(key, 'dtype', '')}"
        )


def init(
    config: PredictorConfig, key: PRNGKeyArray | None = None, hyperparams: Hyperparams | None = None
) -> PredictorState:
    """A fresh predictor state.

    Args:
        config: the static configuration.
        key: a PRNG key (reserved for kernels with random initial state; the
            built-in kernels start deterministically, so it may be omitted).
        hyperparams: defaults to ``Hyperparams()``. Under ``jax.vmap`` over a
            stacked population this builds one state per member.

    Returns:
        A :class:`PredictorState` with an empty buffer and uniform weights.

    Example:
        >>> state = fp.init(fp.PredictorConfig(kernels=("levy", "signature")), jax.random.key(0))
    """
    if not isinstance(config, PredictorConfig):
        raise TypeError(f"config must be a PredictorConfig, got {type(config).__name__}")
    if key is not None:
        _check_key(key)
    dtype = config.jnp_dtype
    if hyperparams is None:
        hyperparams = Hyperparams(dtype=dtype)
    if not isinstance(hyperparams, Hyperparams):
        raise TypeError(f"hyperparams must be a Hyperparams, got {type(hyperparams).__name__}")
    hyperparams = hyperparams.validate()
    hyperparams = jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf, dtype), hyperparams)
    kernels = build_kernels(config)
    n_kernels = config.n_kernels
    zero_int = jnp.zeros((), jnp.int32)
    return PredictorState(
        config=config,
        hyperparams=hyperparams,
        buffer=jnp.zeros((config.buffer_size, config.n_channels), dtype),
        buffer_count=zero_int,
        step_count=zero_int,
        prediction=jnp.zeros((), dtype),
        kernel_predictions=jnp.zeros((n_kernels,), dtype),
        weights=jnp.full((n_kernels,), 1.0 / n_kernels, dtype),
        cusum=cusum_init(config.cusum_window, dtype),
        loss_type=jnp.asarray(LOSS_MSE, jnp.int32),
        calm_streak=zero_int,
        missing_streak=zero_int,
        fresh_streak=zero_int,
        degraded=jnp.zeros((), bool),
        emergency=jnp.zeros((), bool),
        collapse_count=zero_int,
        kernel_states=tuple(kernel.init(hyperparams, dtype) for kernel in kernels),
    )


def _as_observation(obs, config: PredictorConfig) -> Float[Array, " channels"]:
    obs = jnp.asarray(obs)
    if not (jnp.issubdtype(obs.dtype, jnp.floating) or jnp.issubdtype(obs.dtype, jnp.integer)):
        raise TypeError(f"obs must be real (float or int), got dtype {obs.dtype}")
    if obs.shape == () and config.n_channels == 1:
        obs = obs[None]
    if obs.shape != (config.n_channels,):
        raise ValueError(
            f"obs must have shape () or ({config.n_channels},) for n_channels={config.n_channels}, got {obs.shape}"
        )
    return obs.astype(config.jnp_dtype)


def _keep_finite(new, old):
    """Leafwise guard: a non-finite float never enters the carry (the old value stays)."""
    def guard(n, o):
        if jnp.issubdtype(jnp.asarray(n).dtype, jnp.inexact):
            return jnp.where(jnp.isfinite(n), n, o)
        return n
    return jax.tree_util.tree_map(guard, new, old)


def step_impl(state: PredictorState, obs, key: PRNGKeyArray) -> tuple[PredictorState, StepOutput]:
    """The un-jitted step (for embedding in a larger traced program). See :func:`step`."""
    config = state.config
    hp = state.hyperparams
    dtype = config.jnp_dtype
    kernels = build_kernels(config)
    n_kernels = config.n_kernels
    obs = _as_observation(obs, config)
    kernel_keys = jax.random.split(key, n_kernels)

    # Bad data is data: NaN = missing; ±Inf = missing and flagged.
    rejected = jnp.any(jnp.isinf(obs))
    observed = jnp.all(jnp.isfinite(obs))
    target = jnp.where(observed, obs[0], state.buffer[-1, 0])

    # 1. Error of the forecast made at t-1 (none before the first observation).
    have_forecast = state.buffer_count > 0
    error_valid = observed & have_forecast
    error = jnp.where(error_valid, target - state.prediction, 0.0)

    # 2. CUSUM on the standardized error (diagnostic: no gradient flows through it).
    cusum, cusum_info = cusum_update(
        state.cusum, jax.lax.stop_gradient(error), error_valid, hp.cusum_h, hp.cusum_k, hp.error_alpha
    )
    alarm = cusum_info.alarm & error_valid
    sigma = jax.lax.stop_gradient(cusum_info.sigma)

    # 3. Energy gradient of the previous kernel forecasts against y_t.
    gradient = energy_gradient(state.kernel_predictions, target, sigma, state.loss_type, hp.huber_delta_scale)

    # 4. Buffer.
    history = History(values=state.buffer, count=state.buffer_count, observed=observed).push(obs, observed)
    buffer, count = history.values, history.count

    # 5. Hölder exponent of the window (the circuit breaker's input).
    h_min, h_valid = holder_exponent(
        jax.lax.stop_gradient(buffer[:, 0]), config.scales, config.q_moments, hp.besov_c, config.wavelet
    )
    h_ready = h_valid & (count >= config.holder_min_count)
    holder = jnp.where(h_ready, h_min, jnp.nan)
    trip = h_ready & observed & (h_min < hp.holder_threshold)

    # Staleness with hysteresis: degraded after ttl_max misses, cleared after
    # ttl_recovery consecutive valid observations.
    missing_streak = jnp.where(observed, 0, state.missing_streak + 1)
    fresh_streak = jnp.where(observed, state.fresh_streak + 1, 0)
    degraded = jnp.where(
        state.degraded, fresh_streak < config.ttl_recovery, missing_streak >= config.ttl_max
    )

    # 6. Weights.
    flow_weights, jko_info = jko_step(
        state.weights, gradient, hp.jko_tau, hp.sinkhorn_epsilon,
        mode=config.jko_mode, iterations=config.sinkhorn_iterations,
    )
    emergency_index = config.emergency_kernel
    floor = hp.weight_floor
    emergency_weights = jnp.where(
        jnp.arange(n_kernels) == emergency_index, 1.0 - floor * (n_kernels - 1), floor
    ).astype(dtype)
    uniform = jnp.full((n_kernels,), 1.0 / n_kernels, dtype)
    # The emergency allocation is imposed, not learned: when the breaker
    # releases (the window is regular again), the flow restarts from uniform
    # weights instead of crawling back from the floor.
    released = state.emergency & ~trip & observed
    flow_ran = error_valid & ~degraded & ~trip & ~alarm & ~released
    weights = jnp.where(flow_ran, flow_weights, state.weights)
    weights = jnp.where((alarm | released) & ~trip, uniform, weights)
    weights = jnp.where(trip, emergency_weights, weights)
    weights = jnp.where(degraded, state.weights, weights)
    cusum = jax.tree_util.tree_map(
        lambda reset, kept: jnp.where(alarm, reset, kept), cusum_reset(cusum), cusum
    )
    # Robust mode: entered on a trip, left once the Hölder exponent has stayed
    # above its threshold for a whole error window (so the kurtosis and the
    # CUSUM no longer see the singular stretch).
    calm = h_ready & (h_min >= hp.holder_threshold)
    calm_streak = jnp.where(calm, state.calm_streak + 1, jnp.where(trip, 0, state.calm_streak))
    loss_type = jnp.where(trip, LOSS_HUBER, jnp.where(calm_streak >= config.cusum_window, LOSS_MSE, state.loss_type))

    # 7. Kernel forecasts of y_{t+1}.
    forecasts = [
        kernel.forecast(kernel_state, history, hp, kernel_key)
        for kernel, kernel_state, kernel_key in zip(kernels, state.kernel_states, kernel_keys)
    ]
    kernel_predictions = jnp.stack([f.value for f in forecasts])
    dgm_index = config.kernel_index("dgm")
    if dgm_index >= 0:
        dgm = forecasts[dgm_index]
        collapse_count = jnp.where(dgm.collapsed, state.collapse_count + 1, 0)
        dgm_entropy = dgm.entropy
    else:
        collapse_count = state.collapse_count
        dgm_entropy = jnp.asarray(jnp.nan, dtype)
    collapse_warning = collapse_count > COLLAPSE_PATIENCE
    if dgm_index >= 0:
        muted = jnp.where(jnp.arange(n_kernels) == dgm_index, 0.0, weights)
        muted = muted / jnp.maximum(jnp.sum(muted), jnp.finfo(dtype).tiny)
        weights = jnp.where(collapse_warning & (n_kernels > 1), muted, weights)
    prediction = jnp.dot(weights, kernel_predictions)
    prediction = jnp.where(jnp.isfinite(prediction), prediction, history.last)

    # 8. Kernel updates.
    kernel_states = tuple(
        kernel.update(kernel_state, history, hp)
        for kernel, kernel_state in zip(kernels, state.kernel_states)
    )

    new_state = PredictorState(
        config=config,
        hyperparams=hp,
        buffer=buffer,
        buffer_count=count,
        step_count=state.step_count + 1,
        prediction=prediction,
        kernel_predictions=kernel_predictions,
        weights=weights,
        cusum=cusum,
        loss_type=loss_type.astype(jnp.int32),
        calm_streak=calm_streak.astype(jnp.int32),
        missing_streak=missing_streak.astype(jnp.int32),
        fresh_streak=fresh_streak.astype(jnp.int32),
        degraded=degraded,
        emergency=jnp.where(observed, trip, state.emergency),
        collapse_count=collapse_count.astype(jnp.int32),
        kernel_states=kernel_states,
    )
    new_state = _keep_finite(new_state, state)

    # 9. Telemetry.
    nan = jnp.asarray(jnp.nan, dtype)
    telemetry = Telemetry(
        holder_exponent=holder.astype(dtype),
        cusum_drift=cusum_info.drift,
        distance_to_alarm=cusum_info.distance_to_alarm,
        kurtosis=cusum_info.kurtosis,
        adaptive_threshold=cusum_info.threshold,
        dgm_entropy=dgm_entropy.astype(dtype),
        free_energy=jnp.where(flow_ran, jko_info.free_energy, nan),
        kernel_weights=new_state.weights,
        degraded_inference_mode=degraded,
        emergency_mode=trip,
        regime_change_detected=alarm,
        mode_collapse_warning=collapse_warning,
        sinkhorn_converged=jnp.where(flow_ran, jko_info.converged, True),
        loss_type=new_state.loss_type,
        observation_missing=~observed,
        observation_rejected=rejected,
        error=jnp.where(error_valid, error, nan),
        error_scale=sigma.astype(dtype),
        kernel_fallback=jnp.stack([f.fallback for f in forecasts]),
        kernel_converged=jnp.stack([f.converged for f in forecasts]),
    )
    output = StepOutput(
        prediction=new_state.prediction,
        kernel_predictions=new_state.kernel_predictions,
        weights=new_state.weights,
        telemetry=telemetry,
    )
    return new_state, output


_step_jit = jax.jit(step_impl)


def step(state: PredictorState, obs, key: PRNGKeyArray) -> tuple[PredictorState, StepOutput]:
    """One online step: take y_t, update everything, forecast y_{t+1}.

    A single jitted pure function (DESIGN §2). ``obs`` is a scalar or a
    ``(channels,)`` vector (channel 0 is the target); NaN means "no
    observation this step", ±Inf is treated as missing and flagged.

    Args:
        state: the current :class:`PredictorState`.
        obs: y_t, shape ``()`` or ``(channels,)``.
        key: a PRNG key for this step (Monte Carlo kernels).

    Returns:
        ``(new_state, output)`` with ``output.prediction`` = ŷ_{t+1}.

    Example:
        >>> state, out = fp.step(state, jnp.log(4000.0), jax.random.key(1))
    """
    return _step_jit(state, obs, key)


def _check_shape(data, config: PredictorConfig) -> None:
    if data.ndim == 0 or data.ndim > 2 or (config.n_channels > 1 and data.ndim != 2):
        raise ValueError(
            f"data must have shape (time,) or (time, {config.n_channels}), got {data.shape}"
        )
    if data.ndim == 2 and data.shape[1] != config.n_channels:
        raise ValueError(f"data has {data.shape[1]} channels, config.n_channels = {config.n_channels}")


def _scan(state, data, keys, active=None, keep_outputs: bool = True):
    """``lax.scan`` of :func:`step_impl`. ``active`` (bool per step), when given,
    turns padded steps into no-ops (the carry is kept), so a series can be cut
    into equal chunks that share one compiled program."""

    def body(carry, inputs):
        obs, step_key, on = inputs
        new_carry, output = step_impl(carry, obs, step_key)
        if active is not None:
            new_carry = jax.tree_util.tree_map(lambda n, o: jnp.where(on, n, o), new_carry, carry)
        return new_carry, (output if keep_outputs else None)

    flags = jnp.ones(data.shape[0], bool) if active is None else active
    return jax.lax.scan(body, state, (data, keys, flags))


@jax.jit
def _predict_jit(state, data, keys):
    return _scan(state, data, keys, keep_outputs=True)


@jax.jit
def _fit_jit(state, data, keys):
    return _scan(state, data, keys, keep_outputs=False)[0]


@jax.jit
def predict_chunk(state, data, keys, active):
    """``predict`` over a padded chunk with explicit per-step keys (host drivers
    such as the CLI backtest use it to show progress with one compilation)."""
    return _scan(state, data, keys, active=active, keep_outputs=True)


def _check_data(data):
    array = np.asarray(data) if not isinstance(data, jax.Array) else data
    if not (jnp.issubdtype(array.dtype, jnp.floating) or jnp.issubdtype(array.dtype, jnp.integer)):
        raise TypeError(f"data must be real (float or int), got dtype {array.dtype}")
    if array.ndim == 0 or array.shape[0] == 0:
        raise ValueError("data must hold at least one observation")


def predict(state: PredictorState, data, key: PRNGKeyArray) -> tuple[PredictorState, StepOutput]:
    """Run ``step`` over ``data`` with ``lax.scan``; outputs stacked on axis 0.

    Step t receives ``jax.random.split(key, T)[t]``, so a Python loop of
    :func:`step` with the same keys reproduces it.

    Args:
        state: the starting state.
        data: ``(time,)`` or ``(time, channels)`` observations (NaN = missing).
        key: PRNG key split into one key per step.

    Returns:
        ``(final_state, outputs)`` where every leaf of ``outputs`` has a
        leading ``time`` axis.
    """
    _check_key(key)
    _check_data(data)
    data = jnp.asarray(data, state.config.jnp_dtype)
    _check_shape(data, state.config)
    return _predict_jit(state, data, jax.random.split(key, data.shape[0]))


def fit(state: PredictorState, history, key: PRNGKeyArray) -> PredictorState:
    """Warm the state up on ``history`` (a ``lax.scan`` of ``step``, outputs dropped).

    Same key schedule as :func:`predict`.
    """
    _check_key(key)
    _check_data(history)
    history = jnp.asarray(history, state.config.jnp_dtype)
    _check_shape(history, state.config)
    return _fit_jit(state, history, jax.random.split(key, history.shape[0]))


__all__ = ["init", "step", "step_impl", "fit", "predict", "predict_chunk", "build_kernels"]
