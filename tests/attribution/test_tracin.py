"""TracIn: one checkpoint equals lr * Gram of per-example gradients; projected within JL."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from tests.attribution._models import cross_entropy, data, mlp_params


def _flat(grads):
    return jnp.concatenate([g.reshape(g.shape[0], -1) for g in jax.tree.leaves(grads)], axis=1)


@pytest.fixture
def problem(x64):
    params = mlp_params(jax.random.key(8))
    train = data(jax.random.key(9))
    test = data(jax.random.key(10))
    g_train = _flat(gl.attribution.per_example_grads(cross_entropy, params, train))
    g_test = _flat(gl.attribution.per_example_grads(cross_entropy, params, test))
    return params, train, test, g_train, g_test


def _stack(*trees):
    return jax.tree.map(lambda *p: jnp.stack(p), *trees)


def test_one_checkpoint_is_lr_times_gram(problem):
    params, train, test, g_train, g_test = problem
    got = gl.attribution.tracin(
        cross_entropy, _stack(params), train, test, learning_rates=0.3, chunk_size=4
    )
    np.testing.assert_allclose(got, 0.3 * g_test @ g_train.T, rtol=1e-12, atol=1e-15)


def test_checkpoints_sum(problem):
    params, train, test, g_train, g_test = problem
    other = jax.tree.map(lambda p: 0.5 * p, params)
    h_train = _flat(gl.attribution.per_example_grads(cross_entropy, other, train))
    h_test = _flat(gl.attribution.per_example_grads(cross_entropy, other, test))
    got = gl.attribution.tracin(
        cross_entropy, _stack(params, other), train, test, learning_rates=jnp.array([0.1, 0.2])
    )
    want = 0.1 * g_test @ g_train.T + 0.2 * h_test @ h_train.T
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def _jl_epsilon(dim, num_pairs, delta=1e-6):
    """Smallest eps with num_pairs * 4 exp(-dim (eps^2/2 - eps^3/3) / 2) <= delta (Achlioptas)."""
    eps = np.linspace(1e-3, 1.0, 100_000)
    ok = num_pairs * 4 * np.exp(-dim * (eps**2 / 2 - eps**3 / 3) / 2) <= delta
    return eps[np.argmax(ok)]


def test_projected_within_johnson_lindenstrauss_bound(problem):
    # JL (Achlioptas 2003) + polarisation: for a Rademacher projection to dim k, each pair obeys
    # |<Ru, Rv> - <u, v>| <= eps ||u|| ||v|| with probability >= 1 - 4 exp(-k (eps^2/2 - eps^3/3)/2);
    # eps is chosen so that the union over all pairs fails with probability <= 1e-6.
    params, train, test, g_train, g_test = problem
    dim, lr = 256, 0.3
    exact = lr * g_test @ g_train.T
    got = gl.attribution.tracin(
        cross_entropy,
        _stack(params),
        train,
        test,
        learning_rates=lr,
        projection_dim=dim,
        key=jax.random.key(0),
        chunk_size=4,
    )
    eps = _jl_epsilon(dim, exact.size)
    bound = eps * lr * np.outer(np.linalg.norm(g_test, axis=1), np.linalg.norm(g_train, axis=1))
    assert np.all(np.abs(got - exact) <= bound), (np.max(np.abs(got - exact) / bound), eps)
    assert not np.allclose(got, exact)  # it is a projection, not the exact product


def test_bad_input(problem):
    params, train, test, *_ = problem
    stacked = _stack(params)
    with pytest.raises(ValueError, match="projection_dim=0"):
        gl.attribution.tracin(
            cross_entropy,
            stacked,
            train,
            test,
            learning_rates=0.1,
            projection_dim=0,
            key=jax.random.key(0),
        )
    with pytest.raises(ValueError, match="key=None"):
        gl.attribution.tracin(
            cross_entropy, stacked, train, test, learning_rates=0.1, projection_dim=4
        )
    with pytest.raises(ValueError, match="learning_rates"):
        gl.attribution.tracin(cross_entropy, stacked, train, test, learning_rates=jnp.ones(3))
    with pytest.raises(ValueError, match="leading"):
        gl.attribution.tracin(
            cross_entropy, stacked, (train[0], train[1][:2]), test, learning_rates=0.1
        )
    with pytest.raises(ValueError, match="stack"):
        gl.attribution.tracin(cross_entropy, params, train, test, learning_rates=0.1)
