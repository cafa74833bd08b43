"""Bundled and synthetic datasets: shapes, standardisation, determinism and bad input."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import gradlab as gl


def test_digits_standardised():
    x, y = gl.data.digits(1024)
    assert x.shape == (1024, 64) and y.shape == (1024,)
    xs = np.asarray(x)
    live = xs.std(0) > 0
    np.testing.assert_allclose(xs.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(xs.std(0)[live], 1.0, rtol=1e-4)
    assert set(np.unique(np.asarray(y)).tolist()) == set(range(10))


def test_digits_bad_n():
    with pytest.raises(ValueError, match="n=0 is out of range"):
        gl.data.digits(0)


def test_breast_cancer():
    x, y = gl.data.breast_cancer()
    assert x.shape == (569, 30)
    np.testing.assert_allclose(np.asarray(x).std(0), 1.0, rtol=1e-4)


def test_blobs_geometry():
    x, y = gl.data.gaussian_blobs(
        jax.random.key(0), num_classes=4, num_per_class=500, dim=20, center_norm=2.0, noise=1.0
    )
    assert x.shape == (2000, 20)
    means = np.stack([np.asarray(x)[np.asarray(y) == c].mean(0) for c in range(4)])
    # Sample means sit within a few standard errors (1/sqrt(500) per coordinate) of norm-2 centres.
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), 2.0, atol=5 * np.sqrt(20 / 500))
    again, _ = gl.data.gaussian_blobs(
        jax.random.key(0), num_classes=4, num_per_class=500, dim=20, center_norm=2.0, noise=1.0
    )
    np.testing.assert_array_equal(x, again)


def test_blobs_bad_input():
    with pytest.raises(ValueError, match="num_classes=0"):
        gl.data.gaussian_blobs(jax.random.key(0), num_classes=0, num_per_class=2, dim=2)
    with pytest.raises(ValueError, match="noise=-1.0"):
        gl.data.gaussian_blobs(jax.random.key(0), num_classes=2, num_per_class=2, dim=2, noise=-1.0)


def test_unit_circle_and_teacher():
    x = gl.data.unit_circle(16)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(x), axis=1), 1.0, rtol=1e-6)
    xs, ys, w = gl.data.linear_teacher(jax.random.key(0), num_examples=50, dim=5, noise_std=0.0)
    np.testing.assert_allclose(ys, xs @ w / np.sqrt(5), rtol=1e-5)
