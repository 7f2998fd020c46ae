"""A serialized step for restarts: the first prediction without tracing the step again.

A fresh process that calls ``fp.step`` pays for tracing the step's Python
(about 0.7 s on one core) and lowering it to StableHLO (about 0.6 s) before
the persistent compilation cache can even be asked for the executable: the
cache key is a hash of the lowered program. :mod:`jax.export` keeps the
lowered program itself. :func:`save_exported_step` (run by ``fnpredict
warmup``) serializes it next to the compilation cache, and
:func:`load_exported_step` in the restarted process deserializes it and
compiles the call of the stored program, which the cache already holds: no
tracing of fnpredict's Python, and no compilation.

The stored program is the step on flat arguments: the state's leaves, the
observation and the key's raw data (``jax.random.key_data``), so that no
PyTree type needs a serialization of its own. The state's structure comes
from the state the caller passes (the output state has the same one); the
``StepOutput``'s structure, which is not an argument, is stored beside the
program as a pickled ``StepOutput`` whose leaves are one-byte stand-ins (a pickled
``PyTreeDef`` would not do: equinox's unflatten checks its "missing field"
sentinel by identity, and an unpickled sentinel is a new object).

An artifact is found by a key that hashes everything the program depends
on: the config's description and component fingerprints, every leaf's shape
and dtype, the observation's shape and dtype, the key's implementation, the
jax and jaxlib versions, the CPU (:func:`~fnpredict.runtime.cache.machine_key`)
and ``XLA_FLAGS``. Any difference is a different file, so a stale artifact is
never used; a missing or unreadable one makes :func:`load_exported_step`
return ``None`` and the caller uses ``fp.step``.

The loaded step computes what ``fp.step`` computes (the same HLO; tested
bit for bit). It is a serving fast path: under ``vmap``, ``grad`` or your own
``jit`` use ``fp.step``, whose program can be transformed.
"""

import hashlib
import json
import os
import pickle
import warnings

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from .. import engine
from .cache import machine_key

#: Sub-folder of the compilation cache that holds the serialized steps.
EXPORT_DIR = "fnpredict-exported"

#: Steps loaded in this process, by (path, modification time, size).
_LOADED: dict = {}


