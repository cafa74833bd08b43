"""Numerics of DOGE's adaptive projective gradient descent (shared-subspace projection)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gradlab.transforms import (
    adaptive_projective_gd,
    merging_coefficients,
    merging_gap_losses,
    scale_by_adaptive_projection,
    shared_subspace,
)


def _task_vectors(key, num=3, shape=(8, 5)):
    # A shared row direction s plus task-specific noise: s must lie in the shared subspace.
    k1, k2, k3 = jax.random.split(key, 3)
    s = jax.random.normal(k1, (shape[0],))
    s = s / jnp.linalg.norm(s)
    coef = jax.random.normal(k2, (num, shape[1])) * 5.0
    noise = 0.1 * jax.random.normal(k3, (num, *shape))
    return {
        "w": s[None, :, None] * coef[:, None, :] + noise,
        "b": jax.random.normal(k3, (num, 5)),
    }, s


def test_shared_subspace_recipe_by_hand(x64, key):
    tv, s = _task_vectors(key)
    basis = shared_subspace(tv, rank_divisor=2)
    assert basis["b"] is None  # vectors are not projected
    u = np.asarray(basis["w"])
    assert u.shape == (8, 2)  # k = min(8, 5) // 2
    np.testing.assert_allclose(u.T @ u, np.eye(2), atol=1e-10)
    # Oracle: the recipe spelled out with numpy.
    left = [np.linalg.svd(np.asarray(m), full_matrices=False)[0][:, :1] for m in tv["w"]]
    ref = np.linalg.svd(np.concatenate(left, axis=1), full_matrices=False)[0][:, :2]
    np.testing.assert_allclose(u @ u.T, ref @ ref.T, atol=1e-10)
    # The direction every task shares is (almost) inside the subspace.
    assert np.linalg.norm(u @ (u.T @ np.asarray(s))) > 0.999


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_update_is_reduced_gradient_minus_its_shared_component(x64, key, reduction):
    tv, _ = _task_vectors(key)
    params = jax.tree.map(lambda x: x[0], tv)
    tx = scale_by_adaptive_projection(tv, reduction=reduction, rank_divisor=2)
    state = tx.init(params)
    g = jax.tree.map(lambda x: jax.random.normal(jax.random.fold_in(key, 1), x.shape), tv)
    out, state = tx.update(params, state, per_task_grads=g)
    u = np.asarray(state.bases["w"])
    red = np.asarray(g["w"]).sum(0) / (3 if reduction == "mean" else 1)
    np.testing.assert_allclose(out["w"], red - u @ (u.T @ red), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(u.T @ np.asarray(out["w"]), 0.0, atol=1e-10)
    np.testing.assert_allclose(
        out["b"], np.asarray(g["b"]).sum(0) / (3 if reduction == "mean" else 1)
    )


def test_gap_losses_by_hand(x64):
    tv = {"w": jnp.array([[[1.0, 2.0], [0.0, 1.0]], [[0.5, 0.0], [1.0, -1.0]]])}
    lam = {"w": jnp.array([0.4, 0.6])}
    delta = {"w": jnp.array([[0.1, -0.2], [0.3, 0.0]])}
    t = np.asarray(tv["w"])
    merged = 0.4 * (t[0] + np.asarray(delta["w"])) + 0.6 * (t[1] + np.asarray(delta["w"]))
    expected = [np.sum(np.sum(t[j] * (t[j] - merged), axis=1) ** 2) for j in range(2)]
    np.testing.assert_allclose(merging_gap_losses(delta, tv, lam), expected, rtol=1e-12)
    lam_auto = merging_coefficients(tv, scale=0.07)
    np.testing.assert_allclose(
        lam_auto["w"], 0.07 / np.linalg.norm(t.reshape(2, -1), axis=1), rtol=1e-12
    )


def test_projected_descent_reduces_gap_and_keeps_delta_off_shared_subspace(x64, key):
    tv, _ = _task_vectors(key)
    lam = merging_coefficients(tv, scale=0.3)
    opt = adaptive_projective_gd(3e-2, tv, reduction="sum", rank_divisor=2)
    delta = jax.tree.map(lambda x: jnp.zeros_like(x[0]), tv)
    state = opt.init(delta)
    basis = np.asarray(state[0].bases["w"])

    @jax.jit
    def step(delta, state):
        g = jax.jacrev(merging_gap_losses)(delta, tv, lam)
        u, state = opt.update(delta, state, per_task_grads=g)
        return optax.apply_updates(delta, u), state

    losses = [float(merging_gap_losses(delta, tv, lam).sum())]
    for _ in range(50):
        delta, state = step(delta, state)
        losses.append(float(merging_gap_losses(delta, tv, lam).sum()))
    assert np.all(np.diff(losses) < 0) and losses[-1] < 0.7 * losses[0]
    np.testing.assert_allclose(basis.T @ np.asarray(delta["w"]), 0.0, atol=1e-10)


def test_bad_input(key):
    tv, _ = _task_vectors(key)
    with pytest.raises(ValueError, match="reduction"):
        scale_by_adaptive_projection(tv, reduction="max")
    with pytest.raises(ValueError, match="rank_divisor"):
        scale_by_adaptive_projection(tv, reduction="sum", rank_divisor=0)
    with pytest.raises(ValueError, match="leading"):
        scale_by_adaptive_projection(
            {"a": jnp.zeros((2, 3)), "b": jnp.zeros((3, 3))}, reduction="sum"
        )
    tx = scale_by_adaptive_projection(tv, reduction="sum")
    with pytest.raises(ValueError, match="does not match"):
        tx.init({"w": jnp.zeros((8, 4)), "b": jnp.zeros(5)})
    params = jax.tree.map(lambda x: x[0], tv)
    state = tx.init(params)
    with pytest.raises(ValueError, match="per_task_grads"):
        tx.update(params, state)
    with pytest.raises(ValueError, match="task_vectors has 3"):
        tx.update(params, state, per_task_grads=jax.tree.map(lambda x: x[:2], tv))
