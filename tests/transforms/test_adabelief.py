"""AdaBelief 0.2: equal to optax.adabelief with the variants off, rectified step vs the release."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradlab as gl


def _grads(num, shape, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape) for _ in range(num)]


def test_variants_off_equal_optax_adabelief():
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    ours = gl.transforms.adabelief(0.01, rectify=False, weight_decay=0.0)
    ref = optax.adabelief(0.01)
    s_ours, s_ref = ours.init(params), ref.init(params)
    for i in range(6):
        g = {
            "w": jnp.asarray(_grads(1, (3, 2), i)[0], jnp.float32),
            "b": jnp.asarray(_grads(1, 2, 50 + i)[0], jnp.float32),
        }
        u_ours, s_ours = ours.update(g, s_ours, params)
        u_ref, s_ref = ref.update(g, s_ref, params)
        for a, b in zip(jax.tree.leaves(u_ours), jax.tree.leaves(u_ref)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)
        params = optax.apply_updates(params, u_ours)


def _release_02(params, grads, lr, b1, b2, eps, weight_decay):
    """adabelief-pytorch 0.2.0 ``step`` (weight_decouple=True, rectify=True,
    degenerated_to_sgd=True, amsgrad=False), transcribed to numpy float64."""
    p = params.copy()
    m = np.zeros_like(p)
    s = np.zeros_like(p)
    n_sma_max = 2 / (1 - b2) - 1
    out = []
    for step, g in enumerate(grads, start=1):
        p = p * (1.0 - lr * weight_decay)
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * (g - m) ** 2
        b2_t = b2**step
        n_sma = n_sma_max - 2 * step * b2_t / (1 - b2_t)
        s = s + eps  # the release adds eps to the state in place
        if n_sma >= 5:
            step_size = math.sqrt(
                (1 - b2_t)
                * (n_sma - 4)
                / (n_sma_max - 4)
                * (n_sma - 2)
                / n_sma
                * n_sma_max
                / (n_sma_max - 2)
            ) / (1 - b1**step)
            p = p - lr * step_size * m / (np.sqrt(s) + eps)
        else:
            p = p - lr * m / (1 - b1**step)
        out.append(p.copy())
    return out


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_rectified_matches_release_02(x64, weight_decay):
    b1, b2, lr = 0.9, 0.9, 0.05  # b2 = 0.9 so rho_t crosses 5 at step 6 (of 9)
    eps = 1e-12
    grads = _grads(9, 4, seed=3)
    p0 = np.array([1.0, -2.0, 0.5, 3.0])
    expected = _release_02(p0, grads, lr, b1, b2, eps, weight_decay)
    opt = gl.transforms.adabelief(lr, b1, b2, eps=eps, eps_root=eps, weight_decay=weight_decay)
    params = jnp.asarray(p0)
    state = opt.init(params)
    for g, want in zip(grads, expected):
        updates, state = opt.update(jnp.asarray(g), state, params)
        params = optax.apply_updates(params, updates)
        # eps placement differs (release: eps / sqrt(1 - b2^t)); 1e-12 makes that invisible.
        np.testing.assert_allclose(np.asarray(params), want, rtol=1e-9, atol=1e-12)


def test_before_threshold_is_momentum_sgd_or_frozen(x64):
    g = jnp.array([1.0, -2.0])
    tx = gl.transforms.scale_by_adabelief(rectify=True)  # b2=0.999: rho_t < 5 for t <= 5
    state = tx.init(g)
    u, state = tx.update(g, state)
    np.testing.assert_allclose(np.asarray(u), np.asarray(g))
    frozen = gl.transforms.scale_by_adabelief(rectify=True, degenerated_to_sgd=False)
    u, _ = frozen.update(g, frozen.init(g))
    np.testing.assert_array_equal(np.asarray(u), 0.0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"b1": 1.5}, "b1"),
        ({"b2": 1.0}, "b2"),
        ({"eps": -1.0}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"sma_threshold": 3.0}, "sma_threshold"),
    ],
)
def test_bad_hyperparameters_raise_at_construction(kwargs, name):
    with pytest.raises(ValueError, match=name):
        gl.transforms.adabelief(1e-3, **kwargs)
