r"""Online calibration of quantiles: conformal quantile tracking, one level at a time.

For each nominal level p the layer keeps an *offset* θ_{t,p} in units of the
predictive law's scale s_t and issues

.. math:: q_t = \operatorname{sort}\bigl(F_t^{-1}(p) + s_t\,\theta_{t,p}\bigr),

the uncalibrated mixture's quantile moved by θ scales (:func:`offset_quantiles`).
After each outcome the offset moves by

.. math:: \theta_{t+1,p} = \theta_{t,p} + \eta_p\,(p - \mathbb 1\{y_{t+1} \le q_{t,p}\}),
   \qquad \eta_p = \eta\,\frac{1/4}{p(1-p)},

raising the quantile after it proved too low and lowering it otherwise:
the P controller of conformal PID control, "quantile tracking"
(Angelopoulos, Candès & Tibshirani, "Conformal PID control for time series
prediction", NeurIPS 2023), with the score scaled by s_t. Summing the
updates gives an identity, for every sequence y:

.. math:: \frac1T\sum_{t=1}^T \mathbb 1\{y_{t+1} \le q_t\} - p
   = \frac{\theta_1 - \theta_{T+1}}{\eta_p T},

so the long-run frequency is p up to :math:`(\max\theta - \min\theta)/(\eta_p T)`,
whatever the law and the data.

Why η_p grows in the tails: the expected move of the offset is
η_p (p − F(q)) = −η/4 · r with r = (F(q) − p)/(p(1 − p)) the coverage error
relative to a hit's variance, so every level answers the same relative
error at the same speed, η/4 per unit of relative error. With one η for all levels the 1 % level's
offset moved 25 times more slowly than the median's, and on the Gaussian OU
family its coverage after 4000 steps was still 0.42 % (too wide a tail,
from the Student-t fallbacks); with η_p it is 0.94 %.

Why in quantile space and not in level space. Adaptive conformal inference
(Gibbs & Candès, NeurIPS 2021) keeps the same identity for a *working
level* p̃ at which the law is read. One miss at the 99 % level moves p̃ by
0.99 γ, and where the law's density f is small a level step is a quantile
step of γ/f: in the tail of a heavy-tailed law the issued quantile jumps by
several scales after one exception and drifts back only after hundreds of
steps. On α-stable increments (α = 1.7, ``scripts/intervals.py``) that cost
28 % of pinball loss at the 1 % level and 54 % at the 99 % level against the
uncalibrated mixture's 3 %; tracking in scale units moves every quantile by
at most η_p·s per step and gives 3 % there. (η = 0.005 is the default
``interval_learning_rate``, the median's step; ``docs/intervals.md`` has
the figures.)

The offsets are bounded to [-``OFFSET_BOUND``, ``OFFSET_BOUND``] scales, so
adversarial input cannot drive a quantile to infinity; the identity holds
exactly while the bound does not bind. :func:`rearrange` sorts the quantiles
(Chernozhukov, Fernández-Val & Galichon 2010: sorting a set of quantile
estimates never increases their pinball loss), so the reported quantiles are
monotone in the level on every step even when two offsets cross.
"""

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

__all__ = ["tracking_update", "level_step_factors", "offset_quantiles", "rearrange", "OFFSET_BOUND"]

#: Offsets are kept within ±50 scales: the 1e-4 quantile of a Student-t(4) is
#: 10.4 scales from its median, so 50 corrects any law that is too narrow by
#: a factor of 5 in the tail and still keeps every quantile finite.
OFFSET_BOUND = 50.0


def tracking_update(
    offsets: Float[Array, " probs"],
    nominal_levels: Float[Array, " probs"],
    previous_quantiles: Float[Array, " probs"],
    outcome: Float[Array, ""],
    valid: Bool[Array, ""],
    learning_rate: Float[Array, ""],
) -> tuple[Float[Array, " probs"], Float[Array, " probs"]]:
    """One quantile-tracking step for every level.

    Args:
        offsets: θ_t in scales, ``(probs,)``.
        nominal_levels: p, ``(probs,)``.
        previous_quantiles: q_t, the quantiles issued for this outcome.
        outcome: y_{t+1}.
        valid: whether the outcome is real and ``previous_quantiles`` were
            issued (else nothing moves).
        learning_rate: η > 0, in scales per step at the median (level p
            moves by η/(4 p (1 - p)), module docstring).

    Returns:
        ``(new_offsets, hits)``: θ_{t+1} and the indicators 1{y <= q_t} as
        floats (NaN when not ``valid``).
    """
    hits = (outcome <= previous_quantiles).astype(offsets.dtype)
    steps = learning_rate * level_step_factors(nominal_levels)
    moved = jnp.clip(offsets + steps * (nominal_levels - hits), -OFFSET_BOUND, OFFSET_BOUND)
    return jnp.where(valid, moved, offsets), jnp.where(valid, hits, jnp.nan)


def level_step_factors(nominal_levels: Float[Array, " probs"]) -> Float[Array, " probs"]:
    """η_p / η = 1 / (4 p (1 - p)): 1 at the median, 25.3 at the 1 % and 99 % levels."""
    return 0.25 / (nominal_levels * (1.0 - nominal_levels))


def offset_quantiles(
    quantiles: Float[Array, " probs"], offsets: Float[Array, " probs"], scale: Float[Array, ""]
) -> Float[Array, " probs"]:
    """The calibrated quantiles: ``quantiles + scale · offsets``, rearranged to be monotone."""
    return rearrange(quantiles + scale * offsets)


def rearrange(quantiles: Float[Array, " probs"]) -> Float[Array, " probs"]:
    """Sort quantiles given at increasing levels (monotone rearrangement)."""
    return jnp.sort(quantiles)
