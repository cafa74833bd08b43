"""Contract of every operator: linear, symmetric, jit- and vmap-compatible, flax models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.flatten_util import ravel_pytree

import gradlab as gl
from gradlab._src.tree import tree_random_like, tree_vdot


def _gradlab_models_problem(kind):
    """gradlab.models' flax linen MLP / CNN, used through their ``apply``."""
    dtype = jnp.result_type(float)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    if kind == "mlp":
        params, apply_fn = gl.models.init_mlp(k1, (3, 6, 4), dtype=dtype)
        x = jax.random.normal(k2, (5, 3), dtype)
    else:
        params, apply_fn = gl.models.init_cnn(k1, (4, 4, 1), 3, channels=(2,), dtype=dtype)
        x = jax.random.normal(k2, (5, 4, 4, 1), dtype)
    y = jax.random.randint(k3, (5,), 0, apply_fn(params, x).shape[-1])
    return params, apply_fn, (x, y)


def _build(name, params, apply_fn, batch):
    def loss_fn(p, b):
        return gl.curvature.softmax_cross_entropy(apply_fn(p, b[0]), b[1])

    if name == "hessian":
        return gl.curvature.hessian(loss_fn, params, batch)
    if name == "hessian_linearized":
        return gl.curvature.hessian(loss_fn, params, batch, linearize=True)
    if name == "ggn":
        return gl.curvature.ggn(apply_fn, gl.curvature.softmax_cross_entropy, params, batch)
    if name == "fisher":
        return gl.curvature.fisher(apply_fn, params, batch, key=jax.random.key(4), num_samples=2)
    if name == "empirical_fisher":
        return gl.curvature.empirical_fisher(loss_fn, params, batch)
    if name == "over_batches":
        x, y = batch
        stacked = (x[:4].reshape(2, 2, *x.shape[1:]), y[:4].reshape(2, 2))
        return gl.curvature.over_batches(
            lambda b: gl.curvature.ggn(apply_fn, "softmax_cross_entropy", params, b),
            stacked,
            remainder=(x[4:], y[4:]),
        )
    raise ValueError(name)


NAMES = ["hessian", "hessian_linearized", "ggn", "fisher", "empirical_fisher", "over_batches"]


# Every operator on gradlab.models' MLP; on its CNN the operators whose CNN case is not
# already checked against a dense oracle (test_hessian, test_ggn, test_fisher cover the rest).
CASES = [(n, "mlp") for n in NAMES] + [(n, "cnn") for n in ("ggn", "fisher")]


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_linear_symmetric_jit_vmap(x64, name, kind):
    params, apply_fn, batch = _gradlab_models_problem(kind)
    keys = jax.random.split(jax.random.key(1), 3)
    u, v, w = (tree_random_like(k, params, "normal") for k in keys)
    a, b = 0.7, -1.3

    @jax.jit
    def run(params, batch, u, v, w):
        mv = _build(name, params, apply_fn, batch)
        au, av = mv(u), mv(v)
        comb = mv(jax.tree_util.tree_map(lambda s, t: a * s + b * t, u, v))
        stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), u, v, w)
        batched = jax.vmap(mv)(stacked)
        return au, av, comb, batched, mv(w)

    au, av, comb, batched, aw = run(params, batch, u, v, w)
    flat = lambda t: ravel_pytree(t)[0]  # noqa: E731
    scale = jnp.linalg.norm(flat(au)) + jnp.linalg.norm(flat(av))
    # linearity
    lin = flat(jax.tree_util.tree_map(lambda s, t: a * s + b * t, au, av))
    assert jnp.linalg.norm(flat(comb) - lin) < 1e-12 * scale
    # symmetry u.Av == v.Au
    assert abs(tree_vdot(u, av) - tree_vdot(v, au)) < 1e-12 * scale * jnp.linalg.norm(flat(u))
    # vmap over stacked vectors == stacked products
    for i, single in enumerate([au, av, aw]):
        got = flat(jax.tree_util.tree_map(lambda s: s[i], batched))
        assert jnp.linalg.norm(got - flat(single)) <= 1e-12 * jnp.linalg.norm(flat(single))
    # outputs keep the params' structure and dtypes
    assert jax.tree_util.tree_structure(au) == jax.tree_util.tree_structure(params)
    assert all(
        x.dtype == p.dtype and x.shape == p.shape
        for x, p in zip(jax.tree_util.tree_leaves(au), jax.tree_util.tree_leaves(params))
    )


def test_flax_nnx_model_through_split_merge(x64):
    """A flax nnx MLP enters through nnx.split / nnx.merge; hessian matches the dense oracle."""
    from flax import nnx

    from tests.curvature._problems import dense_hessian, rel_err

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(3, 4, rngs=rngs, param_dtype=jnp.float64)
            self.l2 = nnx.Linear(4, 3, rngs=rngs, param_dtype=jnp.float64)

        def __call__(self, x):
            return self.l2(jnp.tanh(self.l1(x)))

    graphdef, params = nnx.split(Net(nnx.Rngs(0)), nnx.Param)

    def apply_fn(p, x):
        return nnx.merge(graphdef, p)(x)

    x = jax.random.normal(jax.random.key(1), (5, 3), jnp.float64)
    y = jnp.array([0, 1, 2, 1, 0])

    def loss_fn(p, b):
        return gl.curvature.softmax_cross_entropy(apply_fn(p, b[0]), b[1])

    hess = gl.curvature.dense(gl.curvature.hessian(loss_fn, params, (x, y)), params)
    assert rel_err(hess, dense_hessian(loss_fn, params, (x, y))) < 1e-10
    v = tree_random_like(jax.random.key(2), params, "normal")
    for mv in (
        gl.curvature.ggn(apply_fn, "softmax_cross_entropy", params, (x, y)),
        gl.curvature.fisher(apply_fn, params, (x, y), key=jax.random.key(3)),
        gl.curvature.empirical_fisher(loss_fn, params, (x, y)),
    ):
        out = jax.jit(mv)(v)
        assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(params)
