"""Numerics of AdaHessian (Hutchinson diagonal, spatial averaging, skipped NaN estimates)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradlab.transforms import adahessian, scale_by_adahessian


def _separable(a, c):
    """0.5 sum a p^2 + c.p: a diagonal Hessian, so z * (H z) = diag H exactly for z = +-1."""
    return lambda p: 0.5 * jnp.sum(a * p**2) + jnp.sum(c * p)


def test_first_update_is_diagonal_newton_step(x64, key):
    a = jnp.array([2.0, -3.0, 0.5, 10.0])  # a negative entry: |diag H| in the denominator
    c = jnp.array([1.0, -1.0, 0.3, 2.0])
    obj = _separable(a, c)
    lr, eps = 0.3, 1e-4
    opt = adahessian(lr, key=key, b1=0.0, b2=0.0, eps=eps)
    p = jnp.array([0.5, -1.0, 2.0, 0.1])
    g = jax.grad(obj)(p)
    u, state = opt.update(g, opt.init(p), p, obj_fn=obj)
    np.testing.assert_allclose(u, -lr * g / (jnp.abs(a) + eps), rtol=1e-13)
    inner = state[0]
    assert int(inner.hessian_count) == 1 and int(inner.num_skipped) == 0
    np.testing.assert_allclose(inner.nu, a**2, rtol=1e-13)


@pytest.mark.parametrize("spatial_average", [True, False])
def test_spatial_averaging_of_conv_kernels(x64, key, spatial_average):
    rng = np.random.default_rng(0)
    shape = (3, 2, 2, 4)  # flax HWIO kernel
    a_kernel = jnp.asarray(rng.uniform(0.5, 3.0, shape))
    a_bias = jnp.asarray(rng.uniform(0.5, 3.0, (4,)))

    def obj(p):
        return 0.5 * jnp.sum(a_kernel * p["k"] ** 2) + 0.5 * jnp.sum(a_bias * (p["b"] - 1.0) ** 2)

    tx = scale_by_adahessian(key=key, b1=0.0, b2=0.0, eps=0.0, spatial_average=spatial_average)
    p = {"k": jnp.asarray(rng.normal(size=shape)), "b": jnp.zeros(4)}
    g = jax.grad(obj)(p)
    u, _ = tx.update(g, tx.init(p), p, obj_fn=obj)
    diag_k = np.mean(a_kernel, axis=(0, 1), keepdims=True) if spatial_average else a_kernel
    np.testing.assert_allclose(u["k"], g["k"] / np.broadcast_to(diag_k, shape), rtol=1e-12)
    np.testing.assert_allclose(u["b"], g["b"] / a_bias, rtol=1e-12)  # rank 1: never averaged


def test_bias_correction_and_hessian_power_against_hand_computation(x64, key):
    a = jnp.array([1.0, 4.0])
    obj = _separable(a, jnp.zeros(2))
    b1, b2, eps, k = 0.9, 0.99, 1e-3, 0.5
    tx = scale_by_adahessian(key=key, b1=b1, b2=b2, eps=eps, hessian_power=k)
    p = jnp.array([1.0, -2.0])
    state = tx.init(p)
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, obj_fn=obj))
    m = v = np.zeros(2)
    for t in range(1, 4):
        g = jax.grad(obj)(p)
        u, state = update(g, state, p)
        m = b1 * m + (1 - b1) * np.asarray(g)
        v = b2 * v + (1 - b2) * np.asarray(a) ** 2
        expected = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) ** k + eps)
        np.testing.assert_allclose(u, expected, rtol=1e-12)
        p = p - 0.1 * u


def test_nan_estimate_is_skipped_and_counted(x64, key):
    a = jnp.array([1.0, 4.0])
    good = _separable(a, jnp.zeros(2))

    def bad(p):  # finite value, NaN Hessian-vector product
        return good(p) + 0.0 * jnp.sum(jnp.sqrt(p - 10.0))

    tx = scale_by_adahessian(key=key, b1=0.0, b2=0.5, eps=0.0)
    p = jnp.array([1.0, -2.0])
    g = jax.grad(good)(p)
    # Before any finite estimate the update is zero (not NaN).
    u0, s0 = tx.update(g, tx.init(p), p, obj_fn=bad)
    np.testing.assert_array_equal(u0, 0.0)
    assert (int(s0.num_skipped), int(s0.hessian_count)) == (1, 0)
    u1, s1 = tx.update(g, s0, p, obj_fn=good)
    u2, s2 = tx.update(g, s1, p, obj_fn=bad)
    assert (int(s2.num_skipped), int(s2.hessian_count), int(s2.count)) == (2, 1, 3)
    np.testing.assert_array_equal(s2.nu, s1.nu)
    np.testing.assert_allclose(u2, g / jnp.abs(a), rtol=1e-12)
    np.testing.assert_allclose(u1, u2, rtol=1e-12)


def test_update_interval_estimates_every_k_steps(key):
    obj = _separable(jnp.array([1.0, 2.0]), jnp.ones(2))
    tx = scale_by_adahessian(key=key, update_interval=3)
    step = jax.jit(lambda g, s, p: tx.update(g, s, p, obj_fn=obj))
    p = jnp.ones(2)
    state = tx.init(p)
    counts = []
    for _ in range(7):
        _, state = step(jax.grad(obj)(p), state, p)
        counts.append(int(state.hessian_count))
    assert counts == [1, 1, 1, 2, 2, 2, 3]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"update_interval": 0}, "update_interval"),
        ({"eps": -1e-3}, "eps"),
        ({"b2": 1.0}, "b2"),
        ({"hessian_power": 1.5}, "hessian_power"),
    ],
)
def test_bad_input_at_construction(key, kwargs, name):
    with pytest.raises(ValueError, match=name):
        scale_by_adahessian(key=key, **kwargs)


def test_missing_key_and_obj_fn(key):
    with pytest.raises(ValueError, match="key"):
        adahessian(0.1)
    tx = scale_by_adahessian(key=key)
    p = jnp.ones(2)
    with pytest.raises(ValueError, match="obj_fn"):
        tx.update(p, tx.init(p), p)


def test_every_step_estimate_has_no_branch(key):
    """With ``update_interval=1`` the HVP is not inside ``lax.cond``: in the caller's program XLA
    can then merge the HVP's own gradient pass with the caller's gradient (a cond hides it)."""
    obj = lambda p: jnp.sum(jnp.sin(p) ** 2)  # noqa: E731
    p = jnp.ones(3)

    def step(tx):
        return jax.make_jaxpr(lambda q: tx.update(jax.grad(obj)(q), tx.init(q), q, obj_fn=obj))(p)

    assert "cond" not in str(step(scale_by_adahessian(key=key)))
    assert "cond" in str(step(scale_by_adahessian(key=key, update_interval=2)))
