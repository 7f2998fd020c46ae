"""The bitonic sorting network returns what jnp.sort returns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnpredict.sorting import sort


@pytest.mark.parametrize("n", [1, 2, 3, 17, 64, 96, 128, 256])
def test_sort_equals_jnp_sort(n):
    rng = np.random.default_rng(n)
    batch = rng.standard_normal((6, n))
    batch[1] = np.round(batch[1])  # ties
    batch[2, : n // 2] = 3.0  # a plateau
    if n >= 3:
        batch[3, 1] = np.nan
        batch[3, -1] = np.inf
        batch[4, 0] = -np.inf
        batch[4, -1] = np.nan
        batch[5, :2] = [np.nan, np.inf]
    ours = np.asarray(jax.jit(jax.vmap(sort))(jnp.asarray(batch)))
    reference = np.asarray(jnp.sort(jnp.asarray(batch), axis=-1))
    # Exact: a sort only permutes, it computes nothing (NaN last, as jnp.sort).
    np.testing.assert_array_equal(ours, reference)


def test_sort_keeps_float32_and_rejects_2d():
    values = jnp.asarray([2.0, -1.0, 0.5], jnp.float32)
    assert sort(values).dtype == jnp.float32
    # ValueError from sort itself; jaxtyping (on in tests) may reject the shape first.
    with pytest.raises((ValueError, TypeError)):
        sort(jnp.zeros((2, 2)))


def test_sort_gradient_is_the_permutation():
    values = jnp.asarray([0.3, -2.0, 1.5, 0.1])
    weights = jnp.arange(4.0)
    grad = jax.grad(lambda v: jnp.dot(weights, sort(v)))(values)
    expected = jax.grad(lambda v: jnp.dot(weights, jnp.sort(v)))(values)
    np.testing.assert_array_equal(np.asarray(grad), np.asarray(expected))
