"""Shared set-up for the speed scripts: one core, real data, min-of-repeats timing.

The development machine is shared, so every figure is the *minimum* of
repeated timings (the run least disturbed by other processes), and every
comparison is made inside one run of one script.
"""

import os
import sys
import time


def pin_one_core() -> str:
    """Pin this process to one CPU and XLA to one thread; call before importing jax.

    Returns a sentence stating the setting, for the printed report.
    """
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    ).strip()
    core = None
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
    return (f"pinned to CPU {core} (sched_setaffinity, as taskset -c {core}) and "
            "XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")


def block(tree):
    import jax

    return jax.tree_util.tree_map(lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, tree)


def min_time(fn, repeats: int) -> float:
    """Minimum wall time of ``repeats`` blocked calls of ``fn`` (seconds)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        block(fn())
        best = min(best, time.perf_counter() - start)
    return best


def cost(compiled) -> tuple[float, float]:
    """``(flops, bytes accessed)`` from XLA's cost analysis of a compiled program."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax returns one dict per device
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan"))), float(analysis.get("bytes accessed", float("nan")))


def matmul_peak(n: int = 1024, repeats: int = 7) -> float:
    """The core's measured float64 peak: FLOP/s of a jitted n×n matmul (2n³ FLOPs)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float64)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float64)
    matmul = jax.jit(lambda x, y: x @ y)
    block(matmul(a, b))
    return 2.0 * n**3 / min_time(lambda: matmul(a, b), repeats)


def warm_batch(config, n_assets: int, extra_steps: int = 0, distinct: int = 64, seed: int = 0):
    """A batch of ``n_assets`` states warmed on real data, and the data that follows.

    ``distinct`` different S&P 500 windows are fitted (``buffer_size + 8``
    steps each, so the buffer is full and every component is past its
    warm-up) and tiled to ``n_assets``; fitting all 1024 would cost a minute
    of a shared core and change nothing the benchmark measures.

    Returns ``(states, next_obs, data)``: ``next_obs`` ``(assets,)`` the next
    observation of each asset, ``data`` ``(extra_steps, assets)`` the ones after.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    import fnpredict as fp
    from fnpredict import data as fpdata

    log_close = fpdata.log_levels(fpdata.load_sp500().values)
    warm_steps = config.buffer_size + 8
    length = warm_steps + 1 + extra_steps
    distinct = min(distinct, n_assets)
    starts = np.linspace(0, len(log_close) - length - 1, distinct).astype(int)
    windows = np.stack([log_close[s : s + length] for s in starts])  # (distinct, length)
    key = jax.random.key(seed)
    state = fp.init(config, key)
    fit = jax.jit(jax.vmap(lambda s, d: fp.engine.scan(s, d, jax.random.split(key, warm_steps), keep_outputs=False)[0],
                           in_axes=(None, 0)))
    states = fit(state, jnp.asarray(windows[:, :warm_steps], config.jnp_dtype))
    reps = -(-n_assets // distinct)
    tile = lambda x: jnp.concatenate([x] * reps, axis=0)[:n_assets]  # noqa: E731
    states = jax.tree_util.tree_map(tile, states)
    rest = np.concatenate([windows] * reps, axis=0)[:n_assets, warm_steps:]
    return states, jnp.asarray(rest[:, 0], config.jnp_dtype), jnp.asarray(rest[:, 1:].T, config.jnp_dtype)


def flush():
    sys.stdout.flush()
