"""Speed measurements shared by ``fnpredict bench`` and ``benchmarks/``.

Everything is measured in one run, so the ratios compare like with like on a
shared, noisy machine; absolute times are medians of repeated calls.
"""

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from .. import data as fpdata
from .. import engine
from ..config import PredictorConfig


def _series(steps: int, n_assets: int = 1, seed: int = 0) -> np.ndarray:
    """Real data: windows of the S&P 500 log closes (one per asset, shifted)."""
    log_close = fpdata.log_levels(fpdata.load_sp500().values)
    starts = np.linspace(0, len(log_close) - steps - 1, n_assets).astype(int)
    return np.stack([log_close[s : s + steps] for s in starts])


def _block(tree):
    return jax.tree_util.tree_map(lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, tree)


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _block(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def state_bytes(state) -> int:
    """Bytes of all array leaves of one state."""
    return int(sum(np.asarray(leaf).nbytes for leaf in jax.tree_util.tree_leaves(state)))


def run_bench(config: PredictorConfig, n_assets: int = 256, steps: int = 500, seed: int = 0,
              loop_steps: int | None = None) -> dict:
    """Measure the step and its batched forms.

    Returns a dict with: ``compile_s`` (cold lower+compile of the jitted step),
    ``step_latency_us`` (median of single jitted calls after warm-up),
    ``loop_per_step_us`` / ``scan_per_step_us`` and their ratio,
    ``vmap_per_asset_step_us`` vs ``single_per_step_us`` and their ratio,
    ``state_bytes_per_asset``.
    """
    key = jax.random.key(seed)
    loop_steps = loop_steps or min(steps, 200)
    series = _series(steps, n_assets, seed)
    state = engine.init(config, key)
    warm = engine.fit(state, jnp.asarray(series[0, : config.buffer_size]), key)
    obs = jnp.asarray(series[0, config.buffer_size], config.jnp_dtype)

    # Cold compile, measured ahead of time on a fresh jit of the step; the
    # latencies below go through fp.step itself (jax.jit's C++ dispatch path,
    # which an AOT-compiled object's __call__ does not use).
    start = time.perf_counter()
    jax.jit(engine.step_impl).lower(warm, obs, key).compile()
    compile_s = time.perf_counter() - start

    compiled_step = engine.step
    _block(compiled_step(warm, obs, key))
    step_latency = _median_time(lambda: compiled_step(warm, obs, key), repeats=200)

    keys = jax.random.split(key, steps)
    data = jnp.asarray(series[0], config.jnp_dtype)

    def python_loop():
        s = warm
        out = None
        for t in range(loop_steps):
            s, out = compiled_step(s, data[t], keys[t])
        return s, out

    python_loop()
    loop_time = _median_time(python_loop, repeats=3) / loop_steps

    scan = jax.jit(lambda s, d, k: engine.scan(s, d, k))
    _block(scan(warm, data, keys))
    scan_time = _median_time(lambda: scan(warm, data, keys), repeats=3) / steps

    batched_state = jax.vmap(lambda _: warm)(jnp.arange(n_assets))
    batched_data = jnp.asarray(series.T, config.jnp_dtype)  # (time, assets)
    vscan = jax.jit(jax.vmap(lambda s, d, k: engine.scan(s, d, k), in_axes=(0, 1, None)))
    _block(vscan(batched_state, batched_data, keys))
    vmap_time = _median_time(lambda: vscan(batched_state, batched_data, keys), repeats=2) / (steps * n_assets)

    return {
        "config": {"kernels": list(config.kernel_names), "buffer_size": config.buffer_size},
        "devices": [str(d) for d in jax.devices()],
        "compile_s": compile_s,
        "step_latency_us": step_latency * 1e6,
        "loop_per_step_us": loop_time * 1e6,
        "scan_per_step_us": scan_time * 1e6,
        "loop_over_scan": loop_time / scan_time,
        "n_assets": n_assets,
        "single_per_step_us": scan_time * 1e6,
        "vmap_per_asset_step_us": vmap_time * 1e6,
        "single_over_vmap_per_asset": scan_time / vmap_time,
        "state_bytes_per_asset": state_bytes(warm),
    }


def format_bench(figures: dict) -> str:
    """Human-readable lines for :func:`run_bench`'s result."""
    return "\n".join([
        f"kernels {','.join(figures['config']['kernels'])} on {', '.join(figures['devices'])}",
        f"cold compile of step          {figures['compile_s']:10.2f} s",
        f"jitted step latency (median)  {figures['step_latency_us']:10.1f} us   (budget 1000 us)",
        f"python loop of step, per step {figures['loop_per_step_us']:10.1f} us",
        f"lax.scan predict, per step    {figures['scan_per_step_us']:10.1f} us   "
        f"loop/scan = {figures['loop_over_scan']:.2f}x",
        f"vmap over {figures['n_assets']} assets, per asset-step {figures['vmap_per_asset_step_us']:8.2f} us   "
        f"single/vmap = {figures['single_over_vmap_per_asset']:.2f}x",
        f"state bytes per asset         {figures['state_bytes_per_asset']:10d} B   (budget 65536 B)",
    ])


__all__ = ["run_bench", "format_bench", "state_bytes"]
