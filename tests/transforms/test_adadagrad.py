"""Numerics of AdAdaGrad: AdaGrad(-Norm) scaling and the adaptive batch-size tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gradlab.transforms import (
    adadagrad,
    adaptive_batch_training,
    batch_size_tests,
    scale_by_adadagrad,
)


def _per_example(a, b):
    # Mean (2, 0); deviations (+-a, +-b): sample variances 4a^2/3 and 4b^2/3 (ddof=1).
    d = jnp.array([[a, b], [-a, b], [a, -b], [-a, -b]])
    return jnp.array([2.0, 0.0]) + d


def test_statistics_against_closed_form(x64):
    a, b, c = 0.3, 0.6, 0.1
    stats = batch_size_tests(_per_example(a, b), eta=c, theta=c, nu=c)
    # norm: (4(a^2+b^2)/3) / (c^2 * 4); inner product: Var(2 d_x) / (c^2 * 16) = a^2/(3c^2);
    # orthogonality: Var(d_y) / (c^2 * 4) = b^2/(3c^2).
    np.testing.assert_allclose(stats["norm"], (a**2 + b**2) / (3 * c**2), rtol=1e-12)
    np.testing.assert_allclose(stats["inner_product"], a**2 / (3 * c**2), rtol=1e-12)
    np.testing.assert_allclose(stats["orthogonality"], b**2 / (3 * c**2), rtol=1e-12)
    np.testing.assert_allclose(stats["augmented"], b**2 / (3 * c**2), rtol=1e-12)
    np.testing.assert_allclose(stats["grad_norm_sq"], 4.0, rtol=1e-12)


@pytest.mark.parametrize(
    ("test", "cap", "expected"),
    [("norm", 64, 14), ("inner_product", 64, 4), ("augmented", 64, 11), ("norm", 10, 10)],
)
def test_batch_decision(test, cap, expected):
    # With a = 0.3, b = 0.55 and constants 0.1 the tests ask for 13.08 (norm), 3 (inner
    # product) and 10.08 (orthogonality) examples.
    tx = scale_by_adadagrad(batch_size=4, max_batch_size=cap, test=test)
    params = jnp.zeros(2)
    state = tx.init(params)
    g = _per_example(0.3, 0.55)
    _, state = tx.update(g.mean(0), state, per_example_grads=g)
    assert int(state.batch_size) == expected
    # A later, less noisy micro-batch never shrinks the batch.
    g = _per_example(0.01, 0.01)
    _, state = tx.update(g.mean(0), state, per_example_grads=g)
    assert int(state.batch_size) == expected


def test_zero_mean_gradient_asks_for_the_cap():
    tx = scale_by_adadagrad(batch_size=2, max_batch_size=50)
    g = jnp.array([[1.0, -1.0], [-1.0, 1.0]])
    _, state = tx.update(jnp.zeros(2), tx.init(jnp.zeros(2)), per_example_grads=g)
    assert int(state.batch_size) == 50 and bool(jnp.isinf(state.statistic))


def test_adagrad_scaling_equals_optax(key):
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    ours, ref = adadagrad(0.3, batch_size=2, max_batch_size=8), optax.adagrad(0.3)
    s1, s2 = ours.init(params), ref.init(params)
    for i in range(4):
        g = jax.tree.map(
            lambda p, i=i: jax.random.normal(jax.random.fold_in(key, i), (3, *p.shape)), params
        )
        mean = jax.tree.map(lambda x: x.mean(0), g)
        u1, s1 = ours.update(mean, s1, params, per_example_grads=g)
        u2, s2 = ref.update(mean, s2, params)
        for x, y in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
            np.testing.assert_array_equal(x, y)


def test_adagrad_norm_by_hand(x64):
    tx = scale_by_adadagrad(
        batch_size=2,
        max_batch_size=8,
        variant="adagrad_norm",
        initial_accumulator_value=1.0,
        eps=0.0,
    )
    state = tx.init(jnp.zeros(2))
    acc = 1.0
    for g in ([3.0, 4.0], [1.0, 0.0]):
        g = jnp.asarray(g)
        per_ex = jnp.stack([g - 0.1, g + 0.1])
        u, state = tx.update(g, state, per_example_grads=per_ex)
        acc += float(g @ g)
        np.testing.assert_allclose(u, g / np.sqrt(acc), rtol=1e-12)
    np.testing.assert_allclose(state.sum_of_squares, acc, rtol=1e-6)


def test_training_loop_grows_batch_monotonically():
    kx, kn = jax.random.split(jax.random.key(3))
    x = jax.random.normal(kx, (512, 4))
    y = x @ jnp.array([1.0, -2.0, 0.5, 0.0]) + 0.5 * jax.random.normal(kn, (512,))

    def loss(w, batch):
        return 0.5 * jnp.mean((batch[0] @ w - batch[1]) ** 2)

    # Few steps with a strict test: every distinct batch size compiles the step once.
    opt = adadagrad(1.0, batch_size=4, max_batch_size=512, eta=0.2)
    run = adaptive_batch_training(
        loss, jnp.zeros(4), (x, y), optimizer=opt, key=jax.random.key(0), num_steps=5
    )
    sizes = np.asarray(run.batch_sizes)
    assert sizes[0] == 4 and np.all(np.diff(sizes) >= 0) and np.all(sizes <= 512)
    # Near the optimum the gradient noise dominates, so the tests ask for larger batches.
    assert sizes[-1] > 4 * sizes[0]
    assert float(loss(run.params, (x, y))) < 0.5 * float(loss(jnp.zeros(4), (x, y)))


def test_bad_input():
    with pytest.raises(ValueError, match="max_batch_size"):
        scale_by_adadagrad(batch_size=8, max_batch_size=4)
    with pytest.raises(ValueError, match="test"):
        scale_by_adadagrad(batch_size=1, max_batch_size=4, test="variance")
    with pytest.raises(ValueError, match="variant"):
        scale_by_adadagrad(batch_size=1, max_batch_size=4, variant="adam")
    with pytest.raises(ValueError, match="eta"):
        scale_by_adadagrad(batch_size=1, max_batch_size=4, eta=0.0)
    with pytest.raises(ValueError, match="initial_accumulator_value"):
        scale_by_adadagrad(batch_size=1, max_batch_size=4, initial_accumulator_value=-1.0)
    tx = scale_by_adadagrad(batch_size=1, max_batch_size=4)
    state = tx.init(jnp.zeros(2))
    with pytest.raises(ValueError, match="per_example_grads"):
        tx.update(jnp.zeros(2), state)
    with pytest.raises(ValueError, match="at least 2"):
        tx.update(jnp.zeros(2), state, per_example_grads=jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="does not match"):
        tx.update(jnp.zeros(2), state, per_example_grads=jnp.zeros((3, 3)))
