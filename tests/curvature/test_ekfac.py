"""EK-FAC: equal to K-FAC where K-FAC is exact; its scales are projected second moments."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import gradlab as gl
from tests.curvature._problems import make_problem
from tests.curvature.test_kfac import ConvLinear, DeepLinear, _setup


def _dense(op, params):
    return np.asarray(gl.curvature.dense(op, params))


def test_equals_kfac_where_kfac_is_exact(x64):
    x = jax.random.normal(jax.random.key(1), (7, 3))
    y = jax.random.normal(jax.random.key(2), (7, 2))
    params, apply = _setup(DeepLinear(), x)
    ek = gl.curvature.ekfac(apply, "mse", params, (x, y))
    k = _dense(gl.curvature.kfac(apply, "mse", params, (x, y)).matvec, params)
    np.testing.assert_allclose(_dense(ek.matvec, params), k, atol=1e-10 * np.abs(k).max())
    # the same for a linear convolution with "reduce" and average pooling
    xc = jax.random.normal(jax.random.key(3), (4, 5, 4, 2))
    pc, ac = _setup(ConvLinear(pool=True), xc)
    yc = jax.random.normal(jax.random.key(4), (4, 2))
    ek = gl.curvature.ekfac(ac, "mse", pc, (xc, yc), kfac_approx="reduce")
    k = _dense(gl.curvature.kfac(ac, "mse", pc, (xc, yc), kfac_approx="reduce").matvec, pc)
    np.testing.assert_allclose(_dense(ek.matvec, pc), k, atol=1e-10 * np.abs(k).max())


def test_scales_are_projected_per_example_second_moments(x64):
    """s_ij = sum_{n,k} (Q_A^T grad_{nk} Q_G)_ij^2 with the per-example type-2 gradients."""
    p = make_problem("mlp", jax.random.key(5), n=6)
    batch = (p.inputs, p.labels)
    ek = gl.curvature.ekfac(p.model_fn, "softmax_cross_entropy", p.params, batch)
    logits = p.model_fn(p.params, p.inputs)
    probs = jax.nn.softmax(logits)
    n, c = logits.shape
    # type-2 square root of the per-example output Hessian (diag(p) - p p^T) / N
    cols = jnp.sqrt(probs / n)[:, :, None] * (jnp.eye(c)[None] - probs[:, None, :])

    def grads(x, s):  # gradient of s . f(x) for one example: (C, ...) over the columns s
        _, vjp = jax.vjp(lambda q: p.model_fn(q, x[None])[0], p.params)
        return jax.vmap(lambda si: vjp(si)[0])(s)

    per_example = jax.vmap(grads)(p.inputs, cols)  # leaves (N, C, *leaf)
    for name, f in ek.factors.items():
        layer = name.split("/")[-1]
        g_w = per_example["params"][layer]["kernel"]
        proj = jnp.einsum("ia,nkij,jb->nkab", f.qa, g_w, f.qg)
        want = jnp.sum(proj**2, axis=(0, 1))
        np.testing.assert_allclose(f.scales, want, rtol=1e-9, atol=1e-12 * want.max())
        g_b = per_example["params"][layer]["bias"]
        proj_b = jnp.einsum("nkj,jb->nkb", g_b, f.qg)
        want = jnp.sum(proj_b**2, axis=(0, 1))
        np.testing.assert_allclose(f.bias_scales, want, rtol=1e-9, atol=1e-12 * want.max())


def test_inverse_inverts_the_damped_operator(x64):
    p = make_problem("mlp", jax.random.key(7), n=5)
    batch = (p.inputs, p.labels)
    ek = gl.curvature.ekfac(p.model_fn, "softmax_cross_entropy", p.params, batch)
    damping = 1e-2
    e = _dense(ek.matvec, p.params)
    inv = _dense(ek.inverse(damping), p.params)
    np.testing.assert_allclose(inv @ (e + damping * np.eye(len(e))), np.eye(len(e)), atol=1e-8)
