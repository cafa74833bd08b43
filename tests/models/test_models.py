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


# --- linear self-attention (icl_one_step_gd) ---


def test_lsa_matches_the_formula_and_is_one_gd_step(x64):
    d, n = 3, 5
    params, predict = gl.models.init_lsa(jax.random.key(1), d, n, init_scale=0.5, dtype=jnp.float64)
    z = jax.random.normal(jax.random.key(2), (4, n + 1, d + 1), jnp.float64)
    w_kq, w_pv = (np.asarray(params["params"][k]) for k in ("w_kq", "w_pv"))
    zn = np.asarray(z)
    out = np.asarray(gl.models.LinearSelfAttention(dtype=jnp.float64).apply(params, z))
    for b in range(4):  # z_j + (1/n) sum_{i <= n} W_PV z_i (z_i^T W_KQ z_j), dense loop
        for j in range(n + 1):
            upd = sum(w_pv @ zn[b, i] * (zn[b, i] @ w_kq @ zn[b, j]) for i in range(n)) / n
            np.testing.assert_allclose(out[b, j], zn[b, j] + upd, rtol=1e-12)
    # value row (0, p_y) and W_KQ[d, :d] = 0: y_hat = x_q^T Gamma h with Gamma = p_y A^T
    p = {
        "params": {
            "w_kq": params["params"]["w_kq"].at[d, :].set(0.0),
            "w_pv": params["params"]["w_pv"].at[d, :d].set(0.0),
        }
    }
    z = z.at[:, -1, -1].set(0.0)
    gamma = p["params"]["w_pv"][d, d] * p["params"]["w_kq"][:d, :d].T
    h = jnp.einsum("bn,bnd->bd", z[:, :-1, -1], z[:, :-1, :-1]) / n
    np.testing.assert_allclose(
        predict(p, z), jnp.einsum("bd,de,be->b", z[:, -1, :-1], gamma, h), rtol=1e-12
    )


def test_lsa_rejects_a_prompt_without_context():
    model = gl.models.LinearSelfAttention()
    with pytest.raises(ValueError, match="z.shape"):
        model.init(jax.random.key(0), jnp.ones((3, 1, 4)))
    with pytest.raises(ValueError, match="num_context"):
        gl.models.init_lsa(jax.random.key(0), 3, 0)
