"""What one step reports: the forecast and every decision, as fixed-shape data.

No ``Optional`` fields: a value that does not exist this step is a documented
sentinel (NaN for floats), so a scanned backtest stacks outputs on axis 0 and a
vmapped one on the asset axis without special cases.
"""

import equinox as eqx
from jaxtyping import Array, Bool, Float, Int

LOSS_MSE = 0
LOSS_HUBER = 1


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
        regime_change_detected: the CUSUM alarmed this step (weights reset to
            uniform, G⁺ reset).
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
        error: y_t − ŷ_t; NaN when there is no observation or no prior forecast.
        error_scale: σ_t, the EMA error scale used to standardize errors.
        kernel_fallback: (K,) kernel k returned its last-value fallback.
        kernel_converged: (K,) kernel k's inner solver converged (True for
            kernels without one).
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
    error: Float[Array, ""]
    error_scale: Float[Array, ""]
    kernel_fallback: Bool[Array, " kernels"]
    kernel_converged: Bool[Array, " kernels"]


class StepOutput(eqx.Module):
    """The result of one step.

    Attributes:
        prediction: the ensemble forecast of the next observation's channel 0,
            ŷ_{t+1} = Σ_k ρ_k f_k.
        kernel_predictions: each kernel's forecast f_k (K,).
        weights: ρ (K,), on the simplex.
        telemetry: :class:`Telemetry`.
    """

    prediction: Float[Array, ""]
    kernel_predictions: Float[Array, " kernels"]
    weights: Float[Array, " kernels"]
    telemetry: Telemetry


#: Scalar telemetry fields, in the order the CSV writes them.
SCALAR_FIELDS: tuple[str, ...] = (
    "holder_exponent", "cusum_drift", "distance_to_alarm", "kurtosis", "adaptive_threshold",
    "dgm_entropy", "free_energy", "degraded_inference_mode", "emergency_mode",
    "regime_change_detected", "mode_collapse_warning", "sinkhorn_converged", "loss_type",
    "observation_missing", "observation_rejected", "error", "error_scale",
)
