"""Sven against dense float64 pseudo-inverses on linear least squares."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradlab.transforms import scale_by_sven, sven


def _problem(seed=0, outputs=None):
    """Residuals ``A theta - b`` with theta = {"w": (3, 3), "b": (3,)} (12 params)."""
    rng = np.random.default_rng(seed)
    m = 5 if outputs is None else 3 * outputs
    a = rng.normal(size=(m, 12))
    b = rng.normal(size=m)

    def flat(p):
        return jnp.concatenate([p["w"].reshape(-1), p["b"]])

    def residual_fn(p):
        r = jnp.asarray(a) @ flat(p) - jnp.asarray(b)
        return r if outputs is None else r.reshape(3, outputs)

    params = {"w": jnp.asarray(rng.normal(size=(3, 3))), "b": jnp.asarray(rng.normal(size=3))}
    return a, b, residual_fn, params, flat


def _run_step(tx, residual_fn, params):
    step = jax.jit(lambda s, p: tx.update(p, s, p, residual_fn=residual_fn))
    return step(tx.init(params), params)


@pytest.mark.parametrize("outputs", [None, 2])
def test_full_rank_unit_step_is_the_minimum_norm_solution(x64, outputs):
    a, b, residual_fn, params, flat = _problem(outputs=outputs)
    m = a.shape[0]
    opt = sven(1.0, rank=m, key=jax.random.key(0), rtol=0.0)
    step = jax.jit(lambda p: opt.update(p, opt.init(p), p, residual_fn=residual_fn))
    u, state = step(params)
    new = np.asarray(flat(jax.tree.map(lambda p, d: p + d, params, u)))
    theta0 = np.asarray(flat(params))
    # One Gauss-Newton/pseudo-inverse step: the point of {A theta = b} nearest to theta0.
    expected = theta0 + np.linalg.pinv(a) @ (b - a @ theta0)
    np.testing.assert_allclose(new, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(a @ new, b, atol=1e-10)
    assert int(state[0].rank_used) == m
    # From zero it is exactly the minimum-norm solution A^+ b.
    zero = jax.tree.map(jnp.zeros_like, params)
    u0, _ = step(zero)
    np.testing.assert_allclose(flat(u0), np.linalg.pinv(a) @ b, rtol=1e-10, atol=1e-10)


def test_truncated_step_matches_dense_truncated_svd(x64):
    a, b, residual_fn, params, flat = _problem(seed=1)
    # oversample makes l = m (exact range); rank 2 < m keeps the top two triplets only.
    tx = scale_by_sven(rank=2, key=jax.random.key(3), rtol=0.0, oversample=10)
    u, state = _run_step(tx, residual_fn, params)
    uu, s, vt = np.linalg.svd(a, full_matrices=False)
    r = a @ np.asarray(flat(params)) - b
    expected = vt[:2].T @ ((uu[:, :2].T @ r) / s[:2])
    np.testing.assert_allclose(flat(u), expected, rtol=1e-9, atol=1e-12)
    assert int(state.rank_used) == 2


def test_randomised_range_with_power_iterations_on_a_decaying_spectrum(x64):
    # J with singular values 10^0 .. 10^-5 (m = 6): rank 2 from l = 4 < m random directions
    # and two power iterations recovers the top-2 step to the accuracy the gap allows.
    rng = np.random.default_rng(2)
    u_, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    v_, _ = np.linalg.qr(rng.normal(size=(10, 6)))
    s = 10.0 ** -np.arange(6.0)
    a = u_ @ np.diag(s) @ v_.T
    b = rng.normal(size=6)
    tx = scale_by_sven(rank=2, key=jax.random.key(0), rtol=0.0, oversample=2, num_power_iters=2)
    x = jnp.zeros(10)
    d, _ = _run_step(tx, lambda x: jnp.asarray(a) @ x - jnp.asarray(b), x)
    expected = v_[:, :2] @ ((u_[:, :2].T @ -b) / s[:2])
    np.testing.assert_allclose(d, expected, rtol=1e-5, atol=1e-6)


def test_rtol_drops_small_singular_values_and_nan_is_skipped(x64):
    a = np.diag([1.0, 1e-6])
    tx = scale_by_sven(rank=2, key=jax.random.key(0), rtol=1e-3)
    d, state = _run_step(tx, lambda x: jnp.asarray(a) @ x - 1.0, jnp.zeros(2))
    assert int(state.rank_used) == 1
    np.testing.assert_allclose(d, [-1.0, 0.0], atol=1e-12)  # only the kept direction moves
    d, state = _run_step(tx, lambda x: jnp.asarray(a) @ x * jnp.nan, jnp.ones(2))
    assert bool(jnp.all(d == 0.0)) and int(state.num_skipped) == 1


def test_bad_input():
    with pytest.raises(ValueError, match="rank"):
        scale_by_sven(rank=0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="key"):
        sven(0.1, rank=2, key=None)
    with pytest.raises(ValueError, match="rtol"):
        sven(0.1, rank=2, key=jax.random.key(0), rtol=-1.0)
    tx = scale_by_sven(rank=4, key=jax.random.key(0))
    x = jnp.ones(3)
    with pytest.raises(ValueError, match="residual_fn"):
        tx.update(x, tx.init(x), x)
    with pytest.raises(ValueError, match="rank=4 is out of range"):  # m = 2 residuals
        tx.update(x, tx.init(x), x, residual_fn=lambda x: x[:2])
