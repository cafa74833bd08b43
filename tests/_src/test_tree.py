"""Ravel helpers round-trip and the flat matvec equals the pytree one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradlab._src import tree


def _params():
    return {"a": jnp.arange(6.0).reshape(2, 3), "b": (jnp.ones(2), jnp.full((1,), 3.0))}


def test_ravel_roundtrip():
    p = _params()
    flat, unravel = tree.ravel(p)
    assert flat.shape == (9,)
    back = unravel(flat)
    for x, y in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(p)):
        np.testing.assert_array_equal(x, y)


def test_size_vdot_norm():
    p = _params()
    assert tree.tree_size(p) == 9
    flat, _ = tree.ravel(p)
    np.testing.assert_allclose(tree.tree_vdot(p, p), flat @ flat)
    np.testing.assert_allclose(tree.tree_norm(p), np.linalg.norm(flat), rtol=1e-6)


@pytest.mark.parametrize("distribution", ["rademacher", "normal"])
def test_random_like(distribution):
    p = _params()
    r = tree.tree_random_like(jax.random.key(1), p, distribution)
    assert jax.tree_util.tree_structure(r) == jax.tree_util.tree_structure(p)
    flat, _ = tree.ravel(r)
    if distribution == "rademacher":
        assert set(np.unique(np.asarray(flat)).tolist()) <= {-1.0, 1.0}


def test_random_like_rejects_unknown_distribution():
    with pytest.raises(ValueError, match="distribution='uniform'"):
        tree.tree_random_like(jax.random.key(0), _params(), "uniform")


def test_flat_matvec_matches_pytree_matvec():
    p = _params()
    scale = {"a": 2.0 * jnp.ones((2, 3)), "b": (3.0 * jnp.ones(2), -1.0 * jnp.ones(1))}

    def matvec(v):
        return jax.tree_util.tree_map(lambda s, x: s * x, scale, v)

    mv, n, dtype, unravel = tree.flat_matvec(matvec, p)
    assert n == 9 and dtype == jnp.float32
    x = jnp.arange(9.0)
    expected, _ = tree.ravel(matvec(unravel(x)))
    np.testing.assert_allclose(mv(x), expected)
