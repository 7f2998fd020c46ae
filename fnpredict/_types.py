"""The one glossary of shape names used by every jaxtyping annotation.

Axis names: ``time``, ``assets``, ``scales``, ``paths``, ``grid``, ``kernels``,
``channels``, ``buffer``, ``moments``, ``features``.
"""

from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

Scalar = Float[Array, ""]
IntScalar = Int[Array, ""]
BoolScalar = Bool[Array, ""]
Key = PRNGKeyArray

__all__ = ["Array", "Bool", "Float", "Int", "Key", "Scalar", "IntScalar", "BoolScalar"]
