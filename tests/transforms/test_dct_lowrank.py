"""Numerics of SVD-free low-rank Adam in the DCT basis."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gradlab.transforms import dct_basis, dct_lowrank, scale_by_dct_lowrank


def _grads(rng, shapes):
    return {k: jnp.asarray(rng.normal(size=s)) for k, s in shapes.items()}


def test_basis_is_orthogonal_and_matches_the_fft_dct(x64):
    q = dct_basis(7, jnp.float64)
    np.testing.assert_allclose(q.T @ q, np.eye(7), atol=1e-13)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 7)))
    np.testing.assert_allclose(x @ q, jax.scipy.fft.dct(x, norm="ortho"), atol=1e-12)


def test_full_rank_is_adam_in_the_rotated_basis(x64):
    n = 5
    shapes = {"w": (n, n), "b": (n,)}
    tx = scale_by_dct_lowrank(rank=n, b1=0.8, b2=0.9, eps=1e-6)
    adam = optax.scale_by_adam(b1=0.8, b2=0.9, eps=1e-6)
    q = dct_basis(n, jnp.float64)
    rng = np.random.default_rng(1)
    params = _grads(rng, shapes)
    state, ref_state = tx.init(params), adam.init(params)
    update = jax.jit(tx.update)
    for _ in range(4):
        g = _grads(rng, shapes)
        u, state = update(g, state)
        rotated = {"w": g["w"] @ q, "b": g["b"]}
        ref, ref_state = adam.update(rotated, ref_state)
        np.testing.assert_allclose(u["w"], ref["w"] @ q.T, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(u["b"], ref["b"], rtol=1e-12)
        np.testing.assert_array_equal(state.indices["w"], np.arange(n))


@pytest.mark.parametrize("shape", [(4, 9), (9, 4)])
def test_first_step_selects_largest_l1_columns(x64, shape):
    rank = 3
    tx = scale_by_dct_lowrank(rank=rank)
    g = jnp.asarray(np.random.default_rng(2).normal(size=shape))
    u, state = jax.jit(tx.update)(g, tx.init(g))
    wide = shape[1] >= shape[0]
    gm = g if wide else g.T  # project the larger side
    q = dct_basis(gm.shape[1], jnp.float64)
    rotated = gm @ q
    idx = np.sort(np.argsort(-np.abs(rotated).sum(axis=0))[:rank])
    np.testing.assert_array_equal(state.indices, idx)
    r = rotated[:, idx]
    step = r / (np.abs(r) + 1e-8)  # Adam's first step
    expected = step @ q[:, idx].T
    np.testing.assert_allclose(u, expected if wide else expected.T, rtol=1e-10, atol=1e-12)


def test_moments_follow_their_basis_vectors(x64):
    b1, b2 = 0.9, 0.99
    tx = scale_by_dct_lowrank(rank=2, b1=b1, b2=b2)
    q = dct_basis(4, jnp.float64)
    r1 = jnp.array([[5.0, 4.0, 0.1, 0.2], [-5.0, 3.0, 0.3, 0.1]])  # selects vectors {0, 1}
    r2 = jnp.array([[0.1, 4.0, 0.2, 6.0], [0.2, -3.0, 0.1, 5.0]])  # selects vectors {1, 3}
    update = jax.jit(tx.update)
    _, s1 = update(r1 @ q.T, tx.init(r1))
    _, s2 = update(r2 @ q.T, s1)
    np.testing.assert_array_equal(s1.indices, [0, 1])
    np.testing.assert_array_equal(s2.indices, [1, 3])
    # Vector 1 moved from slot 1 to slot 0 and kept its moments; vector 3 starts from zero.
    mu, nu = s2.adam.mu, s2.adam.nu
    np.testing.assert_allclose(mu[:, 0], b1 * (1 - b1) * r1[:, 1] + (1 - b1) * r2[:, 1], rtol=1e-12)
    np.testing.assert_allclose(mu[:, 1], (1 - b1) * r2[:, 3], rtol=1e-12)
    np.testing.assert_allclose(
        nu[:, 0], b2 * (1 - b2) * r1[:, 1] ** 2 + (1 - b2) * r2[:, 1] ** 2, rtol=1e-12
    )
    np.testing.assert_allclose(nu[:, 1], (1 - b2) * r2[:, 3] ** 2, rtol=1e-12)


def _nbytes(tree):
    return sum(x.nbytes for x in jax.tree.leaves(tree) if hasattr(x, "nbytes"))


def test_state_is_smaller_than_galore_at_equal_rank():
    params = {"w1": jnp.zeros((64, 32)), "w2": jnp.zeros((32, 10)), "b": jnp.zeros(32)}
    for rank in (2, 8):
        ours = _nbytes(scale_by_dct_lowrank(rank=rank).init(params))
        galore = _nbytes(optax.contrib.scale_by_galore(rank=rank).init(params))
        # Same Adam moments; GaLore adds a (max side x rank) float projector, we r int32.
        assert ours < galore, (rank, ours, galore)
        assert galore - ours == 4 * (64 * rank + 32 * rank) - 4 * 2 * rank


def test_alias_converges_on_low_rank_target():
    target = jnp.outer(jnp.arange(4.0), jnp.ones(6))
    opt = dct_lowrank(0.1, rank=1)

    @jax.jit
    def run(w):
        def body(_, carry):
            w, s = carry
            u, s = opt.update(2 * (w - target), s, w)
            return optax.apply_updates(w, u), s

        return jax.lax.fori_loop(0, 300, body, (w, opt.init(w)))[0]

    w = run(jnp.zeros((4, 6)))
    assert jnp.sum((w - target) ** 2) < 1e-3 * jnp.sum(target**2)


def test_bad_rank():
    with pytest.raises(ValueError, match="rank"):
        scale_by_dct_lowrank(rank=0)
    with pytest.raises(ValueError, match="update_interval"):
        scale_by_dct_lowrank(rank=1, update_interval=0)
    with pytest.raises(ValueError, match=r"rank=5 is out of range.*\(4, 9\)"):
        scale_by_dct_lowrank(rank=5).init(jnp.zeros((4, 9)))
