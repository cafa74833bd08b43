"""Adaptive Memory momentum: closed form vs the proximal problem, hand computation, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradlab as gl


def _hand_am(grads, values, lr, lam, precondition, b2=0.999, eps=1e-8):
    """The AM recursion in numpy float64 (what the docstring states), returning the steps."""
    d = np.zeros_like(grads[0])
    v = np.zeros_like(grads[0])
    f_bar = None
    steps, betas = [], []
    for t, (g, f) in enumerate(zip(grads, values), start=1):
        if precondition:
            v = b2 * v + (1 - b2) * g**2
            p_inv = 1.0 / (np.sqrt(v / (1 - b2**t)) + eps)
        else:
            p_inv = np.ones_like(g)
        if f_bar is None:
            beta = 0.0
            f_bar = f
        else:
            den = np.sum(p_inv * (g - d) ** 2)
            theta = (1 + lam) * ((f - f_bar) / lr + np.sum(p_inv * d * (d - g))) / den
            beta = 1.0 - np.clip(theta, 0.0, 1.0)
        keep = (beta + lam) / (1 + lam)
        d = keep * d + (1 - keep) * g
        f_bar = keep * f_bar + (1 - keep) * f - lr * np.sum(p_inv * d * d)
        steps.append(-lr * p_inv * d)
        betas.append(beta)
    return steps, betas


def _sequence(num=5, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    grads = [rng.normal(size=dim) for _ in range(num)]
    values = list(2.0 + 0.3 * rng.normal(size=num))
    return grads, values


@pytest.mark.parametrize("lam", [0.0, 0.5])
@pytest.mark.parametrize("variant", ["sgd", "adamw"])
def test_matches_hand_recursion(x64, lam, variant):
    grads, values = _sequence()
    lr = 0.05
    want_steps, want_betas = _hand_am(grads, values, lr, lam, precondition=variant == "adamw")
    opt = (
        gl.transforms.am_sgd(lr, lam=lam)
        if variant == "sgd"
        else gl.transforms.am_adamw(lr, lam=lam, weight_decay=0.0)
    )
    params = jnp.zeros(3, jnp.float64)
    state = opt.init(params)
    for g, f, want, beta in zip(grads, values, want_steps, want_betas):
        updates, state = opt.update(jnp.asarray(g), state, params, value=jnp.asarray(f))
        np.testing.assert_allclose(np.asarray(updates), want, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(float(state[0].beta), beta, atol=1e-12)
    # The sequence exercises both an interior and (at least once) a clipped beta.
    assert any(0 < b < 1 for b in want_betas[1:])


def _prox_objective(x, x_t, g, d, f, f_bar, lr, lam):
    planes = max(f + g @ (x - x_t), f_bar + d @ (x - x_t))
    target = x_t - lr * d
    return planes + np.sum((x - x_t) ** 2) / (2 * lr) + lam * np.sum((x - target) ** 2) / (2 * lr)


@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_closed_form_step_minimises_the_two_plane_model(x64, lam):
    """x_{t+1} from beta_t is the minimiser of max(two planes) + prox terms (checked by
    comparing against every point of the segment of candidate steps and random perturbations)."""
    rng = np.random.default_rng(1)
    lr = 0.1
    g0, g1 = rng.normal(size=3), rng.normal(size=3)
    f0, f1 = 1.0, 0.97
    tx = gl.transforms.scale_by_adaptive_memory(lr, lam=lam)
    x_t = np.array([0.3, -0.2, 0.5])
    state = tx.init(jnp.asarray(x_t))
    _, state = tx.update(jnp.asarray(g0), state, value=jnp.asarray(f0))
    d, f_bar = np.asarray(state.momentum), float(state.memory_value)
    u, state = tx.update(jnp.asarray(g1), state, value=jnp.asarray(f1))
    x_next = x_t - lr * np.asarray(u)
    best = _prox_objective(x_next, x_t, g1, d, f1, f_bar, lr, lam)
    # Every step x_t - lr * ((theta g + (1 - theta + lam) d) / (1 + lam)) is a candidate.
    for theta in np.linspace(0.0, 1.0, 2001):
        cand = x_t - lr * (theta * g1 + (1 - theta + lam) * d) / (1 + lam)
        assert best <= _prox_objective(cand, x_t, g1, d, f1, f_bar, lr, lam) + 1e-12
    for _ in range(200):
        cand = x_next + 1e-3 * rng.normal(size=3)
        assert best <= _prox_objective(cand, x_t, g1, d, f1, f_bar, lr, lam) + 1e-12


def test_first_step_has_no_memory_and_equal_gradients_are_safe():
    tx = gl.transforms.scale_by_adaptive_memory(0.1)
    g = jnp.array([1.0, 2.0])
    state = tx.init(g)
    u, state = tx.update(g, state, value=jnp.array(3.0))
    np.testing.assert_allclose(np.asarray(u), np.asarray(g))
    u, state = tx.update(g, state, value=jnp.array(3.0))  # g == d: denominator 0
    assert np.all(np.isfinite(np.asarray(u)))
    np.testing.assert_allclose(np.asarray(u), np.asarray(g))


def test_missing_value_raises_naming_it():
    opt = gl.transforms.am_sgd(0.1)
    params = jnp.zeros(2)
    state = opt.init(params)
    with pytest.raises(ValueError, match="value"):
        opt.update(jnp.ones(2), state, params)


def _run_quadratic(opt, lr_steps=300):
    a = jnp.linspace(0.01, 1.0, 20)  # L = 1, condition number 100
    loss = lambda p: 0.5 * jnp.sum(a * p**2)  # noqa: E731
    params = jnp.ones(20)
    state = opt.init(params)

    def body(carry, _):
        params, state = carry
        value, grads = jax.value_and_grad(loss)(params)
        updates, new_state = opt.update(grads, state, params, value=value)
        return (optax.apply_updates(params, updates), new_state), (value, new_state[0].beta)

    (params, _), (values, betas) = jax.lax.scan(body, (params, state), None, length=lr_steps)
    return np.asarray(values), np.asarray(betas), float(loss(params))


def test_no_memory_on_a_quadratic_with_a_stable_step():
    """Derived from the model: for GD on f = x'Ax/2 with eta <= 1/L, f_t - f_bar_t =
    eta^2/2 g'Ag and <d, d - g> = eta g'Ag, so theta_t >= 1.5 / (eta L) >= 1: beta_t = 0 and
    AM-SGD (lam = 0) *is* gradient descent."""
    values, betas, _ = _run_quadratic(gl.transforms.am_sgd(1.0))
    np.testing.assert_array_equal(betas, 0.0)
    # ... and the trajectory is GD's.
    a = np.linspace(0.01, 1.0, 20)
    x = np.ones(20)
    for t in range(5):
        np.testing.assert_allclose(values[t], 0.5 * np.sum(a * x**2), rtol=1e-5)
        x = x - a * x


def test_memory_stabilises_a_step_beyond_two_over_l():
    """Reference behaviour (the paper's stability claim): with eta = 2.5 / L plain GD diverges,
    AM-SGD switches memory on (beta_t > 0) and converges."""
    values, betas, final = _run_quadratic(gl.transforms.am_sgd(2.5))
    assert np.all(np.isfinite(values)) and final < 1e-6 * values[0]
    assert betas.max() > 0.1
    a = np.linspace(0.01, 1.0, 20)
    x = np.ones(20)
    for _ in range(300):
        x = x - 2.5 * a * x
    assert 0.5 * np.sum(a * x**2) > 1e6  # GD at the same rate diverges


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"lam": -0.1}, "lam"), ({"weight_decay": -1.0}, "weight_decay"), ({"b2": 1.0}, "b2")],
)
def test_bad_input_raises_at_construction(kwargs, name):
    with pytest.raises(ValueError, match=name):
        gl.transforms.am_adamw(0.1, **kwargs)


def test_negative_learning_rate_raises():
    with pytest.raises(ValueError, match="learning_rate"):
        gl.transforms.am_sgd(-0.1)
