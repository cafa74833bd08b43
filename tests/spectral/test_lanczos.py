"""lanczos(): Krylov identity, orthonormality, full-depth spectrum, breakdown, matfree oracle."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from tests.spectral._operators import as_matvec, known_operator, spectrum500


def _tridiag(res):
    a, b = np.asarray(res.alphas), np.asarray(res.betas)
    return np.diag(a) + np.diag(b, 1) + np.diag(b, -1)


@pytest.mark.parametrize("m", [1, 7, 60])
def test_krylov_identity_and_orthonormality(x64, m):
    a = known_operator(spectrum500())
    v0 = np.random.default_rng(2).normal(size=a.shape[0])
    res = gl.spectral.lanczos(as_matvec(a), jnp.asarray(v0), num_matvecs=m)
    q = np.asarray(res.basis)
    assert q.shape == (m, a.shape[0]) and res.alphas.shape == (m,) and res.betas.shape == (m - 1,)
    np.testing.assert_allclose(q @ q.T, np.eye(m), atol=1e-10)
    lhs = a @ q.T
    rhs = q.T @ _tridiag(res)
    rhs[:, -1] += np.asarray(res.residual)
    np.testing.assert_allclose(lhs, rhs, atol=1e-10)
    np.testing.assert_allclose(float(res.residual_norm), np.linalg.norm(res.residual), rtol=1e-12)
    np.testing.assert_allclose(q[0], v0 / np.linalg.norm(v0), atol=1e-14)
    assert int(res.breakdown) == m


def test_full_depth_recovers_spectrum(x64):
    lam = np.linspace(-2.0, 3.0, 120)
    a = known_operator(lam, seed=4)
    res = gl.spectral.lanczos(as_matvec(a), jnp.ones(120), num_matvecs=120)
    np.testing.assert_allclose(np.linalg.eigvalsh(_tridiag(res)), lam, atol=1e-10)


def test_breakdown_repaired_with_fresh_direction(x64):
    # Rank-3 operator: the Krylov space of a generic v0 is invariant after 4 steps.
    lam = np.zeros(80)
    lam[:3] = [3.0, -2.0, 1.0]
    a = known_operator(lam, seed=5)
    res = gl.spectral.lanczos(as_matvec(a), jnp.ones(80), num_matvecs=10)
    q = np.asarray(res.basis)
    assert int(res.breakdown) == 3
    assert np.all(np.isfinite(q)) and np.all(np.isfinite(res.alphas))
    np.testing.assert_allclose(q @ q.T, np.eye(10), atol=1e-10)
    assert abs(float(res.betas[3])) == 0.0
    ritz = np.sort(np.linalg.eigvalsh(_tridiag(res)))
    np.testing.assert_allclose(ritz[[0, -2, -1]], [-2.0, 1.0, 3.0], atol=1e-10)
    np.testing.assert_allclose(ritz[1:-2], 0.0, atol=1e-10)


def test_breakdown_threshold_is_relative_in_float32():
    # A diagonal operator with tiny scale: an absolute 1e-12 guard would not help, ours does.
    d = 1e-8 * jnp.arange(1.0, 4.0)
    res = gl.spectral.lanczos(lambda v: d * v, jnp.ones(3), num_matvecs=3)
    t = _tridiag(res)
    np.testing.assert_allclose(np.linalg.eigvalsh(t), np.asarray(d), rtol=1e-4)
    assert int(res.breakdown) >= 2


def test_without_reorthogonalization_matches_on_short_runs(x64):
    a = known_operator(spectrum500())
    v0 = jnp.asarray(np.random.default_rng(3).normal(size=500))
    full = gl.spectral.lanczos(as_matvec(a), v0, num_matvecs=8)
    plain = gl.spectral.lanczos(as_matvec(a), v0, num_matvecs=8, reorthogonalize=False)
    np.testing.assert_allclose(plain.alphas, full.alphas, atol=1e-9)
    np.testing.assert_allclose(plain.betas, full.betas, atol=1e-9)


def test_matches_matfree_tridiagonal(x64):
    import matfree.decomp

    a = known_operator(spectrum500())
    v0 = jnp.asarray(np.random.default_rng(6).normal(size=500))
    m = 40
    ours = gl.spectral.lanczos(as_matvec(a), v0, num_matvecs=m)
    tridiag = matfree.decomp.tridiag_sym(m, materialize=True, reortho="full")
    out = tridiag(lambda v: jnp.asarray(a) @ v, v0)
    q_tall, t_small = out[0], out[1]
    np.testing.assert_allclose(np.asarray(t_small), _tridiag(ours), atol=1e-10)
    np.testing.assert_allclose(
        np.asarray(q_tall), np.asarray(ours.basis), atol=1e-10
    )  # (m, n) in 0.6.3


def test_pytree_vectors_and_jit(x64):
    lam = np.linspace(1.0, 2.0, 12)
    a = jnp.asarray(known_operator(lam, seed=7))

    def mv(tree):
        flat = jnp.concatenate([tree["u"].ravel(), tree["w"]])
        out = a @ flat
        return {"u": out[:8].reshape(2, 4), "w": out[8:]}

    v0 = {"u": jnp.ones((2, 4)), "w": jnp.ones(4)}
    res = jax.jit(lambda v: gl.spectral.lanczos(mv, v, num_matvecs=12))(v0)
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(_tridiag(res))), lam, atol=1e-10)


def test_zero_start_vector():
    with pytest.raises(ValueError, match="v0 has zero norm"):
        gl.spectral.lanczos(lambda v: v, jnp.zeros(4), num_matvecs=2)
    res = jax.jit(lambda v: gl.spectral.lanczos(lambda u: u, v, num_matvecs=2))(jnp.zeros(4))
    assert float(res.init_norm) == 0.0 and np.isnan(res.alphas).all()


def test_nan_operator_does_not_hang():
    res = gl.spectral.lanczos(lambda v: v * jnp.nan, jnp.ones(5), num_matvecs=4)
    assert np.isnan(res.alphas).all()


@pytest.mark.parametrize("m", [0, 6, 2.0])
def test_bad_num_matvecs(m):
    err = TypeError if isinstance(m, float) else ValueError
    with pytest.raises(err, match="num_matvecs"):
        gl.spectral.lanczos(lambda v: v, jnp.ones(5), num_matvecs=m)


def test_bad_operator_structure():
    with pytest.raises(ValueError, match="structure"):
        gl.spectral.lanczos(lambda v: v[:3], jnp.ones(5), num_matvecs=2)
    with pytest.raises(TypeError, match="structure"):
        gl.spectral.lanczos(lambda v: (v, v), jnp.ones(5), num_matvecs=2)
    with pytest.raises(TypeError, match="callable"):
        gl.spectral.lanczos(3, jnp.ones(5), num_matvecs=2)
    with pytest.raises(TypeError, match="reorthogonalize"):
        gl.spectral.lanczos(lambda v: v, jnp.ones(5), num_matvecs=2, reorthogonalize="yes")


def test_float32_stays_orthonormal_on_a_wide_spectrum():
    # Eigenvalues over six decades: plain Lanczos loses orthogonality completely, the local step
    # plus one blocked pass (and the DGKS second pass when needed) keeps it at rounding level.
    lam = np.concatenate([np.logspace(-3, 3, 390), 1e3 + np.arange(10.0)])
    a = jnp.asarray(known_operator(lam, seed=8), jnp.float32)
    v0 = jnp.asarray(np.random.default_rng(8).normal(size=400), jnp.float32)
    eps = float(jnp.finfo(jnp.float32).eps)
    full = gl.spectral.lanczos(lambda v: a @ v, v0, num_matvecs=200)
    plain = gl.spectral.lanczos(lambda v: a @ v, v0, num_matvecs=200, reorthogonalize=False)

    def loss_of_orthogonality(res):
        q = np.asarray(res.basis, np.float64)
        return np.abs(q @ q.T - np.eye(q.shape[0])).max()

    assert loss_of_orthogonality(full) < 50 * eps
    assert loss_of_orthogonality(plain) > 1e-2
    ritz = np.linalg.eigvalsh(_tridiag(full).astype(np.float64))
    np.testing.assert_allclose([ritz[0], ritz[-1]], [lam.min(), lam.max()], rtol=1e-4, atol=2e-3)


def test_second_pass_runs_when_the_first_cancels_heavily(x64):
    # A vector dominated by an *old* basis row (as after a thick restart): the local step does
    # not remove it, the blocked pass does with heavy cancellation, and the DGKS pass cleans up.
    from gradlab.spectral._common import REORTH_BLOCK, reorthogonalize_step

    rng = np.random.default_rng(9)
    m, n, filled = 2 * REORTH_BLOCK + 3, 60, REORTH_BLOCK + 2
    q, _ = np.linalg.qr(rng.normal(size=(n, m)))
    basis = np.zeros((m, n))
    basis[:filled] = q.T[:filled]
    w_in = 1e8 * basis[0] + 3.0 * basis[filled - 1] + rng.normal(size=n)
    w, coeffs = reorthogonalize_step(
        jnp.asarray(basis), jnp.int32(filled - 1), jnp.asarray(w_in), jnp.asarray(0.5)
    )
    w, coeffs = np.asarray(w), np.asarray(coeffs)
    expected = w_in - basis[:filled].T @ (basis[:filled] @ w_in)
    np.testing.assert_allclose(w, expected, atol=1e-8 * np.linalg.norm(expected))
    assert np.abs(basis[:filled] @ w).max() < 1e-12 * np.linalg.norm(w)
    np.testing.assert_allclose(coeffs[:filled], basis[:filled] @ w_in, rtol=1e-12, atol=1e-6)
    np.testing.assert_array_equal(coeffs[filled:], 0.0)
