"""diffGrad: three steps against a hand computation, the aliasing bug, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradlab as gl


def _hand_diffgrad(grads, b1=0.9, b2=0.999, eps=1e-8):
    """The paper's algorithm in plain numpy float64, previous gradient stored by value."""
    m = np.zeros_like(grads[0])
    v = np.zeros_like(grads[0])
    prev = np.zeros_like(grads[0])
    out = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        xi = 1.0 / (1.0 + np.exp(-np.abs(prev - g)))
        out.append(xi * m_hat / (np.sqrt(v_hat) + eps))
        prev = g.copy()
    return out


def test_first_three_steps_match_hand_computation(x64):
    grads = [
        np.array([0.5, -1.0, 2.0]),
        np.array([0.1, -1.5, 2.0]),
        np.array([-0.3, 0.2, 1.0]),
    ]
    expected = _hand_diffgrad(grads)
    # Written-out first step: m_hat = g, v_hat = g^2, xi = sigmoid(|g|).
    np.testing.assert_allclose(
        expected[0], np.sign(grads[0]) / (1 + np.exp(-np.abs(grads[0]))), rtol=1e-7
    )
    tx = gl.transforms.scale_by_diffgrad()
    state = tx.init(jnp.zeros(3, jnp.float64))
    for g, want in zip(grads, expected):
        updates, state = tx.update(jnp.asarray(g), state)
        np.testing.assert_allclose(np.asarray(updates), want, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(np.asarray(state.prev_grad), grads[-1])


def test_alias_applies_learning_rate(x64):
    grads = [np.array([0.5, -1.0]), np.array([0.2, 0.3])]
    expected = _hand_diffgrad(grads)
    opt = gl.transforms.diffgrad(0.01)
    params = jnp.zeros(2, jnp.float64)
    state = opt.init(params)
    for g, want in zip(grads, expected):
        updates, state = opt.update(jnp.asarray(g), state, params)
        np.testing.assert_allclose(np.asarray(updates), -0.01 * want, rtol=1e-12)


def test_aliased_original_code_is_half_step_adam(x64):
    """Document the bug: with previous_grad aliased to grad, xi == 0.5 from step 2 on.

    We replay the original (aliased) rule next to optax.adam: it is exactly 0.5 * Adam after
    step 1, whereas the corrected transform is not when the gradient changes.
    """
    grads = [np.array([0.5, -1.0]), np.array([0.1, 0.3]), np.array([-0.4, 0.3])]
    adam = optax.scale_by_adam(eps=1e-8)
    adam_state = adam.init(jnp.zeros(2, jnp.float64))
    ours = gl.transforms.scale_by_diffgrad()
    ours_state = ours.init(jnp.zeros(2, jnp.float64))
    for t, g in enumerate(grads, start=1):
        adam_u, adam_state = adam.update(jnp.asarray(g), adam_state)
        our_u, ours_state = ours.update(jnp.asarray(g), ours_state)
        if t == 1:
            continue
        aliased = 0.5 * np.asarray(adam_u)  # xi = sigmoid(|g - g|) = 0.5 with the aliasing
        assert not np.allclose(np.asarray(our_u), aliased)
        # The corrected friction is sigmoid(|g_{t-1} - g_t|) > 0.5 elementwise.
        xi = np.asarray(our_u) / np.asarray(adam_u)
        np.testing.assert_allclose(xi, 1 / (1 + np.exp(-np.abs(grads[t - 2] - g))), rtol=1e-9)


def test_constant_gradient_gives_half_adam_after_first_step(x64):
    g = jnp.array([0.3, -2.0], jnp.float64)
    adam = optax.scale_by_adam(eps=1e-8)
    s_adam = adam.init(g)
    tx = gl.transforms.scale_by_diffgrad()
    s = tx.init(g)
    for t in range(3):
        u_adam, s_adam = adam.update(g, s_adam)
        u, s = tx.update(g, s)
        factor = 1 / (1 + np.exp(-np.abs(np.asarray(g)))) if t == 0 else 0.5
        np.testing.assert_allclose(np.asarray(u), factor * np.asarray(u_adam), rtol=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"b1": 1.0}, "b1"),
        ({"b2": -0.1}, "b2"),
        ({"eps": -1e-8}, "eps"),
        ({"eps_root": -1.0}, "eps_root"),
    ],
)
def test_bad_hyperparameters_raise_at_construction(kwargs, name):
    with pytest.raises(ValueError, match=name):
        gl.transforms.scale_by_diffgrad(**kwargs)
    with pytest.raises(ValueError, match=name):
        gl.transforms.diffgrad(1e-3, **kwargs)


def test_pytree_and_dtype():
    params = {"a": jnp.ones((2, 3), jnp.bfloat16), "b": jnp.ones(4)}
    tx = gl.transforms.diffgrad(0.1)
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = tx.update(grads, state, params)
    assert jax.tree.map(lambda u: u.dtype, updates) == jax.tree.map(lambda p: p.dtype, params)
