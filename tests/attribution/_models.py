"""Tiny models shared by the attribution tests (float64 under the ``x64`` fixture)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp


def mlp_params(key, sizes=(3, 5, 4)):
    """A tanh MLP's params as a dict of layers (pytree with several leaves)."""
    params = {}
    keys = jax.random.split(key, len(sizes) - 1)
    for i, (k, (a, b)) in enumerate(zip(keys, itertools.pairwise(sizes), strict=True)):
        kw, kb = jax.random.split(k)
        params[f"layer{i}"] = {
            "w": jax.random.normal(kw, (a, b)) / jnp.sqrt(a),
            "b": 0.1 * jax.random.normal(kb, (b,)),
        }
    return params


def mlp_apply(params, x):
    """``(N, d_in) -> (N, d_out)`` logits."""
    h = x
    layers = [params[k] for k in sorted(params)]
    for layer in layers[:-1]:
        h = jnp.tanh(h @ layer["w"] + layer["b"])
    return h @ layers[-1]["w"] + layers[-1]["b"]


def cross_entropy(params, batch):
    """Mean softmax cross-entropy of the MLP on ``(inputs, integer labels)``."""
    x, y = batch
    logits = mlp_apply(params, x)
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def data(key, n=6, d_in=3, num_classes=4):
    kx, ky = jax.random.split(key)
    x = jax.random.normal(kx, (n, d_in))
    y = jax.random.randint(ky, (n,), 0, num_classes)
    return x, y
