"""infinite_mlp against the finite NTK-parameterised MLP of gradlab.models (statistical, exact)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from gradlab._src.tree import ravel


def _dense_ntk(apply_fn, params, x):
    """Oracle: J J^T from jax.jacrev on the raveled params, for one output."""
    flat, unravel = ravel(params)
    jac = jax.jacrev(lambda p: apply_fn(unravel(p), x)[:, 0])(flat)
    return jac @ jac.T


def _inputs(n=4, d=3, dtype=jnp.float64):
    x = jax.random.normal(jax.random.key(1), (n, d), dtype=dtype)
    return x.at[1].set(-0.5 * x[0])  # include a pair at an obtuse angle


def _finite_samples(depth, width, activation, weight_std, bias_std, x, num_seeds):
    sizes = (x.shape[1],) + (width,) * depth + (1,)
    model = gl.models.NTKMLP(
        sizes[1:],
        activation=activation,
        weight_std=weight_std,
        bias_std=bias_std,
        dtype=jnp.float64,
    )

    def one(key):
        params = model.init(key, x[:1])
        return model.apply(params, x)[:, 0], _dense_ntk(model.apply, params, x)

    keys = jax.random.split(jax.random.key(7), num_seeds)
    return jax.vmap(one)(keys)


@pytest.mark.parametrize(
    ("activation", "weight_std", "bias_std"),
    [("relu", 1.0, 0.0), ("relu", 1.5, 0.3), ("erf", 1.3, 0.2)],
)
def test_one_hidden_layer_is_unbiased(x64, activation, weight_std, bias_std):
    """With one hidden layer, the finite-width NTK and output covariance are unbiased."""
    x = _inputs()
    outputs, ntks = _finite_samples(1, 128, activation, weight_std, bias_std, x, 256)
    truth = gl.ntk.infinite_mlp(1, activation=activation, weight_std=weight_std, bias_std=bias_std)(
        x
    )
    num = ntks.shape[0]
    ntk_mean = ntks.mean(0)
    ntk_sem = ntks.std(0, ddof=1) / np.sqrt(num)
    assert np.all(np.abs(ntk_mean - truth.ntk) < 5 * ntk_sem + 1e-12)
    cov = jnp.einsum("si,sj->sij", outputs, outputs)
    cov_mean = cov.mean(0)
    cov_sem = cov.std(0, ddof=1) / np.sqrt(num)
    assert np.all(np.abs(cov_mean - truth.nngp) < 5 * cov_sem + 1e-12)


def test_symmetric_psd_and_x2(x64):
    x = _inputs(6)
    for activation in ("relu", "erf"):
        fn = gl.ntk.infinite_mlp(2, activation=activation, bias_std=0.5)
        k = fn(x)
        for mat in (k.nngp, k.ntk):
            np.testing.assert_allclose(mat, mat.T, atol=1e-14)
            assert np.linalg.eigvalsh(mat).min() > -1e-10
        cross = fn(x[:2], x)
        np.testing.assert_allclose(cross.ntk, k.ntk[:2], atol=1e-14)
        np.testing.assert_allclose(cross.nngp, k.nngp[:2], atol=1e-14)


def test_relu_closed_form_single_layer(x64):
    """ReLU, depth 1, sigma_w=1, sigma_b=0 on unit vectors at angle t (Cho & Saul 2009)."""
    t = 1.0
    x = jnp.array([[1.0, 0.0], [np.cos(t), np.sin(t)]])
    k = gl.ntk.infinite_mlp(1)(x)
    k1 = np.cos(t) / 2  # x1.x2 / d
    q = 0.5
    nngp = q / (2 * np.pi) * (np.sin(t) + (np.pi - t) * np.cos(t))
    ntk = nngp + k1 * (np.pi - t) / (2 * np.pi)
    np.testing.assert_allclose(k.nngp[0, 1], nngp, rtol=1e-12)
    np.testing.assert_allclose(k.ntk[0, 1], ntk, rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 0}, "depth=0"),
        ({"depth": 2, "activation": "tanh"}, "activation='tanh'"),
        ({"depth": 2, "weight_std": -1.0}, "weight_std=-1.0"),
        ({"depth": 2, "bias_std": -0.1}, "bias_std=-0.1"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gl.ntk.infinite_mlp(**kwargs)


def test_mismatched_features():
    fn = gl.ntk.infinite_mlp(1)
    with pytest.raises(ValueError, match="same feature size"):
        fn(jnp.ones((2, 3)), jnp.ones((2, 4)))


def test_empirical_ntk_converges_like_inverse_sqrt_width():
    """RMS over seeds of ||Theta_width - Theta_inf|| / ||Theta_inf|| ~ width^-1/2.

    Depth-2 ReLU net in float32 (errors are >= 3%, far above rounding), 6 inputs, 12 seeds
    per width, widths 64..2048. The slope's own spread
    is estimated by bootstrapping the seeds and must be small (< 0.08) for the check to mean
    anything; the fitted slope must lie in [-0.75, -0.3].
    """
    x = _inputs(6, 3, jnp.float32)
    depth, num_seeds = 2, 12
    kw = {"weight_std": 2**0.5, "bias_std": 0.2}
    truth = gl.ntk.infinite_mlp(depth, activation="relu", **kw)(x).ntk
    widths = [64, 128, 256, 512, 1024, 2048]
    sq_errors = []  # (widths, seeds)
    for width in widths:
        model = gl.models.NTKMLP((width,) * depth + (1,), **kw)

        @jax.jit
        def sq_error(key, model=model):
            params = model.init(key, x[:1])
            k = gl.ntk.empirical_ntk(
                model.apply, params, x, implementation="structured", vmap_axes=0
            )
            return jnp.sum((k - truth) ** 2)

        sq_errors.append([float(sq_error(jax.random.key(100 + s))) for s in range(num_seeds)])
    sq_errors = np.array(sq_errors) / float(jnp.sum(truth**2))
    logw = np.log(widths)

    def slope(errs):
        return np.polyfit(logw, 0.5 * np.log(errs.mean(axis=1)), 1)[0]

    rng = np.random.default_rng(0)
    boot = [slope(sq_errors[:, rng.integers(0, num_seeds, num_seeds)]) for _ in range(200)]
    assert np.std(boot) < 0.08, np.std(boot)
    assert -0.75 <= slope(sq_errors) <= -0.3, (slope(sq_errors), np.std(boot))
