"""Greeks by Malliavin calculus (Bismut–Elworthy–Li), pathwise and finite differences.

Imported on first use of ``fp.greeks`` (it pulls in diffrax), not by
``import fnpredict``.
"""

from .malliavin import (
    DEFAULT_RELATIVE_BUMP,
    GreekEstimate,
    TangentFlow,
    finite_difference_delta,
    malliavin_delta,
    pathwise_delta,
    pathwise_vega,
    simulate_tangent_flow,
)

__all__ = [
    "GreekEstimate", "TangentFlow", "DEFAULT_RELATIVE_BUMP", "malliavin_delta", "pathwise_delta",
    "finite_difference_delta", "pathwise_vega", "simulate_tangent_flow",
]
