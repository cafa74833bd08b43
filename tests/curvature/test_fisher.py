"""fisher() and empirical_fisher() against dense per-example gradients and the GGN."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.flatten_util import ravel_pytree

import gradlab as gl
from tests.curvature._problems import (
    ce_loss_fn,
    dense_ggn,
    dense_per_example_grads,
    make_problem,
    rel_err,
)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_empirical_fisher_matches_dense_outer_products(x64, key, kind):
    pb = make_problem(kind, key)
    loss_fn, batch = ce_loss_fn(pb), (pb.inputs, pb.labels)
    grads = dense_per_example_grads(loss_fn, pb.params, batch)  # (N, P)
    want = grads.T @ grads / grads.shape[0]
    got = gl.curvature.dense(gl.curvature.empirical_fisher(loss_fn, pb.params, batch), pb.params)
    assert rel_err(got, want) < 1e-10


@pytest.mark.parametrize("likelihood", ["categorical", "gaussian"])
def test_fisher_matches_dense_for_fixed_samples(x64, key, likelihood):
    """For one key, F = mean over (n, s) of g g^T with g the score of the sampled label."""
    pb = make_problem("mlp", key)
    num_samples, fkey = 3, jax.random.key(7)
    flat, unravel = ravel_pytree(pb.params)
    logits = pb.model_fn(pb.params, pb.inputs)
    n = logits.shape[0]
    if likelihood == "categorical":
        labels = jax.random.categorical(fkey, logits, axis=-1, shape=(num_samples, n))

        def nll(f, s):
            out = pb.model_fn(unravel(f), pb.inputs)
            return -jnp.take_along_axis(jax.nn.log_softmax(out), labels[s][:, None], 1)[:, 0]
    else:
        y = logits + jax.random.normal(fkey, (num_samples, *logits.shape), jnp.float64)

        def nll(f, s):
            out = pb.model_fn(unravel(f), pb.inputs)
            return 0.5 * jnp.sum((out - y[s]) ** 2, axis=-1)

    scores = jax.jit(
        lambda f: jnp.concatenate([jax.jacrev(nll)(f, s) for s in range(num_samples)])
    )(flat)
    want = scores.T @ scores / (n * num_samples)
    fv = gl.curvature.fisher(
        pb.model_fn,
        pb.params,
        (pb.inputs, None),
        key=fkey,
        likelihood=likelihood,
        num_samples=num_samples,
    )
    assert rel_err(gl.curvature.dense(fv, pb.params), want) < 1e-10


@pytest.mark.parametrize(
    ("likelihood", "loss"),
    [("categorical", gl.curvature.softmax_cross_entropy), ("gaussian", gl.curvature.mse)],
)
def test_fisher_expectation_is_ggn(x64, key, likelihood, loss):
    """Mean of F_k v over many keys is within 5 standard errors of G v, coordinate-wise."""
    pb = make_problem("mlp", key)
    targets = pb.labels if likelihood == "categorical" else pb.targets
    v = gl._src.tree.tree_random_like(jax.random.key(11), pb.params, "normal")
    want = dense_ggn(pb.model_fn, loss, pb.params, pb.inputs, targets) @ ravel_pytree(v)[0]

    @jax.jit
    def sample(k):
        fv = gl.curvature.fisher(
            pb.model_fn, pb.params, (pb.inputs, targets), key=k, likelihood=likelihood
        )
        return ravel_pytree(fv(v))[0]

    draws = jax.lax.map(sample, jax.random.split(jax.random.key(3), 400))
    mean = draws.mean(0)
    sem = draws.std(0, ddof=1) / jnp.sqrt(draws.shape[0])
    assert bool(jnp.all(sem > 0))
    assert bool(jnp.all(jnp.abs(mean - want) < 5 * sem)), float(jnp.max(jnp.abs(mean - want) / sem))
