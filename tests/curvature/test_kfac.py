"""K-FAC against dense float64 GGN / Fisher oracles, in the cases where it is exact."""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from tests.curvature._problems import make_problem


class DeepLinear(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(4)(x)
        x = nn.Dense(5, use_bias=False)(x)
        return nn.Dense(2)(x)


class EmbedLinear(nn.Module):
    """Embed, then a per-position linear map: positions never mix."""

    @nn.compact
    def __call__(self, i):
        return nn.Dense(3)(nn.Embed(6, 4)(i))


class ConvLinear(nn.Module):
    """Linear convolution with stride and padding, then per-position maps (no mixing)."""

    pool: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(3, (3, 2), strides=(2, 1), padding=((1, 0), (0, 1)))(x)
        x = nn.Conv(4, (1, 1), padding="SAME")(x)
        if self.pool:
            x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(2)(x)


def _f64(tree):
    return jax.tree.map(lambda p: p.astype(jnp.float64), tree)


def _setup(module, x, seed=0):
    params = _f64(module.init(jax.random.key(seed), x[:1]))
    return params, module.apply


def _block_diagonal(matrix, params):
    """Keep the per-leaf diagonal blocks of a dense operator (raveled leaf order)."""
    sizes = [leaf.size for leaf in jax.tree.leaves(params)]
    edges = np.cumsum([0, *sizes])
    mask = np.zeros(matrix.shape, bool)
    for lo, hi in itertools.pairwise(edges):
        mask[lo:hi, lo:hi] = True
    return np.where(mask, matrix, 0.0)


def _assert_blocks(op, exact, params, tol=1e-10, select=None):
    """``op`` equals the per-leaf diagonal blocks of ``exact`` (on the leaves ``select`` keeps)."""
    if select is not None:
        op = gl.curvature.restrict(op, params, select)
        exact = gl.curvature.restrict(exact, params, select)
        op, exact, params = op.matvec, exact.matvec, op.like
    k, g = _dense_pair(op, exact, params)
    g = _block_diagonal(g, params)
    np.testing.assert_allclose(k, g, rtol=0, atol=tol * np.abs(g).max())


def _dense_pair(op, exact, params):
    return (
        np.asarray(gl.curvature.dense(op, params)),
        np.asarray(gl.curvature.dense(exact, params)),
    )


def test_deep_linear_mse_any_batch_is_exact(x64):
    x = jax.random.normal(jax.random.key(1), (7, 3))
    y = jax.random.normal(jax.random.key(2), (7, 2))
    params, apply = _setup(DeepLinear(), x)
    kf = gl.curvature.kfac(apply, "mse", params, (x, y))
    _assert_blocks(kf.matvec, gl.curvature.ggn(apply, "mse", params, (x, y)), params)
    assert kf.factors["params/Dense_0"].a.shape == (3, 3)
    assert kf.factors["params/Dense_0"].g.shape == (4, 4)
    assert kf.factors["params/Dense_0"].a.dtype == jnp.float64


def test_embed_expand_per_position_mse_is_exact(x64):
    i = jax.random.randint(jax.random.key(1), (5, 3), 0, 6)
    y = jax.random.normal(jax.random.key(2), (5, 3, 3))
    params, apply = _setup(EmbedLinear(), i)
    kf = gl.curvature.kfac(apply, "mse", params, (i, y))
    _assert_blocks(kf.matvec, gl.curvature.ggn(apply, "mse", params, (i, y)), params)
    assert kf.factors["params/Embed_0"].a.shape == (6,)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_batch_of_one_cross_entropy_is_exact(x64, kind):
    """Exact for every layer applied once per example (a conv shares weights: not exact)."""
    p = make_problem(kind, jax.random.key(3), n=1)
    batch = (p.inputs, p.labels)
    kf = gl.curvature.kfac(p.model_fn, "softmax_cross_entropy", p.params, batch)
    exact = gl.curvature.ggn(p.model_fn, "softmax_cross_entropy", p.params, batch)
    _assert_blocks(kf.matvec, exact, p.params, select=None if kind == "mlp" else "Dense")
    # "reduce" is the same for a single example when no layer shares weights (MLP)
    if kind == "mlp":
        red = gl.curvature.kfac(
            p.model_fn, "softmax_cross_entropy", p.params, batch, kfac_approx="reduce"
        )
        _assert_blocks(red.matvec, exact, p.params)


def test_batch_of_one_mc_and_empirical_match_their_operators(x64, key):
    p = make_problem("mlp", jax.random.key(4), n=1)
    batch = (p.inputs, p.labels)
    mc = gl.curvature.kfac(
        p.model_fn,
        gl.curvature.softmax_cross_entropy,
        p.params,
        batch,
        fisher_type="mc",
        key=key,
        num_samples=3,
    )
    fisher = gl.curvature.fisher(p.model_fn, p.params, batch, key=key, num_samples=3)
    _assert_blocks(mc.matvec, fisher, p.params)
    emp = gl.curvature.kfac(
        p.model_fn, "softmax_cross_entropy", p.params, batch, fisher_type="empirical"
    )

    def loss_fn(params, b):
        return gl.curvature.softmax_cross_entropy(p.model_fn(params, b[0]), b[1])

    _assert_blocks(emp.matvec, gl.curvature.empirical_fisher(loss_fn, p.params, batch), p.params)


def test_conv_expand_per_position_mse_is_exact(x64):
    x = jax.random.normal(jax.random.key(1), (3, 5, 4, 2))
    params, apply = _setup(ConvLinear(), x)
    y = jax.random.normal(jax.random.key(2), apply(params, x).shape)
    kf = gl.curvature.kfac(apply, "mse", params, (x, y))
    _assert_blocks(kf.matvec, gl.curvature.ggn(apply, "mse", params, (x, y)), params)
    assert kf.factors["params/Conv_0"].a.shape == (12, 12)  # kh * kw * c_in


def test_conv_reduce_average_pooled_is_exact(x64):
    x = jax.random.normal(jax.random.key(1), (4, 5, 4, 2))
    params, apply = _setup(ConvLinear(pool=True), x)
    y = jax.random.normal(jax.random.key(2), (4, 2))
    kf = gl.curvature.kfac(apply, "mse", params, (x, y), kfac_approx="reduce")
    _assert_blocks(kf.matvec, gl.curvature.ggn(apply, "mse", params, (x, y)), params)


def test_uncovered_leaves_get_the_exact_diagonal(x64):
    class Scaled(nn.Module):
        @nn.compact
        def __call__(self, x):
            s = self.param("scale", nn.initializers.ones, (4,))
            return nn.Dense(3)(jnp.tanh(nn.Dense(4)(x) * s))

    x = jax.random.normal(jax.random.key(1), (6, 3))
    y = jax.random.randint(jax.random.key(2), (6,), 0, 3)
    params, apply = _setup(Scaled(), x)
    kf = gl.curvature.kfac(apply, "softmax_cross_entropy", params, (x, y))
    assert list(kf.diagonal) == ["params/scale"]
    exact = gl.curvature.ggn(apply, "softmax_cross_entropy", params, (x, y))
    block = gl.curvature.restrict(exact, params, "scale")
    diag = np.diag(np.asarray(gl.curvature.dense(block.matvec, block.like)))
    np.testing.assert_allclose(kf.diagonal["params/scale"], diag, rtol=1e-10)


def test_mc_is_unbiased_for_type2_within_its_standard_error(x64):
    p = make_problem("mlp", jax.random.key(5), n=4)
    batch = (p.inputs, p.labels)
    ce = "softmax_cross_entropy"
    type2 = gl.curvature.kfac(p.model_fn, ce, p.params, batch)

    def draw(k):
        return gl.curvature.kfac(p.model_fn, ce, p.params, batch, fisher_type="mc", key=k).factors

    draws = jax.jit(jax.vmap(draw))(jax.random.split(jax.random.key(6), 256))
    for name, f in type2.factors.items():
        np.testing.assert_allclose(draws[name].a[0], f.a, rtol=1e-12)  # A does not depend on y
        g = np.asarray(draws[name].g)
        mean, sem = g.mean(0), g.std(0, ddof=1) / np.sqrt(g.shape[0])
        assert np.all(np.abs(mean - f.g) <= 5 * sem + 1e-12), name


def test_inverse_inverts_the_damped_operator(x64):
    x = jax.random.normal(jax.random.key(1), (3, 5, 4, 2))
    params, apply = _setup(ConvLinear(pool=True), x)
    y = jnp.array([0, 1, 1])
    kf = gl.curvature.kfac(apply, "softmax_cross_entropy", params, (x, y))
    damping = 0.05
    k = np.asarray(gl.curvature.dense(kf.matvec, params))
    inv = np.asarray(gl.curvature.dense(kf.inverse(damping), params))
    np.testing.assert_allclose(inv @ (k + damping * np.eye(len(k))), np.eye(len(k)), atol=1e-8)


def test_construction_runs_under_jit(x64):
    x = jax.random.normal(jax.random.key(1), (5, 3))
    y = jax.random.normal(jax.random.key(2), (5, 2))
    params, apply = _setup(DeepLinear(), x)
    eager = gl.curvature.kfac(apply, "mse", params, (x, y))
    jitted = jax.jit(lambda p, b: gl.curvature.kfac(apply, "mse", p, b))(params, (x, y))
    v = jax.tree.map(jnp.ones_like, params)
    for a, b in zip(jax.tree.leaves(eager.matvec(v)), jax.tree.leaves(jitted.matvec(v))):
        np.testing.assert_allclose(a, b, rtol=1e-12)
