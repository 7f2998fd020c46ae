"""Wiring: ``init``, ``step``, ``fit``, ``predict``.

This module only connects components (like blackjax's ``hmc.py``): the
kernels (:mod:`fnpredict.kernels`), the weight rule
(:mod:`fnpredict.orchestrator`), the guards (:mod:`fnpredict.guards`) and the
identification signals (:mod:`fnpredict.sia`) are all values of the config,
and the policy lives in the guards' precedence table, not here. One step, in
the order of DESIGN §2, for one asset:

0. the bad-tick filter may hold y_t back (then the step counts as missing)
   or confirm a held value (pushed first);
1. error e_t = y_t − ŷ_t (skipped when y_t is missing or held);
2. regime detectors on the standardized error: the magnitude CUSUM (kurtosis
   window, adaptive threshold) and the signed two-sided Page CUSUM;
3. the losses of the previous kernel forecasts against y_t (the rule's input);
4. buffer update with y_t;
5. Hölder exponent h_min of the buffer (WTMM);
6. each kernel learns from y_t and forecasts y_{t+1} (one call per kernel);
7. the weight rule proposes weights, the guards may override them;
8. prediction = weights · kernel forecasts; the interval layer
   (:mod:`fnpredict.intervals`) turns the kernels' laws and the weights into
   calibrated quantiles of y_{t+1};
9. a non-finite value never enters the carry; telemetry.

Every branch is ``jnp.where`` / ``lax.select`` on data, so one compiled step
serves ``scan`` and ``vmap`` alike. Diagnostics sit behind
``lax.stop_gradient``.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .config import Hyperparams, PredictorConfig
from .guards import Decision, Signals
from .input_filter import filter_init, filter_observation
from .intervals import interval_init, interval_update
from .kernels import History, NoInfo
from .orchestrator import RuleInput
from .orchestrator.losses import energy_gradient, linearized_losses
from .results import step_result
from .sia.cusum import cusum_init, cusum_reset, cusum_update
from .sia.signed_detector import signed_detector_init, signed_detector_update
from .sia.wtmm import holder_exponent
from .state import PredictorState
from .telemetry import LOSS_MSE, StepOutput, Telemetry


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
    return _init_program(config, hyperparams)


@functools.partial(jax.jit, static_argnums=0)
def _init_program(config: PredictorConfig, hyperparams: Hyperparams) -> PredictorState:
    """The array part of :func:`init`: one compiled program per config.

    Run op by op it dispatched (and, in a fresh process, compiled or fetched
    from the persistent cache) a few hundred small programs; jitted it is one
    program, one persistent-cache entry, and one dispatch.
    """
    dtype = config.jnp_dtype
    hyperparams = jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf, dtype), hyperparams)
    hyperparams = hyperparams.with_defaults(config.kernel_objects + (config.rule_object,))
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
        page=signed_detector_init(dtype),
        input_filter=filter_init(config.n_channels, dtype),
        loss_type=jnp.asarray(LOSS_MSE, jnp.int32),
        kernel_states=tuple(
            kernel.init(hyperparams.component(kernel.name), dtype) for kernel in config.kernel_objects
        ),
        rule_state=config.rule_object.init(n_kernels, hyperparams, dtype),
        guard_states=tuple(guard.init(n_kernels, dtype) for guard in config.guard_objects),
        intervals=interval_init(n_kernels, config.quantile_levels, dtype),
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
    """Leafwise guard: a non-finite float never enters the carry (the old value stays).

    Returns ``(state, repaired)``, ``repaired`` True when any value was kept out.
    """
    new_leaves, treedef = jax.tree_util.tree_flatten(new)
    old_leaves = jax.tree_util.tree_leaves(old)
    kept, repaired = [], jnp.zeros((), bool)
    for n, o in zip(new_leaves, old_leaves):
        if jnp.issubdtype(jnp.asarray(n).dtype, jnp.inexact):
            finite = jnp.isfinite(n)
            repaired = repaired | ~jnp.all(finite)
            n = jnp.where(finite, n, o)
        kept.append(n)
    return jax.tree_util.tree_unflatten(treedef, kept), repaired


def step_impl(state: PredictorState, obs, key: PRNGKeyArray) -> tuple[PredictorState, StepOutput]:
    """The un-jitted step (for embedding in a larger traced program). See :func:`step`."""
    config = state.config
    hp = state.hyperparams
    dtype = config.jnp_dtype
    kernels, rule, guards = config.kernel_objects, config.rule_object, config.guard_objects
    obs = _as_observation(obs, config)
    kernel_keys = jax.random.split(key, config.n_kernels)

    # Bad data is data: NaN = missing; ±Inf = missing and flagged; an
    # implausible jump is held back until the next observation decides.
    rejected = jnp.any(jnp.isinf(obs))
    finite = jnp.all(jnp.isfinite(obs))
    window = History(values=state.buffer, count=state.buffer_count, observed=finite)
    input_filter, filter_info = state.input_filter, None
    observed = finite
    if config.bad_tick_filter:
        input_filter, window, observed, filter_info = filter_observation(
            state.input_filter, obs, finite, window, hp.bad_tick_threshold
        )
    target = jnp.where(observed, obs[0], window.last)

    # 1-2. Error of the forecast made at t-1, and the regime detectors on it.
    error_valid = observed & (state.buffer_count > 0)
    error = jnp.where(error_valid, target - state.prediction, 0.0)
    cusum, cusum_info = cusum_update(
        state.cusum, error, error_valid, hp.cusum_h, hp.cusum_k, hp.error_alpha
    )
    magnitude_alarm = cusum_info.alarm & error_valid
    cusum = jax.tree_util.tree_map(
        lambda reset, kept: jnp.where(magnitude_alarm, reset, kept), cusum_reset(cusum), cusum
    )
    # The signed detector runs on its own drift-tracking reference (see
    # fnpredict.sia.signed_detector): the ensemble's errors re-centre too fast.
    page, page_info = signed_detector_update(
        state.page, jax.lax.stop_gradient(target - window.last), observed & (window.count > 0), hp.page_h, hp.page_k
    )
    alarm = jnp.zeros((), bool)
    if "magnitude" in config.regime_detectors:
        alarm = alarm | magnitude_alarm
    if "signed" in config.regime_detectors:
        alarm = alarm | page_info.alarm
    # Not stopped: σ scales the rule's losses, so it is on the forecast path
    # (through the errors and error_alpha); cusum_update keeps the test itself
    # behind stop_gradient.
    sigma = cusum_info.sigma

    # 3. What the weight rule learns from: the previous forecasts' losses.
    inputs = RuleInput(
        predictions=state.kernel_predictions,
        target=target,
        losses=energy_gradient(state.kernel_predictions, target, sigma, state.loss_type, hp.huber_delta_scale),
        linearized_losses=linearized_losses(
            state.kernel_predictions, state.weights, target, sigma, state.loss_type, hp.huber_delta_scale
        ),
        scale=sigma,
        loss_type=state.loss_type,
        valid=error_valid,
    )

    # 4-5. Buffer, and the Hölder exponent of the window.
    history = window.push(obs, observed)
    h_min, h_valid = holder_exponent(
        jax.lax.stop_gradient(history.values[:, 0]), config.scales, config.q_moments, hp.besov_c, config.wavelet
    )
    h_ready = h_valid & (history.count >= config.holder_min_count)

    # 6. Each kernel learns from y_t, then forecasts y_{t+1}.
    # After a signed alarm they see only the new regime (config.regime_window).
    kernel_history = history
    if config.regime_window:
        since_alarm = (page.drift_count + 1.0).astype(history.count.dtype)
        kernel_history = eqx.tree_at(
            lambda h: h.count, history, jnp.minimum(history.count, jnp.maximum(since_alarm, config.regime_window))
        )
    # (With intervals on, each kernel may also return its own predictive law.)
    intervals_on = config.n_levels > 0
    kernel_steps = [
        kernel.step_with_law(kernel_state, kernel_history, hp.component(kernel.name), kernel_key) if intervals_on
        else (*kernel.step(kernel_state, kernel_history, hp.component(kernel.name), kernel_key), None)
        for kernel, kernel_state, kernel_key in zip(kernels, state.kernel_states, kernel_keys)
    ]
    kernel_states = tuple(s for s, _, _, _ in kernel_steps)
    forecasts = [f for _, f, _, _ in kernel_steps]
    kernel_infos = tuple(i for _, _, i, _ in kernel_steps)
    kernel_predictions = jnp.stack([f.value for f in forecasts])
    # While a value is held, every forecast moves by π × the held jump
    # (fnpredict.input_filter: the minimum-MSE forecast given both hypotheses).
    hedge = filter_info.hedge if filter_info is not None else jnp.zeros((), dtype)
    unhedged_predictions = kernel_predictions
    kernel_predictions = kernel_predictions + hedge

    # 7. The rule proposes, the guards dispose (precedence: fnpredict.guards).
    rule_weights, rule_state, rule_info = rule.update(state.rule_state, state.weights, inputs, hp)
    decision = Decision(
        weights=jnp.where(error_valid, rule_weights, state.weights),
        rule_accepted=error_valid,
        reset_rule=jnp.zeros((), bool),
        loss_type=state.loss_type,
        emergency=jnp.zeros((), bool),
        regime_reset=jnp.zeros((), bool),
        degraded=jnp.zeros((), bool),
        collapse_warning=jnp.zeros((), bool),
    )
    signals = Signals(
        observed=observed,
        error_valid=error_valid,
        holder=jnp.where(h_ready, h_min, jnp.nan).astype(dtype),
        holder_ready=h_ready,
        alarm=alarm,
        kernel_infos=kernel_infos,
        kernel_names=config.kernel_names,
        previous_weights=state.weights,
        jump_confirmed=filter_info.confirmed if filter_info is not None else jnp.zeros((), bool),
    )
    guard_states, guard_infos = [], {}
    for guard, guard_state in zip(guards, state.guard_states):
        decision, guard_state, guard_info = guard.apply(decision, signals, guard_state, hp)
        guard_states.append(guard_state)
        guard_infos[guard.name] = guard_info
    fresh_rule = rule.reset(rule_state, config.n_kernels, hp, dtype)
    rule_state = jax.tree_util.tree_map(
        lambda new, old, reset: jnp.where(decision.reset_rule, reset, jnp.where(decision.rule_accepted, new, old)),
        rule_state, state.rule_state, fresh_rule,
    )

    # 8. The ensemble forecast.
    weights = decision.weights
    prediction = jnp.dot(weights, kernel_predictions)
    prediction = jnp.where(jnp.isfinite(prediction), prediction, history.last)
    intervals, interval_info = state.intervals, NoInfo()
    quantiles = jnp.zeros((0,), dtype)
    if intervals_on:
        intervals, quantiles, interval_info = interval_update(
            state.intervals, config.quantile_levels, history, target, error_valid,
            state.kernel_predictions, unhedged_predictions, tuple(law for _, _, _, law in kernel_steps),
            weights, hp.interval_learning_rate, hp.interval_scale_rate, config.quantile_iterations,
            config.interval_weights, hp.interval_weight_learning_rate, hp.interval_weight_forgetting,
            shift=hedge,
        )

    # 9. Carry, then telemetry.
    new_state, repaired = _keep_finite(
        PredictorState(
            config=config,
            hyperparams=hp,
            buffer=history.values,
            buffer_count=history.count,
            step_count=state.step_count + 1,
            prediction=prediction,
            kernel_predictions=kernel_predictions,
            weights=weights,
            cusum=cusum,
            page=page,
            input_filter=input_filter,
            loss_type=decision.loss_type.astype(jnp.int32),
            kernel_states=kernel_states,
            rule_state=rule_state,
            guard_states=tuple(guard_states),
            intervals=intervals,
        ),
        state,
    )
    nan = jnp.asarray(jnp.nan, dtype)
    flow_ran = decision.rule_accepted
    entropies = [info.entropy for info in kernel_infos if hasattr(info, "entropy")]
    kernel_fallback = jnp.stack([f.fallback for f in forecasts])
    kernel_converged = jnp.stack([f.converged for f in forecasts])
    rule_converged = jnp.asarray(getattr(rule_info, "converged", True), bool)
    telemetry = Telemetry(
        holder_exponent=signals.holder,
        cusum_drift=cusum_info.drift,
        distance_to_alarm=cusum_info.distance_to_alarm,
        kurtosis=cusum_info.kurtosis,
        adaptive_threshold=cusum_info.threshold,
        dgm_entropy=(entropies[0] if entropies else nan).astype(dtype),
        free_energy=jnp.where(flow_ran, jnp.asarray(getattr(rule_info, "free_energy", nan), dtype), nan),
        kernel_weights=new_state.weights,
        degraded_inference_mode=decision.degraded,
        emergency_mode=decision.emergency,
        regime_change_detected=alarm,
        mode_collapse_warning=decision.collapse_warning,
        sinkhorn_converged=jnp.where(flow_ran, rule_converged, True),
        loss_type=new_state.loss_type,
        observation_missing=~finite,
        observation_rejected=rejected,
        observation_held=filter_info.held if filter_info is not None else jnp.zeros((), bool),
        error=jnp.where(error_valid, error, nan),
        error_scale=sigma.astype(dtype),
        kernel_fallback=kernel_fallback,
        kernel_converged=kernel_converged,
        state_repaired=repaired,
        status=step_result(
            observation_missing=~finite,
            observation_rejected=rejected,
            observation_held=~observed & finite,
            kernel_fallback=jnp.any(kernel_fallback),
            solver_not_converged=~jnp.all(kernel_converged) | (flow_ran & ~rule_converged),
            regime_reset=decision.regime_reset,
            collapse_muted=decision.collapse_warning,
            emergency=decision.emergency,
            degraded=decision.degraded,
            state_repaired=repaired,
        ),
        kernels=dict(zip(config.kernel_names, kernel_infos)),
        rule=rule_info,
        guards=guard_infos,
        cusum=cusum_info,
        page=page_info,
        input_filter=filter_info if filter_info is not None else NoInfo(),
        regime_detector=(magnitude_alarm.astype(jnp.int32) + 2 * page_info.alarm.astype(jnp.int32)),
        intervals=interval_info,
    )
    output = StepOutput(
        prediction=new_state.prediction,
        kernel_predictions=new_state.kernel_predictions,
        weights=new_state.weights,
        quantiles=new_state.intervals.quantiles if intervals_on else quantiles,
        quantile_levels=jnp.asarray(config.quantile_levels, dtype).reshape(config.n_levels),
        telemetry=telemetry,
    )
    return new_state, output


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

    It is the ``jax.jit``-compiled function itself, so ahead-of-time
    compilation works: ``fp.step.lower(state, obs, key).compile()``.

    Example:
        >>> state, out = fp.step(state, jnp.log(4000.0), jax.random.key(1))
    """
    return step_impl(state, obs, key)


