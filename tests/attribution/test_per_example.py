"""per_example_grads / per_example_grad_norms against a Python loop of jax.grad (float64)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from tests.attribution._models import cross_entropy, data, mlp_params


@pytest.fixture
def problem(x64):
    key = jax.random.key(1)
    params = mlp_params(key)
    batch = data(jax.random.key(2))
    return params, batch


def _loop(params, batch):
    x, y = batch
    grad = jax.jit(jax.grad(cross_entropy))  # one compilation: every example has the same shape
    return [grad(params, (x[i : i + 1], y[i : i + 1])) for i in range(len(y))]


def test_equals_python_loop_of_single_example_grads(problem):
    params, batch = problem
    got = gl.attribution.per_example_grads(cross_entropy, params, batch)
    for i, want in enumerate(_loop(params, batch)):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            assert a.dtype == jnp.float64
            np.testing.assert_allclose(a[i], b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_chunked_equals_unchunked(problem, chunk_size):
    params, batch = problem
    full = gl.attribution.per_example_grads(cross_entropy, params, batch)
    chunked = gl.attribution.per_example_grads(cross_entropy, params, batch, chunk_size=chunk_size)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(chunked), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_norms_equal_norms_of_stored_grads(problem, chunk_size):
    params, batch = problem
    g = gl.attribution.per_example_grads(cross_entropy, params, batch)
    flat = jnp.concatenate([leaf.reshape(leaf.shape[0], -1) for leaf in jax.tree.leaves(g)], 1)
    norms = gl.attribution.per_example_grad_norms(
        cross_entropy, params, batch, chunk_size=chunk_size
    )
    assert norms.shape == (6,)
    np.testing.assert_allclose(norms, jnp.linalg.norm(flat, axis=1), rtol=1e-12)


def test_jit_compatible(problem):
    params, batch = problem
    f = jax.jit(lambda p, b: gl.attribution.per_example_grads(cross_entropy, p, b, chunk_size=3))
    got = f(params, batch)
    want = gl.attribution.per_example_grads(cross_entropy, params, batch)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_bad_input(problem):
    params, (x, y) = problem
    with pytest.raises(ValueError, match="leading"):
        gl.attribution.per_example_grads(cross_entropy, params, (x, y[:3]))
    with pytest.raises(ValueError, match="chunk_size=0"):
        gl.attribution.per_example_grads(cross_entropy, params, (x, y), chunk_size=0)
    with pytest.raises(ValueError, match="scalar"):
        gl.attribution.per_example_grad_norms(lambda p, b: b[0], params, (x, y))
    with pytest.raises(TypeError, match="loss_fn"):
        gl.attribution.per_example_grads("nope", params, (x, y))


def test_unhashable_loss_callable(problem):
    params, batch = problem

    class Loss:  # defines __eq__ only, so instances are unhashable
        def __eq__(self, other):
            return isinstance(other, Loss)

        def __call__(self, p, b):
            return cross_entropy(p, b)

    got = gl.attribution.per_example_grad_norms(Loss(), params, batch)
    want = gl.attribution.per_example_grad_norms(cross_entropy, params, batch)
    np.testing.assert_allclose(got, want, rtol=1e-12)
