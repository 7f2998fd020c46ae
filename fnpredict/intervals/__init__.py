"""Calibrated predictive intervals, in-graph: per-kernel laws, their mixture's quantiles, online calibration.

* :mod:`.laws`: the predictive laws (Student-t ν = 4 location-scale,
  Monte Carlo draws, normal mixtures such as a jump-diffusion's transition law);
* :mod:`.mixture`: quantiles of the weighted mixture by a bounded
  Chandrupatla root find, vectorised over levels, with implicit derivatives;
* :mod:`.conformal`: conformal quantile tracking per level, and the
  monotone rearrangement;
* :mod:`.layer`: the step the engine calls (state in the ``PredictorState``).
"""

from .conformal import OFFSET_BOUND, offset_quantiles, rearrange, tracking_update
from .laws import AbstractLaw, EmpiricalLaw, NormalMixtureLaw, StudentTLaw, StudentTMixtureLaw, jump_diffusion_law
from .layer import IntervalInfo, IntervalState, interval_init, interval_update
from .mixture import mixture_cdf, mixture_quantiles

#: The default quantile levels: the 1 % and 99 % levels give the one-day VaR,
#: 5-95 % the central 90 % interval, the quartiles and the median.
DEFAULT_LEVELS: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)

__all__ = [
    "AbstractLaw", "EmpiricalLaw", "NormalMixtureLaw", "StudentTLaw", "StudentTMixtureLaw", "jump_diffusion_law",
    "mixture_cdf", "mixture_quantiles", "tracking_update", "offset_quantiles", "rearrange", "OFFSET_BOUND",
    "IntervalInfo", "IntervalState", "interval_init", "interval_update", "DEFAULT_LEVELS",
]