step = jax.jit(step)


def _check_shape(data, config: PredictorConfig) -> None:
    if data.ndim == 0 or data.ndim > 2 or (config.n_channels > 1 and data.ndim != 2):
        raise ValueError(
            f"data must have shape (time,) or (time, {config.n_channels}), got {data.shape}"
        )
    if data.ndim == 2 and data.shape[1] != config.n_channels:
        raise ValueError(f"data has {data.shape[1]} channels, config.n_channels = {config.n_channels}")


def scan(state, data, keys, active=None, keep_outputs: bool = True, checkpoint: int = 0):
    """``lax.scan`` of :func:`step_impl` with explicit per-step keys (un-jitted, for embedding).

    ``active`` (bool per step), when given,
    turns padded steps into no-ops (the carry is kept), so a series can be cut
    into equal chunks that share one compiled program.

    ``checkpoint`` bounds the memory of reverse-mode differentiation through
    the scan (``jax.checkpoint``: recompute in the backward pass instead of
    storing). With T steps and a carry of S bytes:

    - ``0`` (default): every step's intermediates are stored (no remat);
    - ``1``: each step is rematerialised, the backward pass stores one carry
      per step, T·S;
    - ``n > 1``: the steps are also grouped in segments of n, each
      rematerialised as a whole: the backward pass stores T/n carries at the
      segment boundaries and the n carries of the one segment it is
      replaying, (T/n + n)·S, smallest (2√T·S) at n ≈ √T, for one more
      forward pass of compute. T need not be a multiple of n (the last
      segment is padded with no-op steps).

    The values (and gradients) are the same for every ``checkpoint``.
    """
    n_steps = data.shape[0]
    segment = int(checkpoint)
    if segment < 0:
        raise ValueError(f"checkpoint must be >= 0, got {checkpoint}")
    pad = (-n_steps) % segment if segment > 1 else 0
    gated = active is not None or pad > 0

    def body(carry, inputs):
        obs, step_key, on = inputs
        new_carry, output = step_impl(carry, obs, step_key)
        if gated:
            new_carry = jax.tree_util.tree_map(lambda n, o: jnp.where(on, n, o), new_carry, carry)
        return new_carry, (output if keep_outputs else None)

    flags = jnp.ones(n_steps, bool) if active is None else active
    if segment == 0:
        return jax.lax.scan(body, state, (data, keys, flags))
    body = jax.checkpoint(body)
    if segment == 1:
        return jax.lax.scan(body, state, (data, keys, flags))
    # Padding repeats the last observation and key (a finite, inactive step).
    inputs = jax.tree_util.tree_map(
        lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]), (data, keys, flags)
    )
    inputs = (inputs[0], inputs[1], inputs[2].at[n_steps:].set(False))
    inputs = jax.tree_util.tree_map(lambda x: x.reshape((-1, segment) + x.shape[1:]), inputs)

    @jax.checkpoint
    def run_segment(carry, segment_inputs):
        return jax.lax.scan(body, carry, segment_inputs)

    final, outputs = jax.lax.scan(run_segment, state, inputs)
    outputs = jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:])[:n_steps], outputs)
    return final, outputs


