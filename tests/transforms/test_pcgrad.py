"""Numerics of PCGrad against hand projections and a direct implementation of Algorithm 1."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradlab.transforms import pcgrad, scale_by_pcgrad


def test_two_conflicting_gradients_by_hand(key):
    tx = scale_by_pcgrad(reduction="sum", key=key)
    g = jnp.array([[2.0, 0.0], [-1.0, 1.0]])
    u, _ = tx.update(jnp.zeros(2), tx.init(jnp.zeros(2)), per_task_grads=g)
    # g1 . g2 = -2: g1 - (-2 / 2) g2 = (1, 1); g2 - (-2 / 4) g1 = (0, 1).
    np.testing.assert_allclose(u, [1.0, 2.0], rtol=1e-6)
    # The projected gradients are orthogonal to the gradient they conflicted with.
    np.testing.assert_allclose(np.dot([1.0, 1.0], [-1.0, 1.0]), 0.0)
    tx_mean = scale_by_pcgrad(reduction="mean", key=key)
    u_mean, _ = tx_mean.update(jnp.zeros(2), tx_mean.init(jnp.zeros(2)), per_task_grads=g)
    np.testing.assert_allclose(u_mean, [0.5, 1.0], rtol=1e-6)


def test_no_conflict_is_plain_sum(key):
    params = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(3)}
    per_task = {"w": jnp.abs(jax.random.normal(key, (3, 2, 2))), "b": jnp.ones((3, 3))}
    tx = scale_by_pcgrad(reduction="sum", key=key)
    u, state = tx.update(params, tx.init(params), per_task_grads=per_task)
    for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(per_task)):
        np.testing.assert_allclose(a, b.sum(0), rtol=1e-6)
    assert int(state.count) == 1


def _algorithm1(g, orders):
    out = []
    for i, order in enumerate(orders):
        gi = g[i].copy()
        for j in order:
            if j == i:
                continue
            dot = gi @ g[j]
            if dot < 0:
                gi = gi - dot / (g[j] @ g[j]) * g[j]
        out.append(gi)
    return np.sum(out, axis=0)


def test_three_tasks_match_algorithm_1_for_some_order(x64, key):
    rng = np.random.default_rng(1)
    g = rng.normal(size=(3, 5))
    g[1] = -0.8 * g[0] + 0.3 * g[1]  # make sure there are conflicts
    others = [[j for j in range(3) if j != i] for i in range(3)]
    candidates = [
        _algorithm1(g, orders)
        for orders in itertools.product(*[list(itertools.permutations(o)) for o in others])
    ]
    tx = scale_by_pcgrad(reduction="sum", key=key)
    state = tx.init(jnp.zeros(5))
    seen = set()
    for _ in range(12):
        u, state = tx.update(jnp.zeros(5), state, per_task_grads=jnp.asarray(g))
        dists = [np.max(np.abs(np.asarray(u) - c)) for c in candidates]
        assert min(dists) < 1e-10
        seen.add(int(np.argmin(dists)))
    # Different steps draw different random orders (the orders matter for these gradients).
    assert len({tuple(np.round(candidates[i], 8)) for i in seen}) > 1


def test_pytree_and_alias(key):
    params = {"a": jnp.zeros(2), "b": jnp.zeros(())}
    per_task = {"a": jnp.array([[1.0, 0.0], [-1.0, 1.0]]), "b": jnp.array([0.0, 0.0])}
    opt = pcgrad(0.5, reduction="sum", key=key)
    u, _ = opt.update(params, opt.init(params), params, per_task_grads=per_task)
    np.testing.assert_allclose(u["a"], [-0.25, -0.75], rtol=1e-6)
    np.testing.assert_allclose(u["b"], 0.0)


def test_bad_input(key):
    with pytest.raises(ValueError, match="reduction"):
        scale_by_pcgrad(reduction="max", key=key)
    with pytest.raises(ValueError, match="'key'"):
        scale_by_pcgrad(reduction="sum")
    with pytest.raises(ValueError, match="num_tasks"):
        scale_by_pcgrad(reduction="sum", key=key, num_tasks=0)
    with pytest.raises(ValueError, match="learning_rate"):
        pcgrad(-0.1, reduction="sum", key=key)
    tx = scale_by_pcgrad(reduction="sum", key=key, num_tasks=3)
    state = tx.init(jnp.zeros(2))
    with pytest.raises(ValueError, match="per_task_grads"):
        tx.update(jnp.zeros(2), state)
    with pytest.raises(ValueError, match="num_tasks=3"):
        tx.update(jnp.zeros(2), state, per_task_grads=jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="does not match"):
        tx.update(jnp.zeros(2), state, per_task_grads=jnp.zeros((3, 4)))
