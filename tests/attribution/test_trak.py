"""TRAK features and scores against a dense reference (explicit projection matrix, float64)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from gradlab.attribution._projection import projector
from tests.attribution._models import cross_entropy, data, mlp_apply, mlp_params


def _flat(grads):
    return jnp.concatenate([g.reshape(g.shape[0], -1) for g in jax.tree.leaves(grads)], axis=1)


@functools.partial(jax.jit, static_argnames="dim")
def _matrix(key, params, dim):
    """The projection R (P, dim) that the features use, read off by projecting the identity."""
    size = sum(p.size for p in jax.tree.leaves(params))
    return jax.vmap(projector(key, params, dim))(jnp.eye(size, dtype=jnp.float64))


def _margin(p, batch):
    """log(p_y / (1 - p_y)) of a batch of one, written independently of gradlab's margin."""
    x, y = batch
    logp = jax.nn.log_softmax(mlp_apply(p, x))[0]
    lp = logp[y[0]]
    return lp - jnp.log1p(-jnp.exp(lp))


@pytest.fixture
def problem(x64):
    params = mlp_params(jax.random.key(11))
    return params, data(jax.random.key(12)), data(jax.random.key(13))


def test_features_equal_dense_projection(problem):
    params, train, _ = problem
    key = jax.random.key(3)
    phi = gl.attribution.trak_features(cross_entropy, params, train, dim=16, key=key)
    g = _flat(gl.attribution.per_example_grads(cross_entropy, params, train))
    r = _matrix(key, params, 16)
    assert phi.shape == (6, 16)
    np.testing.assert_allclose(np.abs(r), 0.25, rtol=1e-15)  # Rademacher +-1/sqrt(16)
    np.testing.assert_allclose(phi, g @ r, rtol=1e-12, atol=1e-14)
    chunked = gl.attribution.trak_features(
        cross_entropy, params, train, dim=16, key=key, chunk_size=4
    )
    np.testing.assert_allclose(chunked, phi, rtol=1e-12, atol=1e-14)


def test_blocked_projection_equals_one_block(problem, monkeypatch):
    # with tiny blocks R is generated in many row blocks inside a scan; the product is the same
    # as the product with the explicitly assembled matrix of those blocks
    import gradlab.attribution._projection as proj

    params, _, _ = problem
    monkeypatch.setattr(proj, "BLOCK_ENTRIES", 7 * 8)  # 7 rows per block, P = 44 -> 7 blocks
    v = jax.random.normal(jax.random.key(4), (44,))
    r = _matrix(jax.random.key(5), params, 8)
    np.testing.assert_allclose(projector(jax.random.key(5), params, 8)(v), v @ r, rtol=1e-12)


def test_chunked_features_never_hold_all_gradients(x64):
    # the compiled chunked program's scratch memory stays below the (N, P) gradient matrix
    # (chunk gradients + one block of R + features), the unchunked one's does not
    params = mlp_params(jax.random.key(14), sizes=(3, 16, 16, 4))
    size = sum(p.size for p in jax.tree.leaves(params))
    batch = data(jax.random.key(15), n=32)

    def temp_bytes(chunk_size):
        f = jax.jit(
            lambda p, b: gl.attribution.trak_features(
                cross_entropy, p, b, dim=8, key=jax.random.key(0), chunk_size=chunk_size
            )
        )
        return f.lower(params, batch).compile().memory_analysis().temp_size_in_bytes

    full_matrix = 32 * size * 8
    assert temp_bytes(4) < full_matrix < temp_bytes(32)  # one chunk of all 32 does hold them


