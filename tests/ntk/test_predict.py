"""gradient_descent_mse (closed form vs Euler), gp_inference and linearize."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from gradlab._src.tree import ravel
from tests.ntk import _models as m


def _problem():
    x = jax.random.normal(jax.random.key(0), (6, 3), jnp.float64)
    xt = jax.random.normal(jax.random.key(1), (4, 3), jnp.float64)
    kfn = gl.ntk.infinite_mlp(2, bias_std=0.3)
    y = jnp.stack([jnp.sin(x[:, 0]), jnp.cos(x[:, 1])], axis=1)
    f0 = 0.1 * jax.random.normal(jax.random.key(2), y.shape, jnp.float64)
    ft0 = 0.1 * jax.random.normal(jax.random.key(3), (4, 2), jnp.float64)
    return kfn(x).ntk, kfn(xt, x).ntk, y, f0, ft0


def _euler(k, kt, y, f0, ft0, eta, t, steps):
    h = t / steps
    n = y.shape[0]

    def step(carry, _):
        f, ft = carry
        r = f - y
        return (f - h * eta / n * k @ r, ft - h * eta / n * kt @ r), None

    (f, ft), _ = jax.lax.scan(step, (f0, ft0), None, length=steps)
    return f, ft


def test_infinite_time_fits_training_targets(x64):
    k, kt, y, f0, ft0 = _problem()
    assert np.linalg.eigvalsh(k).min() > 1e-6  # full rank
    predict_fn = gl.ntk.gradient_descent_mse(k, y, learning_rate=0.5)
    np.testing.assert_allclose(predict_fn(None, f0), y, atol=1e-9)
    f, ft = predict_fn(None, f0, ft0, kt)
    np.testing.assert_allclose(f, y, atol=1e-9)
    np.testing.assert_allclose(ft, ft0 + kt @ np.linalg.solve(k, y - f0), atol=1e-8)


def test_finite_time_matches_euler(x64):
    k, kt, y, f0, ft0 = _problem()
    eta, t = 0.7, 5.0
    f, ft = gl.ntk.gradient_descent_mse(k, y, learning_rate=eta)(t, f0, ft0, kt)
    coarse = _euler(k, kt, y, f0, ft0, eta, t, 2000)
    fine = _euler(k, kt, y, f0, ft0, eta, t, 4000)
    for got, c, fn in zip((f, ft), coarse, fine, strict=True):
        # Euler's global error is O(h): the fine run is off by about |coarse - fine|
        err = np.abs(np.asarray(c) - np.asarray(fn)).max()
        assert err > 0
        np.testing.assert_allclose(got, fn, atol=3 * err)


def test_full_output_kernel_matches_traced(x64):
    """(N, N, O, O) = K (x) I gives the same dynamics as the (N, N) kernel."""
    k, kt, y, f0, ft0 = _problem()
    eye = jnp.eye(2)
    k4 = jnp.einsum("nm,ab->nmab", k, eye)
    kt4 = jnp.einsum("nm,ab->nmab", kt, eye)
    a = gl.ntk.gradient_descent_mse(k, y)(3.0, f0, ft0, kt)
    b = gl.ntk.gradient_descent_mse(k4, y)(3.0, f0, ft0, kt4)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, atol=1e-12)


def test_gp_inference_matches_formula(x64):
    k, kt, y, _, _ = _problem()
    x = jax.random.normal(jax.random.key(1), (4, 3), jnp.float64)
    ktt = gl.ntk.infinite_mlp(2, bias_std=0.3)(x).ntk
    g = gl.ntk.gp_inference(k, y, diag_reg=0.01)(kt, ktt)
    a = k + 0.01 * np.eye(6)
    np.testing.assert_allclose(g.mean, kt @ np.linalg.solve(a, y), atol=1e-10)
    np.testing.assert_allclose(g.covariance, ktt - kt @ np.linalg.solve(a, kt.T), atol=1e-10)
    # with no noise the posterior interpolates: the NTK mean equals gradient flow at t=inf
    mean = gl.ntk.gp_inference(k, y)(kt).mean
    _, ft = gl.ntk.gradient_descent_mse(k, y)(None, jnp.zeros_like(y), None, kt)
    np.testing.assert_allclose(mean, ft, atol=1e-8)


def test_linearize_is_first_order(x64):
    """f_lin(params + d) = f(params) + J d with J from jax.jacrev on the raveled params."""
    params, apply_fn, x1, _ = m.mlp(10)
    f_lin = gl.ntk.linearize(apply_fn, params)
    flat, unravel = ravel(params)
    d = 1e-2 * jax.random.normal(jax.random.key(5), flat.shape, jnp.float64)
    jac = jax.jacrev(lambda p: apply_fn(unravel(p), x1))(flat)
    want = apply_fn(params, x1) + jac @ d
    np.testing.assert_allclose(f_lin(unravel(flat + d), x1), want, atol=1e-12)
    assert not np.allclose(apply_fn(unravel(flat + d), x1), want, atol=1e-8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"learning_rate": 0.0}, "learning_rate=0.0"), ({"diag_reg": -1.0}, "diag_reg=-1.0")],
)
def test_bad_arguments(x64, kwargs, match):
    k, _, y, _, _ = _problem()
    with pytest.raises(ValueError, match=match):
        gl.ntk.gradient_descent_mse(k, y, **kwargs)


def test_shape_mismatch(x64):
    k, _, y, _, _ = _problem()
    with pytest.raises(ValueError, match="must agree"):
        gl.ntk.gradient_descent_mse(k, y[:3])
