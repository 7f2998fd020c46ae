"""One conformance suite over every kernel *instance* (STYLE.md, Tests; diffrax's ``all_ode_solvers``).

The suite parametrises over kernel objects: the built-ins, built from one
config, plus ``AR1Kernel``, defined in a test file outside the library. For
each: declared types and shapes; state structure stable across ``lax.cond``
branches; scan = loop; vmap over assets = loop; a hyperparameter population
in one compilation = loop, and a second, different population in none; a
``jax.disable_jit`` run equal to the jitted one; a snapshot round trip of a
predictor using the kernel; adversarial windows (empty, one observation,
constant, a 1e12 outlier, a missing step) give finite forecasts, finite state
and the fallback flag where the kernel cannot forecast.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnpredict as fp
from fnpredict.kernels import AbstractKernel, Forecast, History, kernel_class
from test_custom_components import ar1

STEPS = 64
#: Kernels that fit a model to the window (and so must flag a degenerate one).
FITTED = {"levy", "dgm", "imex", "signature"}

CONFIG = fp.PredictorConfig(buffer_size=64, levy_window=48, scales=(2.0, 3.0, 4.5, 6.75, 10.0),
                            levy_paths=64, dgm_entropy_points=32, imex_grid=48)

#: Kernel instances the suite runs over (built-ins first, then kernels defined outside fnpredict).
KERNELS = tuple(kernel_class(name).from_config(CONFIG) for name in ("levy", "dgm", "imex", "signature",
                                                                      "persistence")) + (ar1(0.3),)


def _series(n, seed=0, scale=0.01):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.standard_normal(n) * scale) + 4.0


class _CompileCounter:
    """Counts XLA backend compilations through jax.monitoring while active."""

    def __init__(self):
        self.count = 0
        self.active = False
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **kwargs):
        if self.active and event == "/jax/core/compile/backend_compile_duration":
            self.count += 1

    def __enter__(self):
        self.count, self.active = 0, True
        return self

    def __exit__(self, *exc):
        self.active = False


_COUNTER = _CompileCounter()


def _kernel_step(kernel, hp, carry, inputs):
    history, kernel_state = carry
    obs, key = inputs
    observed = jnp.isfinite(obs)
    history = history.push(jnp.where(observed, obs, 0.0)[None], observed)
    kernel_state, forecast, _ = kernel.step(kernel_state, history, hp.component(kernel.name), key)
    return (history, kernel_state), forecast


def _finite_tree(tree) -> bool:
    return all(
        bool(jnp.all(jnp.isfinite(leaf)))
        for leaf in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)
    )


@pytest.fixture(scope="module", params=KERNELS, ids=lambda k: k.name)
def kit(request):
    kernel = request.param
    name = kernel.name
    hp = fp.Hyperparams().with_defaults((kernel,))
    state = kernel.init(hp.component(name), jnp.float64)
    history = History.empty(CONFIG.buffer_size, 1)
    traces = {"count": 0}

    def scanned(hp, history, state, data, keys):
        traces["count"] += 1
        return jax.lax.scan(lambda c, x: _kernel_step(kernel, hp, c, x), (history, state), (data, keys))

    one_step = jax.jit(lambda hp, carry, obs, key: _kernel_step(kernel, hp, carry, (obs, key)))
    return {
        "name": name, "kernel": kernel, "hp": hp, "state": state, "history": history,
        "scan": jax.jit(scanned), "traces": traces, "one_step": one_step,
        "data": jnp.asarray(_series(STEPS)), "keys": jax.random.split(jax.random.key(3), STEPS),
    }


def test_declared_types_and_shapes(kit):
    kernel, state = kit["kernel"], kit["state"]
    assert isinstance(kernel, AbstractKernel)
    assert kernel.name == kit["name"]
    assert isinstance(state, eqx.Module)
    for leaf in jax.tree_util.tree_leaves(state):
        assert isinstance(leaf, jax.Array)
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float64
    (_, new_state), forecast = kit["scan"](kit["hp"], kit["history"], state, kit["data"], kit["keys"])
    assert isinstance(forecast, Forecast)
    for field in ("value", "fallback", "converged"):
        assert getattr(forecast, field).shape == (STEPS,)
    assert forecast.value.dtype == jnp.float64
    assert forecast.fallback.dtype == jnp.bool_
    assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)


def test_state_type_stable_across_cond(kit):
    kernel, hp = kit["kernel"], kit["hp"]
    history = kit["history"]
    for value in np.asarray(kit["data"][:10]):
        history = history.push(jnp.asarray([value]))

    def branch(take_update):
        def update(s):
            return kernel.step(s, history, hp.component(kernel.name), jax.random.key(0))[0]

        return jax.lax.cond(take_update, update, lambda s: s, kit["state"])

    out = jax.jit(branch)(True)
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(kit["state"])
    for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(kit["state"])):
        assert a.shape == b.shape and a.dtype == b.dtype


def test_scan_equals_loop(kit):
    carry = (kit["history"], kit["state"])
    loop_values = []
    for t in range(STEPS):
        carry, forecast = kit["one_step"](kit["hp"], carry, kit["data"][t], kit["keys"][t])
        loop_values.append(forecast.value)
    (_, scan_state), scan_forecast = kit["scan"](kit["hp"], kit["history"], kit["state"], kit["data"], kit["keys"])
    # Same program body on CPU: equal to float64 round-off (1e-12 relative
    # leaves room for XLA fusing the scan body differently from the jitted step).
    np.testing.assert_allclose(np.asarray(scan_forecast.value), np.asarray(loop_values), rtol=1e-12, atol=0)
    for a, b in zip(jax.tree_util.tree_leaves(scan_state), jax.tree_util.tree_leaves(carry[1])):
        np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-10, atol=1e-12)


def test_vmap_over_assets_equals_loop(kit):
    n_assets = 4
    data = jnp.stack([jnp.asarray(_series(STEPS, seed=s)) for s in range(n_assets)], axis=1)
    batched = jax.jit(jax.vmap(
        lambda d: kit["scan"].__wrapped__(kit["hp"], kit["history"], kit["state"], d, kit["keys"]),
        in_axes=1,
    ))
    (_, _), vmapped = batched(data)
    for asset in range(n_assets):
        (_, _), single = kit["scan"](kit["hp"], kit["history"], kit["state"], data[:, asset], kit["keys"])
        # vmap and a single call are not bitwise equal in XLA; 1e-10 relative is
        # the float64 parity this library guarantees (DESIGN §5).
        np.testing.assert_allclose(np.asarray(vmapped.value[asset]), np.asarray(single.value), rtol=1e-10, atol=1e-12)


def test_hyperparameter_population_one_compilation(kit):
    members = 3
    population = fp.Hyperparams(
        rls_forgetting=jnp.asarray([0.99, 0.995, 0.999]),
        imex_jump_threshold=jnp.asarray([3.0, 4.0, 5.0]),
        dgm_collapse_gamma=jnp.asarray([0.3, 0.5, 0.7]),
        jko_tau=jnp.asarray([0.5, 1.0, 2.0]),
    )
    # Every leaf carries the population axis (the others are repeated defaults).
    population = jax.tree_util.tree_map(lambda leaf: jnp.broadcast_to(leaf, (members,)), population)
    before = kit["traces"]["count"]
    run = jax.jit(jax.vmap(
        lambda hp: kit["scan"].__wrapped__(hp, kit["history"], kit["state"], kit["data"], kit["keys"])
    ))
    (_, _), together = run(population)
    assert kit["traces"]["count"] - before == 1, "the population must trace the kernel once"
    # The real compile check: a second, different population reuses the program.
    second = jax.tree_util.tree_map(lambda leaf: leaf * 0.999, population)
    with _COUNTER as compiled:
        (_, _), again = run(second)
        jax.block_until_ready(again)
    assert compiled.count == 0, f"a second population compiled {compiled.count} program(s)"
    for member in range(members):
        hp = jax.tree_util.tree_map(lambda leaf: leaf[member], population)
        (_, _), alone = kit["scan"](hp, kit["history"], kit["state"], kit["data"], kit["keys"])
        np.testing.assert_allclose(np.asarray(together.value[member]), np.asarray(alone.value), rtol=1e-10, atol=1e-12)


def _run_series(kit, values):
    data = jnp.asarray(values, jnp.float64)
    keys = jax.random.split(jax.random.key(5), data.shape[0])
    return kit["scan"](kit["hp"], kit["history"], kit["state"], data, keys)


@pytest.mark.parametrize("case", ["constant", "outlier", "missing_run", "first_steps"])
def test_adversarial_input_is_finite_and_flagged(kit, case):
    base = _series(STEPS, seed=11)
    if case == "constant":
        values = np.full(STEPS, 3.5)
    elif case == "outlier":
        values = base.copy()
        values[STEPS // 2] = 1e12
    elif case == "missing_run":
        values = base.copy()
        values[STEPS // 3 : STEPS // 3 + 8] = np.nan
    else:
        values = base.copy()
    (history, state), forecast = _run_series(kit, values)
    assert bool(jnp.all(jnp.isfinite(forecast.value))), f"{kit['name']}: non-finite forecast on {case}"
    assert _finite_tree(state), f"{kit['name']}: non-finite state on {case}"
    fits_window = kit["name"] in FITTED
    if case == "constant":
        # A zero-variance window is degenerate for every kernel that fits a
        # model to it: fall back, and say so. Every kernel forecasts the level.
        if fits_window:
            assert bool(jnp.all(forecast.fallback)), f"{kit['name']} did not flag the constant series"
        np.testing.assert_allclose(np.asarray(forecast.value), 3.5, rtol=0, atol=1e-12)
    if case == "first_steps":
        # One real observation cannot identify a fitted model (the random
        # walk needs nothing more).
        assert bool(forecast.fallback[0]) == (kit["name"] != "persistence"), f"{kit['name']}: first-step flag"
        assert float(forecast.value[0]) == pytest.approx(float(values[0]), abs=1e-12)
    if case == "missing_run":
        # The window does not move on a missing step.
        assert int(history.count) == STEPS - 8


def test_missing_step_leaves_state_unchanged(kit):
    kernel, hp = kit["kernel"], kit["hp"]
    params = hp.component(kernel.name)
    (history, state), _ = kit["scan"](hp, kit["history"], kit["state"], kit["data"][:40], kit["keys"][:40])
    missing = history.push(jnp.asarray([0.0]), False)
    after = eqx.filter_jit(lambda s, h: kernel.step(s, h, params, jax.random.key(0))[0])(state, missing)
    for a, b in zip(jax.tree_util.tree_leaves(after), jax.tree_util.tree_leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_disable_jit_equals_jit(kit):
    data, keys = kit["data"][:12], kit["keys"][:12]
    (_, jitted_state), jitted = kit["scan"](kit["hp"], kit["history"], kit["state"], data, keys)
    with jax.disable_jit():
        carry = (kit["history"], kit["state"])
        values = []
        for t in range(data.shape[0]):
            carry, forecast = _kernel_step(kit["kernel"], kit["hp"], carry, (data[t], keys[t]))
            values.append(forecast.value)
    # Op-by-op execution against one fused program: float64 round-off only.
    np.testing.assert_allclose(np.asarray(values), np.asarray(jitted.value), rtol=1e-12, atol=1e-12)


def test_snapshot_round_trip_per_kernel(kit, tmp_path):
    config = fp.PredictorConfig(kernels=(kit["kernel"], "persistence") if kit["name"] != "persistence"
                                else (kit["kernel"],), buffer_size=64, levy_window=48,
                                scales=(2.0, 3.0, 4.5, 6.75, 10.0))
    state = fp.fit(fp.init(config), np.asarray(kit["data"][:40]), jax.random.key(1))
    path = tmp_path / f"{kit['name']}.snap"
    fp.save_snapshot(path, state)
    restored = fp.load_snapshot(path, fp.init(config))
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _, continued = fp.predict(restored, np.asarray(kit["data"][40:]), jax.random.key(2))
    _, straight = fp.predict(state, np.asarray(kit["data"][40:]), jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(continued.prediction), np.asarray(straight.prediction))
