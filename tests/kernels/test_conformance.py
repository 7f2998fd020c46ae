"""One conformance suite over every kernel (STYLE.md, Tests).

For each kernel: declared types and shapes; state structure stable across
``lax.cond`` branches; scan = loop; vmap over assets = loop; a hyperparameter
population in one compilation = loop; adversarial windows (empty, one
observation, constant, a 1e12 outlier, a missing step) give finite forecasts,
finite state and the fallback flag where the kernel cannot forecast.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnpredict as fp
from fnpredict.kernels import AbstractKernel, Forecast, History, kernel_class

KERNELS = ("levy", "dgm", "imex", "signature")
STEPS = 64

CONFIG = fp.PredictorConfig(buffer_size=64, levy_window=48, scales=(2.0, 3.0, 4.5, 6.75, 10.0),
                            levy_paths=64, dgm_entropy_points=32, imex_grid=48)


def _series(n, seed=0, scale=0.01):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.standard_normal(n) * scale) + 4.0


def _kernel_step(kernel, hp, carry, inputs):
    history, kernel_state = carry
    obs, key = inputs
    observed = jnp.isfinite(obs)
    history = history.push(jnp.where(observed, obs, 0.0)[None], observed)
    forecast = kernel.forecast(kernel_state, history, hp, key)
    kernel_state = kernel.update(kernel_state, history, hp)
    return (history, kernel_state), forecast


def _finite_tree(tree) -> bool:
    return all(
        bool(jnp.all(jnp.isfinite(leaf)))
        for leaf in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)
    )


@pytest.fixture(scope="module", params=KERNELS)
def kit(request):
    name = request.param
    kernel = kernel_class(name).from_config(CONFIG)
    hp = fp.Hyperparams()
    state = kernel.init(hp, jnp.float64)
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
    for field in ("value", "fallback", "converged", "entropy", "collapsed"):
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
        return jax.lax.cond(take_update, lambda s: kernel.update(s, history, hp), lambda s: s, kit["state"])

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
    if case == "constant":
        # A zero-variance window is degenerate for every kernel: fall back, and say so.
        assert bool(jnp.all(forecast.fallback)), f"{kit['name']} did not flag the constant series"
        np.testing.assert_allclose(np.asarray(forecast.value), 3.5, rtol=0, atol=1e-12)
    if case == "first_steps":
        # One real observation cannot identify any model.
        assert bool(forecast.fallback[0]), f"{kit['name']} did not flag the first step"
        assert float(forecast.value[0]) == pytest.approx(float(values[0]), abs=1e-12)
    if case == "missing_run":
        # The window does not move on a missing step.
        assert int(history.count) == STEPS - 8


def test_missing_step_leaves_state_unchanged(kit):
    kernel, hp = kit["kernel"], kit["hp"]
    history = kit["history"]
    state = kit["state"]
    for t, value in enumerate(np.asarray(kit["data"][:40])):
        history = history.push(jnp.asarray([value]))
        state = kernel.update(state, history, hp)
    missing = history.push(jnp.asarray([0.0]), False)
    after = jax.jit(kernel.update)(state, missing, hp)
    for a, b in zip(jax.tree_util.tree_leaves(after), jax.tree_util.tree_leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
