"""Curvature operators over a whole dataset, accumulated batch by batch."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from gradlab._src.errors import check_leading_axis
from gradlab._src.typing import Batch, MatVec
from gradlab.curvature._checks import check_callable

__all__ = ["over_batches", "stream"]

OperatorFn = Callable[[Batch], MatVec]


def _weighted_sum(acc: Any, y: Any, w: float) -> Any:
    return jax.tree_util.tree_map(
        lambda a, b: a + jnp.asarray(w, a.dtype) * b.astype(a.dtype), acc, y
    )


def over_batches(operator: OperatorFn, batches: Batch, *, remainder: Batch | None = None) -> MatVec:
    r"""A curvature operator over many equal-sized batches, compiled as one ``lax.scan``.

    For batches :math:`B_1, \dots, B_K` with :math:`n_k` examples each and per-batch operators
    :math:`A_k` = ``operator(B_k)`` (mean losses, as every gradlab operator assumes),

    .. math:: A v = \frac{\sum_k n_k A_k v}{\sum_k n_k},

    which is exactly the operator of the concatenated dataset whenever the per-batch operator
    is a mean over its examples (Hessian, GGN, Fisher and empirical Fisher of mean losses). The
    ``K`` stacked batches are visited by ``lax.scan`` (compile time does not grow with ``K``,
    memory holds one batch's intermediates); a smaller last batch goes in ``remainder`` and is
    weighted by its own size, so a ragged split gives the same operator as the full batch.

    Args:
        operator: ``operator(batch) -> matvec``, e.g.
            ``lambda b: gl.curvature.hessian(loss_fn, params, b)``.
        batches: the batches stacked along a new leading axis: every leaf has shape
            ``(K, batch_size, ...)``.
        remainder: optional last batch with fewer examples (leaves ``(n_r, ...)``).

    Returns:
        ``matvec(v)`` on pytrees shaped like the params; jit/vmap-compatible and usable inside
        ``lax`` loops.

    Raises:
        ValueError: leaves of ``batches`` disagree on ``K`` or on the batch size, or the leaves
            of ``remainder`` disagree on their leading size.
        TypeError: ``operator`` is not callable.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> def loss_fn(w, x):
        ...     return jnp.mean((x @ w) ** 2)
        >>> x = jnp.arange(10.0).reshape(5, 2) / 10
        >>> w = jnp.zeros(2)
        >>> hvp = gl.curvature.over_batches(
        ...     lambda b: gl.curvature.hessian(loss_fn, w, b),
        ...     x[:4].reshape(2, 2, 2), remainder=x[4:])
        >>> v = jnp.array([1.0, -1.0])
        >>> bool(jnp.allclose(hvp(v), gl.curvature.hessian(loss_fn, w, x)(v)))
        True
    """
    check_callable("operator", operator)
    num_batches = check_leading_axis("batches", batches)
    first = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), batches)
    batch_size = check_leading_axis("batches (each stacked batch, axis 1)", first)
    total = num_batches * batch_size
    n_rem = 0
    if remainder is not None:
        n_rem = check_leading_axis("remainder", remainder)
        total += n_rem

    def matvec(v: Any) -> Any:
        out_shape = jax.eval_shape(lambda b, v: operator(b)(v), first, v)
        zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape)

        def body(acc: Any, batch: Any) -> tuple[Any, None]:
            return _weighted_sum(acc, operator(batch)(v), batch_size / total), None

        acc, _ = lax.scan(body, zeros, batches)
        if remainder is not None:
            acc = _weighted_sum(acc, operator(remainder)(v), n_rem / total)
        return acc

    return matvec


def stream(
    operator: OperatorFn, batches: Iterable[Batch] | Callable[[], Iterable[Batch]]
) -> MatVec:
    r"""A curvature operator over a dataset streamed from Python, one batch at a time.

    Each product iterates over ``batches`` again and returns
    :math:`\sum_k n_k A_k v / \sum_k n_k`, with :math:`n_k` the true number of examples of
    batch ``k`` (so a ragged last batch is weighted correctly) and :math:`A_k` =
    ``operator(batch_k)``. Each per-batch product runs as one jitted call (compiled once per
    distinct batch shape), with the batch passed as an argument; batches can live on the host
    and be moved to the device one at a time, so the dataset need not fit in device memory.

    The returned ``matvec`` runs a Python loop, so it is for eager use: call it from Python,
    not inside ``jit`` or the ``lax`` loops of :mod:`gradlab.spectral` (use
    :func:`over_batches` there).

    Args:
        operator: ``operator(batch) -> matvec``.
        batches: a re-iterable collection of batches (a list, a tuple, or any object whose
            ``__iter__`` starts over), or a zero-argument callable returning a fresh iterable
            (e.g. a data-loader factory). A one-shot iterator or generator is rejected, since
            every product must see every batch.

    Returns:
        ``matvec(v)`` on pytrees shaped like the params (eager).

    Raises:
        TypeError: ``batches`` is a one-shot iterator, or ``operator`` is not callable.
        ValueError: (first call) the stream is empty, or a batch has leaves with different
            leading sizes.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> def loss_fn(w, x):
        ...     return jnp.mean((x @ w) ** 2)
        >>> x = jnp.arange(10.0).reshape(5, 2) / 10
        >>> w = jnp.zeros(2)
        >>> hvp = gl.curvature.stream(lambda b: gl.curvature.hessian(loss_fn, w, b),
        ...                           [x[:2], x[2:4], x[4:]])
        >>> v = jnp.array([1.0, -1.0])
        >>> bool(jnp.allclose(hvp(v), gl.curvature.hessian(loss_fn, w, x)(v)))
        True
    """
    check_callable("operator", operator)
    if not callable(batches):
        if not isinstance(batches, Iterable):
            raise TypeError(
                f"batches must be a re-iterable collection of batches or a zero-argument "
                f"callable returning one, got {type(batches).__name__}"
            )
        if iter(batches) is batches:
            raise TypeError(
                f"batches is a one-shot iterator ({type(batches).__name__}): every product "
                "must visit every batch, so pass a list/tuple of batches or a zero-argument "
                "callable that returns a fresh iterator (e.g. lambda: loader())"
            )

    product = jax.jit(lambda batch, v: operator(batch)(v))

    def matvec(v: Any) -> Any:
        source = batches() if callable(batches) else batches
        acc, total = None, 0
        for k, batch in enumerate(source):
            n = check_leading_axis(f"batch {k} of the stream", batch)
            y = product(batch, v)
            y = jax.tree_util.tree_map(lambda a: a * jnp.asarray(n, a.dtype), y)
            acc = y if acc is None else jax.tree_util.tree_map(jnp.add, acc, y)
            total += n
        if acc is None:
            raise ValueError("batches yielded no batch: expected at least one non-empty batch")
        return jax.tree_util.tree_map(lambda a: a / jnp.asarray(total, a.dtype), acc)

    return matvec
