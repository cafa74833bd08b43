"""Numerics of Normalized LR+GD (Tyurin): hand computation, perceptron limit, Theorem 6.1."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gradlab.transforms import normalized_gd, scale_by_normalized_gd


def _loss(a, y):
    return lambda w: jnp.mean(jnp.logaddexp(0.0, -y * (a @ w)))


def _run(opt, a, y, steps, w0=None):
    w = jnp.zeros(a.shape[1]) if w0 is None else w0
    state = opt.init(w)
    grad = jax.jit(jax.grad(_loss(a, y)))
    update = jax.jit(opt.update)
    iterates = [w]
    for _ in range(steps):
        u, state = update(grad(w), state, w, margins=y * (a @ w))
        w = optax.apply_updates(w, u)
        iterates.append(w)
    return iterates


def test_steps_against_hand_computation(x64):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 3))
    y = np.sign(a @ np.array([1.0, -0.5, 0.2]))
    gamma, w = 3.0, np.array([0.1, 0.2, -0.3])
    iterates = _run(normalized_gd(gamma), jnp.asarray(a), jnp.asarray(y), 3, jnp.asarray(w))
    for t in range(3):
        m = y * (a @ w)
        s = 1.0 / (1.0 + np.exp(m))  # (1 + exp(y a^T theta))^-1
        grad = -np.mean((s * y)[:, None] * a, axis=0)
        beta = 1.0 / np.mean(s)
        w = w - gamma * beta * grad
        np.testing.assert_allclose(iterates[t + 1], w, rtol=1e-12)


def _normalized_batch_perceptron(a, y, steps):
    w = np.zeros(a.shape[1])
    out = [w]
    for _ in range(steps):
        wrong = y * (a @ w) <= 0
        if not wrong.any():
            break
        w = w + (y[wrong, None] * a[wrong]).mean(0)
        out.append(w)
    return out


def test_large_step_limit_is_normalized_batch_perceptron(x64):
    # gamma -> infinity: theta_t / gamma -> the Normalized Batch Perceptron iterates.
    rng = np.random.default_rng(1)
    a = rng.normal(size=(30, 2))
    y = np.sign(a @ np.array([1.0, 0.3]) + 0.05)
    perceptron = _normalized_batch_perceptron(a, y, 6)
    gamma = 1e4
    iterates = _run(normalized_gd(gamma), jnp.asarray(a), jnp.asarray(y), len(perceptron) - 1)
    for w, p in zip(iterates, perceptron):
        np.testing.assert_allclose(np.asarray(w) / gamma, p, rtol=1e-6, atol=1e-9)


def _steps_to_separate(opt, a, y, max_steps):
    iterates = _run(opt, a, y, max_steps)
    for t, w in enumerate(iterates):
        if np.all(np.asarray(y * (a @ w)) > 0):
            return t
    return max_steps + 1


@pytest.mark.parametrize("gamma", [1.0, 100.0])
def test_theorem_6_1_bound_on_worst_case_dataset(x64, gamma):
    # Theorem 5.1's dataset: (0.5, -1) in class +1 and n - 1 copies of (-0.5, -1) in class -1.
    n = 40
    a = jnp.asarray([[0.5, -1.0]] + [[-0.5, -1.0]] * (n - 1))
    y = jnp.asarray([1.0] + [-1.0] * (n - 1))
    r2, mu = 1.25, 0.5  # R = max ||a_i||; theta* = (1, 0) separates with margin 0.5
    bound = r2 / mu**2 + 2 * np.log(2 * n - 1) / (gamma * mu**2)
    steps = _steps_to_separate(normalized_gd(gamma), a, y, int(bound) + 1)
    assert 1 <= steps <= bound
    if gamma == 100.0:
        # Plain LR+GD (the batch perceptron in the limit) needs Omega(n) steps here.
        assert _steps_to_separate(optax.sgd(gamma), a, y, int(bound) + 1) > bound


def test_beta_and_bad_input():
    tx = scale_by_normalized_gd()
    state = tx.init(jnp.ones(2))
    # beta = 1 / mean(sigmoid(-m)); huge margins keep it finite (log space).
    _, state = tx.update(jnp.ones(2), state, margins=jnp.array([0.0, 2.0]))
    np.testing.assert_allclose(
        state.beta, 1.0 / np.mean(1.0 / (1.0 + np.exp([0.0, 2.0]))), rtol=1e-6
    )
    u, state = tx.update(jnp.zeros(2), state, margins=jnp.array([500.0, 800.0]))
    assert np.all(np.isfinite(u)) and np.isfinite(state.beta)
    with pytest.raises(ValueError, match="'margins'"):
        tx.update(jnp.ones(2), state)
    with pytest.raises(ValueError, match="1-D"):
        tx.update(jnp.ones(2), state, margins=jnp.ones((2, 2)))
