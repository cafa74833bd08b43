"""The K-FAC optimizer: it applies gradlab.curvature.kfac's damped inverse, refreshed on time."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradlab as gl

CE = "softmax_cross_entropy"


def _problem():
    params, apply_fn = gl.models.init_mlp(jax.random.key(0), (3, 5, 3))
    x = jax.random.normal(jax.random.key(1), (8, 3))
    y = jax.random.randint(jax.random.key(2), (8,), 0, 3)
    return params, apply_fn, (x, y)


def test_first_step_is_the_curvature_inverse_and_refresh_follows_the_interval():
    params, apply_fn, batch = _problem()

    def loss(p):
        return gl.curvature.softmax_cross_entropy(apply_fn(p, batch[0]), batch[1])

    tx = gl.transforms.scale_by_kfac(
        apply_fn,
        CE,
        damping=0.1,
        decay=0.5,
        update_interval=3,
        fisher_type="type2",
        key=jax.random.key(3),
    )
    step = jax.jit(lambda p, s: tx.update(jax.grad(loss)(p), s, p, batch=batch))
    state = tx.init(params)
    u, state = step(params, state)
    want = gl.curvature.kfac(apply_fn, CE, params, batch).inverse(0.1)(jax.grad(loss)(params))
    for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
    # steps 2 and 3 move the factor EMAs but keep the eigenbasis; step 4 (count 3) refreshes
    scales = [state.scales]
    p = params
    for _ in range(3):
        p = optax.apply_updates(p, jax.tree.map(lambda x: -0.1 * x, u))
        u, state = step(p, state)
        scales.append(state.scales)
    same = [
        all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), s, scales[0])))
        for s in scales
    ]
    assert same == [True, True, True, False]
    assert int(state.count) == 4


def test_bad_options_and_missing_batch():
    params, apply_fn, batch = _problem()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"damping=-1.0 is out of range"):
        gl.transforms.kfac(0.1, apply_fn, CE, damping=-1.0, key=key)
    with pytest.raises(ValueError, match=r"decay=1.0 is out of range"):
        gl.transforms.scale_by_kfac(apply_fn, CE, decay=1.0, key=key)
    with pytest.raises(ValueError, match=r"update_interval=0 is out of range"):
        gl.transforms.scale_by_kfac(apply_fn, CE, update_interval=0, key=key)
    with pytest.raises(ValueError, match=r"fisher_type='exact'"):
        gl.transforms.scale_by_kfac(apply_fn, CE, fisher_type="exact", key=key)
    with pytest.raises(ValueError, match=r"'key'"):
        gl.transforms.scale_by_kfac(apply_fn, CE, key=None)
    tx = gl.transforms.scale_by_kfac(apply_fn, CE, key=key)
    grads = jax.tree.map(jnp.ones_like, params)
    with pytest.raises(ValueError, match=r"batch"):
        tx.update(grads, tx.init(params), params)
