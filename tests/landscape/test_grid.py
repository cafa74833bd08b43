"""gradlab.landscape.line / plane: exact on a quadratic, chunking, jit, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl


def _quadratic(key):
    """L(theta) = 0.5 theta^T A theta + b^T theta + c on a two-leaf pytree, A SPD-ish dense."""
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    n = 3 * 2 + 4
    m = jax.random.normal(k1, (n, n), dtype=jnp.float64)
    a = m @ m.T - 2.0 * jnp.eye(n)  # indefinite on purpose: the identity is algebraic
    b = jax.random.normal(k2, (n,), dtype=jnp.float64)
    params = {
        "w": jax.random.normal(k3, (3, 2), dtype=jnp.float64),
        "v": jax.random.normal(k4, (4,), dtype=jnp.float64),
    }

    def flat(p):
        return jnp.concatenate([p["v"].reshape(-1), p["w"].reshape(-1)])  # tree order: v, w

    def loss(p, batch):
        x = flat(p)
        return 0.5 * x @ a @ x + b @ x + batch

    d1 = jax.tree_util.tree_map(lambda x: jax.random.normal(k5, x.shape, x.dtype), params)
    d2 = jax.tree_util.tree_map(
        lambda x: jnp.cos(jnp.arange(x.size, dtype=x.dtype)).reshape(x.shape), params
    )
    return loss, params, a, b, flat, d1, d2


@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
def test_line_and_plane_exact_on_quadratic(x64, chunk_size):
    loss, params, a, b, flat, d1, d2 = _quadratic(jax.random.key(1))
    c = 0.25
    theta, u, w = flat(params), flat(d1), flat(d2)
    g = a @ theta + b
    l0 = 0.5 * theta @ a @ theta + b @ theta + c
    alphas = jnp.linspace(-1.5, 2.0, 7)
    betas = jnp.array([-0.3, 0.0, 0.4, 1.1, 2.5])

    got = gl.landscape.line(loss, params, c, d1, alphas, chunk_size=chunk_size)
    want = l0 + alphas * (g @ u) + 0.5 * alphas**2 * (u @ a @ u)
    assert got.shape == (7,) and got.dtype == jnp.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

    got = gl.landscape.plane(loss, params, c, d1, d2, alphas, betas, chunk_size=chunk_size)
    al, be = alphas[:, None], betas[None, :]
    want = (
        l0
        + al * (g @ u)
        + be * (g @ w)
        + 0.5 * al**2 * (u @ a @ u)
        + al * be * (u @ a @ w)
        + 0.5 * be**2 * (w @ a @ w)
    )
    assert got.shape == (7, 5)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_plane_reduces_to_line_and_runs_under_jit(x64):
    loss, params, _, _, _, d1, d2 = _quadratic(jax.random.key(2))
    alphas = jnp.linspace(-1.0, 1.0, 5)

    @jax.jit
    def both(p):
        return (
            gl.landscape.line(loss, p, 0.0, d1, alphas),
            gl.landscape.plane(loss, p, 0.0, d1, d2, alphas, jnp.zeros(1), chunk_size=3),
        )

    on_line, on_plane = both(params)
    np.testing.assert_allclose(on_plane[:, 0], on_line, rtol=1e-13)


def test_bad_input_names_the_argument():
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    loss = lambda p, batch: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"])  # noqa: E731
    good = jax.tree_util.tree_map(jnp.ones_like, params)
    bad = {"w": jnp.ones((2, 3)), "b": jnp.zeros(2)}
    alphas = jnp.linspace(-1.0, 1.0, 3)
    with pytest.raises(ValueError, match="^direction does not match"):
        gl.landscape.line(loss, params, None, bad, alphas)
    with pytest.raises(ValueError, match="^d2 does not match"):
        gl.landscape.plane(loss, params, None, good, bad, alphas, alphas)
    with pytest.raises(ValueError, match=r"^alphas has shape \(0,\)"):
        gl.landscape.line(loss, params, None, good, jnp.zeros(0))
    with pytest.raises(ValueError, match=r"^betas has shape \(0,\)"):
        gl.landscape.plane(loss, params, None, good, good, alphas, [])
    with pytest.raises(ValueError, match=r"^alphas has shape \(3, 1\)"):
        gl.landscape.line(loss, params, None, good, alphas[:, None])
    with pytest.raises(ValueError, match="chunk_size=0 is out of range"):
        gl.landscape.line(loss, params, None, good, alphas, chunk_size=0)
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        gl.landscape.line(lambda p, b: p["w"], params, None, good, alphas)
