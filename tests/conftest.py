"""Shared test set-up: x64, a key fixture, tree comparison helpers."""

import itertools

import jax
import numpy as np
import pytest

import fnpredict  # noqa: F401  (switches on x64)

jax.config.update("jax_enable_x64", True)
# Strict dtype promotion: an implicit int/float or float32/float64 mix in the
# library is a bug (it silently changes precision under x64), so tests fail on it.
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """Drop JAX's in-memory caches after each test module.

    The whole suite compiles thousands of XLA programs in one process; kept
    alive, their executables' memory mappings grew until XLA crashed
    (a segfault late in the run, in whichever module came last). Module-scoped
    fixtures, and the compile-count checks, all live within one module.
    """
    yield
    jax.clear_caches()


@pytest.fixture
def getkey():
    counter = itertools.count()

    def _getkey():
        return jax.random.key(next(counter))

    return _getkey


def tree_allclose(a, b, rtol=0.0, atol=0.0) -> bool:
    """True when two PyTrees have the same structure and close leaves (NaN == NaN)."""
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        return False
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape:
            return False
        if not np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
            return False
    return True


def tree_max_abs_diff(a, b) -> float:
    diffs = jax.tree_util.tree_map(
        lambda x, y: float(np.nanmax(np.abs(np.asarray(x, float) - np.asarray(y, float)), initial=0.0)), a, b
    )
    return max(jax.tree_util.tree_leaves(diffs), default=0.0)


#: The newest-JAX leg (``make test-py312``) runs these files: the miscompile
#: canary, the parity checks (scan = loop, vmap = loop, sharded = unsharded,
#: snapshot round trip), the numerical oracles, and ahead-of-time compilation
#: with the exported step (``jax.export``'s format is tied to the jax version).
NEWEST_JAX_FILES = (
    "test_canary.py",
    "test_aot.py",
    "runtime/test_sharding.py",
    "runtime/test_snapshot.py",
    "kernels/test_conformance.py",
    "kernels/test_levy.py",
    "sia/test_cwt.py",
    "sia/test_cusum.py",
    "greeks/test_malliavin.py",
    "orchestrator/test_jko.py",
    "guards/test_precedence.py",
    "solvers/test_pide.py",
)


def pytest_collection_modifyitems(config, items):
    root = config.rootpath / "tests"
    for item in items:
        try:
            relative = item.path.relative_to(root).as_posix()
        except ValueError:
            continue
        if relative in NEWEST_JAX_FILES:
            item.add_marker(pytest.mark.newest_jax)
