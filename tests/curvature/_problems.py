"""Tiny float64 problems and dense oracles shared by the curvature tests."""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

import gradlab as gl


class TinyMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Dense(5)(x))
        return nn.Dense(4)(x)


class TinyCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Conv(3, (3, 3))(x))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(3)(x)


class Problem(NamedTuple):
    params: object
    model_fn: object  # (params, inputs) -> outputs
    inputs: jax.Array
    labels: jax.Array  # integer labels
    targets: jax.Array  # real regression targets shaped like the outputs


def make_problem(kind: str, key, n: int = 6) -> Problem:
    """A flax linen MLP (3 -> 5 -> 4) or CNN ((5, 5, 1) -> 3), used through ``apply``."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    dtype = jnp.result_type(float)  # float64 under the x64 fixture, float32 otherwise
    if kind == "mlp":
        module, x = TinyMLP(), jax.random.normal(k1, (n, 3), dtype)
    elif kind == "cnn":
        module, x = TinyCNN(), jax.random.normal(k1, (n, 5, 5, 1), dtype)
    else:
        raise ValueError(kind)
    params = jax.jit(module.init)(k2, x[:1])
    params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params)
    out = jax.jit(module.apply)(params, x)
    labels = jax.random.randint(k3, (n,), 0, out.shape[-1])
    targets = jax.random.normal(k4, out.shape, dtype)
    return Problem(params, module.apply, x, labels, targets)


def ce_loss_fn(problem: Problem):
    """``loss_fn(params, batch)`` for ``batch = (inputs, labels)``."""

    def loss_fn(params, batch):
        x, y = batch
        return gl.curvature.softmax_cross_entropy(problem.model_fn(params, x), y)

    return loss_fn


@functools.partial(jax.jit, static_argnums=0)
def dense_hessian(loss_fn, params, batch):
    flat, unravel = ravel_pytree(params)
    return jax.hessian(lambda f: loss_fn(unravel(f), batch))(flat)


@functools.partial(jax.jit, static_argnums=(0, 1))
def dense_ggn(model_fn, loss_fn, params, inputs, targets):
    flat, unravel = ravel_pytree(params)
    out = model_fn(params, inputs)
    jac = jax.jacrev(lambda f: model_fn(unravel(f), inputs).reshape(-1))(flat)
    h_out = jax.hessian(lambda o: loss_fn(o.reshape(out.shape), targets))(out.reshape(-1))
    return jac.T @ h_out @ jac


@functools.partial(jax.jit, static_argnums=0)
def dense_per_example_grads(loss_fn, params, batch):
    """``(N, P)`` per-example gradients, one example as a batch of size 1."""
    flat, unravel = ravel_pytree(params)

    def losses(f):
        return jax.vmap(
            lambda b: loss_fn(unravel(f), jax.tree_util.tree_map(lambda a: a[None], b))
        )(batch)

    return jax.jacrev(losses)(flat)


def rel_err(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
