"""restrict(): the block operator equals the corresponding block of the dense matrix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from tests.curvature._problems import ce_loss_fn, dense_hessian, make_problem, rel_err


def _selected_indices(params, mask_leaves):
    idx, start = [], 0
    for leaf, m in zip(jax.tree_util.tree_leaves(params), mask_leaves):
        if m:
            idx.extend(range(start, start + leaf.size))
        start += leaf.size
    return np.array(idx)


@pytest.mark.parametrize(
    "select",
    [
        "Dense_1/kernel",
        lambda path: path.startswith("params/Dense_0"),
        {"params": {"Dense_0": {"bias": True, "kernel": False}, "Dense_1": True}},
    ],
    ids=["regex", "predicate", "mask"],
)
def test_block_equals_dense_block(x64, key, select):
    pb = make_problem("mlp", key)
    loss_fn, batch = ce_loss_fn(pb), (pb.inputs, pb.labels)
    hvp = gl.curvature.hessian(loss_fn, pb.params, batch)
    block = gl.curvature.restrict(hvp, pb.params, select)
    paths = gl.curvature.param_paths(pb.params)
    if isinstance(select, str):
        mask = [select in p for p in paths]
    elif callable(select):
        mask = [select(p) for p in paths]
    else:
        mask = jax.tree_util.tree_leaves(
            jax.tree_util.tree_map(
                lambda m, sub: jax.tree_util.tree_map(lambda _: m, sub), select, pb.params
            )
        )
    idx = _selected_indices(pb.params, mask)
    full = dense_hessian(loss_fn, pb.params, batch)
    got = gl.curvature.dense(block.matvec, block.like)
    assert got.shape == (idx.size, idx.size)
    assert rel_err(got, full[np.ix_(idx, idx)]) < 1e-10


def test_embed_extract_roundtrip(key):
    pb = make_problem("cnn", key)
    block = gl.curvature.restrict(lambda v: v, pb.params, "Conv_0/")
    assert gl.curvature.param_paths(block.like) == ["params/Conv_0/bias", "params/Conv_0/kernel"]
    u = jax.tree_util.tree_map(jnp.ones_like, block.like)
    full = block.embed(u)
    assert jax.tree_util.tree_structure(full) == jax.tree_util.tree_structure(pb.params)
    assert float(jnp.sum(full["params"]["Dense_0"]["kernel"] ** 2)) == 0.0
    back = block.extract(full)
    assert all(
        bool(jnp.all(a == b))
        for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(u))
    )


def test_per_layer_block_eigenvalues_interlace(x64, key):
    """Cauchy interlacing: a principal block's extreme eigenvalues lie within the full ones."""
    pb = make_problem("mlp", key)
    gv = gl.curvature.ggn(pb.model_fn, "softmax_cross_entropy", pb.params, (pb.inputs, pb.labels))
    full = jnp.linalg.eigvalsh(gl.curvature.dense(gv, pb.params))
    block = gl.curvature.restrict(gv, pb.params, "Dense_1/kernel")
    part = jnp.linalg.eigvalsh(gl.curvature.dense(block.matvec, block.like))
    tol = 1e-12 * full.max()
    assert part.max() <= full.max() + tol and part.min() >= full.min() - tol


def test_restrict_selecting_nothing_lists_paths(key):
    pb = make_problem("mlp", key)
    with pytest.raises(ValueError, match=r"selects no parameter.*params/Dense_0/bias"):
        gl.curvature.restrict(lambda v: v, pb.params, "Dense_9")


def test_restrict_bad_mask(key):
    pb = make_problem("mlp", key)
    with pytest.raises(TypeError, match="select"):
        gl.curvature.restrict(lambda v: v, pb.params, {"other": True})
    with pytest.raises(TypeError, match="bools"):
        gl.curvature.restrict(lambda v: v, pb.params, {"params": 1})
