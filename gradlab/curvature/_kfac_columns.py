"""Output-space square roots for K-FAC: ``M = sum_k s_k s_k^T`` per example.

For every curvature that K-FAC approximates, the operator is ``sum_n J_n^T M_n J_n`` with an
output-space PSD matrix ``M_n`` per example. :func:`output_columns` returns columns
``S[k, n]`` (shaped like example ``n``'s outputs) with ``M_n = sum_k S[k, n] S[k, n]^T``:

* ``"type2"``: the output Hessian of the loss. Closed forms for
  :func:`softmax_cross_entropy` (per position ``sqrt(w p_c / M) (e_c - p)``, ``C`` columns per
  position) and :func:`mse` (``e_o / sqrt(N)``); any other loss through the eigendecomposition
  of the Hessian of the loss on each example as a batch of one (negative eigenvalues clipped).
* ``"mc"``: the scores of labels sampled from the model, drawn exactly as
  :func:`gradlab.curvature.fisher` draws them (same key, same samples).
* ``"empirical"``: the gradient of the loss on each example as a batch of one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradlab.curvature._losses import _soft_targets, mse, softmax_cross_entropy

__all__ = ["likelihood_of", "output_columns"]


def likelihood_of(loss_fn: Callable) -> str | None:
    """The likelihood whose Fisher equals the GGN of ``loss_fn``, or None."""
    if loss_fn is softmax_cross_entropy:
        return "categorical"
    if loss_fn is mse:
        return "gaussian"
    return None


def _per_position(cols: jax.Array, num_positions: int) -> jax.Array:
    """``(K, N, T, C)`` columns spread over all positions -> ``(K * T, N, T, C)``, one each."""
    eye = jnp.eye(num_positions, dtype=cols.dtype)
    out = jnp.einsum("tu,knuc->ktnuc", eye, cols)
    return out.reshape(-1, *cols.shape[1:])


def _ce_type2(logits: jax.Array, targets: Any) -> jax.Array:
    n, c = logits.shape[0], logits.shape[-1]
    flat = logits.reshape(n, -1, c)
    num_positions = flat.shape[1]
    weight = jnp.sum(_soft_targets(logits, targets), axis=-1).reshape(n, -1, 1)
    p = jax.nn.softmax(flat, axis=-1)
    scale = jnp.sqrt(weight * p / (n * num_positions))  # (N, T, C) over the column class c
    eye = jnp.eye(c, dtype=flat.dtype)
    cols = scale[..., :, None] * (eye - p[..., None, :])  # (N, T, c, c')
    cols = jnp.moveaxis(cols, 2, 0)  # (C, N, T, C)
    return _per_position(cols, num_positions).reshape(-1, *logits.shape)


def _ce_mc(logits: jax.Array, key: Any, num_samples: int) -> jax.Array:
    n, c = logits.shape[0], logits.shape[-1]
    positions = logits.size // c
    p = jax.nn.softmax(logits, axis=-1)
    labels = jax.random.categorical(key, logits, axis=-1, shape=(num_samples, *logits.shape[:-1]))
    r = (p - jax.nn.one_hot(labels, c, dtype=logits.dtype)) / jnp.sqrt(num_samples * positions)
    cols = r.reshape(num_samples, n, -1, c)
    return _per_position(cols, cols.shape[2]).reshape(-1, *logits.shape)


def _per_example_loss(loss_fn: Callable, targets: Any) -> Callable:
    """``f(outputs_n, targets_n)``: the loss of one example as a batch of one."""

    def one(out: jax.Array, tgt: Any) -> jax.Array:
        return loss_fn(out[None], jax.tree_util.tree_map(lambda t: t[None], tgt))

    return one


def output_columns(
    loss_fn: Callable,
    fisher_type: str,
    outputs: jax.Array,
    targets: Any,
    key: Any,
    num_samples: int,
) -> jax.Array:
    """``S`` of shape ``(K, *outputs.shape)`` with ``M_n = sum_k S[k, n] S[k, n]^T``."""
    outputs = jax.lax.stop_gradient(outputs)
    n = outputs.shape[0]
    like = likelihood_of(loss_fn)
    if fisher_type == "mc":
        if like == "categorical":
            return _ce_mc(outputs, key, num_samples)
        eps = jax.random.normal(key, (num_samples, *outputs.shape), outputs.dtype)
        return eps / jnp.sqrt(jnp.asarray(num_samples * n, outputs.dtype))
    one = _per_example_loss(loss_fn, targets)
    if fisher_type == "empirical":
        grads = jax.vmap(jax.grad(one))(outputs, targets)
        return (grads / jnp.sqrt(jnp.asarray(n, outputs.dtype)))[None]
    if like == "categorical":
        return _ce_type2(outputs, targets)
    size = int(np.prod(outputs.shape[1:]))
    if like == "gaussian":
        eye = jnp.eye(size, dtype=outputs.dtype) / jnp.sqrt(jnp.asarray(n, outputs.dtype))
        cols = jnp.broadcast_to(eye[:, None, :], (size, n, size))
        return cols.reshape(size, *outputs.shape)

    def sqrt_hessian(out: jax.Array, tgt: Any) -> jax.Array:
        h = jax.hessian(lambda o: one(o.reshape(out.shape), tgt))(out.reshape(-1))
        lam, q = jnp.linalg.eigh((h + h.T) / 2)
        return q * jnp.sqrt(jnp.clip(lam, 0.0) / n)  # (O, K): column k = q_k sqrt(lam_k / N)

    cols = jax.vmap(sqrt_hessian)(outputs, targets)  # (N, O, K)
    return jnp.moveaxis(cols, 2, 0).reshape(size, *outputs.shape)