def _reference_scores(params_list, train, test, key, dim, damping):
    """TRAK by hand: margin gradients, explicit R, (Phi^T Phi + lambda I)^{-1}, Q = 1 - p."""
    total, q_total = 0.0, 0.0
    for m, p in enumerate(params_list):
        r = np.asarray(_matrix(jax.random.fold_in(key, m), p, dim))
        phi = np.asarray(_flat(gl.attribution.per_example_grads(_margin, p, train))) @ r
        phi_t = np.asarray(_flat(gl.attribution.per_example_grads(_margin, p, test))) @ r
        total = total + phi_t @ np.linalg.inv(phi.T @ phi + damping * np.eye(dim)) @ phi.T
        probs = np.asarray(jax.nn.softmax(mlp_apply(p, train[0])))
        q_total = q_total + 1.0 - probs[np.arange(len(train[1])), np.asarray(train[1])]
    k = len(params_list)
    return (total / k) * (q_total / k)[None, :]


def test_scores_equal_dense_reference(problem):
    params, train, test = problem
    other = mlp_params(jax.random.key(16))
    stacked = jax.tree.map(lambda *p: jnp.stack(p), params, other)
    key = jax.random.key(6)
    got = gl.attribution.trak_scores(
        mlp_apply, stacked, train, test, dim=4, key=key, stacked=True, damping=0.05
    )
    want = _reference_scores([params, other], train, test, key, 4, 0.05)
    assert got.shape == (6, 6)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    single = gl.attribution.trak_scores(mlp_apply, params, train, test, dim=4, key=key)
    want_single = _reference_scores([params], train, test, key, 4, 0.0)
    np.testing.assert_allclose(single, want_single, rtol=1e-8, atol=1e-12)


def test_bad_input(problem):
    params, (x, y), test = problem
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="dim=0"):
        gl.attribution.trak_features(cross_entropy, params, (x, y), dim=0, key=key)
    with pytest.raises(ValueError, match="label 9"):
        gl.attribution.trak_scores(mlp_apply, params, (x, y.at[0].set(9)), test, dim=4, key=key)
    with pytest.raises(ValueError, match="damping=-1.0"):
        gl.attribution.trak_scores(mlp_apply, params, (x, y), test, dim=4, key=key, damping=-1.0)
    with pytest.raises(ValueError, match="leading"):
        gl.attribution.trak_scores(mlp_apply, params, (x[:2], y), test, dim=4, key=key)


def test_kronecker_projection_is_kron_of_factors_and_unbiased(x64):
    from gradlab.attribution._projection import kronecker_factors, kronecker_projector

    like = jnp.zeros(10)  # P = 10 -> a 4 x 3 matrix (two zeros of padding); dim 8 = 4 x 2
    a, b, k_a, k_b = kronecker_factors(10, 8)
    assert (a, b, k_a, k_b) == (4, 3, 4, 2)
    project = kronecker_projector(jax.random.key(7), like, 8)
    r = jax.vmap(project)(jnp.eye(10))  # (10, 8): the first 10 rows of kron(R_a, R_b)
    np.testing.assert_allclose(np.abs(r), 1 / np.sqrt(8), rtol=1e-15)
    u, v = jax.random.normal(jax.random.key(8), (2, 10))
    np.testing.assert_allclose(project(u), u @ r, rtol=1e-12)
    # unbiased inner products: the mean over 2,000 keys is within 5 standard errors of <u, v>
    keys = jax.random.split(jax.random.key(9), 2000)
    samples = jax.vmap(
        lambda k: kronecker_projector(k, like, 8)(u) @ kronecker_projector(k, like, 8)(v)
    )(keys)
    sem = np.std(samples) / np.sqrt(samples.size)
    assert abs(np.mean(samples) - u @ v) < 5 * sem


def test_kronecker_features_match_explicit_projection(problem):
    from gradlab.attribution._projection import kronecker_projector

    params, train, _ = problem
    key = jax.random.key(10)
    phi = gl.attribution.trak_features(
        cross_entropy, params, train, dim=16, key=key, projection="kronecker"
    )
    size = sum(p.size for p in jax.tree.leaves(params))
    r = jax.vmap(kronecker_projector(key, params, 16))(jnp.eye(size))
    g = _flat(gl.attribution.per_example_grads(cross_entropy, params, train))
    np.testing.assert_allclose(phi, g @ r, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="projection='sparse'"):
        gl.attribution.trak_features(
            cross_entropy, params, train, dim=16, key=key, projection="sparse"
        )
