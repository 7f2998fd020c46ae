"""One status code per step, with a documented precedence (diffrax's ``RESULTS`` is the model).

Several things can happen in one step; the code reports the most important
one, by this precedence (highest first):

====================  ======================================================
code                  meaning
====================  ======================================================
state_repaired        a non-finite value was kept out of the carry (the old
                      value stayed): a bug or an overflow somewhere upstream
degraded              degraded inference: too many missing observations,
                      weights frozen
emergency             the circuit breaker tripped (weights imposed)
collapse_muted        a kernel is muted for mode collapse
regime_reset          a regime change reset the weights
solver_not_converged  a kernel's inner solver or the weight rule did not
                      converge (its result may still be used)
kernel_fallback       a kernel fell back to the last value
observation_held      the observation was held back as a suspected bad tick
observation_rejected  the observation had ±Inf (treated as missing)
observation_missing   no observation this step (NaN)
successful            none of the above
====================  ======================================================

Every flag behind a code is also in the telemetry on its own.
"""

import equinox as eqx
import jax.numpy as jnp


class RESULTS(eqx.Enumeration):
    successful = "the step ran normally"
    observation_missing = "no observation this step (NaN)"
    observation_rejected = "the observation had ±Inf and was treated as missing"
    observation_held = "the observation was held back as a suspected bad tick"
    kernel_fallback = "a kernel fell back to the last value"
    solver_not_converged = "an inner solver or the weight rule did not converge"
    regime_reset = "a regime change reset the weights"
    collapse_muted = "a kernel is muted for mode collapse"
    emergency = "the circuit breaker tripped"
    degraded = "degraded inference: weights frozen after missing observations"
    state_repaired = "a non-finite value was kept out of the carry"


#: Lowest precedence first: later entries override earlier ones.
PRECEDENCE: tuple[str, ...] = (
    "observation_missing", "observation_rejected", "observation_held", "kernel_fallback", "solver_not_converged",
    "regime_reset", "collapse_muted", "emergency", "degraded", "state_repaired",
)


def step_result(**conditions) -> RESULTS:
    """The status code of a step from its boolean conditions (keyword per code, see :data:`PRECEDENCE`)."""
    result = RESULTS.successful
    for name in PRECEDENCE:
        if name in conditions:
            result = RESULTS.where(jnp.asarray(conditions[name], bool), getattr(RESULTS, name), result)
    return result


__all__ = ["RESULTS", "PRECEDENCE", "step_result"]
