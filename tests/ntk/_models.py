"""Tiny models shared by the NTK tests (float64 oracles need P of a few hundred).

Builders are cached so that the dense oracles computed from them can be cached too; call them
only with 64-bit floats enabled (the ``x64`` fixture).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

import gradlab as gl
from gradlab._src.tree import ravel


class SeqModel(nn.Module):
    """Embed -> Dense on every token -> LayerNorm -> tanh -> Dense(O): outputs (N, T, O)."""

    vocab: int = 5
    width: int = 4
    num_outputs: int = 3

    @nn.compact
    def __call__(self, tokens):
        h = nn.Embed(self.vocab, self.width, param_dtype=jnp.float64)(tokens)
        h = nn.Dense(self.width, param_dtype=jnp.float64)(h)
        h = jnp.tanh(nn.LayerNorm(param_dtype=jnp.float64)(h))
        return nn.Dense(self.num_outputs, param_dtype=jnp.float64)(h)


@functools.cache
def mlp(num_outputs, key=0):
    params, apply_fn = gl.models.init_mlp(
        jax.random.key(key), (3, 5, 4, num_outputs), dtype=jnp.float64
    )
    x1 = jax.random.normal(jax.random.key(11), (5, 3), jnp.float64)
    x2 = jax.random.normal(jax.random.key(12), (3, 3), jnp.float64)
    return params, apply_fn, x1, x2


@functools.cache
def cnn():
    params, apply_fn = gl.models.init_cnn(
        jax.random.key(1), (5, 5, 1), 3, channels=(2, 3), dtype=jnp.float64
    )
    x1 = jax.random.normal(jax.random.key(13), (4, 5, 5, 1), jnp.float64)
    x2 = jax.random.normal(jax.random.key(14), (3, 5, 5, 1), jnp.float64)
    return params, apply_fn, x1, x2


@functools.cache
def pytree_model():
    """A pure-JAX model whose params are a dict/tuple pytree with several leaves."""
    k = jax.random.split(jax.random.key(2), 4)
    params = {
        "layers": (
            {"w": jax.random.normal(k[0], (3, 6), jnp.float64), "b": jnp.zeros(6, jnp.float64)},
            {"w": jax.random.normal(k[1], (6, 2), jnp.float64)},
        ),
        "scale": jnp.array(1.3, jnp.float64),
        "shift": jax.random.normal(k[2], (2,), jnp.float64),
    }

    def apply_fn(p, x):
        h = jnp.sin(x @ p["layers"][0]["w"] + p["layers"][0]["b"])
        return p["scale"] * (h @ p["layers"][1]["w"]) + p["shift"]

    x1 = jax.random.normal(jax.random.key(15), (4, 3), jnp.float64)
    x2 = jax.random.normal(jax.random.key(16), (2, 3), jnp.float64)
    return params, apply_fn, x1, x2


@functools.cache
def seq_model():
    model = SeqModel()
    tokens1 = jax.random.randint(jax.random.key(17), (4, 3), 0, 5)
    tokens2 = jax.random.randint(jax.random.key(18), (3, 3), 0, 5)
    params = model.init(jax.random.key(3), tokens1)
    return params, model.apply, tokens1, tokens2


def dense_full_kernel(apply_fn, params, x1, x2):
    """Oracle: J1 J2^T from jax.jacrev on raveled params; shape f(x1).shape + f(x2).shape."""
    flat, unravel = ravel(params)
    j1 = jax.jacrev(lambda p: apply_fn(unravel(p), x1))(flat)
    j2 = jax.jacrev(lambda p: apply_fn(unravel(p), x2))(flat)
    return jnp.tensordot(j1, j2, axes=([-1], [-1]))


def reference_contract(full, ndim, trace, diag):
    """Apply the neural-tangents shape contract to a full kernel with numpy trace/diagonal."""
    import numpy as np

    k = np.asarray(full)
    sizes = k.shape[:ndim]
    trace = {a % ndim for a in trace}
    diag = {a % ndim for a in diag}
    perm = [j for i in range(ndim) for j in (i, ndim + i)]
    k = np.transpose(k, perm)
    for i in reversed(range(ndim)):
        if i in trace:
            k = np.trace(k, axis1=2 * i, axis2=2 * i + 1) / sizes[i]
        elif i in diag:
            k = np.moveaxis(np.diagonal(k, axis1=2 * i, axis2=2 * i + 1), -1, 2 * i)
    return k


class BatchNormNet(nn.Module):
    """Dense -> BatchNorm in training mode (batch statistics couple the examples) -> Dense."""

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(4, param_dtype=jnp.float64)(x)
        h = nn.BatchNorm(use_running_average=False, param_dtype=jnp.float64)(h)
        return nn.Dense(2, param_dtype=jnp.float64)(jnp.tanh(h))


@functools.cache
def coupled_models():
    """Models whose outputs on one example depend on the others (name -> (params, apply_fn))."""
    x = jax.random.normal(jax.random.key(19), (5, 3), jnp.float64)
    bn = BatchNormNet()
    variables = bn.init(jax.random.key(4), x)

    def batch_norm(p, x):
        return bn.apply(p, x, mutable=["batch_stats"])[0]

    k = jax.random.split(jax.random.key(5), 4)
    att = {name: jax.random.normal(kk, (3, 3), jnp.float64) for name, kk in zip("qkvo", k)}

    def attention(p, x):
        """Self-attention across the batch axis (examples attend to each other)."""
        q, kk, v = x @ p["q"], x @ p["k"], x @ p["v"]
        return jax.nn.softmax(q @ kk.T / 3**0.5, axis=-1) @ v @ p["o"]

    params, mlp_fn, _, _ = mlp(2)

    def frozen_centering(p, x):
        """Batch mean behind stop_gradient: invisible to input JVPs, seen by the VJP probe."""
        out = mlp_fn(p, x)
        return out - jax.lax.stop_gradient(out.mean(axis=0))

    def batch_size_scaled(p, x):
        """No data coupling, but the function depends on the batch size."""
        return mlp_fn(p, x) * x.shape[0]

    return {
        "batch_norm": (variables, batch_norm),
        "attention": (att, attention),
        "frozen_centering": (params, frozen_centering),
        "batch_size_scaled": (params, batch_size_scaled),
    }
