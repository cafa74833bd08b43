"""Per-example gradients and their norms: ``vmap(grad)`` over examples as batches of one."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax

from gradlab._src.tree import tree_norm, tree_size
from gradlab._src.typing import Batch, Params
from gradlab.attribution._common import (
    check_callable,
    check_scalar_loss,
    gradient_chunk_size,
    map_examples,
    num_examples,
    one_example,
    static_fn,
)

__all__ = ["example_grad_fn", "per_example_grad_norms", "per_example_grads"]


def example_grad_fn(
    loss_fn: Callable[[Params, Batch], jax.Array], params: Params
) -> Callable[[Any], Any]:
    """``example -> grad loss_fn(params, example as a batch of one)`` (leaves shaped like params)."""
    grad = jax.grad(loss_fn)

    def one(example: Any) -> Any:
        return grad(params, one_example(example))

    return one


@partial(jax.jit, static_argnums=(0,), static_argnames=("chunk_size",))
def _grads(loss_fn: Any, params: Params, batch: Batch, *, chunk_size: int | None) -> Any:
    return map_examples(example_grad_fn(loss_fn, params), batch, chunk_size)


@partial(jax.jit, static_argnums=(0,), static_argnames=("chunk_size",))
def _norms(loss_fn: Any, params: Params, batch: Batch, *, chunk_size: int | None) -> jax.Array:
    grad_one = example_grad_fn(loss_fn, params)
    return map_examples(lambda example: tree_norm(grad_one(example)), batch, chunk_size)


def _prepare(loss_fn: Any, params: Params, batch: Batch, chunk_size: Any) -> int:
    check_callable("loss_fn", loss_fn)
    chunk_size = gradient_chunk_size(chunk_size, tree_size(params))
    num_examples("batch", batch)
    check_scalar_loss("loss_fn", loss_fn, params, batch)
    return chunk_size


def per_example_grads(
    loss_fn: Callable[[Params, Batch], jax.Array],
    params: Params,
    batch: Batch,
    *,
    chunk_size: int | None = None,
) -> Any:
    r"""Gradient of the loss of every example, stacked along a leading axis.

    For a batch of :math:`N` examples :math:`z_1, \dots, z_N`,

    .. math:: g_i = \nabla_\theta\, \mathrm{loss\_fn}(\theta, \{z_i\}),

    the gradient of the *same* loss function evaluated on example :math:`i` alone, as a batch of
    size one (so a mean loss gives the gradient of that example's loss, and users write one loss
    for batches and examples). Computed as ``vmap(grad)`` over examples in one compiled program
    (cached per ``loss_fn``, so pass the same function object to reuse it); with ``chunk_size`` the
    examples are vmapped within chunks and the chunks scanned (``lax.map``), which bounds the
    intermediate memory of the backward passes to one chunk (the result is still ``N x P``).

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``.
        params: point at which the gradients are taken (any pytree of float arrays).
        batch: pytree of arrays sharing a leading example axis of size ``N``.
        chunk_size: examples per vmapped chunk; ``None`` picks as many as keep one chunk of
            gradients within 2**24 entries (all ``N`` for small models).

    Returns:
        A pytree like ``params`` whose every leaf has an extra leading axis of size ``N``.

    Raises:
        ValueError: batch leaves with different leading sizes, ``chunk_size < 1``, or a
            ``loss_fn`` that does not return a real scalar.
        TypeError: ``loss_fn`` is not callable or ``chunk_size`` is not an integer.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> def loss_fn(w, batch):
        ...     x, y = batch
        ...     return 0.5 * jnp.mean((x @ w - y) ** 2)
        >>> x = jnp.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]); y = jnp.zeros(3)
        >>> g = gl.attribution.per_example_grads(loss_fn, jnp.ones(2), (x, y))
        >>> g.shape  # (N, P): example i's gradient is x_i (x_i . w - y_i)
        (3, 2)
        >>> g[1].tolist()
        [0.0, 4.0]

    References:
        Goodfellow, "Efficient per-example gradient computations", 2015,
        https://arxiv.org/abs/1510.01799. Rochette et al., "Efficient per-example gradient
        computations in convolutional neural networks", https://arxiv.org/abs/1912.06015.
    """
    chunk_size = _prepare(loss_fn, params, batch, chunk_size)
    return _grads(static_fn(loss_fn), params, batch, chunk_size=chunk_size)


def per_example_grad_norms(
    loss_fn: Callable[[Params, Batch], jax.Array],
    params: Params,
    batch: Batch,
    *,
    chunk_size: int | None = None,
) -> jax.Array:
    r"""Euclidean norm :math:`\lVert g_i \rVert_2` of every per-example gradient.

    The same :math:`g_i` as :func:`per_example_grads`, but each gradient is reduced to its norm
    inside the map, so only one chunk of gradients lives at a time: memory is ``chunk_size x P``
    plus ``N`` floats, instead of ``N x P`` (with ``chunk_size=None`` a chunk holds at most
    2**24 gradient entries).

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``.
        params: point at which the gradients are taken.
        batch: pytree of arrays sharing a leading example axis of size ``N``.
        chunk_size: examples per vmapped chunk; ``None`` picks as many as keep one chunk of
            gradients within 2**24 entries (all ``N`` for small models).

    Returns:
        ``(N,)`` array of gradient norms.

    Raises:
        ValueError: as :func:`per_example_grads`.
        TypeError: as :func:`per_example_grads`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> def loss_fn(w, batch):
        ...     x, y = batch
        ...     return 0.5 * jnp.mean((x @ w - y) ** 2)
        >>> x = jnp.array([[3.0, 4.0], [0.0, 1.0]]); y = jnp.array([6.0, 1.0])
        >>> gl.attribution.per_example_grad_norms(loss_fn, jnp.ones(2), (x, y), chunk_size=1)
        Array([5., 0.], dtype=float32)

    References:
        Goodfellow, "Efficient per-example gradient computations", 2015,
        https://arxiv.org/abs/1510.01799.
    """
    chunk_size = _prepare(loss_fn, params, batch, chunk_size)
    return _norms(static_fn(loss_fn), params, batch, chunk_size=chunk_size)
