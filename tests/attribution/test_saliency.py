"""Saliency, gradient x input and integrated gradients (completeness, quadrature order)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from tests.attribution._models import mlp_apply, mlp_params


def _affine(params, x):
    return x @ params["w"] + params["b"]


@pytest.fixture
def affine(x64):
    key1, key2 = jax.random.split(jax.random.key(5))
    params = {"w": jax.random.normal(key1, (3, 4)), "b": jnp.arange(4.0)}
    x = jax.random.normal(key2, (5, 3))
    return params, x


def test_saliency_and_gradient_x_input_on_affine(affine):
    params, x = affine
    target = jnp.array([0, 1, 2, 3, 0])
    s = gl.attribution.saliency(_affine, params, x, target=target)
    np.testing.assert_allclose(s, params["w"][:, target].T, rtol=1e-14)
    np.testing.assert_allclose(
        gl.attribution.saliency(_affine, params, x, target=target, absolute=True), jnp.abs(s)
    )
    gxi = gl.attribution.gradient_x_input(_affine, params, x, target=target)
    np.testing.assert_allclose(gxi, x * s, rtol=1e-14)


@pytest.mark.parametrize("method", ["trapezoid", "riemann_right", "riemann_middle"])
def test_ig_complete_exactly_on_linear_model(affine, method):
    params, x = affine
    baseline = jnp.array([0.5, -1.0, 2.0])
    ig = gl.attribution.integrated_gradients(
        _affine, params, x, baseline=baseline, target=2, num_steps=3, method=method
    )
    # for an affine model IG = (x - x') * w[:, target] exactly
    np.testing.assert_allclose(ig.attributions, (x - baseline) * params["w"][:, 2], rtol=1e-13)
    np.testing.assert_allclose(ig.completeness_gap, 0.0, atol=1e-13)


def test_ig_completeness_on_mlp_with_200_steps(x64):
    params = mlp_params(jax.random.key(6), sizes=(3, 16, 16, 4))
    x = 2.0 * jax.random.normal(jax.random.key(7), (6, 3))
    ig = gl.attribution.integrated_gradients(
        mlp_apply, params, x, baseline=jnp.zeros_like(x), target=1, num_steps=200
    )
    want = mlp_apply(params, x)[:, 1] - mlp_apply(params, jnp.zeros_like(x))[:, 1]
    np.testing.assert_allclose(ig.output_difference, want, rtol=1e-12)
    rel = np.abs(ig.completeness_gap) / np.abs(want)
    assert np.all(rel <= 1e-3), rel


def test_single_output_model(affine):
    params, x = affine

    def f(p, x):
        return _affine(p, x)[:, 0]

    s = gl.attribution.saliency(f, params, x)
    np.testing.assert_allclose(s, jnp.broadcast_to(params["w"][:, 0], x.shape), rtol=1e-14)


def test_bad_input(affine):
    params, x = affine
    with pytest.raises(ValueError, match="num_steps=0"):
        gl.attribution.integrated_gradients(_affine, params, x, baseline=0.0, target=0, num_steps=0)
    with pytest.raises(ValueError, match=r"baseline has shape \(2,\)"):
        gl.attribution.integrated_gradients(_affine, params, x, baseline=jnp.zeros(2), target=0)
    with pytest.raises(ValueError, match="label 4"):
        gl.attribution.saliency(_affine, params, x, target=4)
    with pytest.raises(ValueError, match="target=None"):
        gl.attribution.saliency(_affine, params, x)
    with pytest.raises(ValueError, match="method='simpson'"):
        gl.attribution.integrated_gradients(
            _affine, params, x, baseline=0.0, target=0, method="simpson"
        )
