"""Canary for jax#39103: jax/jaxlib 0.10.2 miscompiles, on CPU, a jitted vmapped
matrix-vector product followed by a reduction — exactly the pattern of a
vmapped predictor. 0.10.1 is right; this test fails if a bump brings it back."""

import jax
import jax.numpy as jnp
import pytest


@pytest.mark.parametrize("dtype, n", [(jnp.float64, 16_385), (jnp.float32, 32_769)])
def test_vmapped_matvec_reduction_is_exact(dtype, n):
    i = jnp.arange(n, dtype=dtype)
    x = jnp.stack((i, jnp.zeros_like(i), jnp.zeros_like(i)), axis=1)
    matrix = jnp.eye(3, dtype=dtype)

    def f(rows):
        return jax.vmap(lambda row: jnp.sum((matrix @ row) ** 2))(rows)

    # (n-1)^2 is exactly representable in both dtypes: any difference is the bug.
    expected = float(n - 1) ** 2
    assert float(f(x)[-1]) == expected
    assert float(jax.jit(f)(x)[-1]) == expected  # 0.10.2 gives 267911424.0 in float64


def test_pinned_jax_is_not_the_broken_release():
    assert jax.__version__ != "0.10.2"
