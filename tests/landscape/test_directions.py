"""gradlab.landscape directions: filter/layer normalisation against per-filter norms, eigenvectors."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl


class _TinyConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))  # kernel (3, 3, 2, 4) HWIO, bias (4,)
        x = nn.LayerNorm()(x)  # scale (4,), bias (4,): 1-D leaves like batch-norm's
        x = x.mean(axis=(1, 2))
        return nn.Dense(3)(x)  # kernel (4, 3), bias (3,)


def _params():
    params = _TinyConvNet().init(jax.random.key(0), jnp.ones((1, 5, 5, 2)))["params"]
    # LayerNorm initialises to ones/zeros; make every 1-D leaf non-trivial.
    return jax.tree_util.tree_map(
        lambda x: x + 0.1 * jnp.arange(x.size, dtype=x.dtype).reshape(x.shape), params
    )


def _filters(leaf):
    """The filters of a leaf, one per output feature, written out one at a time."""
    leaf = np.asarray(leaf)
    return [leaf[..., j] for j in range(leaf.shape[-1])]


def test_filter_normalisation_matches_per_filter_norms_of_params():
    params = _params()
    d = gl.landscape.random_direction(jax.random.key(1), params)
    leaves_d = jax.tree_util.tree_leaves_with_path(d)
    leaves_p = jax.tree_util.tree_leaves(params)
    seen_ndim = set()
    for (path, dl), pl in zip(leaves_d, leaves_p, strict=True):
        assert dl.shape == pl.shape and dl.dtype == pl.dtype
        seen_ndim.add(dl.ndim)
        if dl.ndim <= 1:
            np.testing.assert_array_equal(dl, 0.0, err_msg=jax.tree_util.keystr(path))
            continue
        for fd, fp in zip(_filters(dl), _filters(pl), strict=True):
            np.testing.assert_allclose(np.linalg.norm(fd), np.linalg.norm(fp), rtol=1e-5)
        # the direction is a rescaled Gaussian, not the params themselves
        assert not np.allclose(dl, pl)
    assert seen_ndim == {1, 2, 4}  # Dense kernel, Conv kernel, biases/norm parameters


def test_filter_direction_keeps_each_filters_direction_and_biases_params_rule():
    params = _params()
    raw = gl.landscape.random_direction(jax.random.key(2), params, normalize=None)
    d = gl.landscape.normalize_direction(raw, params, biases="params")
    for r, dl, pl in zip(*map(jax.tree_util.tree_leaves, (raw, d, params)), strict=True):
        if dl.ndim <= 1:
            np.testing.assert_array_equal(dl, pl)
            continue
        for fr, fd in zip(_filters(r), _filters(dl), strict=True):
            cos = np.vdot(fr, fd) / (np.linalg.norm(fr) * np.linalg.norm(fd))
            np.testing.assert_allclose(cos, 1.0, rtol=1e-5)


def test_layer_normalisation_and_none():
    params = _params()
    d = gl.landscape.random_direction(jax.random.key(3), params, normalize="layer")
    for dl, pl in zip(*map(jax.tree_util.tree_leaves, (d, params)), strict=True):
        if dl.ndim <= 1:
            np.testing.assert_array_equal(dl, 0.0)
        else:
            np.testing.assert_allclose(np.linalg.norm(dl), np.linalg.norm(pl), rtol=1e-5)
    raw = gl.landscape.random_direction(jax.random.key(3), params, normalize=None)
    for rl in jax.tree_util.tree_leaves(raw):  # standard normal entries, biases included
        assert np.all(rl != 0.0)


def test_zero_filters_give_zero_directions_without_nans():
    params = {"kernel": jnp.array([[0.0, 1.0], [0.0, 2.0]])}
    d = gl.landscape.normalize_direction({"kernel": jnp.array([[1.0, 0.0], [1.0, 0.0]])}, params)
    np.testing.assert_array_equal(d["kernel"], 0.0)


def test_eigen_directions_span_the_quadratic(x64):
    lam = jnp.array([4.0, 2.5, 1.0, 0.5, 0.1], dtype=jnp.float64)
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(4), (5, 5), dtype=jnp.float64))
    a = (q * lam) @ q.T
    loss = lambda p, batch: 0.5 * p @ a @ p  # noqa: E731
    eig = gl.spectral.eigsh(
        lambda v: a @ v, jnp.zeros(5, jnp.float64), k=2, key=jax.random.key(5), tol=1e-10
    )
    d1, d2 = gl.landscape.eigen_direction(eig, 0), gl.landscape.eigen_direction(eig, 1)
    alphas = jnp.linspace(-1.0, 1.0, 5)
    got = gl.landscape.plane(loss, jnp.zeros(5, jnp.float64), None, d1, d2, alphas, alphas)
    want = 0.5 * (4.0 * alphas[:, None] ** 2 + 2.5 * alphas[None, :] ** 2)
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-12)
    with pytest.raises(ValueError, match="index=2 is out of range"):
        gl.landscape.eigen_direction(eig, 2)


def test_bad_options_name_the_argument():
    params = {"w": jnp.ones((3, 2))}
    with pytest.raises(ValueError, match="^normalize='weight' is not a valid choice"):
        gl.landscape.random_direction(jax.random.key(0), params, normalize="weight")
    with pytest.raises(ValueError, match="^biases='keep' is not a valid choice"):
        gl.landscape.random_direction(jax.random.key(0), params, biases="keep")
    with pytest.raises(ValueError, match="^direction does not match"):
        gl.landscape.normalize_direction({"w": jnp.ones((2, 3))}, params)
