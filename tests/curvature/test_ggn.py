"""ggn() against J^T H_L J built from jax.jacrev / jax.hessian on raveled params."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import gradlab as gl
from tests.curvature._problems import dense_ggn, dense_hessian, make_problem, rel_err


def _plain_ce(logits, labels):
    """Same value as softmax_cross_entropy but without a closed form: autodiff fallback."""
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


def _plain_mse(outputs, targets):
    return 0.5 * jnp.mean(jnp.sum((outputs - targets) ** 2, axis=-1))


def _cubic_loss(outputs, targets):
    """A loss with a non-constant, non-PSD output Hessian (autodiff fallback)."""
    return jnp.mean(jnp.sum((outputs - targets) ** 3 + jnp.sin(outputs) * targets, axis=-1))


_ALL_LOSSES = [
    (gl.curvature.softmax_cross_entropy, "labels"),
    ("softmax_cross_entropy", "labels"),
    (_plain_ce, "labels"),
    (gl.curvature.mse, "targets"),
    ("mse", "targets"),
    (_plain_mse, "targets"),
    (_cubic_loss, "targets"),
]
_CNN_LOSSES = [_ALL_LOSSES[0], _ALL_LOSSES[3], _ALL_LOSSES[6]]


@pytest.mark.parametrize(
    ("kind", "loss", "target_kind"),
    [("mlp", *c) for c in _ALL_LOSSES] + [("cnn", *c) for c in _CNN_LOSSES],
)
def test_ggn_matches_dense(x64, key, kind, loss, target_kind):
    pb = make_problem(kind, key)
    targets = pb.labels if target_kind == "labels" else pb.targets
    gv = gl.curvature.ggn(pb.model_fn, loss, pb.params, (pb.inputs, targets))
    got = gl.curvature.dense(gv, pb.params)
    loss_callable = (
        {"softmax_cross_entropy": gl.curvature.softmax_cross_entropy, "mse": gl.curvature.mse}.get(
            loss, loss
        )
        if isinstance(loss, str)
        else loss
    )
    want = dense_ggn(pb.model_fn, loss_callable, pb.params, pb.inputs, targets)
    assert rel_err(got, want) < 1e-10


def test_ce_soft_targets_closed_form(x64, key):
    """Probability targets (not summing to one) use the scaled closed form exactly."""
    pb = make_problem("mlp", key)
    soft = jax.random.uniform(jax.random.key(5), (pb.inputs.shape[0], 4), jnp.float64)
    gv = gl.curvature.ggn(
        pb.model_fn, gl.curvature.softmax_cross_entropy, pb.params, (pb.inputs, soft)
    )
    want = dense_ggn(pb.model_fn, gl.curvature.softmax_cross_entropy, pb.params, pb.inputs, soft)
    assert rel_err(gl.curvature.dense(gv, pb.params), want) < 1e-10


def test_ggn_equals_hessian_for_linear_model_mse(x64, key):
    k1, k2, k3 = jax.random.split(key, 3)
    params = {"w": jax.random.normal(k1, (4, 3), jnp.float64), "b": jnp.zeros(3, jnp.float64)}
    x = jax.random.normal(k2, (7, 4), jnp.float64)
    y = jax.random.normal(k3, (7, 3), jnp.float64)

    def model_fn(p, x):
        return x @ p["w"] + p["b"]

    gv = gl.curvature.ggn(model_fn, gl.curvature.mse, params, (x, y))

    def loss_fn(p, batch):
        return gl.curvature.mse(model_fn(p, batch[0]), batch[1])

    want = dense_hessian(loss_fn, params, (x, y))
    assert rel_err(gl.curvature.dense(gv, params), want) < 1e-12


def test_ggn_is_psd_for_ce(x64, key):
    pb = make_problem("cnn", key)
    gv = gl.curvature.ggn(pb.model_fn, "softmax_cross_entropy", pb.params, (pb.inputs, pb.labels))
    eigs = jnp.linalg.eigvalsh(gl.curvature.dense(gv, pb.params))
    assert eigs.min() > -1e-12 * eigs.max()
