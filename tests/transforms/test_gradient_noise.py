"""Annealed gradient noise: optax.add_noise is the paper's process; per-leaf scaling is ours."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradlab as gl

N = 20_000  # entries per leaf for the variance checks


def _var_and_sem(x):
    """Sample variance of zero-mean draws and its standard error (Gaussian: var*sqrt(2/n))."""
    x = np.asarray(x, np.float64).ravel()
    var = np.mean(x**2)
    return var, var * np.sqrt(2.0 / x.size)


@pytest.mark.parametrize("eta", [0.01, 0.3, 1.0])
def test_optax_add_noise_is_the_papers_schedule(eta):
    """The paper's sigma_t^2 = eta / (1 + t)^0.55, t = 0, 1, ...: optax.add_noise (no duplicate)."""
    tx = optax.add_noise(eta, 0.55, key=jax.random.key(1))
    zeros = jnp.zeros(N)
    state = tx.init(zeros)
    for t in range(4):
        noise, state = tx.update(zeros, state)
        var, sem = _var_and_sem(noise)
        assert abs(var - eta / (1 + t) ** 0.55) < 5 * sem


def test_per_leaf_noise_variance_follows_grad_rms():
    eta, gamma = 0.3, 0.55
    grads = {"a": jnp.full(N, 1e-3), "b": 50.0 * jnp.cos(jnp.arange(N, dtype=jnp.float32))}
    rms = {"a": 1e-3, "b": 50.0 / np.sqrt(2.0)}
    tx = gl.transforms.scale_by_annealed_noise(eta, gamma, key=jax.random.key(2))
    state = tx.init(grads)
    for t in range(3):
        noisy, state = tx.update(grads, state)
        for name in grads:
            noise = (
                np.asarray(noisy[name], np.float64) - np.asarray(grads[name], np.float64)
            ) / rms[name]
            var, sem = _var_and_sem(noise)
            assert abs(var - eta / (1 + t) ** gamma) < 5 * sem, (name, t, var)


def test_param_rms_scaling_and_missing_params():
    params = {"w": jnp.full(N, 4.0)}
    grads = {"w": jnp.zeros(N)}
    tx = gl.transforms.scale_by_annealed_noise(
        1.0, 0.0, key=jax.random.key(3), relative_to="param_rms"
    )
    state = tx.init(params)
    noisy, _ = tx.update(grads, state, params)
    var, sem = _var_and_sem(np.asarray(noisy["w"]) / 4.0)
    assert abs(var - 1.0) < 5 * sem
    with pytest.raises(ValueError, match="params"):
        tx.update(grads, state)


def test_key_in_state_is_split_every_step_and_reproducible():
    g = jnp.zeros(8)
    tx = gl.transforms.scale_by_annealed_noise(1.0, relative_to="param_rms", key=jax.random.key(4))
    p = jnp.ones(8)
    s0 = tx.init(p)
    n1, s1 = tx.update(g, s0, p)
    n2, _ = tx.update(g, s1, p)
    n1_again, _ = tx.update(g, s0, p)
    np.testing.assert_array_equal(np.asarray(n1), np.asarray(n1_again))
    assert not np.allclose(np.asarray(n1), np.asarray(n2))


def test_zero_gradient_leaf_gets_no_noise_with_grad_rms():
    grads = {"zero": jnp.zeros(5), "one": jnp.ones(5)}
    tx = gl.transforms.scale_by_annealed_noise(1.0, key=jax.random.key(5))
    noisy, _ = tx.update(grads, tx.init(grads))
    np.testing.assert_array_equal(np.asarray(noisy["zero"]), 0.0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"eta": -0.1}, "eta"),
        ({"gamma": -1.0}, "gamma"),
        ({"relative_to": "global"}, "relative_to"),
    ],
)
def test_bad_input_raises_at_construction(kwargs, name):
    with pytest.raises(ValueError, match=name):
        gl.transforms.annealed_noise(0.1, key=jax.random.key(0), **kwargs)


def test_key_is_required():
    with pytest.raises(TypeError, match="key"):
        gl.transforms.scale_by_annealed_noise(0.1)  # type: ignore[call-arg]
