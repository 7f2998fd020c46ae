"""Numerical precision defaults: float64 and the highest matmul precision.

fnpredict's tests compare against float64 oracles to 1e-8 and promise
bit-identical re-runs, so x64 is switched on when the package is imported.
A user who wants float32 passes ``PredictorConfig(dtype="float32")``; the
global flag only makes float64 *available*.
"""

import os

import jax


def enable_float64(matmul_precision: str | None = "highest") -> None:
    """Turn on ``jax_enable_x64`` and (by default) the highest matmul precision.

    ``FNPREDICT_NO_X64=1`` in the environment leaves the global flags alone,
    for users embedding fnpredict in a float32 program.
    """
    if os.environ.get("FNPREDICT_NO_X64") == "1":
        return
    jax.config.update("jax_enable_x64", True)
    if matmul_precision is not None:
        jax.config.update("jax_default_matmul_precision", matmul_precision)
