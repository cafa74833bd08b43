"""Unit tests of grokking_lazy_rich: model, NTK, alignment, measures and checks.

The smoke run of the shipped config is the notebook test (tests/experiments/test_notebooks.py);
here a tiny configuration runs the whole pipeline once.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import gradlab as gl
from gradlab.experiments.grokking_lazy_rich import (
    Config,
    centred_alignment,
    checks,
    drop_step,
    log_steps,
    network,
    rise_after_fraction,
    run,
)
from gradlab.experiments.runner import make_progress


def _weights(n=7, d=5, seed=0):
    kw, kx = jax.random.split(jax.random.key(seed))
    w = jax.random.normal(kw, (n, d), jnp.float64)
    x = jax.random.normal(kx, (6, d), jnp.float64) / np.sqrt(d)
    return np.asarray(w), np.asarray(x)


def test_network_is_the_papers_moment_form(x64):
    # f = alpha wbar.x + alpha eps / 2 x^T M x, wbar = mean w_i, M = mean w_i w_i^T (paper eq. 4)
    w, x = _weights()
    alpha, eps = 3.0, 0.4
    wbar, m = w.mean(0), w.T @ w / w.shape[0]
    expected = alpha * x @ wbar + 0.5 * alpha * eps * np.einsum("pi,ij,pj->p", x, m, x)
    got = network(jnp.asarray(w), jnp.asarray(x), alpha=alpha, epsilon=eps)
    assert got.shape == (6, 1)
    np.testing.assert_allclose(np.asarray(got)[:, 0], expected, rtol=1e-12)


def test_empirical_ntk_is_the_papers_kernel(x64):
    # K(x, x') = alpha^2 / N * x.x' (1 + eps wbar.(x + x') + eps^2 x^T M x')  (paper eq. 5)
    w, x = _weights(seed=1)
    alpha, eps = 2.0, 0.7
    n = w.shape[0]
    wbar, m = w.mean(0), w.T @ w / n
    lin = x @ x.T
    shift = x @ wbar
    expected = (
        alpha**2 / n * lin * (1 + eps * (shift[:, None] + shift[None, :]) + eps**2 * x @ m @ x.T)
    )
    apply_fn = lambda p, inputs: network(p, inputs, alpha=alpha, epsilon=eps)  # noqa: E731
    got = gl.ntk.empirical_ntk(apply_fn, jnp.asarray(w), jnp.asarray(x), vmap_axes=0)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10)


def test_centred_alignment_matches_a_direct_computation(x64):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(9, 4))
    kernel = a @ a.T + 0.5
    y = rng.normal(size=9) + 2.0
    h = np.eye(9) - np.ones((9, 9)) / 9
    kc, yc = h @ kernel @ h, h @ y
    expected = np.sum(kc * np.outer(yc, yc)) / (
        np.linalg.norm(kc) * np.linalg.norm(np.outer(yc, yc))
    )
    got = centred_alignment(jnp.asarray(kernel), jnp.asarray(y))
    np.testing.assert_allclose(float(got), expected, rtol=1e-12)
    # invariant to kernel scale and to adding a constant to the targets
    np.testing.assert_allclose(
        float(centred_alignment(jnp.asarray(3 * kernel), jnp.asarray(y - 5))), expected, rtol=1e-12
    )


def test_drop_step_on_exponential_curves_gives_the_half_life_ratio():
    steps = np.arange(0, 5001)
    train = np.exp(-steps / 40.0)
    test = np.exp(-steps / 900.0)
    t_train = drop_step(steps, train, 0.5)
    assert t_train == np.ceil(40 * np.log(2))
    t_test = drop_step(steps, test, 0.5)
    assert t_test == np.ceil(900 * np.log(2))
    assert abs(t_test / t_train - 900 / 40) < 0.5
    assert np.isnan(drop_step(steps, np.ones_like(train), 0.5))


def test_rise_after_fraction_on_a_sigmoid():
    steps = np.linspace(0, 1000, 201)
    align = 0.1 + 0.3 / (1 + np.exp(-(steps - 600) / 50))
    share = [rise_after_fraction(align[0], align[i], align[-1]) for i in (40, 120, 180)]
    assert share[0] > 0.99 and abs(share[1] - 0.5) < 0.01 and share[2] < 0.01  # 200, 600, 900
    assert np.isnan(rise_after_fraction(0.1, float("nan"), 0.4))


def test_log_steps_are_dense_then_sparse():
    s = log_steps(1000, 100, 8)
    assert s[0] == 0 and s[100] == 100 and np.all(np.diff(s[:101]) == 1)
    assert np.all(np.diff(s[100:]) == 8) and s[-1] <= 1000


def _results(config, lags=(2.0, 2.5, 3.5, 5.5, 9.0), slope=-1.0, rise=0.8, gain=0.01):
    alphas = np.asarray(config.alphas)
    return {
        "per_alpha": [
            {
                "lag": lag,
                "movement_at_step": float(a**slope),
                "alignment_rise_after_low": rise,
                "alignment_initial": 0.03,
                "alignment_final": 0.03 + gain,
            }
            for a, lag in zip(alphas, lags, strict=True)
        ]
    }


def test_checks_pass_on_the_claimed_behaviour():
    config = Config()
    result = checks(config, _results(config))
    assert all(c.passed for c in result), [c for c in result if not c.passed]


def test_checks_fail_on_each_violation():
    config = Config()
    cases = {
        "lag (test drop / train drop step) at alpha 8": _results(config, lags=(1, 2, 3, 4, 4.9)),
        "min ratio of consecutive lags (larger alpha / smaller)": _results(
            config, lags=(2.0, 2.0, 3.5, 5.5, 9.0)
        ),
        "log-log slope of relative weight movement at step 100 vs alpha": _results(
            config, slope=-0.5
        ),
        "share of the NTK alignment rise after train loss <= 0.1 x initial, alpha 8": _results(
            config, rise=0.4
        ),
        "min over alpha of NTK alignment gain (final - initial)": _results(config, gain=-0.001),
    }
    for name, results in cases.items():
        by = {c.name: c for c in checks(config, results)}
        assert not by[name].passed, name
        assert sum(not c.passed for c in by.values()) == 1, name


def test_tiny_run_produces_every_measure():
    config = dataclasses.replace(
        Config(),
        dim=6,
        num_train=20,
        num_test=30,
        width=8,
        alphas=(1.0, 4.0),
        eta0=1.0,  # the stability limit shrinks with D / P
        num_steps=40,
        dense_steps=16,
        log_every=4,
        ntk_points=10,
        num_ntk_checkpoints=5,
        movement_step=10,
    )
    results = run(config, make_progress(False))
    steps = results["steps"]
    assert steps == log_steps(40, 16, 4).tolist()
    assert np.asarray(results["train_loss"]).shape == (2, len(steps))
    assert np.asarray(results["alignment"]).shape == (2, len(results["ntk_steps"]))
    assert results["ntk_steps"][0] == 0 and results["ntk_steps"][-1] == 40
    train = np.asarray(results["train_loss"])
    assert np.all(train[:, -1] < train[:, 0])  # gradient descent fits the training set
    move = [r["movement_at_step"] for r in results["per_alpha"]]
    assert move[1] < move[0]  # the lazier network moves less
    assert len(checks(config, results)) == 5
    # the replayed alignment at the train-low step lies between the logged ones around it
    for row, a in zip(results["per_alpha"], results["alignment"], strict=True):
        if np.isfinite(row["train_low_step"]):
            assert min(a) - 1e-6 <= row["alignment_at_low"] <= max(a) + 1e-6
