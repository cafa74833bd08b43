"""ntk_operator against the dense kernel, eigsh against eigh, and the spectral summaries."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from tests.ntk import _models as m


def _dense_matrix(apply_fn, params, x):
    full = m.dense_full_kernel(apply_fn, params, x, x)  # (N, O, N, O)
    n, o = full.shape[:2]
    return np.asarray(full).reshape(n * o, n * o)


@pytest.mark.parametrize("batch_size", [None, 2])
def test_matvec_equals_dense_kernel_times_v(x64, batch_size):
    params, apply_fn, x1, _ = m.mlp(10)
    dense = _dense_matrix(apply_fn, params, x1)
    matvec = gl.ntk.ntk_operator(apply_fn, params, x1, batch_size=batch_size)
    for seed in range(3):
        v = jax.random.normal(jax.random.key(seed), (5, 10), jnp.float64)
        np.testing.assert_allclose(
            matvec(v).reshape(-1), dense @ np.asarray(v).reshape(-1), rtol=1e-10, atol=1e-10
        )


def test_matches_empirical_ntk_full(x64):
    params, apply_fn, x1, _ = m.cnn()
    k = gl.ntk.empirical_ntk(apply_fn, params, x1, trace_axes=(), vmap_axes=0)
    matvec = gl.ntk.ntk_operator(apply_fn, params, x1)
    v = jax.random.normal(jax.random.key(3), (4, 3), jnp.float64)
    np.testing.assert_allclose(matvec(v), jnp.einsum("nmab,mb->na", k, v), rtol=1e-10)


def test_eigsh_matches_eigh(x64):
    params, apply_fn, x1, _ = m.mlp(10)
    dense = _dense_matrix(apply_fn, params, x1)
    want = np.linalg.eigvalsh(dense)[::-1][:4]
    matvec = gl.ntk.ntk_operator(apply_fn, params, x1)
    res = gl.spectral.eigsh(
        matvec, jnp.zeros((5, 10), jnp.float64), k=4, key=jax.random.key(0), tol=1e-10
    )
    assert bool(jnp.all(res.converged))
    np.testing.assert_allclose(res.eigenvalues, want, rtol=1e-8)


def test_summaries_match_dense(x64):
    params, apply_fn, x1, _ = m.mlp(1)  # N O = 5 < P: the kernel is full rank
    dense = _dense_matrix(apply_fn, params, x1)
    ev = np.linalg.eigvalsh(dense)
    key = jax.random.key(1)
    lr = gl.ntk.max_learning_rate(apply_fn, params, x1, key=key)
    assert bool(lr.converged)
    np.testing.assert_allclose(lr.value, 2 * 5 / ev[-1], rtol=1e-8)
    lr_sum = gl.ntk.max_learning_rate(apply_fn, params, x1, key=key, normalization="sum")
    np.testing.assert_allclose(lr_sum.value, 2 / ev[-1], rtol=1e-8)
    cond = gl.ntk.condition_number(apply_fn, params, x1, key=key)
    np.testing.assert_allclose(cond.lambda_min, ev[0], rtol=1e-6)
    np.testing.assert_allclose(cond.value, ev[-1] / ev[0], rtol=1e-6)
    rank = gl.ntk.effective_rank(apply_fn, params, x1, key=key)
    np.testing.assert_allclose(rank.trace, ev.sum(), rtol=1e-10)
    np.testing.assert_allclose(rank.value, ev.sum() / ev[-1], rtol=1e-8)


def test_max_learning_rate_is_the_stability_edge(x64):
    """GD on the linearised model with gl.models.mse converges just below, diverges above."""
    params, apply_fn, x1, _ = m.mlp(1)
    y = jnp.sin(x1[:, :1])
    f_lin = gl.ntk.linearize(apply_fn, params)
    lr = gl.ntk.max_learning_rate(apply_fn, params, x1, key=jax.random.key(0)).value

    def final_loss(eta):
        grad = jax.grad(lambda p: gl.models.mse(f_lin(p, x1), y))

        def step(p, _):
            return jax.tree_util.tree_map(lambda a, g: a - eta * g, p, grad(p)), None

        p, _ = jax.lax.scan(step, params, None, length=400)
        return gl.models.mse(f_lin(p, x1), y)

    start = gl.models.mse(apply_fn(params, x1), y)
    assert final_loss(0.95 * lr) < start
    assert final_loss(1.05 * lr) > 10 * start


def test_bad_batch_size(x64):
    params, apply_fn, x1, _ = m.mlp(2)
    with pytest.raises(ValueError, match="batch_size=0"):
        gl.ntk.ntk_operator(apply_fn, params, x1, batch_size=0)
    with pytest.raises(ValueError, match="normalization='median'"):
        gl.ntk.max_learning_rate(
            apply_fn, params, x1, key=jax.random.key(0), normalization="median"
        )


def test_condition_number_is_infinite_by_rank(x64):
    """N O > P: rank(Theta) <= P, so lambda_min = 0 exactly, from one eigensolve."""
    params, apply_fn, _, _ = m.mlp(10)
    num_params = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
    x = jax.random.normal(jax.random.key(4), (num_params // 10 + 1, 3), jnp.float64)
    ev = np.linalg.eigvalsh(_dense_matrix(apply_fn, params, x))
    assert ev[0] < 1e-8 * ev[-1]  # the dense oracle agrees that Theta is singular
    cond = gl.ntk.condition_number(apply_fn, params, x, key=jax.random.key(1))
    assert bool(cond.converged) and float(cond.lambda_min) == 0.0
    assert np.isinf(cond.value)
    np.testing.assert_allclose(cond.lambda_max, ev[-1], rtol=1e-8)


@pytest.mark.parametrize("true_rows", [5, 0])
def test_condition_number_ignores_padded_rows(x64, true_rows):
    """Padded rows of a MaskedBatch are zeros of Theta; they must not become lambda_min."""
    params, apply_fn, x1, _ = m.mlp(1)  # N O = 5 < P
    num_params = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
    if true_rows == 0:  # enough true rows that the true kernel is singular by rank
        x1 = jax.random.normal(jax.random.key(4), (num_params + 1, x1.shape[1]), jnp.float64)
    pad = jnp.concatenate([x1, x1[:3] + 1.0])
    mask = jnp.arange(pad.shape[0]) < x1.shape[0]
    batch = gl.distributed.MaskedBatch(pad, mask)
    want = gl.ntk.condition_number(apply_fn, params, x1, key=jax.random.key(1))
    got = jax.jit(lambda p, b: gl.ntk.condition_number(apply_fn, p, b, key=jax.random.key(1)))(
        params, batch
    )
    assert bool(got.converged)
    np.testing.assert_allclose(got.lambda_max, want.lambda_max, rtol=1e-8)
    np.testing.assert_allclose(got.lambda_min, want.lambda_min, rtol=1e-6, atol=0)
    np.testing.assert_allclose(got.value, want.value, rtol=1e-6)
