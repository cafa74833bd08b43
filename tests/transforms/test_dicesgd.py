"""Numerics of DiceSGD (clipped error feedback over per-example gradients)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gradlab.transforms import dicesgd, scale_by_dicesgd


def _clip(v, c):
    n = np.linalg.norm(v)
    return v * min(1.0, c / n) if n > 0 else v


def test_zero_noise_huge_clip_is_plain_mean(x64, key):
    tx = scale_by_dicesgd(clip_norm=1e9, error_clip_norm=1e9, noise_multiplier=0.0, key=key)
    params = {"a": jnp.zeros((2, 3)), "b": jnp.zeros(4)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    for step in range(3):
        per_ex = jax.tree.map(
            lambda p, i=step: jax.random.normal(jax.random.fold_in(key, i), (5, *p.shape), p.dtype),
            params,
        )
        mean = jax.tree.map(lambda g: g.mean(0), per_ex)
        u, state = update(mean, state, params, per_example_grads=per_ex)
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(mean)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        for e in jax.tree.leaves(state.error):
            np.testing.assert_allclose(e, 0.0, atol=1e-12)


def test_two_steps_against_hand_computation(x64, key):
    c1, c2 = 1.0, 1.5
    tx = scale_by_dicesgd(clip_norm=c1, error_clip_norm=c2, noise_multiplier=0.0, key=key)
    params = jnp.zeros(2)
    state = tx.init(params)
    rng = np.random.default_rng(0)
    e = np.zeros(2)
    for _ in range(3):
        g = rng.normal(size=(4, 2)) * 3.0
        v = np.mean([_clip(gi, c1) for gi in g], axis=0) + _clip(e, c2)
        e = e + g.mean(0) - v
        u, state = tx.update(
            jnp.asarray(g.mean(0)), state, params, per_example_grads=jnp.asarray(g)
        )
        np.testing.assert_allclose(u, v, rtol=1e-12)
        np.testing.assert_allclose(state.error, e, rtol=1e-12, atol=1e-14)


def test_noise_standard_deviation(key):
    # Zero gradients: the update is pure noise with std noise_multiplier * clip_norm / B.
    mult, c1, batch, dim = 2.0, 0.5, 4, 20_000
    tx = scale_by_dicesgd(clip_norm=c1, error_clip_norm=1.0, noise_multiplier=mult, key=key)
    params = jnp.zeros(dim)
    u, _ = tx.update(params, tx.init(params), params, per_example_grads=jnp.zeros((batch, dim)))
    truth = mult * c1 / batch
    est = float(jnp.std(u))
    sem = truth / np.sqrt(2 * dim)
    assert abs(est - truth) < 5 * sem
    assert abs(float(jnp.mean(u))) < 5 * truth / np.sqrt(dim)


def _run(opt, data, steps):
    def loss(theta, x):
        return 0.5 * (theta - x) ** 2

    per_ex_grad = jax.vmap(jax.grad(loss), (None, 0))

    def step(carry, _):
        theta, state = carry
        g = per_ex_grad(theta, data)
        u, state = opt.update(g.mean(0), state, theta, per_example_grads=g)
        return (optax.apply_updates(theta, u), state), None

    theta = jnp.zeros(())
    (theta, _), _ = jax.lax.scan(step, (theta, opt.init(theta)), None, length=steps)
    return theta


def test_error_feedback_removes_clipping_bias(x64, key):
    # Mean estimation with one outlier: clipped DP-SGD stops at a biased fixed point (1/3),
    # the clipped error feedback of DiceSGD drives the iterate to the true mean 2.5.
    data = jnp.array([0.0, 0.0, 0.0, 10.0])
    dice = dicesgd(0.1, clip_norm=1.0, error_clip_norm=2.0, noise_multiplier=0.0, key=key)
    clipped_sgd = optax.chain(
        optax.contrib.differentially_private_aggregate(1.0, 0.0, key), optax.sgd(0.1)
    )

    def clipped_update(g, state, theta, per_example_grads):
        return clipped_sgd.update(per_example_grads, state, theta)

    class _Wrap:
        init = clipped_sgd.init
        update = staticmethod(clipped_update)

    assert abs(float(_run(_Wrap, data, 3000)) - 1.0 / 3.0) < 1e-6
    assert abs(float(_run(dice, data, 3000)) - 2.5) < 1e-6


def test_bad_input(key):
    with pytest.raises(ValueError, match="clip_norm"):
        scale_by_dicesgd(clip_norm=-1.0, noise_multiplier=0.0, key=key)
    with pytest.raises(ValueError, match="error_clip_norm"):
        scale_by_dicesgd(error_clip_norm=0.0, noise_multiplier=0.0, key=key)
    with pytest.raises(ValueError, match="noise_multiplier"):
        scale_by_dicesgd(noise_multiplier=-0.1, key=key)
    with pytest.raises(ValueError, match="'key'"):
        scale_by_dicesgd(noise_multiplier=1.0)
    with pytest.raises(ValueError, match="learning_rate"):
        dicesgd(-0.1, noise_multiplier=1.0, key=key)
    tx = scale_by_dicesgd(noise_multiplier=1.0, key=key)
    params = {"a": jnp.zeros(3), "b": jnp.zeros(2)}
    state = tx.init(params)
    with pytest.raises(ValueError, match="per_example_grads"):
        tx.update(params, state, params)
    with pytest.raises(ValueError, match="leading"):
        tx.update(
            params,
            state,
            params,
            per_example_grads={"a": jnp.zeros((4, 3)), "b": jnp.zeros((5, 2))},
        )
    with pytest.raises(ValueError, match="does not match"):
        tx.update(
            params,
            state,
            params,
            per_example_grads={"a": jnp.zeros((4, 2)), "b": jnp.zeros((4, 2))},
        )
