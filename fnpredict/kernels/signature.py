r"""Kernel D: log-signature features of the recent path, online recursive least squares.

The last ``signature_window`` points of all ``n_channels`` channels, made
dimensionless and time-augmented, are summarised by their log-signature
truncated at ``signature_depth`` (signax, Lyndon coordinates). A recursive
least-squares (RLS) regression with exponential forgetting maps these features
(plus a bias) to the next increment of channel 0, in units of its running
scale.

Why these features: the log-signature is a fixed-size summary of a path,
graded by the order of the interactions between its channels. With a time
channel, its level-k terms with one data letter, ``[t,[t,...,[t, X_i]]]``, are
time-weighted sums :math:`\sum_j w_k(j)\,\Delta X_{i,j}` of the increments
with weights polynomial of degree k - 1 in j; over ``window - 1`` increments
these span every linear combination of them exactly when ``window - 1 <=
depth``. Hence the default ``signature_window = signature_depth + 1 = 4``: a
linear model on the features contains every linear autoregression of order 3
in the increments of each channel (on an AR(2) in the increments with
φ = (0.6, -0.3), one-step MSE / random walk's MSE: 0.73 at window 4, 0.76 at
5, 0.81 at 6; optimum 0.716). The other terms (Lévy areas between channels,
``[[t, X], X]``, ...) add nonlinear interactions.

References:
    Lyons, Caruana, Lévy (2007), "Differential equations driven by rough
    paths"; Levin, Lyons, Ni (2013), "Learning from the past, predicting the
    statistics for the future, learning an evolving system"; Haykin (2002),
    "Adaptive Filter Theory", ch. 9 (exponentially weighted RLS).
"""

import math
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import signax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ..config import PredictorConfig
from ..params import HyperparameterSpec
from .base import AbstractKernel, Forecast, History

__all__ = ["SignatureKernel", "SignatureInfo", "SignatureState", "logsignature_size"]

# Standardized increments (in units of the running mean absolute increment)
# are winsorised at ±8 before they enter the path, and standardized targets
# and forecasts at the same bound. For Gaussian increments E|Δ| = 0.8σ, so the
# clip sits at 6.4σ (probability ~2e-10): it never touches ordinary data but
# bounds every feature, hence φᵀPφ and the influence of a single jump or a
# 1e12 outlier on the regression.
CLIP = 8.0

# The running scale is an exponentially weighted mean of |Δ| with memory
# 1/(1 - SCALE_DECAY) = 32 steps: long enough that its own noise is small
# (relative s.d. ~ sqrt((1 - decay)/2) ~ 0.13 for Gaussian increments), short
# enough to follow volatility regimes within about a month of daily data.
SCALE_DECAY = 1.0 - 1.0 / 32.0

# A running scale within 64 ulps of the level is rounding noise of the
# subtraction y_t - y_{t-1}: the channel is treated as constant. The level is
# the smallest |value| of the rows concerned, so that one 1e12 outlier cannot
# declare an established scale unresolvable (in float32, 64 ulps of 1e12 is
# 8e6) and let the outlier into the scale unclipped.
_ROUNDING_ULPS = 64.0


def _mobius(n: int) -> int:
    result, p = 1, 2
    while p * p <= n:
        if n % p == 0:
            n //= p
            if n % p == 0:
                return 0
            result = -result
        p += 1
    return -result if n > 1 else result


