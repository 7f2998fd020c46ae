"""Compile every program a deployment uses into the persistent cache, ahead of time.

A fresh process then finds each of them in the cache (a read, not a compile):
``fnpredict warmup`` once per machine image or release, then every restart
loads instead of compiling. The programs are the ones the public entry points
call, lowered for the argument shapes a deployment passes:

* ``init``: :func:`fnpredict.engine.init`'s one compiled program;
* ``step``: ``fp.step`` for one asset (``obs`` of shape ``()`` or
  ``(channels,)``);
* ``stream[N]``: the stream service's vmapped step for ``N`` assets;
* ``predict[T]`` / ``chunk[T]``: ``fp.predict`` over ``T`` steps and the CLI
  backtest's padded chunk of ``T`` steps;
* ``step (exported)``: the single-asset step serialized with :mod:`jax.export`
  (:mod:`fnpredict.runtime.exported`), which a restart loads without tracing.

``jax.jit(f).lower(args).compile()`` builds the same HLO, hence the same
cache key, as the first call ``f(args)`` would, so an ahead-of-time compile
here is a cache hit there (``benchmarks/hot_start.py`` counts them).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from .. import engine
from ..config import Hyperparams, PredictorConfig


def step_arguments(config: PredictorConfig, hyperparams: Hyperparams):
    """``(state, obs, key)`` of the shapes a single-asset deployment passes to ``fp.step``."""
    key = jax.random.key(0)
    state = engine.init(config, key, hyperparams)
    dtype = config.jnp_dtype
    obs = jnp.zeros((), dtype) if config.n_channels == 1 else jnp.zeros((config.n_channels,), dtype)
    return state, obs, key


def deployment_programs(
    config: PredictorConfig,
    hyperparams: Hyperparams | None = None,
    *,
    stream_assets: tuple[int, ...] = (),
    predict_steps: tuple[int, ...] = (),
    chunk_steps: tuple[int, ...] = (),
) -> dict:
    """``{name: jax.stages.Lowered}`` for the programs listed in the module docstring."""
    hyperparams = Hyperparams(dtype=config.jnp_dtype) if hyperparams is None else hyperparams
    hyperparams = hyperparams.validate()
    state, obs, key = step_arguments(config, hyperparams)
    dtype = config.jnp_dtype
    programs = {
        "init": engine._init_program.lower(config, hyperparams),
        "step": engine.step.lower(state, obs, key),
    }
    if stream_assets:
        from ..service import stream

        # As StreamService.process calls them: float64 host values, a uint32 line number.
        index = np.uint32(0)
        for n in stream_assets:
            if n == 1:
                programs["stream[1]"] = stream._step_one.lower(state, np.zeros(obs.shape), key, index)
                continue
            states = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((n, *jnp.shape(x)), x.dtype), state)
            batch_obs = np.zeros((n, *obs.shape))
            programs[f"stream[{n}]"] = stream._step_many.lower(states, batch_obs, key, index)
    for steps in predict_steps:
        data = jax.ShapeDtypeStruct((steps, *obs.shape), dtype)
        keys = jax.random.split(key, steps)
        programs[f"predict[{steps}]"] = engine._predict_jit.lower(state, data, keys)
    for steps in chunk_steps:
        data = jax.ShapeDtypeStruct((steps, *obs.shape), dtype)
        keys = jax.random.split(key, steps)
        active = jax.ShapeDtypeStruct((steps,), bool)
        programs[f"chunk[{steps}]"] = engine.predict_chunk.lower(state, data, keys, active)
    return programs


def warmup(
    config: PredictorConfig, hyperparams: Hyperparams | None = None, *, export_step: bool = True,
    **shapes: tuple[int, ...]
) -> dict[str, float]:
    """Compile the deployment's programs (cache on first, read from it afterwards).

    The persistent cache must be enabled first
    (:func:`fnpredict.runtime.cache.enable_compilation_cache`).

    Args:
        config: the deployment's config.
        hyperparams: its hyperparameters (only their shapes and dtypes matter).
        export_step: also serialize the single-asset step into the cache
            folder (:mod:`fnpredict.runtime.exported`), so that a restarted
            process loads it with :func:`~fnpredict.runtime.exported.load_exported_step`
            without tracing the step again (the ``"step (exported)"`` entry).
        **shapes: ``stream_assets``, ``predict_steps``, ``chunk_steps`` tuples
            of :func:`deployment_programs`.

    Returns:
        ``{name: seconds}`` of lowering plus compiling each program.
    """
    seconds = {}
    start = time.perf_counter()
    for name, lowered in deployment_programs(config, hyperparams, **shapes).items():
        lowered.compile()
        seconds[name] = time.perf_counter() - start
        start = time.perf_counter()
    if export_step:
        from .exported import save_exported_step

        folder = jax.config.jax_compilation_cache_dir
        if not folder:
            raise ValueError("export_step needs the persistent cache enabled (enable_compilation_cache)")
        hyperparams = Hyperparams(dtype=config.jnp_dtype) if hyperparams is None else hyperparams
        save_exported_step(folder, *step_arguments(config, hyperparams.validate()))
        seconds["step (exported)"] = time.perf_counter() - start
    return seconds


__all__ = ["warmup", "deployment_programs", "step_arguments"]
