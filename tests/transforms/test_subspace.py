"""Numerics of random-subspace training: updates in span(P), theta - theta0 == P z."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from gradlab.transforms import random_subspace, random_subspace_basis, scale_by_random_subspace


def _params():
    return {"b": jnp.zeros(3), "w": jnp.ones((4, 5))}  # D = 23


def _loss(p):
    return (
        jnp.sum(jnp.sin(p["w"]) ** 2)
        + jnp.sum((p["b"] - 1.0) ** 2)
        + jnp.sum(p["w"] @ jnp.arange(5.0))
    )


@pytest.mark.parametrize("projection", ["dense", "chunked"])
def test_theta_minus_theta0_is_p_z(x64, key, projection):
    lr, dim = 0.05, 6
    params0 = _params()
    opt = random_subspace(lr, dim, key=key, projection=projection, chunk_size=7)
    p = np.asarray(random_subspace_basis(params0, dim, key=key, chunk_size=7))
    state = opt.init(params0)
    params = params0
    grad, update = jax.jit(jax.grad(_loss)), jax.jit(opt.update)
    for _ in range(5):
        g = grad(params)
        updates, state = update(g, state)
        flat_u = ravel_pytree(updates)[0]
        flat_g = ravel_pytree(g)[0]
        np.testing.assert_allclose(flat_u, -lr * p @ (p.T @ flat_g), rtol=1e-10, atol=1e-12)
        params = optax.apply_updates(params, updates)
    z = np.asarray(state[0].z)
    delta = ravel_pytree(params)[0] - ravel_pytree(params0)[0]
    np.testing.assert_allclose(delta, -lr * p @ z, rtol=1e-10, atol=1e-12)
    # The update lies in span(P): its residual after least squares on P is zero.
    coef, *_ = np.linalg.lstsq(p, np.asarray(delta), rcond=None)
    np.testing.assert_allclose(p @ coef, delta, atol=1e-10)


def test_chunked_equals_dense_and_columns_are_unit(x64, key):
    params = _params()
    g = jax.grad(_loss)(params)
    outs = []
    for projection in ("dense", "chunked"):
        tx = scale_by_random_subspace(5, key=key, projection=projection, chunk_size=4)
        u, state = tx.update(g, tx.init(params))
        outs.append(ravel_pytree(u)[0])
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-12, atol=1e-14)
    p = random_subspace_basis(params, 5, key=key, chunk_size=4)
    np.testing.assert_allclose(jnp.linalg.norm(p, axis=0), 1.0, rtol=1e-12)
    assert state.basis is None and state.column_norms.shape == (5,)


def test_inner_transform_acts_on_subspace_coordinates(x64, key):
    params = _params()
    dim = 4
    p = random_subspace_basis(params, dim, key=key)
    tx = scale_by_random_subspace(dim, key=key, inner=optax.scale_by_adam())
    adam = optax.scale_by_adam()
    state, adam_state = tx.init(params), adam.init(jnp.zeros(dim))
    for _ in range(3):
        g = jax.grad(_loss)(params)
        u, state = tx.update(g, state)
        step, adam_state = adam.update(p.T @ ravel_pytree(g)[0], adam_state)
        np.testing.assert_allclose(ravel_pytree(u)[0], p @ step, rtol=1e-10, atol=1e-12)
        params = optax.apply_updates(params, jax.tree.map(lambda x: -0.1 * x, u))


def test_bad_input(key):
    with pytest.raises(ValueError, match="'key'"):
        scale_by_random_subspace(3)
    with pytest.raises(ValueError, match="projection"):
        scale_by_random_subspace(3, key=key, projection="sparse")
    with pytest.raises(ValueError, match="dim"):
        scale_by_random_subspace(0, key=key)
    with pytest.raises(ValueError, match="learning_rate"):
        random_subspace(-1.0, 3, key=key)
    with pytest.raises(ValueError, match="dim=30 is out of range"):
        scale_by_random_subspace(30, key=key).init(_params())


def test_fastfood_matches_its_basis_and_columns_are_unit(x64, key):
    # D = 23 with d = 6: blocks of L = 8, the third one truncated to 7 rows.
    lr, dim = 0.05, 6
    params0 = _params()
    p = np.asarray(random_subspace_basis(params0, dim, key=key, projection="fastfood"))
    assert p.shape == (23, dim)
    np.testing.assert_allclose(np.linalg.norm(p, axis=0), 1.0, rtol=1e-12)
    opt = random_subspace(lr, dim, key=key, projection="fastfood")
    state = opt.init(params0)
    params = params0
    grad, update = jax.jit(jax.grad(_loss)), jax.jit(opt.update)
    for _ in range(4):
        g = grad(params)
        updates, state = update(g, state)
        flat_g = ravel_pytree(g)[0]
        np.testing.assert_allclose(
            ravel_pytree(updates)[0], -lr * p @ (p.T @ flat_g), rtol=1e-10, atol=1e-12
        )
        params = optax.apply_updates(params, updates)
    delta = ravel_pytree(params)[0] - ravel_pytree(params0)[0]
    np.testing.assert_allclose(delta, -lr * p @ np.asarray(state[0].z), rtol=1e-10, atol=1e-12)


def test_fastfood_block_is_the_hadamard_product_formula(x64, key):
    from scipy.linalg import hadamard

    from gradlab.transforms._fastfood import fastfood_extend, fastfood_factors

    f = fastfood_factors(key, 16, 8, jnp.float64)  # two full blocks of L = 8
    h = hadamard(8)
    blocks = []
    for b in range(2):
        perm = np.eye(8)[np.asarray(f.perm[b])]  # (Pi v)_i = v[perm[i]]
        m = h @ np.diag(f.gauss[b]) @ perm @ h @ np.diag(f.signs[b]) / np.sqrt(8)
        blocks.append(m)
    dense = np.concatenate(blocks)
    z = np.linspace(-1.0, 2.0, 8)
    np.testing.assert_allclose(fastfood_extend(f, jnp.asarray(z), 16), dense @ z, rtol=1e-12)
    # a full block's columns have squared norm ||G_b||^2
    np.testing.assert_allclose(np.sum(blocks[0] ** 2, axis=0), np.sum(f.gauss[0] ** 2))


# one to four Hadamard factors (max_bits caps a factor at 2**max_bits rows)
@pytest.mark.parametrize(("size", "max_bits"), [(1, 6), (2, 6), (64, 6), (128, 6), (128, 2)])
def test_fwht_equals_the_dense_hadamard_matrix(x64, monkeypatch, size, max_bits):
    from scipy.linalg import hadamard

    from gradlab.transforms import _fastfood

    monkeypatch.setattr(_fastfood, "_MAX_FACTOR_BITS", max_bits)
    v = np.random.default_rng(size).standard_normal((3, 2, size))
    got = _fastfood._fwht(jnp.asarray(v))
    np.testing.assert_allclose(got, v @ hadamard(size), rtol=1e-12, atol=1e-11)


def test_fastfood_restrict_is_the_transpose_of_extend(x64, key):
    from gradlab.transforms._fastfood import fastfood_extend, fastfood_factors, fastfood_restrict

    f = fastfood_factors(key, 37, 5, jnp.float64)  # L = 8, five blocks, the last truncated
    z = jax.random.normal(jax.random.key(1), (5,), jnp.float64)
    g = jax.random.normal(jax.random.key(2), (37,), jnp.float64)
    lhs = jnp.dot(g, fastfood_extend(f, z, 37))
    np.testing.assert_allclose(lhs, jnp.dot(fastfood_restrict(f, g, 5), z), rtol=1e-12)
