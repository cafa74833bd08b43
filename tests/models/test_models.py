"""Small flax models: parameter counts, shapes, losses against hand computations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl


def _count(params):
    return sum(x.size for x in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize(
    ("sizes", "count"), [((64, 128, 128, 10), 26122), ((64, 512, 512, 10), 301066)]
)
def test_mlp_param_counts_match_design(sizes, count):
    params, apply_fn = gl.models.init_mlp(jax.random.key(0), sizes)
    assert _count(params) == count
    assert apply_fn(params, jnp.zeros((3, 64))).shape == (3, 10)


def test_mlp_relu_no_bias_and_bad_sizes():
    params, apply_fn = gl.models.init_mlp(
        jax.random.key(0), (3, 4, 2), activation="relu", use_bias=False
    )
    assert _count(params) == 3 * 4 + 4 * 2
    with pytest.raises(ValueError, match="sizes="):
        gl.models.init_mlp(jax.random.key(0), (3,))
    with pytest.raises(ValueError, match="sizes\\[1\\]=0"):
        gl.models.init_mlp(jax.random.key(0), (3, 0, 2))


def test_cnn_shapes():
    params, apply_fn = gl.models.init_cnn(jax.random.key(0), (8, 8, 1), 10, channels=(4, 4))
    assert apply_fn(params, jnp.zeros((5, 8, 8, 1))).shape == (5, 10)
    with pytest.raises(ValueError, match="input_shape"):
        gl.models.init_cnn(jax.random.key(0), (8, 8), 10)


def test_losses_against_hand_computation():
    logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    labels = jnp.array([0, 2])
    expected = -np.mean([2.0 - np.log(np.exp(2) + 1 + np.exp(-1)), 0.5 - np.log(3 * np.exp(0.5))])
    np.testing.assert_allclose(gl.models.softmax_cross_entropy(logits, labels), expected, rtol=1e-6)
    out = jnp.array([[1.0, 2.0], [0.0, 1.0]])
    np.testing.assert_allclose(gl.models.mse(out, jnp.zeros_like(out)), 0.5 * (5.0 + 1.0) / 2)
