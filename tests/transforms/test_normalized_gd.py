"""Numerics of Normalized LR+GD (step divided by the loss value)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gradlab.transforms import normalized_gd, scale_by_normalized_gd


def _data():
    a = np.array([[1.0, 2.0], [2.0, 0.5], [0.3, 1.0], [-1.0, -1.5], [-2.0, -0.2], [-0.5, -1.2]])
    y = np.array([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])
    return a, y


def _logistic(a, y):
    return lambda w: jnp.mean(jnp.logaddexp(0.0, -y * (a @ w)))


def test_first_steps_against_hand_computation(x64):
    a, y = _data()
    gamma = 3.0
    w_np = np.array([0.2, -0.4])
    opt = normalized_gd(gamma)
    w = jnp.asarray(w_np)
    state = opt.init(w)
    loss = _logistic(jnp.asarray(a), jnp.asarray(y))
    for _ in range(3):
        m = y * (a @ w_np)
        f = np.mean(np.log1p(np.exp(-m)))
        grad = -np.mean((y / (1.0 + np.exp(m)))[:, None] * a, axis=0)
        w_np = w_np - gamma * grad / f
        value, g = jax.value_and_grad(loss)(w)
        u, state = opt.update(g, state, w, value=value)
        w = optax.apply_updates(w, u)
        np.testing.assert_allclose(w, w_np, rtol=1e-12)


def test_invariant_to_loss_scale(x64):
    a, y = _data()
    loss = _logistic(jnp.asarray(a), jnp.asarray(y))
    tx = scale_by_normalized_gd()
    w = jnp.array([0.3, 0.1])
    v, g = jax.value_and_grad(loss)(w)
    u1, _ = tx.update(g, tx.init(w), value=v)
    u2, _ = tx.update(jax.tree.map(lambda x: 7.0 * x, g), tx.init(w), value=7.0 * v)
    np.testing.assert_allclose(u1, u2, rtol=1e-12)


@pytest.mark.parametrize("gamma", [1.0, 100.0])
def test_separates_for_small_and_large_steps(x64, gamma):
    # The normalized method solves the separable problem for any step size (no 1/L limit).
    a, y = _data()
    loss = _logistic(jnp.asarray(a), jnp.asarray(y))
    opt = normalized_gd(gamma)
    w = jnp.array([-1.0, 1.0])
    state = opt.init(w)
    for _ in range(20):
        value, g = jax.value_and_grad(loss)(w)
        u, state = opt.update(g, state, w, value=value)
        w = optax.apply_updates(w, u)
    assert np.all(y * (a @ np.asarray(w)) > 0)


def test_bad_input():
    with pytest.raises(ValueError, match="eps"):
        scale_by_normalized_gd(eps=-1.0)
    tx = scale_by_normalized_gd()
    with pytest.raises(ValueError, match="'value'"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))
    with pytest.raises(ValueError, match="scalar"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)), value=jnp.ones(2))
