"""The persistence kernel: ŷ_{t+1} = y_t, the random walk as an expert.

On a martingale (a price series close to a random walk) no kernel has an
edge over "tomorrow = today"; with this kernel in the ensemble the weight rule
can fall back to it instead of averaging noise into the forecast.
"""

from typing import ClassVar

from jaxtyping import PRNGKeyArray

from .base import AbstractKernel, EmptyState, Forecast, History, NoInfo


class PersistenceKernel(AbstractKernel):
    """The last value as the forecast; no state, no hyperparameters, no fit.

    Falls back (and says so) only before the first observation, when the
    last value is the empty window's 0.
    """

    name: ClassVar[str] = "persistence"

    def init(self, params, dtype) -> EmptyState:
        return EmptyState()

    def step(self, state: EmptyState, history: History, params, key: PRNGKeyArray):
        return state, Forecast.guarded(history.last, history, fallback=history.count < 1), NoInfo()


__all__ = ["PersistenceKernel"]