@functools.partial(jax.jit, static_argnames=("checkpoint",))
def _predict_jit(state, data, keys, checkpoint=0):
    return scan(state, data, keys, keep_outputs=True, checkpoint=checkpoint)


@functools.partial(jax.jit, static_argnames=("checkpoint",))
def _fit_jit(state, data, keys, checkpoint=0):
    return scan(state, data, keys, keep_outputs=False, checkpoint=checkpoint)[0]


@jax.jit
def predict_chunk(state, data, keys, active):
    """``predict`` over a padded chunk with explicit per-step keys (host drivers
    such as the CLI backtest use it to show progress with one compilation)."""
    return scan(state, data, keys, active=active, keep_outputs=True)


def _check_data(data):
    array = np.asarray(data) if not isinstance(data, jax.Array) else data
    if not (jnp.issubdtype(array.dtype, jnp.floating) or jnp.issubdtype(array.dtype, jnp.integer)):
        raise TypeError(f"data must be real (float or int), got dtype {array.dtype}")
    if array.ndim == 0 or array.shape[0] == 0:
        raise ValueError("data must hold at least one observation")


def predict(
    state: PredictorState, data, key: PRNGKeyArray, checkpoint: int = 0
) -> tuple[PredictorState, StepOutput]:
    """Run ``step`` over ``data`` with ``lax.scan``; outputs stacked on axis 0.

    Step t receives ``jax.random.split(key, T)[t]``, so a Python loop of
    :func:`step` with the same keys reproduces it.

    Args:
        state: the starting state.
        data: ``(time,)`` or ``(time, channels)`` observations (NaN = missing).
        key: PRNG key split into one key per step.
        checkpoint: rematerialisation for reverse-mode gradients (static;
            0 = none, 1 = per step, n > 1 = segments of n steps, n ≈ √T for
            the least memory); see :func:`scan`. Values do not change.

    Returns:
        ``(final_state, outputs)`` where every leaf of ``outputs`` has a
        leading ``time`` axis.
    """
    _check_key(key)
    _check_data(data)
    data = jnp.asarray(data, state.config.jnp_dtype)
    _check_shape(data, state.config)
    return _predict_jit(state, data, jax.random.split(key, data.shape[0]), checkpoint=int(checkpoint))


def fit(state: PredictorState, history, key: PRNGKeyArray, checkpoint: int = 0) -> PredictorState:
    """Warm the state up on ``history`` (a ``lax.scan`` of ``step``, outputs dropped).

    Same key schedule and ``checkpoint`` option as :func:`predict`.
    """
    _check_key(key)
    _check_data(history)
    history = jnp.asarray(history, state.config.jnp_dtype)
    _check_shape(history, state.config)
    return _fit_jit(state, history, jax.random.split(key, history.shape[0]), checkpoint=int(checkpoint))


__all__ = ["init", "step", "step_impl", "scan", "fit", "predict", "predict_chunk"]
