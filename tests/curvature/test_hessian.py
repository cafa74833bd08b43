"""hessian() against jax.hessian on raveled params, plus operator identities."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.flatten_util import ravel_pytree

import gradlab as gl
from tests.curvature._problems import ce_loss_fn, dense_hessian, make_problem, rel_err


@pytest.mark.parametrize(("kind", "linearize"), [("mlp", False), ("mlp", True), ("cnn", False)])
def test_hessian_matches_dense(x64, key, kind, linearize):
    pb = make_problem(kind, key)
    loss_fn, batch = ce_loss_fn(pb), (pb.inputs, pb.labels)
    hvp = gl.curvature.hessian(loss_fn, pb.params, batch, linearize=linearize)
    got = gl.curvature.dense(hvp, pb.params, chunk_size=64)
    want = dense_hessian(loss_fn, pb.params, batch)
    assert rel_err(got, want) < 1e-10


def test_hessian_single_product_and_structure(x64, key):
    pb = make_problem("mlp", key)
    loss_fn, batch = ce_loss_fn(pb), (pb.inputs, pb.labels)
    v = gl._src.tree.tree_random_like(jax.random.key(1), pb.params, "normal")
    hv = gl.curvature.hessian(loss_fn, pb.params, batch)(v)
    assert jax.tree_util.tree_structure(hv) == jax.tree_util.tree_structure(pb.params)
    flat_v, _ = ravel_pytree(v)
    flat_hv, _ = ravel_pytree(hv)
    want = dense_hessian(loss_fn, pb.params, batch) @ flat_v
    assert rel_err(flat_hv, want) < 1e-10


def test_linearize_and_jvp_agree_under_jit(x64, key):
    pb = make_problem("mlp", key)
    loss_fn = ce_loss_fn(pb)
    v = gl._src.tree.tree_random_like(jax.random.key(2), pb.params, "normal")

    @jax.jit
    def both(params, batch, v):
        a = gl.curvature.hessian(loss_fn, params, batch)(v)
        b = gl.curvature.hessian(loss_fn, params, batch, linearize=True)(v)
        return ravel_pytree(a)[0], ravel_pytree(b)[0]

    a, b = both(pb.params, (pb.inputs, pb.labels), v)
    assert rel_err(a, b) < 1e-12


def test_hessian_inside_fori_loop(x64, key):
    """The matvec is a pure function of v: usable as a loop body (power iteration here)."""
    pb = make_problem("mlp", key)
    loss_fn, batch = ce_loss_fn(pb), (pb.inputs, pb.labels)
    hvp = gl.curvature.hessian(loss_fn, pb.params, batch, linearize=True)
    v0 = gl._src.tree.tree_random_like(jax.random.key(3), pb.params, "normal")

    def body(_, v):
        w = hvp(v)
        return jax.tree_util.tree_map(lambda a: a / gl._src.tree.tree_norm(w), w)

    v = jax.jit(lambda v0: jax.lax.fori_loop(0, 3, body, v0))(v0)
    flat_h = dense_hessian(loss_fn, pb.params, batch)
    x = ravel_pytree(v0)[0]
    for _ in range(3):
        x = flat_h @ x
        x = x / jnp.linalg.norm(x)
    assert rel_err(ravel_pytree(v)[0], x) < 1e-10


@pytest.mark.parametrize("operator", ["hessian", "ggn", "empirical_fisher"])
def test_eager_products_compile_once(x64, operator):
    """An operator's eager products are one compiled program, reused: the second product does
    not run the loss in Python (op by op, every product would)."""
    prob = make_problem("mlp", jax.random.key(0))
    base = ce_loss_fn(prob)
    calls = [0]

    def loss_fn(params, batch):
        calls[0] += 1
        return base(params, batch)

    def model_fn(params, x):
        calls[0] += 1
        return prob.model_fn(params, x)

    build = {
        "hessian": lambda: gl.curvature.hessian(loss_fn, prob.params, (prob.inputs, prob.labels)),
        "ggn": lambda: gl.curvature.ggn(
            model_fn, "softmax_cross_entropy", prob.params, (prob.inputs, prob.labels)
        ),
        "empirical_fisher": lambda: gl.curvature.empirical_fisher(
            loss_fn, prob.params, (prob.inputs, prob.labels)
        ),
    }[operator]
    matvec = build()
    v = jax.tree_util.tree_map(jnp.ones_like, prob.params)
    first = matvec(v)
    before = calls[0]
    again = matvec(v)
    assert calls[0] == before
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(first), strict=True):
        assert bool(jnp.array_equal(a, b))


def test_operators_do_not_outlive_their_use(x64):
    """The compiled products are kept with the operator: dropping it frees what its loss
    closes over (a global cache of programs would keep every operator's closure alive)."""
    import gc
    import weakref

    prob = make_problem("mlp", jax.random.key(0))
    base = ce_loss_fn(prob)

    class Scale:  # a weak-referenceable object the loss closes over
        value = 1.0

    def make_loss(scale):
        return lambda params, batch: scale.value * base(params, batch)

    scale = Scale()
    matvec = gl.curvature.hessian(make_loss(scale), prob.params, (prob.inputs, prob.labels))
    matvec(jax.tree_util.tree_map(jnp.ones_like, prob.params))
    alive = weakref.ref(scale)
    del matvec, scale
    gc.collect()
    assert alive() is None
