"""Every spectral algorithm on a real curvature operator (Hessian of a tiny MLP), float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import gradlab as gl
from gradlab._src.random import rademacher
from tests.spectral._operators import tiny_mlp_problem


def _run_all(params, batch, key):
    """Every algorithm on the Hessian, in one jitted program (params and data as arguments)."""
    loss_fn = tiny_mlp_problem()[0]
    hvp = gl.curvature.hessian(loss_fn, params, batch)
    n = ravel_pytree(params)[0].shape[0]
    top = gl.spectral.eigsh(hvp, params, k=3, key=key, tol=1e-10)
    return {
        "dense": gl.curvature.dense(hvp, params),
        "lanczos": gl.spectral.lanczos(hvp, params, num_matvecs=n),
        "top": top,
        "top_hv": hvp(jax.tree.map(lambda x: x[0], top.eigenvectors)),
        "low": gl.spectral.eigsh(hvp, params, k=2, key=key, which="smallest", tol=1e-10),
        "power": gl.spectral.power_iteration(hvp, params, key=key, num_iters=2000, tol=1e-10),
        "slq": gl.spectral.slq(hvp, params, key=key, num_probes=3, num_matvecs=n),
        "trace": {
            name: gl.spectral.trace(hvp, params, key=key, num_matvecs=40, estimator=name)
            for name in ("hutchinson", "hutch++", "xtrace")
        },
        "diag": gl.spectral.diagonal(hvp, params, key=key, num_matvecs=40),
        "rhs": jax.grad(loss_fn)(params, batch),
    }


def test_all_algorithms_agree_with_dense_hessian(x64):
    _, params, batch = tiny_mlp_problem()
    key = jax.random.key(0)
    out = jax.jit(_run_all)(params, batch, key)
    h = np.asarray(out["dense"])
    h = (h + h.T) / 2
    n = h.shape[0]
    lam = np.linalg.eigvalsh(h)
    assert lam[0] < 0 < lam[-1]  # an indefinite Hessian: negative curvature present
    scale = np.abs(lam).max()

    # lanczos at full depth recovers the spectrum.
    res = out["lanczos"]
    t = np.diag(res.alphas) + np.diag(res.betas, 1) + np.diag(res.betas, -1)
    np.testing.assert_allclose(np.linalg.eigvalsh(t), lam, atol=1e-9 * scale)

    # eigsh: top and bottom; eigenvectors are pytrees like params.
    top, low = out["top"], out["low"]
    np.testing.assert_allclose(top.eigenvalues, lam[::-1][:3], atol=1e-8 * scale)
    np.testing.assert_allclose(low.eigenvalues, lam[:2], atol=1e-8 * scale)
    assert bool(top.converged.all()) and bool(low.converged.all())
    v0 = ravel_pytree(jax.tree.map(lambda x: x[0], top.eigenvectors))[0]
    np.testing.assert_allclose(
        ravel_pytree(out["top_hv"])[0], top.eigenvalues[0] * v0, atol=1e-8 * scale
    )

    # power iteration: largest magnitude.
    np.testing.assert_allclose(np.abs(out["power"].eigenvalues[0]), scale, rtol=1e-8)

    # SLQ: full-depth quadrature reproduces q^T H q for each probe.
    sd = out["slq"]
    for p, k in enumerate(jax.random.split(key, 3)):
        z = np.asarray(rademacher(k, (n,), jnp.float64))
        q = z / np.linalg.norm(z)
        np.testing.assert_allclose(np.sum(sd.weights[p] * sd.nodes[p]), q @ h @ q, atol=1e-10)

    # trace and diagonal within 5 sem.
    for name, est in out["trace"].items():
        assert abs(float(est.value) - np.trace(h)) < 5 * float(est.sem), name
    value, sem = ravel_pytree(out["diag"].value)[0], ravel_pytree(out["diag"].sem)[0]
    assert np.mean(np.abs(value - np.diag(h)) < 5 * sem + 1e-12) >= 0.95

    # cg on the damped (SPD) Hessian, here eagerly.
    hvp = gl.curvature.hessian(tiny_mlp_problem()[0], params, batch)
    damping = 1.0 - lam[0]
    sol = gl.spectral.cg(hvp, out["rhs"], damping=damping, tol=1e-10, max_iters=n)
    x = np.linalg.solve(h + damping * np.eye(n), ravel_pytree(out["rhs"])[0])
    assert bool(sol.converged)
    np.testing.assert_allclose(ravel_pytree(sol.x)[0], x, atol=1e-8 * np.abs(x).max())
