"""Roofline of one step: time, FLOPs and bytes per asset-step of each component.

Run: ``python benchmarks/roofline.py [--assets 1024] [--repeats 7] [--write-docs]``.

Every component is called exactly as ``fnpredict.engine.step_impl`` calls it,
on states warmed on the bundled S&P 500 (buffer full, every component past
warm-up), as ``jax.jit(jax.vmap(component))`` over ``--assets`` assets. For
each: wall time per asset-step (minimum of ``--repeats`` blocked calls, the
machine being shared), FLOPs and bytes accessed per asset-step from XLA's cost
analysis of the compiled vmapped program, the arithmetic intensity, and the
attained fraction

.. math:: \\text{attained} = \\frac{\\text{FLOPs} / t}{P},

of the core's peak P, measured in the same run by a float64 1024×1024 matmul.
The whole step is timed the same way; its remainder (guards, telemetry,
the finite-carry guard, wiring) is the whole minus the sum of the parts.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import block, cost, flush, matmul_peak, min_time, pin_one_core, warm_batch  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--assets", type=int, default=1024)
parser.add_argument("--repeats", type=int, default=7)
parser.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
args = parser.parse_args()
PINNING = pin_one_core()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import fnpredict as fp  # noqa: E402
from fnpredict.input_filter import filter_observation  # noqa: E402
from fnpredict.kernels import History  # noqa: E402
from fnpredict.orchestrator import RuleInput  # noqa: E402
from fnpredict.orchestrator.losses import energy_gradient, linearized_losses  # noqa: E402
from fnpredict.sia.cusum import cusum_reset, cusum_update  # noqa: E402
from fnpredict.sia.signed_detector import signed_detector_update  # noqa: E402
from fnpredict.sia.wtmm import holder_exponent  # noqa: E402


def _window(state, obs):
    obs = jnp.reshape(obs, (state.config.n_channels,))
    return obs, History(values=state.buffer, count=state.buffer_count, observed=jnp.all(jnp.isfinite(obs)))


def input_filter(state, obs, key):
    obs, window = _window(state, obs)
    return filter_observation(state.input_filter, obs, window.observed, window, state.hyperparams.bad_tick_threshold)


def detectors(state, obs, key):
    """Magnitude CUSUM (kurtosis window, adaptive threshold) and signed Page CUSUM."""
    hp = state.hyperparams
    obs, window = _window(state, obs)
    valid = window.observed & (state.buffer_count > 0)
    error = jnp.where(valid, obs[0] - state.prediction, 0.0)
    cusum, info = cusum_update(state.cusum, error, valid, hp.cusum_h, hp.cusum_k, hp.error_alpha)
    cusum = jax.tree_util.tree_map(lambda r, k: jnp.where(info.alarm, r, k), cusum_reset(cusum), cusum)
    page, page_info = signed_detector_update(
        state.page, obs[0] - window.last, window.observed & (window.count > 0), hp.page_h, hp.page_k
    )
    return cusum, page, info, page_info


def identification(state, obs, key):
    """Hölder exponent h_min of the pushed buffer (CWT, maxima, linking, τ(q), h(q))."""
    config = state.config
    obs, window = _window(state, obs)
    history = window.push(obs, window.observed)
    return holder_exponent(history.values[:, 0], config.scales, config.q_moments, state.hyperparams.besov_c,
                           config.wavelet)


def weight_rule(state, obs, key):
    """The losses of the previous forecasts and the rule's update (faithful JKO by default)."""
    hp = state.hyperparams
    obs, window = _window(state, obs)
    sigma = state.cusum.sigma if hasattr(state.cusum, "sigma") else jnp.asarray(1.0, obs.dtype)
    inputs = RuleInput(
        predictions=state.kernel_predictions, target=obs[0],
        losses=energy_gradient(state.kernel_predictions, obs[0], sigma, state.loss_type, hp.huber_delta_scale),
        linearized_losses=linearized_losses(state.kernel_predictions, state.weights, obs[0], sigma,
                                            state.loss_type, hp.huber_delta_scale),
        scale=sigma, loss_type=state.loss_type, valid=window.observed,
    )
    return state.config.rule_object.update(state.rule_state, state.weights, inputs, hp)


def kernel_component(index):
    def run(state, obs, key):
        kernel = state.config.kernel_objects[index]
        obs, window = _window(state, obs)
        history = window.push(obs, window.observed)
        key = jax.random.split(key, state.config.n_kernels)[index]
        return kernel.step(state.kernel_states[index], history, state.hyperparams.component(kernel.name), key)

    return run


def whole_step(state, obs, key):
    return fp.engine.step_impl(state, obs, key)


def measure(fn, states, obs, keys, n_assets):
    batched = jax.jit(jax.vmap(fn))
    compiled = batched.lower(states, obs, keys).compile()
    flops, bytes_accessed = cost(compiled)
    block(compiled(states, obs, keys))
    seconds = min_time(lambda: compiled(states, obs, keys), args.repeats)
    return seconds / n_assets, flops / n_assets, bytes_accessed / n_assets


def main():
    config = fp.PredictorConfig()
    n = args.assets
    print(f"roofline, default config, {n} assets, float64, jax {jax.__version__}, {PINNING}")
    peak = matmul_peak()
    print(f"measured peak: float64 1024x1024 matmul {peak / 1e9:.2f} GFLOP/s")
    flush()
    states, obs, _ = warm_batch(config, n)
    keys = jax.random.split(jax.random.key(7), n)
    parts = [("input filter (bad tick)", input_filter), ("CUSUM + Page detectors", detectors),
             ("identification (WTMM h_min)", identification), (f"weight rule ({config.rule})", weight_rule)]
    parts += [(f"kernel {k.name}", kernel_component(i)) for i, k in enumerate(config.kernel_objects)]
    rows = []
    for name, fn in parts:
        rows.append((name, *measure(fn, states, obs, keys, n)))
        print(f"  measured {name}")
        flush()
    whole = ("whole step", *measure(whole_step, states, obs, keys, n))
    rest = ("remainder: guards, telemetry, carry guard", whole[1] - sum(r[1] for r in rows),
            whole[2] - sum(r[2] for r in rows), whole[3] - sum(r[3] for r in rows))
    rows += [rest, whole]
    header = ("| component | µs / asset-step | share of step | kFLOP | kB accessed | FLOP/B | GFLOP/s "
              "| attained of peak |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for name, seconds, flops, nbytes in rows:
        rate = flops / seconds if seconds > 0 else float("nan")
        lines.append(
            f"| {name} | {seconds * 1e6:.2f} | {seconds / whole[1]:.0%} | {flops / 1e3:.1f} | {nbytes / 1e3:.1f} | "
            f"{flops / nbytes if nbytes else float('nan'):.2f} | {rate / 1e9:.2f} | {rate / peak:.1%} |"
        )
    table = "\n".join(lines)
    print(table)
    note = (f"`python benchmarks/roofline.py --assets {n}`: jax {jax.__version__}, float64, default config, "
            f"vmap over {n} assets, {PINNING}. Measured peak (float64 1024×1024 matmul, same run): "
            f"{peak / 1e9:.2f} GFLOP/s. Times are minima of {args.repeats} calls; FLOPs and bytes from XLA's "
            "cost analysis of each compiled vmapped program, divided by the asset count. The remainder row is "
            "the whole step minus the sum of the rows above it (negative entries mean fusion across "
            "components saves more than the wiring costs).")
    if args.write_docs:
        from _docs import write_section

        write_section("roofline", note + "\n\n" + table)


if __name__ == "__main__":
    main()