def logsignature_size(dim: int, depth: int) -> int:
    """Number of Lyndon words of length 1..depth over ``dim`` letters (Witt's formula).

    This is the length of signax's flattened log-signature of a ``dim``-channel path.
    """
    return sum(
        sum(_mobius(d) * dim ** (k // d) for d in range(1, k + 1) if k % d == 0) // k
        for k in range(1, depth + 1)
    )


class SignatureState(eqx.Module):
    """Learned state of kernel D.

    Attributes:
        weights: RLS coefficients w (bias first), in units of the running scale.
        covariance: RLS matrix P (symmetric positive definite, trace <= that of
            the initial ``I / rls_ridge``).
        features: φ stored at the last observed step, learned from once the
            next increment is realised.
        feature_scale: the channel-0 scale the stored features were made with
            (the unit of their target).
        features_valid: whether ``features`` came from a real increment with a
            non-degenerate scale.
        scale_sum, scale_weight: numerator and denominator of the running
            scale ``scale_sum / scale_weight`` (per channel; 0 before the first
            increment).
        n_updates: RLS updates performed so far.
    """

    weights: Float[Array, " features"]
    covariance: Float[Array, "features features"]
    features: Float[Array, " features"]
    feature_scale: Float[Array, ""]
    features_valid: Bool[Array, ""]
    scale_sum: Float[Array, " channels"]
    scale_weight: Float[Array, ""]
    n_updates: Int[Array, ""]

    def scale(self) -> Float[Array, " channels"]:
        """Running scale: winsorised exponentially weighted mean of |Δ| per channel."""
        weight = jnp.where(self.scale_weight > 0, self.scale_weight, 1.0)
        return self.scale_sum / weight


def _scale_floor(rows: Float[Array, "time channels"]) -> Float[Array, " channels"]:
    """Per channel, the smallest scale that is not rounding noise of these rows' levels."""
    finfo = jnp.finfo(rows.dtype)
    return _ROUNDING_ULPS * finfo.eps * jnp.min(jnp.abs(rows), axis=0) + finfo.tiny


class SignatureKernel(AbstractKernel):
    r"""Kernel D: RLS on the log-signature of the recent time-augmented path.

    Features at step t (all O(1) by construction):

    1. the last ``window`` points of the ``channels`` channels; increments
       divided by each channel's running scale :math:`s_i` (winsorised EWMA
       of :math:`|\Delta|`, see ``SCALE_DECAY``) and clipped at ±``CLIP``;
       the path is rebuilt from them relative to the last value (signatures
       only see increments, so nothing is lost, and the level, possibly 1e4
       times the increments, never enters);
    2. a time channel :math:`t_j = j / (\text{window} - 1) \in [0, 1]`;
    3. the log-signature to ``depth`` of this path, minus its first entry (the
       total time increment, always 1, collinear with the bias), plus a bias 1.

    RLS with forgetting λ (``rls_forgetting``) and :math:`P_0 = I/`
    ``rls_ridge`` learns :math:`z_{t} = \operatorname{clip}((y_t - y_{t-1}) /
    s_{t-1}, \pm\mathrm{CLIP})` from the features :math:`\phi_{t-1}` stored at
    the previous step:

    .. math::

        k = \frac{P\phi}{\lambda + \phi^\top P \phi}, \quad
        w \leftarrow w + k (z - w^\top \phi), \quad
        P \leftarrow \tfrac{1}{\lambda}(P - k \phi^\top P),

    and then forecasts with the weights and scale just updated,
    :math:`\hat y_{t+1} = y_t + s_t\,\operatorname{clip}(w_t^\top
    \phi_t, \pm\mathrm{CLIP})` (learn first, then forecast).

    Numerical guards (the state stays finite for any finite input): features
    and targets are clipped (a 1e12 outlier enters as a ±CLIP move, bounded
    influence instead of a skipped update, which would need a threshold that
    also discards real jumps); P is symmetrised after each update and its
    trace capped at that of :math:`P_0` (forgetting cannot inflate
    unexcited directions without bound: the "wind-up" of RLS on a constant
    series); an update producing a non-finite w or P, or a non-positive
    diagonal, keeps w and resets P to :math:`P_0`.

    Falls back to the last value while there is no real increment, while the
    channel-0 scale is degenerate (a constant series) or while fewer RLS
    updates than features have been made.

    Cost per step: one log-signature of a ``window``-point path in
    ``channels + 1`` dimensions and O(features²) for RLS, once each.
    """

    name: ClassVar[str] = "signature"
    hyperparameters: ClassVar[tuple] = (
        HyperparameterSpec("rls_forgetting", 0.995, 0.0, 1.0, True, False, "RLS forgetting factor of kernel D"),
        HyperparameterSpec("rls_ridge", 1.0, 0.0, math.inf, True, True, "initial ridge (P0 = I/ridge) of kernel D"),
    )
    depth: int = eqx.field(static=True, default=3)
    window: int = eqx.field(static=True, default=4)
    n_channels: int = eqx.field(static=True, default=1)

    @classmethod
    def from_config(cls, config: PredictorConfig) -> "SignatureKernel":
        return cls(depth=config.signature_depth, window=config.signature_window, n_channels=config.n_channels)

    @property
    def n_features(self) -> int:
        """Bias plus the log-signature without its constant time increment."""
        return logsignature_size(self.n_channels + 1, self.depth)

    def init(self, params, dtype) -> SignatureState:
        n = self.n_features
        ridge = jnp.asarray(params.rls_ridge, dtype)
        return SignatureState(
            weights=jnp.zeros((n,), dtype),
            covariance=jnp.eye(n, dtype=dtype) / ridge,
            features=jnp.zeros((n,), dtype),
            feature_scale=jnp.zeros((), dtype),
            features_valid=jnp.zeros((), bool),
            scale_sum=jnp.zeros((self.n_channels,), dtype),
            scale_weight=jnp.zeros((), dtype),
            n_updates=jnp.zeros((), jnp.int32),
        )

    def features(
        self, values: Float[Array, "buffer channels"], scale: Float[Array, " channels"]
    ) -> Float[Array, " features"]:
        """φ: bias and log-signature of the standardized, time-augmented recent path."""
        dtype = values.dtype
        recent = values[-self.window:]
        increments = jnp.diff(recent, axis=0)
        usable = scale > _scale_floor(recent)
        standardized = increments / jnp.where(usable, scale, 1.0)
        standardized = jnp.where(usable, jnp.clip(standardized, -CLIP, CLIP), 0.0)
        # Path relative to the last value: X_j = -(sum of the increments after j).
        origin = jnp.zeros((1, self.n_channels), dtype)
        cumulative = jnp.concatenate([origin, jnp.cumsum(standardized, axis=0)])
        path = cumulative - cumulative[-1]
        time = jnp.linspace(0.0, 1.0, self.window, dtype=dtype)[:, None]
        logsig = signax.logsignature(jnp.concatenate([time, path], axis=1), self.depth)
        return jnp.concatenate([jnp.ones((1,), dtype), logsig[1:].astype(dtype)])

    def step(
        self, state: SignatureState, history: History, params, key: PRNGKeyArray
    ) -> tuple[SignatureState, Forecast, "SignatureInfo"]:
        """Learn the realised increment, then forecast with the weights and scale just updated.

        1. RLS on (φ_{t−1}, z_t): the features stored at the previous observed
           step against the realised standardized increment;
        2. the running scale s_t with |y_t − y_{t−1}|;
        3. φ_t, the features of the path ending at y_t (computed once: they
           serve the forecast now and the RLS update at the next step);
        4. ŷ_{t+1} = y_t + s_t · clip(w_t·φ_t, ±CLIP).

        After missing steps the realised increment spans the gap (the buffer
        only moves on observed steps) and is learned from the features stored
        before it: a slightly misspecified target, bounded by the clip.
        """
        dtype = history.values.dtype
        forgetting = jnp.asarray(params.rls_forgetting, dtype)
        ridge = jnp.asarray(params.rls_ridge, dtype)
        has_increment = history.observed & (history.count >= 2)
        increment = history.values[-1] - history.values[-2]

        # 1. RLS on (φ_{t-1}, z_t).
        target = jnp.clip(
            increment[0] / jnp.where(state.features_valid, state.feature_scale, 1.0), -CLIP, CLIP
        )
        weights, covariance = _rls_step(
            state.weights, state.covariance, state.features, target, forgetting, ridge
        )
        learn = has_increment & state.features_valid & jnp.isfinite(target)
        weights = jnp.where(learn, weights, state.weights)
        covariance = jnp.where(learn, covariance, state.covariance)
        n_updates = state.n_updates + learn.astype(state.n_updates.dtype)

        # 2. Running scale: winsorised at CLIP times the current scale once
        # there is one (a jump moves it by at most a factor 1 + (CLIP-1)/32).
        scale = state.scale()
        usable = scale > _scale_floor(history.values[-2:])
        magnitude = jnp.abs(increment)
        magnitude = jnp.where(usable, jnp.minimum(magnitude, CLIP * scale), magnitude)
        magnitude = jnp.where(jnp.isfinite(magnitude), magnitude, 0.0)
        scale_sum = jnp.where(has_increment, SCALE_DECAY * state.scale_sum + magnitude, state.scale_sum)
        scale_weight = jnp.where(has_increment, SCALE_DECAY * state.scale_weight + 1.0, state.scale_weight)
        new_scale = scale_sum / jnp.where(scale_weight > 0, scale_weight, 1.0)

        # 3. Features of the current path (once).
        phi = self.features(history.values, new_scale)
        degenerate = new_scale[0] <= _scale_floor(history.values[-self.window:])[0]
        phi_valid = (history.count >= 2) & ~degenerate & jnp.all(jnp.isfinite(phi))

        # 4. Forecast with what was just learnt.
        move = jnp.clip(jnp.dot(weights, jnp.where(phi_valid, phi, 0.0)), -CLIP, CLIP)
        fallback = (history.count < 2) | degenerate | (n_updates < self.n_features)
        forecast = Forecast.guarded(history.last + new_scale[0] * move, history, fallback=fallback)

        observed = history.observed
        new_state = SignatureState(
            weights=weights,
            covariance=covariance,
            features=jnp.where(observed, jnp.where(phi_valid, phi, 0.0), state.features),
            feature_scale=jnp.where(observed, new_scale[0], state.feature_scale),
            features_valid=jnp.where(observed, phi_valid, state.features_valid),
            scale_sum=scale_sum,
            scale_weight=scale_weight,
            n_updates=n_updates,
        )
        info = SignatureInfo(learned=learn, n_updates=n_updates, scale=new_scale[0])
        return new_state, forecast, info


class SignatureInfo(eqx.Module):
    """Diagnostics of kernel D for one step.

    Attributes:
        learned: the RLS learned from the realised increment this step.
        n_updates: RLS updates so far.
        scale: the running channel-0 scale s_t the forecast used.
    """

    learned: Bool[Array, ""]
    n_updates: Int[Array, ""]
    scale: Float[Array, ""]


def _rls_step(
    weights: Float[Array, " features"],
    covariance: Float[Array, "features features"],
    phi: Float[Array, " features"],
    target: Float[Array, ""],
    forgetting: Float[Array, ""],
    ridge: Float[Array, ""],
) -> tuple[Float[Array, " features"], Float[Array, "features features"]]:
    """One exponentially weighted RLS update with symmetrisation, trace cap and reset."""
    n = weights.shape[0]
    p_phi = covariance @ phi
    gain = p_phi / (forgetting + jnp.dot(phi, p_phi))
    new_weights = weights + gain * (target - jnp.dot(weights, phi))
    new_covariance = (covariance - jnp.outer(gain, p_phi)) / forgetting
    new_covariance = 0.5 * (new_covariance + new_covariance.T)
    # Cap the trace at that of P0 = I / ridge: forgetting restores uncertainty
    # at most up to the prior's.
    trace_cap = n / ridge
    trace = jnp.trace(new_covariance)
    new_covariance = new_covariance * jnp.minimum(1.0, trace_cap / jnp.where(trace > 0, trace, trace_cap))
    broken = (
        ~jnp.all(jnp.isfinite(new_weights))
        | ~jnp.all(jnp.isfinite(new_covariance))
        | jnp.any(jnp.diag(new_covariance) <= 0)
    )
    reset = jnp.eye(n, dtype=covariance.dtype) / ridge
    return jnp.where(broken, weights, new_weights), jnp.where(broken, reset, new_covariance)
