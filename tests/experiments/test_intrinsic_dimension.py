"""Unit tests of intrinsic_dimension's estimator, training and checks (smoke run: the notebook test)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import gradlab as gl
from gradlab.experiments.intrinsic_dimension import (
    Config,
    checks,
    d_int90,
    subspace_optimizer,
    train,
)


def test_d_int90_is_exact_on_a_curve_linear_in_log_d():
    dims = np.array([32, 45, 64, 91, 128, 181, 256])
    acc = 0.1 + 0.3 * np.log(dims / 16)  # linear in log d: interpolation is exact
    baseline = 0.98
    d_star = 16 * math.exp((0.9 * baseline - 0.1) / 0.3)  # solves acc(d) = 0.9 * baseline
    interp, grid = d_int90(dims, acc, baseline)
    assert interp == pytest.approx(d_star, rel=1e-12)
    assert grid == dims[np.argmax(acc >= 0.9 * baseline)] and grid >= interp


def test_d_int90_takes_the_first_crossing_and_handles_the_edges():
    dims = [10, 20, 40, 80]
    # noisy curve: crosses at 20, dips below at 40; the first crossing counts
    interp, grid = d_int90(dims, [0.5, 0.95, 0.85, 0.97], baseline=1.0)
    assert grid == 20 and interp == pytest.approx(10 * 2 ** (0.4 / 0.45))
    assert d_int90(dims, [0.91, 0.95, 0.96, 0.97], baseline=1.0) == (10.0, 10.0)
    assert all(math.isnan(v) for v in d_int90(dims, [0.1, 0.2, 0.3, 0.4], baseline=1.0))
    # the threshold is relative to the baseline: 0.9 * 0.8 = 0.72 is first reached at d = 40
    assert d_int90(dims, [0.5, 0.6, 0.73, 0.75], baseline=0.8)[1] == 40


def test_training_only_z_equals_theta0_plus_p_z(x64):
    """The experiment's optimizer (first d of max_dim Fastfood columns, Adam on z) equals Adam
    on z in f(theta0 + P[:, :d] z) with P formed explicitly."""
    params0, apply_fn = gl.models.init_mlp(
        jax.random.key(0), (4, 6, 3), activation="relu", dtype=jnp.float64
    )
    x = jax.random.normal(jax.random.key(1), (16, 4), jnp.float64)
    y = jnp.arange(16) % 3

    def loss_fn(p, idx):
        return optax.softmax_cross_entropy_with_integer_labels(apply_fn(p, x[idx]), y[idx]).mean()

    batches = jax.random.randint(jax.random.key(2), (30, 8), 0, 16)
    lr, dim, max_dim, key = 0.05, 3, 5, jax.random.key(3)
    tx = subspace_optimizer(lr, dim, max_dim, key=key, projection="fastfood")
    theta = jax.jit(lambda p: train(loss_fn, p, tx, batches))(params0)
    flat0, unravel = ravel_pytree(params0)
    p = gl.transforms.random_subspace_basis(params0, max_dim, key=key, projection="fastfood")
    p = p[:, :dim]

    def loss_z(z, idx):
        return loss_fn(unravel(flat0 + p @ z), idx)

    z = jax.jit(lambda z: train(loss_z, z, optax.adam(lr), batches))(jnp.zeros(dim))
    np.testing.assert_allclose(ravel_pytree(theta)[0], flat0 + p @ z, rtol=1e-9, atol=1e-11)
    assert float(jnp.linalg.norm(z)) > 0.1  # it did move


def _results(dint=(200.0, 260.0, 300.0), params=(4810, 26122, 85002)):
    dint, params = np.asarray(dint), np.asarray(params, float)
    return {  # as run() computes them (NumPy: a NaN d_int90 propagates)
        "dint_ratio": dint.max() / dint.min(),
        "param_ratio": params.max() / params.min(),
        "max_dint_over_min_params": dint.max() / params.min(),
    }


def test_checks_pass_on_the_claimed_behaviour():
    result = checks(Config(), _results())
    assert all(c.passed for c in result), [c for c in result if not c.passed]


def test_checks_fail_on_each_violation():
    by = {c.name: c for c in checks(Config(), _results(dint=(200.0, 450.0, 300.0)))}
    assert not by["max / min d_int90 across models"].passed  # 2.25x
    by = {c.name: c for c in checks(Config(), _results(params=(9000, 26122, 85002)))}
    assert not by["max / min number of parameters D"].passed  # 9.4x
    by = {c.name: c for c in checks(Config(), _results(dint=(400.0, 500.0, 600.0)))}
    assert not by["max d_int90 / smallest D"].passed  # 600 / 4810 = 0.125
    assert by["max / min d_int90 across models"].passed
    nan = checks(Config(), _results(dint=(float("nan"), 260.0, 300.0)))
    assert not nan[0].passed
