"""Singularity and regime identification: CWT, WTMM Hölder exponents, CUSUM.

The functions are bound eagerly so that ``fp.sia.cwt`` and ``fp.sia.wtmm``
are the functions (DESIGN §1), not the submodules of the same name; the
modules stay importable as ``fnpredict.sia.cwt`` etc.
"""

from .cusum import (
    CusumInfo,
    CusumState,
    cusum_init,
    cusum_reset,
    cusum_threshold,
    cusum_update,
    rolling_kurtosis,
    scale_score,
)
from .cwt import cwt, cwt_frequencies
from .wtmm import HOLDER_SENTINEL, WTMMResult, holder_exponent, wtmm

__all__ = [
    "cwt", "cwt_frequencies", "wtmm", "holder_exponent", "WTMMResult", "HOLDER_SENTINEL",
    "CusumInfo", "CusumState", "cusum_init", "cusum_reset", "cusum_threshold", "cusum_update",
    "rolling_kurtosis", "scale_score",
]
