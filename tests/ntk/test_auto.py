"""The documented ``auto`` rule on contrasting workloads (decisions only; timings live in
benchmarks/ntk.py, which records that these choices are the measured-fastest ones)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import gradlab as gl
from gradlab.ntk._auto import choose_implementation
from gradlab.ntk._layout import make_layout


def _choice(apply_fn, params, x, trace_axes):
    layout = make_layout(
        apply_fn,
        params,
        x,
        None,
        trace_axes=trace_axes,
        diagonal_axes=(),
        vmap_axes=0,
        batch_size=None,
    )
    return choose_implementation(layout, params, x, None)[0].implementation


def _pure_mlp(sizes, normalised=False):
    ks = jax.random.split(jax.random.key(0), len(sizes) - 1)
    params = [
        (jax.random.normal(k, (a, b)) / a**0.5, jnp.zeros(b))
        for k, a, b in zip(ks, sizes[:-1], sizes[1:], strict=True)
    ]

    def apply_fn(p, x):
        for i, (w, b) in enumerate(p):
            if normalised:  # weight normalisation: w is not only a matmul operand
                w = w / jnp.linalg.norm(w, axis=0)
            x = x @ w + b
            if i < len(p) - 1:
                x = jnp.tanh(x)
        return x

    return params, apply_fn


def test_wide_mlp_many_outputs():
    """Many outputs, full kernel: structured when it applies, else NTK-vector products."""
    x = jnp.ones((16, 32))
    params, apply_fn = gl.models.init_mlp(jax.random.key(0), (32, 256, 256, 100))
    assert _choice(apply_fn, params, x, ()) == "structured"
    assert _choice(apply_fn, params, x, (-1,)) == "structured"
    params, apply_fn = _pure_mlp((32, 256, 256, 100))  # plain function: the jaxpr path
    assert _choice(apply_fn, params, x, ()) == "structured"
    params, apply_fn = _pure_mlp((32, 256, 256, 100), normalised=True)  # nothing to factor
    assert _choice(apply_fn, params, x, ()) == "ntk_vector_products"


def test_plain_benchmark_mlps_take_the_structured_path():
    """benchmarks/ntk.py's plain_small/plain_wide (small N=128, wide N=512; measured fastest)."""
    for sizes, n in (((64, 128, 128, 10), 128), ((64, 512, 512, 10), 512)):
        params, apply_fn = _pure_mlp(sizes)
        x = jnp.ones((n, 64))
        assert _choice(apply_fn, params, x, (-1,)) == "structured"
        assert _choice(apply_fn, params, x, ()) == "structured"


def test_conv_net_few_outputs():
    """Weight sharing makes a forward pass cost >> 2P: contract the Jacobians."""
    params, apply_fn = gl.models.init_cnn(jax.random.key(0), (8, 8, 1), 1, channels=(16, 16))
    x = jnp.ones((16, 8, 8, 1))
    assert _choice(apply_fn, params, x, (-1,)) == "jacobian_contraction"


def test_benchmark_cnn_takes_the_conv_structured_path():
    """The benchmark's 8-8-10 CNN at N=128: structured measured 4-6x faster (performance.md)."""
    params, apply_fn = gl.models.init_cnn(jax.random.key(0), (8, 8, 1), 10, channels=(8, 8))
    x = jnp.ones((128, 8, 8, 1))
    assert _choice(apply_fn, params, x, (-1,)) == "structured"
    assert _choice(apply_fn, params, x, ()) == "structured"
