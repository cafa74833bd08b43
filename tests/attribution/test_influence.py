"""Influence functions against dense float64 oracles and leave-one-out retraining."""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gradlab as gl

DAMPING = 0.3


def _mlp(params, x):
    return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]


def _loss(params, batch):
    return gl.curvature.softmax_cross_entropy(_mlp(params, batch[0]), batch[1])


def _problem(n_train=9, n_test=4):
    k = jax.random.split(jax.random.key(3), 5)
    params = {
        "w1": jax.random.normal(k[0], (3, 4)),
        "b1": 0.1 * jax.random.normal(k[1], (4,)),
        "w2": jax.random.normal(k[2], (4, 2)),
    }
    x = jax.random.normal(k[3], (n_train + n_test, 3))
    y = jax.random.randint(k[4], (n_train + n_test,), 0, 2)
    return params, (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def _explicit_scores(params, train, test, curvature):
    """-G_test (C + damping I)^{-1} G_train^T with C from jax.hessian / jacrev, per-example loops."""
    flat, unravel = ravel_pytree(params)

    def loss_flat(theta, batch):
        return _loss(unravel(theta), batch)

    grad = jax.jit(jax.grad(loss_flat))

    def grads(batch):  # a Python loop of single-example gradients
        n = batch[0].shape[0]
        return np.stack([grad(flat, (batch[0][i : i + 1], batch[1][i : i + 1])) for i in range(n)])

    if curvature == "hessian":
        c = jax.hessian(loss_flat)(flat, train)
    else:
        logits = _mlp(params, train[0])
        jac = jax.jacrev(lambda th: _mlp(unravel(th), train[0]).ravel())(flat)  # (N*C, P)
        h_out = jax.hessian(
            lambda z: gl.curvature.softmax_cross_entropy(z.reshape(logits.shape), train[1])
        )(logits.ravel())
        c = jac.T @ h_out @ jac
    a = c + DAMPING * jnp.eye(flat.size)
    return -grads(test) @ np.linalg.solve(a, grads(train).T)


def _ggn_kwargs():
    return {"curvature": "ggn", "model_fn": _mlp, "output_loss": "softmax_cross_entropy"}


@pytest.mark.parametrize("curvature", ["hessian", "ggn"])
def test_dense_equals_explicit_formula(x64, curvature):
    params, train, test = _problem()
    kwargs = _ggn_kwargs() if curvature == "ggn" else {"curvature": "hessian"}
    res = gl.attribution.influence(
        _loss, params, train, test, damping=DAMPING, solver="dense", **kwargs
    )
    expected = _explicit_scores(params, train, test, curvature)
    assert res.scores.shape == (4, 9)
    np.testing.assert_allclose(res.scores, expected, rtol=1e-10, atol=1e-12)
    assert bool(jnp.all(res.converged)) and float(jnp.max(res.residual_norm)) < 1e-12


def test_cg_and_arnoldi_agree_with_dense(x64):
    params, train, test = _problem()
    p = ravel_pytree(params)[0].size
    dense = gl.attribution.influence(
        _loss, params, train, test, damping=DAMPING, solver="dense", **_ggn_kwargs()
    )
    cg = gl.attribution.influence(
        _loss, params, train, test, damping=DAMPING, solver="cg", tol=1e-12, max_iters=4 * p,
        chunk_size=3, **_ggn_kwargs()
    )  # fmt: skip
    arnoldi = gl.attribution.influence(
        _loss, params, train, test, damping=DAMPING, solver="arnoldi", k=p,
        key=jax.random.key(1), **_ggn_kwargs()
    )  # fmt: skip
    scale = float(jnp.max(jnp.abs(dense.scores)))
    # CG stops at ||r|| <= 1e-12 ||g||, so the solve is exact to about cond * 1e-12.
    assert bool(jnp.all(cg.converged))
    np.testing.assert_allclose(cg.scores, dense.scores, atol=1e-9 * scale)
    # Arnoldi with k = P keeps every eigenpair: exact up to the eigensolver's residuals.
    assert bool(jnp.all(arnoldi.converged))
    np.testing.assert_allclose(arnoldi.scores, dense.scores, atol=1e-8 * scale)
    assert float(jnp.max(arnoldi.residual_norm)) < 1e-8
    assert int(cg.num_matvecs.max()) <= 4 * p and cg.num_matvecs.shape == (4,)


def test_arnoldi_truncation_is_the_top_k_projection(x64):
    """k < P keeps exactly the top-k eigen-directions of C: compare with a dense eigh projection."""
    params, train, test = _problem()
    k = 5
    res = gl.attribution.influence(
        _loss, params, train, test, damping=DAMPING, solver="arnoldi", k=k, tol=1e-10,
        key=jax.random.key(2), **_ggn_kwargs()
    )  # fmt: skip
    flat, unravel = ravel_pytree(params)
    c = gl.curvature.dense(gl.curvature.ggn(_mlp, "softmax_cross_entropy", params, train), params)
    vals, vecs = np.linalg.eigh(np.asarray(c))
    top = np.argsort(-np.abs(vals))[:k]
    u, lam = vecs[:, top], vals[top]
    g_fn = jax.vmap(lambda x, y: ravel_pytree(jax.grad(_loss)(params, (x[None], y[None])))[0])
    gt, gtr = g_fn(*test), g_fn(*train)
    expected = -((gt @ u) / (lam + DAMPING)) @ (gtr @ u).T
    np.testing.assert_allclose(res.scores, expected, atol=1e-8 * np.abs(expected).max())


def _loo_relative_error(n):
    """Max over (test, train) of |predicted - actual| / max |actual| for ridge regression."""
    d, lam = 3, 0.1
    k1, k2 = jax.random.split(jax.random.key(7))
    x = jax.random.normal(k1, (n + 5, d))
    y = x @ jnp.array([1.0, -2.0, 0.5]) + 0.3 * jax.random.normal(k2, (n + 5,))
    train, test = (x[:n], y[:n]), (x[n:], y[n:])

    def loss(w, b):
        return 0.5 * jnp.mean((b[0] @ w - b[1]) ** 2)

    def fit(weights):  # argmin (1/N) sum_i w_i l_i + lam/2 |w|^2, closed form
        xt = train[0].T * weights
        return jnp.linalg.solve(xt @ train[0] / n + lam * jnp.eye(d), xt @ train[1] / n)

    def test_losses(w):
        return 0.5 * (test[0] @ w - test[1]) ** 2

    w_star = fit(jnp.ones(n))
    res = gl.attribution.influence(loss, w_star, train, test, damping=lam, solver="dense")
    drop = jnp.ones((n, n)) - jnp.eye(n)  # row j: every example but j
    actual = (jax.vmap(lambda m: test_losses(fit(m)))(drop) - test_losses(w_star)).T
    predicted = -res.scores / n
    return float(jnp.max(jnp.abs(predicted - actual)) / jnp.max(jnp.abs(actual)))


def test_linear_regression_leave_one_out(x64):
    """Removing example j changes a test loss by about -scores[:, j] / N, to first order.

    The error is second order: about the leverage x_j^T H^{-1} x_j / N of the removed point,
    so O(1/N). Measured max relative error over all (test, train) pairs: 0.20 at N = 40 and
    0.021 at N = 640 (leave-one-out refits in closed form). The check is the order: 16 times
    more data must cut the error by more than 4 (first order would cut it by ~16).
    """
    small, large = _loo_relative_error(40), _loo_relative_error(640)
    assert large < small / 4, (small, large)
    assert large < 0.05, large


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"damping": -1.0}, "damping=-1.0 is out of range"),
        ({"damping": 0.1, "curvature": "fisher"}, "curvature='fisher' is not a valid choice"),
        ({"damping": 0.1, "solver": "lu"}, "solver='lu' is not a valid choice"),
        ({"damping": 0.1, "curvature": "ggn"}, "'model_fn'"),
        ({"damping": 0.1, "curvature": "ggn", "model_fn": _mlp}, "'output_loss'"),
        ({"damping": 0.1, "solver": "arnoldi", "key": jax.random.key(0)}, "'k'"),
        ({"damping": 0.1, "solver": "arnoldi", "k": 2}, "'key'"),
        ({"damping": 0.1, "tol": 0.0}, "tol=0.0 is out of range"),
        ({"damping": 0.1, "chunk_size": 0}, "chunk_size=0 is out of range"),
        ({"damping": 0.1, "solver": "factored"}, "solver='factored' does not fit"),
    ],
)
def test_bad_input(kwargs, match):
    params, train, test = _problem()
    with pytest.raises(ValueError, match=match):
        gl.attribution.influence(_loss, params, train, test, **kwargs)


