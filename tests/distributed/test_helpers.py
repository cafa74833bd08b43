"""One-device tests of the distributed helpers: meshes, placement, masks and their errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AxisType

import gradlab as gl


def test_make_data_mesh_defaults_and_types():
    mesh = gl.distributed.make_data_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == len(jax.devices())
    assert mesh.axis_types == (AxisType.Explicit,)
    auto = gl.distributed.make_data_mesh(1, axis_name="batch", axis_type="auto")
    assert auto.axis_names == ("batch",) and auto.axis_types == (AxisType.Auto,)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"num_devices": 0}, r"num_devices=0 is out of range"),
        ({"num_devices": 99}, r"num_devices=99 is out of range"),
        ({"axis_type": "manual"}, r"axis_type='manual' is not a valid choice"),
        ({"axis_name": ""}, r"axis_name='' must be a non-empty string"),
    ],
)
def test_make_data_mesh_rejects(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        gl.distributed.make_data_mesh(**kwargs)


def test_shard_batch_places_and_pads():
    mesh = gl.distributed.make_data_mesh(1)
    batch = {"x": jnp.arange(10.0).reshape(5, 2), "y": jnp.arange(5)}
    placed = gl.distributed.shard_batch(batch, mesh)
    assert placed["x"].sharding.spec == jax.P("data")
    assert (placed["x"] == batch["x"]).all()
    masked = gl.distributed.shard_batch(batch, mesh, pad=True)
    assert isinstance(masked, gl.distributed.MaskedBatch) and bool(masked.mask.all())
    leaves, treedef = jax.tree_util.tree_flatten(masked)
    assert isinstance(jax.tree_util.tree_unflatten(treedef, leaves), gl.distributed.MaskedBatch)


def test_shard_batch_rejects_unknown_axis():
    mesh = gl.distributed.make_data_mesh(1)
    with pytest.raises(ValueError, match=r"axis_name='model' is not an axis of the mesh"):
        gl.distributed.shard_batch(jnp.ones((4, 2)), mesh, axis_name="model")


def test_masked_batch_rejects_bad_mask():
    with pytest.raises(ValueError, match=r"mask has shape \(3,\): expected \(4,\)"):
        gl.distributed.MaskedBatch(jnp.ones((4, 2)), jnp.ones(3, bool))
    with pytest.raises(ValueError, match=r"mask has dtype float(32|64): expected bool"):
        gl.distributed.MaskedBatch(jnp.ones((4, 2)), jnp.ones(4))


def _model(params, x):
    return jnp.tanh(x @ params["w"]) @ params["v"]


def _loss(params, batch):
    x, y = batch
    return gl.curvature.softmax_cross_entropy(_model(params, x), y)


def test_masked_batch_is_exact_on_one_device(x64):
    """Padding with copies of other examples and masking them equals the unpadded operator."""
    k = jax.random.split(jax.random.key(0), 4)
    params = {"w": jax.random.normal(k[0], (3, 4)), "v": jax.random.normal(k[1], (4, 3))}
    x, y = jax.random.normal(k[2], (6, 3)), jax.random.randint(k[3], (6,), 0, 3)
    xp, yp = jnp.concatenate([x, x[:3]]), jnp.concatenate([y, y[:3]])
    masked = gl.distributed.MaskedBatch((xp, yp), jnp.arange(9) < 6)
    for build in (
        lambda b: gl.curvature.hessian(_loss, params, b),
        lambda b: gl.curvature.ggn(_model, "softmax_cross_entropy", params, b),
        lambda b: gl.curvature.empirical_fisher(_loss, params, b),
    ):
        want = gl.curvature.dense(build((x, y)), params)
        got = gl.curvature.dense(build(masked), params)
        assert jnp.max(jnp.abs(got - want)) <= 1e-12 * jnp.max(jnp.abs(want))
    u = jax.random.normal(k[0], (9, 3))
    got = gl.ntk.ntk_operator(_model, params, gl.distributed.MaskedBatch(xp, jnp.arange(9) < 6))(u)
    want = gl.ntk.ntk_operator(_model, params, x)(u[:6])
    assert jnp.max(jnp.abs(got[:6] - want)) <= 1e-12 * jnp.max(jnp.abs(want))
    assert not jnp.any(got[6:])
