"""The one glossary of shape names used by every jaxtyping annotation.

Axis names: ``time``, ``assets``, ``scales``, ``paths``, ``grid``, ``kernels``,
``channels``, ``buffer``, ``moments``, ``features``, ``probs`` (quantile levels),
``dim`` / ``noise`` / ``controls`` / ``params`` (state, Brownian, control and
model-parameter dimensions of a PDE or SDE), ``points`` / ``nodes`` / ``steps``
(collocation points, quadrature nodes, optimiser iterations), ``offsets`` /
``extended`` / ``pad`` (jump lattice offsets, padded grid, padding of a PIDE
grid), ``batch`` (any leading batch axes).
"""

from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

Scalar = Float[Array, ""]
IntScalar = Int[Array, ""]
BoolScalar = Bool[Array, ""]
Key = PRNGKeyArray

__all__ = ["Array", "Bool", "Float", "Int", "Key", "Scalar", "IntScalar", "BoolScalar"]