def _artifact_key(state, obs, key) -> str:
    """A SHA-256 of everything the exported program depends on (module docstring)."""
    config = state.config
    leaves, treedef = jax.tree_util.tree_flatten(state)
    obs = jnp.asarray(obs)
    text = json.dumps({
        "config": config.describe(),
        "components": repr(config._identity),
        "treedef": str(treedef),
        "leaves": [f"{jnp.shape(x)}{jnp.result_type(x)}" for x in leaves],
        "obs": f"{obs.shape}{obs.dtype}",
        "key": str(jax.random.key_impl(key)),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "machine": machine_key(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _paths(folder, state, obs, key) -> tuple[str, str]:
    stem = os.path.join(os.fspath(folder), EXPORT_DIR, f"step-{_artifact_key(state, obs, key)}")
    return stem + ".jaxexport", stem + ".outtree"


def _flat_step(treedef, impl, traced: dict):
    """The step on (state leaves, obs, raw key data), returning (state leaves, output leaves).

    Tracing it records the ``StepOutput``'s structure in ``traced["output"]``
    (so the export traces the step once, not a second time for the structure).
    """

    def flat(leaves, obs, key_data):
        state = jax.tree_util.tree_unflatten(treedef, leaves)
        new_state, output = engine.step_impl(state, obs, jax.random.wrap_key_data(key_data, impl=impl))
        traced["output"] = output
        return jax.tree_util.tree_leaves(new_state), jax.tree_util.tree_leaves(output)

    return flat


def save_exported_step(folder, state, obs, key) -> str:
    """Serialize ``fp.step`` for arguments like ``(state, obs, key)`` into ``folder`` and compile its call.

    With the persistent cache enabled (with the same ``folder``), the stored
    program's call is compiled here too, which puts its executable in the
    cache: a restarted process then loads both without tracing or compiling.

    Args:
        folder: the compilation cache folder
            (:func:`~fnpredict.runtime.cache.enable_compilation_cache`).
        state, obs, key: arguments of the shapes a deployment passes (values
            do not matter).

    Returns:
        The path of the serialized program.
    """
    program_path, tree_path = _paths(folder, state, obs, key)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    obs = jnp.asarray(obs, state.config.jnp_dtype)
    impl = jax.random.key_impl(key)
    key_data = jax.random.key_data(key)
    traced = {}
    exported = jax.export.export(jax.jit(_flat_step(treedef, impl, traced)))(leaves, obs, key_data)
    template = jax.tree_util.tree_map(lambda _: np.zeros((), np.int8), traced["output"])
    os.makedirs(os.path.dirname(program_path), exist_ok=True)
    # Written to a temporary name and renamed, so a reader never sees half a file.
    for path, payload in ((tree_path, pickle.dumps(template)), (program_path, bytes(exported.serialize()))):
        partial = f"{path}.{os.getpid()}.partial"
        with open(partial, "wb") as handle:
            handle.write(payload)
        os.replace(partial, path)
    if jax.config.jax_compilation_cache_dir:
        # Only the persistent cache keeps this compile for the next process.
        _compiled_call(exported, leaves, obs, key_data)
    return program_path


def _compiled_call(exported, leaves, obs, key_data):
    """The stored program's call, compiled (a persistent-cache read once warmed up)."""
    return jax.jit(exported.call).lower(leaves, obs, key_data).compile()


class ExportedStep:
    """``fp.step`` from a serialized program: ``step(state, obs, key) -> (state, output)``.

    Built by :func:`load_exported_step` for one argument structure; a state
    of another structure (another config) raises ``ValueError``.
    """

    def __init__(self, compiled, treedef, out_tree, impl, dtype):
        self._compiled = compiled
        self._treedef = treedef
        self._out_tree = out_tree
        self._impl = impl
        self._dtype = dtype

    def __call__(self, state, obs, key):
        leaves, treedef = jax.tree_util.tree_flatten(state)
        if treedef != self._treedef:
            raise ValueError("this exported step was loaded for another state structure (config); use fp.step")
        if str(jax.random.key_impl(key)) != str(self._impl):
            raise ValueError(f"key implementation {jax.random.key_impl(key)} differs from the exported {self._impl}")
        new_leaves, out_leaves = self._compiled(leaves, jnp.asarray(obs, self._dtype), jax.random.key_data(key))
        return (jax.tree_util.tree_unflatten(self._treedef, new_leaves),
                jax.tree_util.tree_unflatten(self._out_tree, out_leaves))


def load_exported_step(folder, state, obs, key) -> ExportedStep | None:
    """The step :func:`save_exported_step` stored for arguments like these, or ``None`` if there is none.

    Args:
        folder: the folder given to :func:`save_exported_step`.
        state, obs, key: arguments of the shapes the step will be called with
            (e.g. the restored snapshot's state).

    Returns:
        An :class:`ExportedStep`, or ``None`` when no artifact matches, or
        (with a ``RuntimeWarning``) when the matching one cannot be read;
        then use ``fp.step``.
    """
    program_path, tree_path = _paths(folder, state, obs, key)
    if not (os.path.exists(program_path) and os.path.exists(tree_path)):
        return None
    stat = os.stat(program_path)
    memo = (os.path.abspath(program_path), stat.st_mtime_ns, stat.st_size)
    if memo in _LOADED:  # loaded before in this process: the same compiled program
        return _LOADED[memo]
    try:
        with open(program_path, "rb") as handle:
            exported = jax.export.deserialize(bytearray(handle.read()))
        with open(tree_path, "rb") as handle:
            out_tree = jax.tree_util.tree_structure(pickle.load(handle))
    except Exception as error:  # noqa: BLE001 - any unreadable artifact means "not usable": fp.step serves
        warnings.warn(f"the exported step {program_path} cannot be read ({type(error).__name__}: {error}); "
                      "fall back to fp.step and rerun `fnpredict warmup`", RuntimeWarning, stacklevel=2)
        return None
    leaves, treedef = jax.tree_util.tree_flatten(state)
    dtype = state.config.jnp_dtype
    obs = jnp.asarray(obs, dtype)
    compiled = _compiled_call(exported, leaves, obs, jax.random.key_data(key))
    _LOADED[memo] = ExportedStep(compiled, treedef, out_tree, jax.random.key_impl(key), dtype)
    return _LOADED[memo]


__all__ = ["save_exported_step", "load_exported_step", "ExportedStep", "EXPORT_DIR"]
