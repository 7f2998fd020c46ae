"""Guards: ordered policies that may override the weight rule (precedence table in :mod:`.base`)."""

from .base import AbstractGuard, Decision, Signals
from .breaker import CircuitBreaker
from .collapse import CollapseMute
from .regime import RegimeReset
from .staleness import StalenessFreeze

#: The built-in guards by name.
_REGISTRY = {
    "regime_reset": RegimeReset,
    "circuit_breaker": CircuitBreaker,
    "staleness": StalenessFreeze,
    "collapse_mute": CollapseMute,
}

#: What ``PredictorConfig(guards=None)`` means: the built-in guards that earn
#: their place in the evaluation lab's ablation (``docs/accuracy.md``: each
#: lowers the MSE on at least one family and raises it by at most 0.5% on
#: any). ``collapse_mute`` is off by default: on none of the lab's series did
#: kernel B collapse, so it never acted and cannot show a gain; switch it on
#: with ``guards=DEFAULT_GUARDS + ("collapse_mute",)``.
DEFAULT_GUARDS: tuple[str, ...] = ("regime_reset", "circuit_breaker", "staleness")


def registered_guards() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def guard_from_name(name: str, config, kernels) -> AbstractGuard | None:
    """The guard behind a name, with the config's settings; ``None`` when it has nothing to watch."""
    names = [k.name for k in kernels]
    if name == "circuit_breaker":
        return CircuitBreaker(calm_window=config.cusum_window)
    if name == "staleness":
        return StalenessFreeze(ttl_max=config.ttl_max, ttl_recovery=config.ttl_recovery)
    if name == "collapse_mute":
        if "dgm" not in names and config.guards is None:
            return None  # the default set: nothing to mute without kernel B
        return CollapseMute()
    return _REGISTRY[name]()


__all__ = [
    "AbstractGuard", "Decision", "Signals", "CircuitBreaker", "CollapseMute", "RegimeReset", "StalenessFreeze",
    "DEFAULT_GUARDS", "registered_guards", "guard_from_name",
]
