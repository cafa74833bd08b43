"""Output-space square roots for K-FAC: ``M_n = sum_k s_k s_k^T`` per example.

For every curvature that K-FAC approximates, the operator is ``sum_n w_n J_n^T M_n J_n`` with
an output-space PSD matrix ``M_n`` per example and weights ``w_n`` (``1 / N`` for a mean loss,
``mask_n / N_true`` for a masked batch; applied by the caller). :func:`output_columns`
returns columns ``S[k, n]`` (shaped like example ``n``'s outputs) with
``M_n = sum_k S[k, n] S[k, n]^T``, ``M_n`` being example ``n``'s matrix as a batch of one:

* ``"type2"``: the output Hessian of the loss. Closed forms for
  :func:`softmax_cross_entropy` (per position ``sqrt(w p_c / T) (e_c - p)``, ``C`` columns per
  position) and :func:`mse` (``e_o``); any other loss through the eigendecomposition of the
  Hessian of the loss on each example as a batch of one (negative eigenvalues clipped).
* ``"mc"``: the scores of labels sampled from the model with noise from ``draw_noise``
  (``_fisher.py``), drawn for the whole batch exactly as :func:`gradlab.curvature.fisher`
  draws it (same key, same samples), so that a batch split over devices gets the labels of
  one device.
* ``"empirical"``: the gradient of the loss on each example as a batch of one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradlab.curvature._fisher import sampled_scores
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
    scale = jnp.sqrt(weight * p / num_positions)  # (N, T, C) over the column class c
    eye = jnp.eye(c, dtype=flat.dtype)
    cols = scale[..., :, None] * (eye - p[..., None, :])  # (N, T, c, c')
    cols = jnp.moveaxis(cols, 2, 0)  # (C, N, T, C)
    return _per_position(cols, num_positions).reshape(-1, *logits.shape)


def _ce_mc(logits: jax.Array, gumbel: jax.Array, num_samples: int) -> jax.Array:
    c = logits.shape[-1]
    num_positions = logits[0].size // c
    r = sampled_scores(logits, gumbel) / jnp.sqrt(
        jnp.asarray(num_samples * num_positions, logits.dtype)
    )
    cols = r.reshape(num_samples, logits.shape[0], -1, c)
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
    noise: Any,
    num_samples: int,
) -> jax.Array:
    """``S`` of shape ``(K, *outputs.shape)`` with ``M_n = sum_k S[k, n] S[k, n]^T``.

    ``noise`` is ``_fisher.draw_noise``'s (rows of these examples) for ``"mc"``, else unused.
    """
    outputs = jax.lax.stop_gradient(outputs)
    like = likelihood_of(loss_fn)
    if fisher_type == "mc":
        if like == "categorical":
            return _ce_mc(outputs, noise, num_samples)
        eps = jnp.moveaxis(noise, 1, 0).astype(outputs.dtype)  # (S, N, ...)
        return eps / jnp.sqrt(jnp.asarray(num_samples, outputs.dtype))
    one = _per_example_loss(loss_fn, targets)
    if fisher_type == "empirical":
        return jax.vmap(jax.grad(one))(outputs, targets)[None]
    if like == "categorical":
        return _ce_type2(outputs, targets)
    n = outputs.shape[0]
    size = int(np.prod(outputs.shape[1:]))
    if like == "gaussian":
        eye = jnp.eye(size, dtype=outputs.dtype)
        cols = jnp.broadcast_to(eye[:, None, :], (size, n, size))
        return cols.reshape(size, *outputs.shape)

    def sqrt_hessian(out: jax.Array, tgt: Any) -> jax.Array:
        h = jax.hessian(lambda o: one(o.reshape(out.shape), tgt))(out.reshape(-1))
        lam, q = jnp.linalg.eigh((h + h.T) / 2)
        return q * jnp.sqrt(jnp.clip(lam, 0.0))  # (O, K): column k = q_k sqrt(lam_k)

    cols = jax.vmap(sqrt_hessian)(outputs, targets)  # (N, O, K)
    return jnp.moveaxis(cols, 2, 0).reshape(size, *outputs.shape)
