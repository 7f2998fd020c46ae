r"""Online calibration of quantiles: adaptive conformal inference, one level at a time.

Adaptive conformal inference (ACI; Gibbs & Candès, "Adaptive conformal
inference under distribution shift", NeurIPS 2021) keeps, for each nominal
level p, a *working level* p̃_t at which the (uncalibrated) predictive law is
read, and moves it after each outcome by

.. math:: \tilde p_{t+1} = \tilde p_t + \gamma\,(p - \mathbb 1\{y_{t+1} \le q_t\}),
   \qquad q_t = F_t^{-1}(\tilde p_t),

raising the level after a quantile proved too low (the outcome fell at or
below it less often than p) and lowering it otherwise. Summing the updates
gives an identity, for every sequence y:

.. math:: \frac1T\sum_{t=1}^T \mathbb 1\{y_{t+1} \le q_t\} - p
   = \frac{\tilde p_1 - \tilde p_{T+1}}{\gamma T},

so the long-run frequency is p up to :math:`(\max\tilde p - \min\tilde p)/(\gamma T)`
(Gibbs & Candès' Proposition 4.1, for the one-sided event). ACI proper lets
p̃ leave [0, 1] and then issues ±∞; here the state p̃ is left free (so the
identity stays exact: clipping the state would drop the updates that cross
the clip and bias the tail levels' coverage, by +0.6 % at the 1 % level with
γ = 0.005 in ``tests/intervals``) but the law is *read* at p̃ clipped to
[``LEVEL_MARGIN``, 1 - ``LEVEL_MARGIN``] (:func:`reading_levels`), so every
quantile is finite. p̃ stays within about [-γ, 1 + γ] as in ACI whenever
the law's ``LEVEL_MARGIN`` quantiles are hit less often than the levels
ask; the state is bounded to [-1, 2] regardless, so that adversarial input
cannot drive it to infinity.

After the working levels have been read, :func:`rearrange` sorts the
quantiles (Chernozhukov, Fernández-Val & Galichon 2010: sorting a set of
quantile estimates never increases their pinball loss), so the reported
quantiles are monotone in the level on every step even when two working
levels cross.
"""

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

__all__ = ["aci_update", "reading_levels", "rearrange", "LEVEL_MARGIN"]

#: The law is read at working levels clipped to [LEVEL_MARGIN, 1 - LEVEL_MARGIN]: 1e-4 is 100 times
#: below the default extreme level 0.01, far enough to correct a law that is
#: too narrow by half in the tail (a Student-t 1e-4 quantile is 4.6 times its
#: 0.01 one), and keeps every quantile finite.
LEVEL_MARGIN = 1e-4


def aci_update(
    working_levels: Float[Array, " probs"],
    nominal_levels: Float[Array, " probs"],
    previous_quantiles: Float[Array, " probs"],
    outcome: Float[Array, ""],
    valid: Bool[Array, ""],
    learning_rate: Float[Array, ""],
) -> tuple[Float[Array, " probs"], Float[Array, " probs"]]:
    """One ACI step for every level.

    Args:
        working_levels: p̃_t, ``(probs,)``.
        nominal_levels: p, ``(probs,)``.
        previous_quantiles: q_t, the quantiles issued for this outcome.
        outcome: y_{t+1}.
        valid: whether the outcome is real and ``previous_quantiles`` were
            issued (else nothing moves).
        learning_rate: γ > 0.

    Returns:
        ``(new_working_levels, hits)``: p̃_{t+1} and the indicators
        1{y <= q_t} as floats (NaN when not ``valid``).
    """
    hits = (outcome <= previous_quantiles).astype(working_levels.dtype)
    moved = jnp.clip(working_levels + learning_rate * (nominal_levels - hits), -1.0, 2.0)
    return jnp.where(valid, moved, working_levels), jnp.where(valid, hits, jnp.nan)


def reading_levels(working_levels: Float[Array, " probs"]) -> Float[Array, " probs"]:
    """The levels the law is read at: p̃ clipped to [LEVEL_MARGIN, 1 - LEVEL_MARGIN]."""
    return jnp.clip(working_levels, LEVEL_MARGIN, 1.0 - LEVEL_MARGIN)


def rearrange(quantiles: Float[Array, " probs"]) -> Float[Array, " probs"]:
    """Sort quantiles given at increasing levels (monotone rearrangement)."""
    return jnp.sort(quantiles)
