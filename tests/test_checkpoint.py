"""engine.scan(checkpoint=...): same values and gradients, with or without rematerialisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnpredict as fp
from fnpredict import synthetic

CONFIG = fp.PredictorConfig(kernels=("signature", "persistence"), buffer_size=32, scales=(1.0, 2.0, 4.0))
STEPS = 45  # not a multiple of the segment length 7: the last segment is padded


def _loss(x, checkpoint):
    data = jnp.asarray(synthetic.ar2_increments(STEPS, seed=2).values + 4.0)
    keys = jax.random.split(jax.random.key(0), STEPS)
    state = fp.init(CONFIG, None, fp.Hyperparams(rls_forgetting=x[0], jko_tau=x[1]))
    final, outputs = fp.engine.scan(state, data, keys, checkpoint=checkpoint)
    return jnp.mean((outputs.prediction[:-1] - data[1:]) ** 2), (final, outputs)


@pytest.mark.integration  # minutes of end-to-end run: the integration leg
def test_checkpointing_changes_neither_values_nor_gradients():
    x = jnp.asarray([0.99, 0.5])
    with jax.numpy_dtype_promotion("standard"):  # ott-jax's Sinkhorn backward (see test_gradients.py)
        results = {c: jax.jit(jax.value_and_grad(lambda v, c=c: _loss(v, c), has_aux=True))(x) for c in (0, 1, 7)}
    (_, (final, outputs)), gradient = results[0]
    for c in (1, 7):
        (_, (final_c, outputs_c)), gradient_c = results[c]
        assert outputs_c.prediction.shape == (STEPS,)
        # Forward values: the same operations, but XLA fuses the rematerialised
        # program differently (measured: 1 ulp on some steps); 1e-13 relative.
        np.testing.assert_allclose(outputs_c.prediction, outputs.prediction, rtol=1e-13, atol=0)
        np.testing.assert_allclose(final_c.weights, final.weights, rtol=1e-13, atol=1e-15)
        # Gradients: recomputation may fuse differently; 1e-10 relative is
        # far below any use and far above float64 rounding over 45 steps.
        np.testing.assert_allclose(gradient_c, gradient, rtol=1e-10, atol=0)
    assert np.all(np.isfinite(gradient)) and np.any(gradient != 0)


def _peak_bytes(compiled) -> int:
    # XLA's memory analysis: arguments + outputs + temporaries - aliased (static buffer assignment).
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


@pytest.mark.integration  # minutes of end-to-end run: the integration leg
def test_checkpointed_gradient_memory_is_bounded_by_four_forward_passes():
    # Compile only (no run). benchmarks/bench_grad_memory.py makes the same
    # measurement for the default config at 2000 steps.
    # The length: at 400 steps the tiny config's forward pass is so
    # small (20 KB) that the 2·√T carries alone reach 4.8 x it.
    steps = 2000
    data = jnp.asarray(synthetic.ar2_increments(steps, seed=2).values + 4.0)
    keys = jax.random.split(jax.random.key(0), steps)

    # benchmarks/bench_grad_memory.py --small's config (measured there: 3.50 x
    # with checkpointing, 45 x without). The 32-sample CONFIG above is too
    # small a forward pass for the bound: its 2·√T carries weigh more.
    config = fp.PredictorConfig(kernels=("signature", "persistence"), buffer_size=64,
                                scales=(2.0, 3.0, 4.5, 6.75, 10.0))

    def loss(x, checkpoint):
        state = fp.init(config, None, fp.Hyperparams(rls_forgetting=x[0], jko_tau=x[1]))
        _, outputs = fp.engine.scan(state, data, keys, checkpoint=checkpoint)
        return jnp.mean((outputs.prediction[:-1] - data[1:]) ** 2)

    x = jnp.asarray([0.99, 0.5])
    with jax.numpy_dtype_promotion("standard"):
        forward = _peak_bytes(jax.jit(lambda v: loss(v, 0)).lower(x).compile())
        plain = _peak_bytes(jax.jit(jax.grad(lambda v: loss(v, 0))).lower(x).compile())
        remat = _peak_bytes(jax.jit(jax.grad(lambda v: loss(v, 45))).lower(x).compile())  # 45 ≈ √2000
    assert remat <= 4 * forward, (remat, forward)
    # And checkpointing is what bounds it: without, the gradient stores every step.
    assert plain > 4 * forward, (plain, forward)
