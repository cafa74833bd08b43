"""Data-importance scores of Paul et al.: EL2N (error L2 norm) and GraNd (gradient norm)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from gradlab._src.tree import tree_norm, tree_size
from gradlab._src.typing import Batch, Params
from gradlab.attribution._common import (
    check_callable,
    check_chunk_size,
    check_labels,
    check_scalar_loss,
    first_example_batch,
    gradient_chunk_size,
    map_examples,
    num_examples,
    num_models,
    one_example,
    split_supervised_batch,
    static_fn,
)
from gradlab.attribution._per_example import example_grad_fn

__all__ = ["el2n", "grand"]


def _first_model(params: Params) -> Params:
    return jax.tree_util.tree_map(lambda p: p[0], params)


def _over_models(score: Callable[[Params], jax.Array], params: Params, stacked: bool) -> jax.Array:
    """``score(params)`` or, if ``stacked``, its mean over the leading model axis (scanned)."""
    if not stacked:
        return score(params)
    return jnp.mean(lax.map(score, params), axis=0)


def _targets(labels: jax.Array, num_classes: int, dtype: Any) -> jax.Array:
    if jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        return jax.nn.one_hot(labels, num_classes, dtype=dtype)
    return jnp.asarray(labels, dtype)


@partial(jax.jit, static_argnums=(0,), static_argnames=("stacked", "chunk_size"))
def _el2n(apply_fn: Any, params: Params, batch: Batch, *, stacked: bool, chunk_size: Any):
    def score(p: Params) -> jax.Array:
        def one(example: Any) -> jax.Array:
            x, y = example
            logits = apply_fn(p, one_example(x))[0]
            probs = jax.nn.softmax(logits)
            onehot = _targets(y, logits.shape[-1], probs.dtype)
            return jnp.linalg.norm(probs - onehot)

        return map_examples(one, batch, chunk_size)

    return _over_models(score, params, stacked)


def el2n(
    apply_fn: Callable[[Params, Any], jax.Array],
    params: Params,
    batch: Batch,
    *,
    stacked: bool = False,
    chunk_size: int | None = None,
) -> jax.Array:
    r"""EL2N score: the L2 norm of each example's prediction error.

    .. math:: \mathrm{EL2N}(x_i, y_i) = \mathbb{E}_{\theta}\,
              \bigl\lVert \mathrm{softmax}(f(\theta, x_i)) - e_{y_i} \bigr\rVert_2,

    with :math:`e_{y}` the one-hot label. Paul et al. average it over several independently
    initialised networks early in training; pass their params stacked along a leading axis with
    ``stacked=True`` for that average (models are scanned, one at a time). Each example is
    evaluated as a batch of size one.

    Args:
        apply_fn: ``apply_fn(params, inputs) -> logits`` of shape ``(batch, C)``.
        params: one model's params, or (``stacked=True``) ``K`` models' params stacked along a
            leading axis of every leaf.
        batch: ``(inputs, labels)`` with ``N`` examples: integer labels ``(N,)`` in
            ``[0, C)``, or target distributions ``(N, C)`` (e.g. one-hot or smoothed).
        stacked: whether ``params`` carries a leading model axis to average over.
        chunk_size: examples per vmapped chunk; ``None`` vmaps over all ``N`` at once.

    Returns:
        ``(N,)`` scores (averaged over models when ``stacked``).

    Raises:
        ValueError: a label outside ``[0, C)`` (checked when labels are concrete), batch leaves
            with different leading sizes, logits that are not ``(batch, C)``, target
            distributions of the wrong width, or ``chunk_size < 1``.
        TypeError: ``batch`` is not an ``(inputs, labels)`` pair.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> def apply_fn(w, x):  # logits = x @ w
        ...     return x @ w
        >>> x = jnp.array([[0.0, 0.0], [10.0, -10.0]]); y = jnp.array([0, 0])
        >>> gl.attribution.el2n(apply_fn, jnp.eye(2), (x, y)).round(4)  # uniform; confident
        Array([0.7071, 0.    ], dtype=float32)

    References:
        Paul, Ganguli, Dziugaite, "Deep Learning on a Data Diet: Finding Important Examples
        Early in Training", NeurIPS 2021, https://arxiv.org/abs/2107.07075.
    """
    check_callable("apply_fn", apply_fn)
    chunk_size = check_chunk_size(chunk_size)
    inputs, labels = split_supervised_batch("batch", batch)
    num_examples("batch", batch)
    one = _first_model(params) if stacked else params
    if stacked:
        num_models("params", params)
    out = jax.eval_shape(apply_fn, one, first_example_batch(inputs))
    if len(getattr(out, "shape", ())) != 2:
        raise ValueError(
            f"apply_fn must return logits of shape (batch, num_classes), got "
            f"{getattr(out, 'shape', type(out).__name__)} for a batch of one"
        )
    num_classes = out.shape[1]
    if jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        if jnp.ndim(labels) != 1:
            raise ValueError(f"integer labels must have shape (N,), got {jnp.shape(labels)}")
        check_labels("labels", labels, num_classes)
    elif jnp.shape(labels)[1:] != (num_classes,):
        raise ValueError(
            f"target distributions must have shape (N, {num_classes}), got {jnp.shape(labels)}"
        )
    return _el2n(static_fn(apply_fn), params, batch, stacked=bool(stacked), chunk_size=chunk_size)


@partial(jax.jit, static_argnums=(0,), static_argnames=("stacked", "chunk_size"))
def _grand(loss_fn: Any, params: Params, batch: Batch, *, stacked: bool, chunk_size: Any):
    def score(p: Params) -> jax.Array:
        grad_one = example_grad_fn(loss_fn, p)
        return map_examples(lambda example: tree_norm(grad_one(example)), batch, chunk_size)

    return _over_models(score, params, stacked)


def grand(
    loss_fn: Callable[[Params, Batch], jax.Array],
    params: Params,
    batch: Batch,
    *,
    stacked: bool = False,
    chunk_size: int | None = None,
) -> jax.Array:
    r"""GraNd score: the norm of each example's loss gradient, averaged over models.

    .. math:: \mathrm{GraNd}(z_i) = \mathbb{E}_{\theta}\,
              \bigl\lVert \nabla_\theta\, \mathrm{loss\_fn}(\theta, \{z_i\}) \bigr\rVert_2,

    the per-example gradient of :func:`per_example_grads` reduced to its norm inside the map (so
    only one chunk of gradients is ever stored). With ``stacked=True`` the expectation is the
    mean over params stacked along a leading axis (several initialisations or checkpoints, as in
    Paul et al.), scanned one model at a time.

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``.
        params: one model's params, or (``stacked=True``) ``K`` models stacked along a leading
            axis of every leaf.
        batch: pytree of arrays sharing a leading example axis of size ``N``.
        stacked: whether ``params`` carries a leading model axis to average over.
        chunk_size: examples per vmapped chunk; ``None`` picks as many as keep one chunk of
            gradients within 2**24 entries (all ``N`` for small models).

    Returns:
        ``(N,)`` scores.

    Raises:
        ValueError: batch leaves with different leading sizes, stacked params whose leaves
            disagree on the model axis, ``chunk_size < 1``, or a non-scalar ``loss_fn``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> def loss_fn(w, batch):
        ...     x, y = batch
        ...     return 0.5 * jnp.mean((x @ w - y) ** 2)
        >>> x = jnp.array([[3.0, 4.0], [0.0, 1.0]]); y = jnp.array([0.0, 0.0])
        >>> ws = jnp.stack([jnp.ones(2), -jnp.ones(2)])  # two models: the same norms
        >>> gl.attribution.grand(loss_fn, ws, (x, y), stacked=True)
        Array([35.,  1.], dtype=float32)

    References:
        Paul, Ganguli, Dziugaite, "Deep Learning on a Data Diet: Finding Important Examples
        Early in Training", NeurIPS 2021, https://arxiv.org/abs/2107.07075.
    """
    check_callable("loss_fn", loss_fn)
    one = _first_model(params) if stacked else params
    chunk_size = gradient_chunk_size(chunk_size, tree_size(one))
    num_examples("batch", batch)
    if stacked:
        num_models("params", params)
    check_scalar_loss("loss_fn", loss_fn, one, batch)
    return _grand(static_fn(loss_fn), params, batch, stacked=bool(stacked), chunk_size=chunk_size)
