r"""The interval layer the engine calls once per step: laws → mixture quantiles → quantile tracking.

Per step, for one asset, with L = ``len(config.quantile_levels)`` and K kernels:

1. **Residual scales.** Each kernel k keeps an exponentially weighted mean
   of its absolute one-step errors :math:`|y_t - f_{k,t-1}|`, bias-corrected
   as in Adam (divided by the weight sum :math:`1 - (1 - a)^n`, so the first
   errors are not shrunk toward 0), rate a = ``interval_scale_rate``. An
   error above ``CLIP_SCALES`` times the current scale is clipped there
   before it enters the mean (a 1e12 bad tick would otherwise set the scale
   for hundreds of steps). Before any error, the scale is the mean absolute
   increment of the window.
2. **Laws.** A kernel that gives its own law (``step_with_law``: kernel A its
   Monte Carlo draws, kernel C its jump-diffusion transition law) uses it
   when valid; every other kernel, and a kernel whose own law is invalid
   this step, gets the location-scale Student-t (ν = 4) at its forecast with
   its residual scale (for ν = 4 the scale is E|y - loc|, so the mean
   absolute error is the scale itself). Third-party kernels need nothing.
3. **Mixture weights.** With ``config.interval_weights == "ensemble"`` the
   point forecast's weights ρ. With ``"pinball"`` (the default) weights
   learnt for the quantiles themselves, as in CRPS learning (Berrisch & Ziel,
   "CRPS learning", J. Econometrics 2023): each kernel's own law is scored
   by its mean pinball loss over the nominal levels, in units of the mean
   residual scale, and the weights are an exponentially weighted softmin of
   the discounted losses,

   .. math:: w_{t,k} \propto \exp\bigl(-\eta \textstyle\sum_{s \le t} \lambda^{t-s} \ell_{s,k}\bigr),

   η = ``interval_weight_learning_rate``, λ = ``interval_weight_forgetting``.
   The point weights minimise squared error, which on heavy-tailed data
   favours whichever kernel missed the last jump least; the pinball loss is
   the quantiles' own proper score.
4. **Mixture quantiles** at the L nominal levels in one root find: the
   uncalibrated mixture, reported as ``raw_quantiles`` (the baseline).
5. **Calibration** (:mod:`fnpredict.intervals.conformal`): before 4, each
   level's offset θ_p moves by the outcome y_t against the quantile issued
   at t-1 (:func:`~fnpredict.intervals.conformal.tracking_update`, rate
   η = ``interval_learning_rate`` scales per step at the median, η/(4p(1-p))
   at level p); after 4 the issued
   quantiles are the raw ones moved by θ_p times the mixture's scale
   :math:`s_t = \sum_k w_{t,k} s_{t,k}` (the mixture weights times the
   kernels' residual scales of step 1), rearranged to be monotone.

All shapes are fixed by the config; the state is a few (K,) and (L,)
vectors in the ``PredictorState``. With ``quantile_levels=()`` the layer is
off and the engine skips it at trace time (L = 0 arrays in the output).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .conformal import offset_quantiles, rearrange, tracking_update
from .laws import StudentTMixtureLaw, scale_floor
from .mixture import stacked_mixture_quantiles

__all__ = ["IntervalState", "IntervalInfo", "interval_init", "interval_update", "CLIP_SCALES"]

#: Errors beyond this many residual scales are clipped before entering the
#: scale's mean. 10 Student-t(4) scales is the 0.9995 quantile of |T_4|
#: (P(|T| > 10) = 5.6e-4): a clipped error is still a large one, and one
#: clipped 1e12 tick moves the scale by at most a factor 1 + 9a.
CLIP_SCALES = 10.0


class IntervalState(eqx.Module):
    """The interval layer's learned state (per asset).

    Attributes:
        abs_error: (K,) exponentially weighted sum of |error| per kernel.
        error_weight: (K,) the matching weight sum 1 - (1 - a)^n (0 before any error).
        offsets: (L,) the calibration offsets θ, in scales (start at 0).
        quantiles: (L,) the calibrated quantiles issued at the last step (for y_{t+1}).
        issued: whether ``quantiles`` were issued from a real forecast.
        kernel_quantiles: (K, L) each kernel's own quantiles at the nominal
            levels, issued at the last step (scored by the pinball weights).
        pinball_loss: (K,) the discounted sum of each kernel's normalised
            pinball losses (the pinball weights' input).
    """

    abs_error: Float[Array, " kernels"]
    error_weight: Float[Array, " kernels"]
    offsets: Float[Array, " probs"]
    quantiles: Float[Array, " probs"]
    issued: Bool[Array, ""]
    kernel_quantiles: Float[Array, "kernels probs"]
    pinball_loss: Float[Array, " kernels"]


class IntervalInfo(eqx.Module):
    """Per-step diagnostics of the interval layer (telemetry ``intervals``).

    Attributes:
        raw_quantiles: (L,) the uncalibrated mixture's quantiles at the nominal
            levels (the layer without calibration), for y_{t+1}.
        offsets: (L,) the calibration offsets θ after this step's update, in
            units of ``scale``.
        scale: the mixture's scale s_t the offsets are measured in.
        hits: (L,) 1{y_t <= q_{t-1}} for the quantiles issued last step; NaN
            when y_t is missing or nothing was issued.
        kernel_scales: (K,) each kernel's residual scale (its Student-t scale).
        own_law: (K,) True where the kernel's own law was used this step.
        mixture_weights: (K,) the weights of the mixture this step (the
            ensemble weights, or the pinball weights).
    """

    raw_quantiles: Float[Array, " probs"]
    offsets: Float[Array, " probs"]
    scale: Float[Array, ""]
    hits: Float[Array, " probs"]
    kernel_scales: Float[Array, " kernels"]
    own_law: Bool[Array, " kernels"]
    mixture_weights: Float[Array, " kernels"]


def interval_init(n_kernels: int, levels: tuple[float, ...], dtype) -> IntervalState:
    """A fresh layer: no errors seen, every offset 0."""
    nominal = jnp.asarray(levels, dtype)
    return IntervalState(
        abs_error=jnp.zeros((n_kernels,), dtype),
        error_weight=jnp.zeros((n_kernels,), dtype),
        offsets=jnp.zeros_like(nominal),
        quantiles=jnp.zeros_like(nominal),
        issued=jnp.zeros((), bool),
        kernel_quantiles=jnp.zeros((n_kernels, len(levels)), dtype),
        pinball_loss=jnp.zeros((n_kernels,), dtype),
    )


def _window_scale(history) -> Float[Array, ""]:
    """Mean absolute increment of the window's real observations (the scale before any error)."""
    values = history.target
    real = history.valid_mask()
    pairs = real[1:] & real[:-1]
    total = jnp.sum(jnp.where(pairs, jnp.abs(jnp.diff(values)), 0.0))
    return total / jnp.maximum(jnp.sum(pairs), 1).astype(values.dtype)


def interval_update(
    state: IntervalState,
    levels: tuple[float, ...],
    history,
    target: Float[Array, ""],
    error_valid: Bool[Array, ""],
    previous_predictions: Float[Array, " kernels"],
    predictions: Float[Array, " kernels"],
    own_laws: tuple,
    weights: Float[Array, " kernels"],
    learning_rate: Float[Array, ""],
    scale_rate: Float[Array, ""],
    iterations: int,
    weighting: str = "pinball",
    weight_learning_rate: Float[Array, ""] | float = 1.0,
    weight_forgetting: Float[Array, ""] | float = 0.99,
    shift: Float[Array, ""] | float = 0.0,
) -> tuple[IntervalState, Float[Array, " probs"], IntervalInfo]:
    """One step of the layer (module docstring): returns ``(state, quantiles, info)``.

    Args:
        state: the layer's state from the last step.
        levels: the nominal levels (static, increasing, in (0, 1)).
        history: the window ending at y_t.
        target: y_t.
        error_valid: y_t is real and a forecast was made for it.
        previous_predictions: (K,) the kernels' forecasts of y_t.
        predictions: (K,) the kernels' forecasts of y_{t+1}.
        own_laws: per kernel ``None`` or ``(law, valid)`` from ``step_with_law``.
        weights: (K,) the ensemble weights of this step's prediction.
        learning_rate: η, the calibration offsets' step in scales at the median.
        scale_rate: the residual scales' EWMA rate a.
        iterations: root-find iterations (static).
        weighting: ``"pinball"`` or ``"ensemble"`` (static; module docstring).
        weight_learning_rate: η of the pinball weights.
        weight_forgetting: λ of the pinball weights.
        shift: a location shift of every law (the bad-tick hedge,
            :mod:`fnpredict.input_filter`): the quantiles of laws all moved by
            ``h`` are the quantiles moved by ``h``, so the root find runs on
            the unshifted laws and ``h`` is added to what is issued.
    """
    dtype = predictions.dtype
    nominal = jnp.asarray(levels, dtype)

    # 1. Residual scales from this step's errors.
    prior = jnp.maximum(_window_scale(history), scale_floor(history.last))
    scales_before = jnp.where(state.error_weight > 0.0, state.abs_error / jnp.where(
        state.error_weight > 0.0, state.error_weight, 1.0), prior)
    errors = jnp.abs(target - previous_predictions)
    errors = jnp.minimum(errors, jnp.where(state.error_weight > 0.0, CLIP_SCALES * scales_before, errors))
    decay = 1.0 - scale_rate
    abs_error = jnp.where(error_valid, decay * state.abs_error + scale_rate * errors, state.abs_error)
    error_weight = jnp.where(error_valid, decay * state.error_weight + scale_rate, state.error_weight)
    scales = jnp.where(error_weight > 0.0, abs_error / jnp.where(error_weight > 0.0, error_weight, 1.0), prior)
    scales = jnp.maximum(scales, scale_floor(history.last))

    # 5a. The offsets move by y_t against the quantiles issued for it.
    offsets, hits = tracking_update(
        state.offsets, nominal, state.quantiles, target, error_valid & state.issued, learning_rate
    )

    # 2. One law per kernel; an own law enters with weight w_k·valid, the
    # Student-t fallback with w_k·(1 - valid), so the choice is data.
    pinball_loss, kernel_quantiles = state.pinball_loss, state.kernel_quantiles
    if weighting == "pinball":
        # 3. Score each kernel's last quantiles on y_t, then its quantiles for y_{t+1}.
        u = target - state.kernel_quantiles
        losses = jnp.mean(u * (nominal - (u < 0.0).astype(dtype)), axis=1) / jnp.mean(scales)
        pinball_loss = jnp.where(error_valid & state.issued, weight_forgetting * state.pinball_loss + losses,
                                 state.pinball_loss)
        logits = -weight_learning_rate * (pinball_loss - jnp.min(pinball_loss))
        mixture_weights = jax.nn.softmax(logits).astype(dtype)
        mixture_weights = jnp.where(jnp.all(jnp.isfinite(mixture_weights)), mixture_weights, weights)
    else:
        mixture_weights = weights
    # Every kernel's Student-t fallback is one component of a single
    # StudentTMixtureLaw (one operation per root-find iteration, not one per kernel).
    own = jnp.stack([jnp.zeros((), bool) if entry is None else jnp.asarray(entry[1], bool) for entry in own_laws])
    own_laws_used = [(k, entry[0]) for k, entry in enumerate(own_laws) if entry is not None]
    laws = [law for _, law in own_laws_used]
    law_weights = [jnp.where(own[k], mixture_weights[k], 0.0) for k, _ in own_laws_used]
    laws.append(StudentTMixtureLaw(weights=jnp.where(own, 0.0, mixture_weights), locs=predictions, scales=scales))
    law_weights.append(jnp.ones((), dtype))
    law_weights = jnp.stack(law_weights).astype(dtype)

    # 4. The mixture's quantiles at the nominal levels, in the same root find
    # as the own laws that have no closed-form quantile (kernel C's mixture;
    # the pinball weights score them next step); 5b. moved by the offsets.
    root_found = [k for k, entry in enumerate(own_laws) if weighting == "pinball" and _needs_root_find(entry)]
    ones = jnp.ones((1,), dtype)
    solved = stacked_mixture_quantiles(
        ((tuple(laws), law_weights, nominal),) + tuple(((own_laws[k][0],), ones, nominal) for k in root_found),
        iterations,
    )
    raw = rearrange(solved[0])
    if weighting == "pinball":
        own_solved = dict(zip(root_found, solved[1:]))
        fallback_quantiles = laws[-1].quantiles(nominal)
        kernel_quantiles = jnp.stack([
            _own_quantiles(entry, fallback_quantiles[k], nominal, own_solved.get(k))
            for k, entry in enumerate(own_laws)
        ])
    mixture_scale = jnp.dot(mixture_weights, scales)
    calibrated = offset_quantiles(raw, offsets, mixture_scale)
    # A non-finite quantile (only from non-finite inputs the engine already
    # replaces) falls back to the point forecast's level.
    fallback_level = jnp.dot(weights, predictions)
    raw = jnp.where(jnp.isfinite(raw), raw, fallback_level) + shift
    calibrated = jnp.where(jnp.isfinite(calibrated), calibrated, fallback_level) + shift
    if weighting == "pinball":
        kernel_quantiles = kernel_quantiles + shift

    new_state = IntervalState(
        abs_error=abs_error,
        error_weight=error_weight,
        offsets=offsets,
        quantiles=calibrated,
        issued=history.count > 0,
        kernel_quantiles=kernel_quantiles,
        pinball_loss=pinball_loss,
    )
    info = IntervalInfo(
        raw_quantiles=jax.lax.stop_gradient(raw),
        offsets=offsets,
        scale=mixture_scale,
        hits=hits,
        kernel_scales=scales,
        own_law=own,
        mixture_weights=mixture_weights,
    )
    return new_state, calibrated, info


def _needs_root_find(entry) -> bool:
    """Whether a kernel's own law (``None`` or ``(law, valid)``) has no closed-form quantile."""
    return entry is not None and not hasattr(entry[0], "quantile")


def _own_quantiles(entry, fallback, nominal, solved=None):
    """One kernel's quantiles at the nominal levels: its own law's when valid, else ``fallback`` (its Student-t's).

    ``solved``: the own law's quantiles from the stacked root find, for a law
    without a closed-form quantile (:func:`_needs_root_find`).
    """
    if entry is None:
        return fallback
    law, valid = entry
    own = law.quantile(nominal) if solved is None else solved
    return jnp.where(jnp.asarray(valid, bool) & jnp.all(jnp.isfinite(own)), own, fallback)
