"""eigsh() and power_iteration() against numpy.linalg.eigh on operators with known spectra."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from tests.spectral._operators import as_matvec, known_operator, spectrum500


def _reference(lam, which, k):
    if which == "largest":
        return np.sort(lam)[::-1][:k]
    if which == "smallest":
        return np.sort(lam)[:k]
    return lam[np.argsort(-np.abs(lam))][:k]


@pytest.mark.parametrize("which", ["largest", "smallest", "magnitude"])
def test_top5_matches_eigh(x64, which):
    lam = spectrum500()
    a = known_operator(lam)
    eig = gl.spectral.eigsh(
        as_matvec(a), jnp.zeros(500), k=5, key=jax.random.key(0), which=which, tol=1e-10
    )
    np.testing.assert_allclose(eig.eigenvalues, _reference(lam, which, 5), atol=1e-8)
    assert bool(eig.converged.all())
    vecs = np.asarray(eig.eigenvectors)
    assert vecs.shape == (5, 500)
    np.testing.assert_allclose(vecs @ vecs.T, np.eye(5), atol=1e-10)
    true_res = np.linalg.norm(a @ vecs.T - vecs.T * np.asarray(eig.eigenvalues), axis=0)
    np.testing.assert_allclose(eig.residuals, true_res, atol=1e-10)
    assert np.all(true_res <= 1e-10 * 10.0 * 1.01)


def test_first_cycle_is_plain_lanczos(x64):
    # Without restarts and at full depth, Ritz values are exact and the count is m.
    lam = np.linspace(-1.0, 1.0, 40)
    a = known_operator(lam, seed=2)
    eig = gl.spectral.eigsh(
        as_matvec(a), jnp.zeros(40), k=3, key=jax.random.key(1), num_matvecs=40, max_restarts=0
    )
    np.testing.assert_allclose(eig.eigenvalues, lam[::-1][:3], atol=1e-12)
    assert int(eig.num_matvecs) == 40 and bool(eig.converged.all())


def test_unconverged_is_reported(x64):
    lam = np.linspace(0.0, 1.0, 300)  # no gap: 12 matvecs cannot resolve the top 5
    a = known_operator(lam, seed=3)
    eig = gl.spectral.eigsh(
        as_matvec(a),
        jnp.zeros(300),
        k=5,
        key=jax.random.key(0),
        num_matvecs=12,
        max_restarts=0,
        tol=1e-8,
    )
    assert not bool(eig.converged.all())
    vecs = np.asarray(eig.eigenvectors)
    true_res = np.linalg.norm(a @ vecs.T - vecs.T * np.asarray(eig.eigenvalues), axis=0)
    np.testing.assert_allclose(eig.residuals, true_res, rtol=1e-6)
    assert np.all(np.asarray(eig.converged) == (true_res <= 1e-8 * np.max(np.abs(eig.eigenvalues))))


def test_rank_deficient_no_nan(x64):
    lam = np.zeros(100)
    lam[:3] = [4.0, 2.0, -1.0]
    a = known_operator(lam, seed=1)
    eig = gl.spectral.eigsh(as_matvec(a), jnp.zeros(100), k=5, key=jax.random.key(0))
    assert np.all(np.isfinite(eig.eigenvalues)) and np.all(np.isfinite(eig.eigenvectors))
    np.testing.assert_allclose(eig.eigenvalues, [4.0, 2.0, 0.0, 0.0, 0.0], atol=1e-10)
    low = gl.spectral.eigsh(
        as_matvec(a), jnp.zeros(100), k=5, key=jax.random.key(0), which="smallest"
    )
    np.testing.assert_allclose(low.eigenvalues, [-1.0, 0.0, 0.0, 0.0, 0.0], atol=1e-10)
    assert np.all(np.isfinite(low.eigenvectors)) and bool(low.converged.all())
    assert bool(eig.converged.all())


def test_float32_default_depth():
    lam = np.concatenate([[50.0, 40.0, 30.0], np.linspace(0.0, 10.0, 197)])
    a = known_operator(lam, seed=8).astype(np.float32)
    eig = gl.spectral.eigsh(as_matvec(a), jnp.zeros(200), k=3, key=jax.random.key(2))
    np.testing.assert_allclose(eig.eigenvalues, [50.0, 40.0, 30.0], rtol=1e-5)
    assert eig.eigenvalues.dtype == jnp.float32 and bool(eig.converged.all())


def test_pytree_and_jit(x64):
    lam = np.linspace(-3.0, 3.0, 30)
    a = jnp.asarray(known_operator(lam, seed=9))

    def mv(tree):
        out = a @ jnp.concatenate([tree[0], tree[1].ravel()])
        return (out[:10], out[10:].reshape(4, 5))

    like = (jnp.zeros(10), jnp.zeros((4, 5)))
    run = jax.jit(lambda key: gl.spectral.eigsh(mv, like, k=2, key=key, which="smallest"))
    eig = run(jax.random.key(0))
    np.testing.assert_allclose(eig.eigenvalues, lam[:2], atol=1e-9)
    assert eig.eigenvectors[0].shape == (2, 10) and eig.eigenvectors[1].shape == (2, 4, 5)


def test_nan_operator_flags_not_hang():
    eig = gl.spectral.eigsh(lambda v: v * jnp.nan, jnp.zeros(30), k=2, key=jax.random.key(0))
    assert not bool(eig.converged.any())
    p = gl.spectral.power_iteration(lambda v: v * jnp.nan, jnp.zeros(30), key=jax.random.key(0))
    assert not bool(p.converged.any())
    assert int(p.num_matvecs) <= 2


def test_bad_arguments():
    mv, like, key = (lambda v: v), jnp.zeros(10), jax.random.key(0)
    with pytest.raises(ValueError, match="k=11 is out of range"):
        gl.spectral.eigsh(mv, like, k=11, key=key)
    with pytest.raises(ValueError, match="k=0"):
        gl.spectral.eigsh(mv, like, k=0, key=key)
    with pytest.raises(ValueError, match="num_matvecs=11"):
        gl.spectral.eigsh(mv, like, k=2, key=key, num_matvecs=11)
    with pytest.raises(ValueError, match="num_matvecs=1 is out of range"):
        gl.spectral.eigsh(mv, like, k=2, key=key, num_matvecs=1)
    with pytest.raises(ValueError, match="which='biggest'.*'largest'"):
        gl.spectral.eigsh(mv, like, k=2, key=key, which="biggest")
    with pytest.raises(ValueError, match="tol"):
        gl.spectral.eigsh(mv, like, k=2, key=key, tol=0.0)
    with pytest.raises(ValueError, match="num_iters"):
        gl.spectral.power_iteration(mv, like, key=key, num_iters=0)


def test_power_iteration(x64):
    lam = np.concatenate([[-8.0, 4.0], np.linspace(-2.0, 2.0, 98)])
    a = known_operator(lam, seed=11)
    eig = gl.spectral.power_iteration(
        as_matvec(a), jnp.zeros(100), key=jax.random.key(0), num_iters=500, tol=1e-9
    )
    np.testing.assert_allclose(eig.eigenvalues, [-8.0], rtol=1e-12)
    assert bool(eig.converged[0]) and int(eig.num_matvecs) < 500
    v = np.asarray(eig.eigenvectors)[0]
    np.testing.assert_allclose(np.linalg.norm(a @ v + 8.0 * v), eig.residuals[0], rtol=1e-6)
    assert float(eig.residuals[0]) <= 1e-9 * 8.0


def test_power_iteration_reports_no_convergence(x64):
    a = known_operator(np.linspace(0.0, 1.0, 100), seed=12)
    eig = gl.spectral.power_iteration(
        as_matvec(a), jnp.zeros(100), key=jax.random.key(0), num_iters=5
    )
    assert not bool(eig.converged[0]) and int(eig.num_matvecs) == 5
