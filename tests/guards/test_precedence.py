"""The guards' order of precedence, pair by pair (the table in ``fnpredict.guards.base``).

Pure policy, no numerics: each test builds the signals of one step by hand,
runs the configured guards in their order, and checks which one won.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import fnpredict as fp
from fnpredict.guards import CircuitBreaker, CollapseMute, Decision, RegimeReset, Signals, StalenessFreeze
from fnpredict.guards.breaker import BreakerState
from fnpredict.guards.collapse import CollapseState
from fnpredict.guards.staleness import StalenessState
from fnpredict.kernels import NoInfo
from fnpredict.kernels.dgm import DGMInfo

NAMES = ("levy", "dgm", "signature")
PREVIOUS = jnp.asarray([0.5, 0.3, 0.2])
PROPOSED = jnp.asarray([0.6, 0.3, 0.1])  # what the rule proposes
HP = fp.Hyperparams(weight_floor=1e-6, holder_threshold=0.1)
UNIFORM = np.full(3, 1 / 3)
EMERGENCY = np.asarray([1e-6, 1e-6, 1 - 2e-6])  # all on "signature"


def _signals(alarm=False, holder=0.5, observed=True, collapsed=False):
    dgm_info = DGMInfo(params=jnp.zeros(3), clipped=jnp.asarray(False), valid=jnp.asarray(True),
                       entropy=jnp.asarray(0.0), collapsed=jnp.asarray(collapsed))
    return Signals(
        observed=jnp.asarray(observed), error_valid=jnp.asarray(observed), holder=jnp.asarray(holder),
        holder_ready=jnp.asarray(True), alarm=jnp.asarray(alarm), kernel_infos=(NoInfo(), dgm_info, NoInfo()),
        kernel_names=NAMES, previous_weights=PREVIOUS,
    )


def _decision():
    false = jnp.asarray(False)
    return Decision(weights=PROPOSED, rule_accepted=jnp.asarray(True), reset_rule=false, loss_type=jnp.asarray(0),
                    emergency=false, regime_reset=false, degraded=false, collapse_warning=false)


def _states(degraded=False, emergency=False, collapse_count=0):
    return {
        "regime_reset": RegimeReset().init(3, jnp.float64),
        "circuit_breaker": BreakerState(emergency=jnp.asarray(emergency), calm_streak=jnp.asarray(0)),
        "staleness": StalenessState(missing_streak=jnp.asarray(0), fresh_streak=jnp.asarray(0),
                                    degraded=jnp.asarray(degraded)),
        "collapse_mute": CollapseState(count=jnp.asarray(collapse_count)),
    }


def _run(signals, states, guards=None):
    config = fp.PredictorConfig(kernels=NAMES, guards=guards)
    decision = _decision()
    for guard in config.guard_objects:
        decision, _, _ = guard.apply(decision, signals, states[guard.name], HP)
    return decision


def test_order_of_application_is_the_precedence_whatever_the_order_given():
    config = fp.PredictorConfig(kernels=NAMES, guards=("collapse_mute", "staleness", "regime_reset", "circuit_breaker"))
    assert [g.name for g in config.guard_objects] == ["regime_reset", "circuit_breaker", "staleness", "collapse_mute"]
    assert [type(g) for g in config.guard_objects] == [RegimeReset, CircuitBreaker, StalenessFreeze, CollapseMute]


def test_rule_alone_when_no_guard_fires():
    decision = _run(_signals(), _states())
    np.testing.assert_allclose(np.asarray(decision.weights), np.asarray(PROPOSED), rtol=0, atol=0)
    assert bool(decision.rule_accepted) and not bool(decision.reset_rule)


def test_regime_reset_beats_the_rule():
    decision = _run(_signals(alarm=True), _states())
    np.testing.assert_allclose(np.asarray(decision.weights), UNIFORM, rtol=0, atol=1e-15)
    assert not bool(decision.rule_accepted) and bool(decision.reset_rule) and bool(decision.regime_reset)


def test_circuit_breaker_beats_regime_reset():
    decision = _run(_signals(alarm=True, holder=0.0), _states())
    np.testing.assert_allclose(np.asarray(decision.weights), EMERGENCY, rtol=0, atol=1e-15)
    assert bool(decision.emergency) and int(decision.loss_type) == 1


def test_breaker_release_resets_like_a_regime_change():
    decision = _run(_signals(holder=0.5), _states(emergency=True))
    np.testing.assert_allclose(np.asarray(decision.weights), UNIFORM, rtol=0, atol=1e-15)
    assert bool(decision.reset_rule) and not bool(decision.emergency)


def test_staleness_beats_the_circuit_breaker_and_the_reset():
    decision = _run(_signals(alarm=True, holder=0.0), _states(degraded=True))
    np.testing.assert_allclose(np.asarray(decision.weights), np.asarray(PREVIOUS), rtol=0, atol=0)
    assert bool(decision.degraded) and not bool(decision.rule_accepted)
    assert not bool(decision.reset_rule), "frozen means frozen: no reset while degraded"


@pytest.mark.parametrize("case", ["rule", "breaker", "staleness"])
def test_collapse_mute_applies_on_top_of_whatever_won(case):
    signals = _signals(collapsed=True, holder=0.0 if case == "breaker" else 0.5)
    states = _states(degraded=case == "staleness", collapse_count=10)
    decision = _run(signals, states, guards=fp.guards.DEFAULT_GUARDS + ("collapse_mute",))  # opt-in guard
    winner = {"rule": np.asarray(PROPOSED), "breaker": EMERGENCY, "staleness": np.asarray(PREVIOUS)}[case]
    expected = winner.copy()
    expected[1] = 0.0
    expected /= expected.sum()
    np.testing.assert_allclose(np.asarray(decision.weights), expected, rtol=1e-15, atol=1e-15)
    assert bool(decision.collapse_warning)


def test_switching_a_guard_off_is_an_ablation():
    decision = _run(_signals(alarm=True, holder=0.0), _states(), guards=("regime_reset",))
    np.testing.assert_allclose(np.asarray(decision.weights), UNIFORM, rtol=0, atol=1e-15)
    decision = _run(_signals(alarm=True, holder=0.0), _states(), guards=())
    np.testing.assert_allclose(np.asarray(decision.weights), np.asarray(PROPOSED), rtol=0, atol=0)
