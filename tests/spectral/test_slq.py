"""slq(), density(), density_band(), density_grid(): quadrature exactness, moments, MP law."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from gradlab._src.random import rademacher
from tests.spectral._operators import as_matvec, known_operator


def _probes(key, num_probes, n, dtype):
    keys = jax.random.split(key, num_probes)
    return np.stack([np.asarray(rademacher(k, (n,), dtype)) for k in keys])


def test_full_depth_quadrature_is_exact(x64):
    lam = np.random.default_rng(0).normal(size=60)
    a = known_operator(lam, seed=1)
    key = jax.random.key(2)
    sd = gl.spectral.slq(as_matvec(a), jnp.zeros(60), key=key, num_probes=4, num_matvecs=60)
    assert sd.nodes.shape == (4, 60) and sd.weights.shape == (4, 60)
    np.testing.assert_allclose(sd.weights.sum(axis=1), 1.0, atol=1e-12)
    for p, z in enumerate(_probes(key, 4, 60, jnp.float64)):
        q = z / np.linalg.norm(z)
        nodes, weights = np.asarray(sd.nodes[p]), np.asarray(sd.weights[p])
        np.testing.assert_allclose(weights @ nodes, q @ a @ q, atol=1e-10)
        np.testing.assert_allclose(weights @ nodes**2, q @ a @ a @ q, atol=1e-10)
        np.testing.assert_allclose([nodes.min(), nodes.max()], [lam.min(), lam.max()], atol=1e-10)


def test_moments_within_5_sem(x64):
    lam = np.random.default_rng(3).uniform(-1.0, 4.0, 300)
    a = known_operator(lam, seed=3)
    sd = gl.spectral.slq(
        as_matvec(a), jnp.zeros(300), key=jax.random.key(4), num_probes=30, num_matvecs=10
    )
    for power, truth in [(1, np.mean(lam)), (2, np.mean(lam**2))]:
        per_probe = np.sum(np.asarray(sd.weights) * np.asarray(sd.nodes) ** power, axis=1)
        sem = per_probe.std(ddof=1) / np.sqrt(len(per_probe))
        assert abs(per_probe.mean() - truth) < 5 * sem


def test_density_integrates_to_one_and_band(x64):
    lam = np.concatenate([np.zeros(50), np.random.default_rng(5).uniform(1.0, 2.0, 150)])
    a = known_operator(lam, seed=5)
    sd = gl.spectral.slq(
        as_matvec(a),
        jnp.zeros(200),
        key=jax.random.key(6),
        num_probes=12,
        num_matvecs=20,
        chunk_size=4,
    )
    grid, sigma = gl.spectral.density_grid(sd, num_points=800)
    lo, hi = float(np.min(sd.nodes)), float(np.max(sd.nodes))
    np.testing.assert_allclose(float(sigma), 0.01 * (hi - lo), rtol=1e-12)
    np.testing.assert_allclose([grid[0], grid[-1]], [lo - 5 * sigma, hi + 5 * sigma], rtol=1e-12)
    phi = gl.spectral.density(sd, grid, sigma=sigma)
    np.testing.assert_allclose(np.trapezoid(phi, grid), 1.0, atol=1e-6)
    # 25% of the mass is at zero.
    mass0 = np.trapezoid(np.where(np.asarray(grid) < 0.5, phi, 0.0), grid)
    assert abs(mass0 - 0.25) < 0.1
    band = gl.spectral.density_band(sd, grid, sigma=sigma, key=jax.random.key(7), level=0.9)
    np.testing.assert_allclose(band.density, phi, rtol=1e-12)
    assert np.all(band.lower <= band.density + 1e-12) and np.all(band.density <= band.upper + 1e-12)
    assert np.max(band.upper - band.lower) > 0
    wide = gl.spectral.density_band(sd, grid, sigma=sigma, key=jax.random.key(7), level=0.99)
    assert np.all(wide.upper - wide.lower >= band.upper - band.lower - 1e-12)


def test_marchenko_pastur_ks(x64):
    num, dim = 800, 400
    x = jax.random.normal(jax.random.key(8), (num, dim), jnp.float64)
    mv = lambda v: x.T @ (x @ v) / num  # noqa: E731
    sd = gl.spectral.slq(mv, jnp.zeros(dim), key=jax.random.key(9), num_probes=10, num_matvecs=60)
    ratio = dim / num
    lo, hi = (1 - np.sqrt(ratio)) ** 2, (1 + np.sqrt(ratio)) ** 2
    t = np.linspace(lo, hi, 20001)
    pdf = np.sqrt(np.maximum((hi - t) * (t - lo), 0.0)) / (2 * np.pi * ratio * t)
    cdf_mp = np.concatenate([[0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * np.diff(t))])
    nodes = np.asarray(sd.nodes).ravel()
    weights = np.asarray(sd.weights).ravel() / sd.nodes.shape[0]
    order = np.argsort(nodes)
    nodes, cdf_slq = nodes[order], np.cumsum(weights[order])
    # KS distance: compare both CDFs at the SLQ jump points (left and right limits).
    mp_at = np.interp(nodes, t, cdf_mp, left=0.0, right=1.0)
    ks = max(np.max(np.abs(cdf_slq - mp_at)), np.max(np.abs(cdf_slq - weights[order] - mp_at)))
    assert ks < 0.05


def test_bad_arguments():
    mv, like, key = (lambda v: v), jnp.zeros(6), jax.random.key(0)
    with pytest.raises(ValueError, match="num_probes=0"):
        gl.spectral.slq(mv, like, key=key, num_probes=0, num_matvecs=3)
    with pytest.raises(ValueError, match="num_matvecs=7 is out of range"):
        gl.spectral.slq(mv, like, key=key, num_probes=2, num_matvecs=7)
    sd = gl.spectral.slq(mv, like, key=key, num_probes=2, num_matvecs=3)
    with pytest.raises(ValueError, match="sigma"):
        gl.spectral.density(sd, jnp.linspace(0, 1, 5), sigma=0.0)
    with pytest.raises(TypeError, match="SpectralDensity"):
        gl.spectral.density((sd.nodes, sd.weights), jnp.linspace(0, 1, 5), sigma=0.1)
    with pytest.raises(ValueError, match="level"):
        gl.spectral.density_band(sd, jnp.linspace(0, 1, 5), sigma=0.1, key=key, level=1.0)
