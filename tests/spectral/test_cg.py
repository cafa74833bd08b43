"""cg(): damped SPD solves to tolerance, status fields, implicit gradients vs finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from tests.spectral._operators import as_matvec, known_operator


def test_solves_damped_system(x64):
    lam = np.geomspace(1e-2, 1e2, 150)
    a = known_operator(lam, seed=1)
    b = np.random.default_rng(0).normal(size=150)
    sol = gl.spectral.cg(as_matvec(a), jnp.asarray(b), damping=0.5, tol=1e-10, max_iters=300)
    x = np.linalg.solve(a + 0.5 * np.eye(150), b)
    assert bool(sol.converged) and 0 < int(sol.num_iters) < 300
    true_res = np.linalg.norm(b - (a + 0.5 * np.eye(150)) @ np.asarray(sol.x))
    assert true_res <= 1e-10 * np.linalg.norm(b) * 10
    assert float(sol.residual_norm) <= 1e-10 * np.linalg.norm(b)
    # forward error <= cond * tol, cond = 100.5 / 0.51
    np.testing.assert_allclose(sol.x, x, rtol=0, atol=200 * 1e-10 * 10 * np.linalg.norm(x))


def test_reports_non_convergence(x64):
    a = known_operator(np.geomspace(1e-3, 1e3, 100), seed=2)
    sol = gl.spectral.cg(as_matvec(a), jnp.ones(100), tol=1e-12, max_iters=5)
    assert not bool(sol.converged) and int(sol.num_iters) == 5
    true_res = np.linalg.norm(np.ones(100) - a @ np.asarray(sol.x))
    np.testing.assert_allclose(float(sol.residual_norm), true_res, rtol=1e-6)


def test_preconditioner_reduces_iterations(x64):
    d = np.geomspace(1.0, 1e4, 200)
    a = jnp.asarray(np.diag(d) + 0.01 * known_operator(np.ones(200), seed=3))
    b = jnp.ones(200)
    plain = gl.spectral.cg(lambda v: a @ v, b, tol=1e-6, max_iters=1000)
    jacobi = gl.spectral.cg(
        lambda v: a @ v, b, tol=1e-6, max_iters=1000, preconditioner=lambda r: r / jnp.diag(a)
    )
    assert bool(plain.converged) and bool(jacobi.converged)
    assert int(jacobi.num_iters) < int(plain.num_iters)
    x = np.linalg.solve(np.asarray(a), np.ones(200))
    np.testing.assert_allclose(
        jacobi.x, x, rtol=0, atol=1e-6 * np.linalg.norm(x) * np.linalg.cond(a)
    )


def test_pytree_rhs_and_jit(x64):
    a = jnp.asarray(known_operator(np.linspace(1.0, 3.0, 9), seed=4))

    def mv(t):
        out = a @ jnp.concatenate([t["p"].ravel(), t["q"]])
        return {"p": out[:6].reshape(2, 3), "q": out[6:]}

    b = {"p": jnp.ones((2, 3)), "q": jnp.arange(3.0)}
    sol = jax.jit(lambda b: gl.spectral.cg(mv, b, tol=1e-12))(b)
    flat_b = np.concatenate([np.ones(6), np.arange(3.0)])
    x = np.linalg.solve(np.asarray(a), flat_b)
    np.testing.assert_allclose(sol.x["p"].ravel(), x[:6], rtol=1e-9)
    np.testing.assert_allclose(sol.x["q"], x[6:], rtol=1e-9)


def test_gradients_match_finite_differences(x64):
    rng = np.random.default_rng(5)
    m0 = rng.normal(size=(12, 12))
    b0 = rng.normal(size=12)
    c = rng.normal(size=12)

    def objective(theta, b, damping):
        a = theta @ theta.T + jnp.eye(12)
        sol = gl.spectral.cg(lambda v: a @ v, b, damping=damping, tol=1e-13, max_iters=200)
        return jnp.dot(c, sol.x)

    args = (jnp.asarray(m0), jnp.asarray(b0), 0.3)
    grads = jax.grad(objective, argnums=(0, 1, 2))(*args)
    eps = 1e-6
    for idx, g in enumerate(grads):
        base = np.asarray(args[idx], dtype=np.float64)
        direction = rng.normal(size=base.shape)
        plus = list(args)
        minus = list(args)
        plus[idx] = base + eps * direction
        minus[idx] = base - eps * direction
        fd = (objective(*plus) - objective(*minus)) / (2 * eps)
        np.testing.assert_allclose(np.sum(np.asarray(g) * direction), fd, rtol=1e-6)


def test_zero_rhs_and_nan(x64):
    sol = gl.spectral.cg(lambda v: 2.0 * v, jnp.zeros(4))
    assert bool(sol.converged) and int(sol.num_iters) == 0 and np.all(np.asarray(sol.x) == 0)
    bad = gl.spectral.cg(lambda v: v * jnp.nan, jnp.ones(4), max_iters=50)
    assert not bool(bad.converged) and int(bad.num_iters) <= 1


def test_bad_arguments():
    mv = lambda v: v  # noqa: E731
    with pytest.raises(TypeError, match="structure"):
        gl.spectral.cg(lambda t: t["a"], {"a": jnp.ones(3)})
    with pytest.raises(ValueError, match="structure"):
        gl.spectral.cg(lambda v: jnp.ones(4), jnp.ones(3))
    with pytest.raises(ValueError, match="damping"):
        gl.spectral.cg(mv, jnp.ones(3), damping=-1.0)
    with pytest.raises(ValueError, match="tol"):
        gl.spectral.cg(mv, jnp.ones(3), tol=0.0)
    with pytest.raises(ValueError, match="max_iters"):
        gl.spectral.cg(mv, jnp.ones(3), max_iters=0)
    with pytest.raises(TypeError, match="preconditioner"):
        gl.spectral.cg(mv, jnp.ones(3), preconditioner="jacobi")
