"""EL2N and GraNd against hand computations on models with known outputs (float64)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from tests.attribution._models import cross_entropy, data, mlp_params


def _linear(w, x):
    return x @ w


def test_el2n_by_hand(x64):
    # logits = x @ w with w = I: the softmax of each row is known in closed form.
    x = jnp.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, -1.0]])
    y = jnp.array([0, 2, 1])
    p = np.exp(np.asarray(x)) / np.exp(np.asarray(x)).sum(1, keepdims=True)
    want = np.linalg.norm(p - np.eye(3)[np.asarray(y)], axis=1)
    got = gl.attribution.el2n(_linear, jnp.eye(3), (x, y))
    np.testing.assert_allclose(got, want, rtol=1e-14)
    # soft targets equal to the one-hot labels give the same scores
    soft = gl.attribution.el2n(_linear, jnp.eye(3), (x, jax.nn.one_hot(y, 3)), chunk_size=2)
    np.testing.assert_allclose(soft, want, rtol=1e-14)
    # two models averaged: w = I and w = 0 (uniform predictions)
    stacked = jnp.stack([jnp.eye(3), jnp.zeros((3, 3))])
    uniform = np.linalg.norm(np.full(3, 1 / 3) - np.eye(3)[0])
    avg = gl.attribution.el2n(_linear, stacked, (x, y), stacked=True)
    np.testing.assert_allclose(avg, (want + uniform) / 2, rtol=1e-14)


def test_grand_by_hand(x64):
    # least squares: example i's gradient is x_i (x_i . w - y_i), its norm |x_i . w - y_i| ||x_i||
    def loss_fn(w, batch):
        x, y = batch
        return 0.5 * jnp.mean((x @ w - y) ** 2)

    x = jnp.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    y = jnp.array([1.0, 0.0, 2.0])
    ws = jnp.array([[1.0, 1.0], [0.0, 2.0]])
    per_model = [np.abs(x @ w - y) * np.linalg.norm(x, axis=1) for w in ws]
    np.testing.assert_allclose(gl.attribution.grand(loss_fn, ws[0], (x, y)), per_model[0])
    got = gl.attribution.grand(loss_fn, ws, (x, y), stacked=True, chunk_size=2)
    np.testing.assert_allclose(got, (per_model[0] + per_model[1]) / 2, rtol=1e-14)


def test_grand_equals_norms_on_mlp(x64):
    params = mlp_params(jax.random.key(3))
    batch = data(jax.random.key(4))
    want = gl.attribution.per_example_grad_norms(cross_entropy, params, batch)
    np.testing.assert_allclose(gl.attribution.grand(cross_entropy, params, batch), want)


def test_bad_input():
    x = jnp.ones((3, 2))
    with pytest.raises(ValueError, match="label 5"):
        gl.attribution.el2n(_linear, jnp.eye(2), (x, jnp.array([0, 5, 1])))
    with pytest.raises(ValueError, match="label -1"):
        gl.attribution.el2n(_linear, jnp.eye(2), (x, jnp.array([0, -1, 1])))
    with pytest.raises(ValueError, match="leading"):
        gl.attribution.el2n(_linear, jnp.eye(2), (x, jnp.array([0, 1])))
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        gl.attribution.el2n(_linear, jnp.eye(2), (x, jnp.ones((3, 3))))
    with pytest.raises(TypeError, match="pair"):
        gl.attribution.el2n(_linear, jnp.eye(2), x)
    with pytest.raises(ValueError, match="stack"):
        gl.attribution.grand(
            lambda w, b: jnp.sum(b @ w["a"]),
            {"a": jnp.ones((2, 2)), "b": jnp.ones(3)},
            x,
            stacked=True,
        )
