"""Numerics of M-FAC: the Woodbury update against a dense solve, before and after the ring fills."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradlab.transforms import mfac, scale_by_mfac


def test_matches_dense_solve_before_and_after_the_buffer_fills(x64):
    m, damping = 3, 0.7
    tx = scale_by_mfac(num_grads=m, damping=damping)
    params = {"a": jnp.zeros((2, 2)), "b": jnp.zeros(3)}
    update = jax.jit(tx.update)
    state = tx.init(params)
    rng = np.random.default_rng(0)
    history = []
    for t in range(6):  # fills at t = 2, then wraps around twice
        g = {"a": jnp.asarray(rng.normal(size=(2, 2))), "b": jnp.asarray(rng.normal(size=3))}
        u, state = update(g, state)
        flat = np.concatenate([np.ravel(g["a"]), np.ravel(g["b"])])
        history.append(flat)
        window = np.stack(history[-m:])  # (m_filled, d)
        k = window.shape[0]
        dense = damping * np.eye(flat.size) + window.T @ window / k
        expected = np.linalg.solve(dense, flat)
        got = np.concatenate([np.ravel(u["a"]), np.ravel(u["b"])])
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
        # The Gram in the state is G G^T of the ring buffer (zero rows where unfilled).
        buf = np.concatenate([np.reshape(state.grads["a"], (m, -1)), state.grads["b"]], axis=1)
        np.testing.assert_allclose(state.gram, buf @ buf.T, rtol=1e-12, atol=1e-12)
    assert int(state.num_skipped) == 0


def test_alias_scales_by_learning_rate(x64):
    g = jnp.array([2.0, 0.0, 1.0])
    opt = mfac(0.5, num_grads=2, damping=1.0)
    u, _ = jax.jit(opt.update)(g, opt.init(g))
    np.testing.assert_allclose(u, -0.5 * g / (1.0 + g @ g), rtol=1e-13)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_grads": 0}, "num_grads"),
        ({"damping": -1e-4}, "damping"),
        ({"damping": 0.0}, "damping"),
    ],
)
def test_bad_input_at_construction(kwargs, name):
    with pytest.raises(ValueError, match=name):
        scale_by_mfac(**kwargs)
