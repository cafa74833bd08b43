"""Gradient-regularised Newton: one update against dense float64 solves; failure handling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from gradlab.transforms import grn, scale_by_grn


def _softmax_regression(seed=0, batch=6, dim=3, classes=3):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(batch, dim)))
    y = jnp.asarray(rng.integers(0, classes, size=batch))
    params = {"w": jnp.asarray(0.3 * rng.normal(size=(dim, classes))), "b": jnp.zeros(classes)}

    def logits_fn(p):
        return x @ p["w"] + p["b"]

    def obj_fn(p):
        logits = logits_fn(p)
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1)
        return jnp.mean(nll) + 0.05 * jnp.sum(p["w"] ** 2)

    return params, obj_fn, logits_fn


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(t)) for t in jax.tree.leaves(tree)])


def _dense_step(curv, g, gamma):
    gf = _flat(g)
    lam = np.linalg.norm(gf) / gamma
    return np.linalg.solve(curv + lam * np.eye(len(gf)), gf)


def _dense_ggn(logits_fn, params):
    """J^T H_CE J / B by explicit Jacobians (B = batch size)."""
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(params)
    jac = np.asarray(jax.jacobian(lambda v: logits_fn(unravel(v)))(flat))  # (B, C, P)
    p = np.asarray(jax.nn.softmax(logits_fn(params)))
    out = np.zeros((flat.size, flat.size))
    for b in range(p.shape[0]):
        h = np.diag(p[b]) - np.outer(p[b], p[b])
        out += jac[b].T @ h @ jac[b]
    return out / p.shape[0]


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "fisher"])
def test_one_update_is_the_damped_newton_step(x64, curvature):
    params, obj_fn, logits_fn = _softmax_regression()
    key = jax.random.key(5)
    tx = scale_by_grn(curvature=curvature, gamma0=0.5, cg_tol=1e-13, cg_max_iters=200, key=key)
    state = tx.init(params)
    g = jax.grad(obj_fn)(params)

    @jax.jit
    def step(g, state, params):
        return tx.update(g, state, params, obj_fn=obj_fn, logits_fn=logits_fn)

    u, new_state = step(g, state, params)
    if curvature == "hessian":
        from jax.flatten_util import ravel_pytree

        flat, unravel = ravel_pytree(params)
        curv = np.asarray(jax.hessian(lambda v: obj_fn(unravel(v)))(flat))
    elif curvature == "ggn":
        curv = _dense_ggn(logits_fn, params)
    else:
        # The transform draws its labels with the second half of split(state.key).
        sub = jax.random.split(key)[1]
        model_fn = lambda p, _: logits_fn(p)  # noqa: E731
        fisher = gl.curvature.fisher(model_fn, params, (jnp.zeros(6), None), key=sub)
        curv = np.asarray(gl.curvature.dense(fisher, params))
    assert int(new_state.num_trials) == 1, "the first trial must be accepted for this check"
    np.testing.assert_allclose(_flat(u), _dense_step(curv, g, 0.5), rtol=1e-9, atol=1e-12)
    assert float(new_state.gamma) == 1.0  # accepted: gamma doubles
    assert int(new_state.num_skipped) == 0


def test_rejected_trials_halve_gamma_and_grn_converges(x64):
    params, obj_fn, _ = _softmax_regression(seed=2)
    opt = grn(gamma0=1e4, cg_tol=1e-12, cg_max_iters=100)  # a huge gamma: tiny lambda first

    @jax.jit
    def step(params, state):
        u, state = opt.update(jax.grad(obj_fn)(params), state, params, obj_fn=obj_fn)
        return jax.tree.map(lambda a, b: a + b, params, u), state

    state = opt.init(params)
    gn0 = np.linalg.norm(_flat(jax.grad(obj_fn)(params)))
    values = [float(obj_fn(params))]
    for i in range(12):
        params, state = step(params, state)
        values.append(float(obj_fn(params)))
        if i == 0:  # 8 rejections (gamma halved 8 times), then accepted (doubled)
            assert int(state[0].num_trials) == 9
            assert float(state[0].gamma) == 1e4 / 2**8 * 2
    assert int(state[0].num_skipped) == 0
    assert np.all(np.diff(values) <= 1e-15)  # every accepted step descends
    # Linear rate (the paper's global rate for this class): 12 steps shrink ||g|| by 1e-4.
    assert np.linalg.norm(_flat(jax.grad(obj_fn)(params))) < 1e-4 * gn0


def test_failed_solves_and_nan_skip_the_update():
    a = jnp.logspace(0, 6, 20)
    f = lambda x: 0.5 * jnp.sum(a * x**2)  # noqa: E731
    x = jnp.ones(20)
    # One CG iteration can never reach tol 1e-6 on this spectrum: every trial is rejected.
    tx = scale_by_grn(gamma0=1e6, cg_tol=1e-6, cg_max_iters=1, max_search=3)
    u, state = tx.update(jax.grad(f)(x), tx.init(x), x, obj_fn=f)
    assert bool(jnp.all(u == 0.0)) and int(state.num_skipped) == 1
    assert float(state.gamma) == 5e5 and int(state.num_trials) == 3
    nan_f = lambda x: jnp.sum(x) * jnp.nan  # noqa: E731
    tx = scale_by_grn(max_search=2)
    u, state = tx.update(jnp.ones(3), tx.init(jnp.ones(3)), jnp.ones(3), obj_fn=nan_f)
    assert bool(jnp.all(u == 0.0)) and int(state.num_skipped) == 1
    assert bool(jnp.isfinite(state.gamma))


def test_bad_input():
    with pytest.raises(ValueError, match="curvature"):
        scale_by_grn(curvature="bfgs")
    with pytest.raises(ValueError, match="key"):
        scale_by_grn(curvature="fisher")
    with pytest.raises(ValueError, match="max_search"):
        scale_by_grn(max_search=0)
    with pytest.raises(ValueError, match="gamma0"):
        scale_by_grn(gamma0=-1.0)
    with pytest.raises(ValueError, match="cg_tol"):
        grn(cg_tol=0.0)
    tx = scale_by_grn(curvature="ggn")
    x = jnp.ones(2)
    with pytest.raises(ValueError, match="obj_fn"):
        tx.update(x, tx.init(x), x)
    with pytest.raises(ValueError, match="logits_fn"):
        tx.update(x, tx.init(x), x, obj_fn=jnp.sum)
