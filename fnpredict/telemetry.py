"""What one step reports: the forecast and every decision, as fixed-shape data.

No ``Optional`` fields: a value that does not exist this step is a documented
sentinel (NaN for floats), so a scanned backtest stacks outputs on axis 0 and a
vmapped one on the asset axis without special cases.
"""

import typing

import equinox as eqx
from equinox._enum import EnumerationItem  # the public type of RESULTS.<code> values (not re-exported)
import jax
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .orchestrator.losses import LOSS_HUBER, LOSS_MSE
from .results import RESULTS


class Telemetry(eqx.Module):
    """Per-step diagnostics (DESIGN §1), all scalars except the per-kernel arrays.

    Attributes:
        holder_exponent: h_min of the buffer from WTMM; NaN until the buffer
            holds ``holder_min_count`` observations or when WTMM found too few
            maxima (e.g. a constant series).
        cusum_drift: the CUSUM statistic G⁺ (standardized-error units) after
            this step's update (before an alarm resets it).
        distance_to_alarm: adaptive threshold − G⁺ (≤ 0 means alarm).
        kurtosis: kurtosis of the rolling error window (3 for Gaussian errors).
        adaptive_threshold: CUSUM threshold widened for heavy tails
            (≥ ``cusum_h``).
        dgm_entropy: the DGM entropy monitor, as the gap mean_t H[V(t)] − H[g]
            in nats (0: the solution is as spread as the payoff; collapse when
            below log ``dgm_collapse_gamma``); NaN while kernel B is off.
        free_energy: the JKO objective ⟨∇E, ρ⟩ + W_ε(ρ_prev, ρ)/τ at the weights
            the flow produced this step; NaN when the flow did not run (no
            error to learn from, degraded, emergency or alarm).
        kernel_weights: the weights used for this step's prediction (K,).
        degraded_inference_mode: True after ``ttl_max`` consecutive missing
            observations until ``ttl_recovery`` valid ones arrive; weights frozen.
        emergency_mode: the circuit breaker tripped this step (h_min <
            ``holder_threshold``): weight moved to the emergency kernel (D).
        regime_change_detected: a regime detector of ``regime_detectors``
            alarmed this step (the ``regime_reset`` guard resets the weights;
            the alarming CUSUM restarts); ``regime_detector`` says which.
        mode_collapse_warning: the DGM monitor has flagged collapse on more
            than 10 consecutive checks; kernel B's weight is forced to 0.
        sinkhorn_converged: the JKO Sinkhorn converged (possibly after the
            annealing retry); True when the flow did not run.
        loss_type: 0 = MSE, 1 = Huber (robust mode, entered on a circuit
            breaker trip).
        observation_missing: this step brought no usable observation (NaN or
            ±Inf in any channel).
        observation_rejected: the observation had ±Inf (treated as missing and
            flagged, unlike a plain NaN).
        observation_held: the observation was held back as a suspected bad
            tick (implausibly far from the recent path); used only if the next
            observation confirms the new level.
        error: y_t − ŷ_t; NaN when there is no observation or no prior forecast.
        error_scale: σ_t, the EMA error scale used to standardize errors.
        kernel_fallback: (K,) kernel k returned its last-value fallback.
        kernel_converged: (K,) kernel k's inner solver converged (True for
            kernels without one).
        state_repaired: a non-finite value was kept out of the carry this
            step (the old value stayed); never True in normal operation.
        status: the step's :class:`~fnpredict.results.RESULTS` code (the most
            important event, by the precedence documented there).
        kernels: each kernel's own ``Info``, by kernel name.
        rule: the weight rule's ``Info`` (e.g. :class:`~fnpredict.orchestrator.JKOInfo`).
        guards: each guard's ``Info``, by guard name.
        cusum: the magnitude CUSUM's :class:`~fnpredict.sia.cusum.CusumInfo`.
        page: the signed CUSUM's :class:`~fnpredict.sia.page.PageInfo`.
        input_filter: the bad-tick filter's
            :class:`~fnpredict.input_filter.InputFilterInfo` (empty when off).
        regime_detector: which detectors alarmed this step: 0 none, 1 the
            magnitude CUSUM, 2 the signed one, 3 both (whether or not the
            config lets it raise ``regime_change_detected``).
        intervals: the interval layer's
            :class:`~fnpredict.intervals.IntervalInfo` (uncalibrated mixture
            quantiles, calibration offsets and hits, kernel residual scales);
            empty when ``quantile_levels=()``.
    """

    holder_exponent: Float[Array, ""]
    cusum_drift: Float[Array, ""]
    distance_to_alarm: Float[Array, ""]
    kurtosis: Float[Array, ""]
    adaptive_threshold: Float[Array, ""]
    dgm_entropy: Float[Array, ""]
    free_energy: Float[Array, ""]
    kernel_weights: Float[Array, " kernels"]
    degraded_inference_mode: Bool[Array, ""]
    emergency_mode: Bool[Array, ""]
    regime_change_detected: Bool[Array, ""]
    mode_collapse_warning: Bool[Array, ""]
    sinkhorn_converged: Bool[Array, ""]
    loss_type: Int[Array, ""]
    observation_missing: Bool[Array, ""]
    observation_rejected: Bool[Array, ""]
    observation_held: Bool[Array, ""]
    error: Float[Array, ""]
    error_scale: Float[Array, ""]
    kernel_fallback: Bool[Array, " kernels"]
    kernel_converged: Bool[Array, " kernels"]
    state_repaired: Bool[Array, ""]
    status: RESULTS
    kernels: dict
    rule: eqx.Module
    guards: dict
    cusum: eqx.Module
    page: eqx.Module
    input_filter: eqx.Module
    regime_detector: Int[Array, ""]
    intervals: eqx.Module