def test_bad_batches():
    params, train, test = _problem()
    ragged = (train[0], train[1][:-1])
    with pytest.raises(ValueError, match="train_batch leaves have different leading"):
        gl.attribution.influence(_loss, params, ragged, test, damping=0.1)


class _DeepLinear(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.Dense(4)(x))


@pytest.mark.skipif(not hasattr(gl.curvature, "ekfac"), reason="needs gl.curvature.ekfac")
def test_factored_equals_dense_where_kfac_is_exact(x64):
    """Deep linear network + MSE: K-FAC (and EK-FAC) equal the GGN's per-leaf diagonal blocks."""
    k1, k2, k3 = jax.random.split(jax.random.key(5), 3)
    x = jax.random.normal(k1, (9, 3))
    y = jax.random.normal(k2, (9, 2))
    model = _DeepLinear()
    params = jax.tree.map(lambda p: p.astype(jnp.float64), model.init(k3, x[:1]))
    train, test = (x[:6], y[:6]), (x[6:], y[6:])

    def loss(p, b):
        return gl.curvature.mse(model.apply(p, b[0]), b[1])

    flat, _ = ravel_pytree(params)
    ggn = gl.curvature.dense(gl.curvature.ggn(model.apply, "mse", params, train), params)
    edges = np.cumsum([0, *[leaf.size for leaf in jax.tree.leaves(params)]])
    block = np.zeros_like(ggn)
    for lo, hi in itertools.pairwise(edges):
        block[lo:hi, lo:hi] = ggn[lo:hi, lo:hi]
    g_fn = jax.vmap(lambda xi, yi: ravel_pytree(jax.grad(loss)(params, (xi[None], yi[None])))[0])
    expected = -g_fn(*test) @ np.linalg.solve(block + DAMPING * np.eye(flat.size), g_fn(*train).T)
    for curvature in ("kfac", "ekfac"):
        res = gl.attribution.influence(
            loss, params, train, test, damping=DAMPING, curvature=curvature, solver="factored",
            model_fn=model.apply, output_loss="mse"
        )  # fmt: skip
        np.testing.assert_allclose(res.scores, expected, rtol=1e-9, atol=1e-12)
        assert bool(jnp.all(res.converged)) and res.residual_norm.shape == (3,)
