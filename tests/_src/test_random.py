"""The one-bit-per-entry Rademacher sampler: values, balance, independence, shapes, keys
(alone and through ``tree_random_like``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradlab._src.random import rademacher
from gradlab._src.tree import tree_random_like


@pytest.mark.parametrize("shape", [(), (1,), (31,), (32,), (33,), (7, 5, 3)])
def test_values_shape_dtype(shape):
    z = rademacher(jax.random.key(0), shape, jnp.bfloat16)
    assert z.shape == shape and z.dtype == jnp.bfloat16
    assert set(np.unique(np.asarray(z, np.float32))) <= {-1.0, 1.0}


def test_balanced_and_uncorrelated_within_standard_errors():
    """Mean and the lag-1 / lag-32 autocorrelations (neighbouring bits of one word, the same bit
    of neighbouring words) are zero within 5 standard errors, 1/sqrt(n)."""
    n = 1 << 20
    z = np.asarray(rademacher(jax.random.key(3), (n,)), np.float64)
    bound = 5 / np.sqrt(n)
    assert abs(z.mean()) < bound
    for lag in (1, 32):
        assert abs(np.mean(z[:-lag] * z[lag:])) < bound
    # Every bit position of the words is fair.
    per_bit = z[: n - n % 32].reshape(-1, 32).mean(axis=0)
    assert np.all(np.abs(per_bit) < 5 / np.sqrt(n // 32))


def test_keys_give_independent_draws_and_vmap_matches_the_loop():
    keys = jax.random.split(jax.random.key(1), 4)
    batch = jax.vmap(lambda k: rademacher(k, (1000,)))(keys)
    for i, k in enumerate(keys):
        np.testing.assert_array_equal(batch[i], rademacher(k, (1000,)))
    agreement = np.mean(np.asarray(batch[0]) * np.asarray(batch[1]))
    assert abs(agreement) < 5 / np.sqrt(1000)


def test_like_follows_the_tree_and_dtypes():
    like = {"w": jnp.zeros((3, 4)), "b": jnp.zeros(4, jnp.bfloat16)}
    z = tree_random_like(jax.random.key(0), like)
    assert jax.tree.structure(z) == jax.tree.structure(like)
    assert z["w"].shape == (3, 4) and z["b"].dtype == jnp.bfloat16