class StepOutput(eqx.Module):
    """The result of one step.

    Attributes:
        prediction: the ensemble forecast of the next observation's channel 0,
            ŷ_{t+1} = Σ_k ρ_k f_k.
        kernel_predictions: each kernel's forecast f_k (K,).
        weights: ρ (K,), on the simplex.
        quantiles: (L,) calibrated quantiles of the next observation's
            channel 0 at ``quantile_levels``, non-decreasing in the level
            (:mod:`fnpredict.intervals`); L = 0 when intervals are off.
        quantile_levels: (L,) the nominal levels (the config's
            ``quantile_levels``, repeated each step so outputs are
            self-describing).
        telemetry: :class:`Telemetry`.
    """

    prediction: Float[Array, ""]
    kernel_predictions: Float[Array, " kernels"]
    weights: Float[Array, " kernels"]
    quantiles: Float[Array, " probs"]
    quantile_levels: Float[Array, " probs"]
    telemetry: Telemetry


def _scalar_field_names() -> tuple[str, ...]:
    # Derived from the class: the flat fields annotated as scalars (shape "").
    hints = typing.get_type_hints(Telemetry)
    names = []
    for field in Telemetry.__dataclass_fields__:
        dims = getattr(hints.get(field), "dim_str", None)
        if dims == "":
            names.append(field)
    return tuple(names)


#: The flat scalar telemetry fields, in declaration order (derived from :class:`Telemetry`).
SCALAR_FIELDS: tuple[str, ...] = _scalar_field_names()


def _key_name(key) -> str:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    return str(key).strip(".[]'")


def flatten(tree, prefix: str = "") -> dict[str, np.ndarray]:
    """Every leaf of a telemetry tree (or a whole ``StepOutput``) by its dotted path, as numpy.

    Status codes (:class:`~fnpredict.results.RESULTS` items) become their
    integer value. The CSV, JSON and Prometheus exports derive their field
    lists from this, so a component's new ``Info`` field appears everywhere
    without a hand-kept list. Leaves keep any leading (time or asset) axes.
    """
    def is_leaf(node):
        return isinstance(node, EnumerationItem)

    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]:
        name = ".".join(_key_name(k) for k in path)
        if isinstance(leaf, EnumerationItem):
            leaf = leaf._value
        out[prefix + name] = np.asarray(leaf)
    return out


__all__ = ["Telemetry", "StepOutput", "SCALAR_FIELDS", "flatten", "LOSS_MSE", "LOSS_HUBER", "RESULTS"]
