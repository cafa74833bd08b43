"""The NTK as a matrix-free operator on output space: ``v -> J (J^T v)``, tiled or sharded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradlab._src.errors import check_int
from gradlab._src.programs import pure_operator
from gradlab.distributed._batch import MaskedBatch
from gradlab.distributed._parallel import data_axis, rows_over_examples, shape_only, split_mask

__all__ = ["ntk_operator"]


def ntk_operator(
    apply_fn: Callable,
    params: Any,
    x: jax.Array,
    *,
    batch_size: int | None = None,
) -> Callable[[jax.Array], jax.Array]:
    r"""The full empirical NTK of a batch as a matvec: ``v -> Theta v = J (J^T v)``.

    ``J`` is the Jacobian of the stacked outputs ``f(params, x)`` (shape ``(N, ...)``) with
    respect to the parameters, so ``Theta`` is the ``(N O) x (N O)`` kernel that
    :func:`empirical_ntk` returns with ``trace_axes=()`` (reshaped). One matvec costs one VJP
    and one JVP over the batch (about three forward passes) and never forms ``Theta`` or
    ``J``; with ``batch_size`` the batch is processed in tiles of that many examples (``J^T v``
    accumulated tile by tile, then ``J`` applied tile by tile), so memory is bounded by one
    tile's activations. The matvec plugs into :mod:`gradlab.spectral` with
    ``like = jnp.zeros_like(apply_fn(params, x))``.

    With ``x`` split over a device mesh (:func:`gradlab.distributed.shard_batch`), each device
    applies ``J_s^T`` to its rows, the sums are ``psum``-ed and each device applies ``J_s`` to
    its rows; the result is returned replicated. ``x`` may be a
    :class:`gradlab.distributed.MaskedBatch`: padded rows of ``v`` are ignored and come back 0.

    Args:
        apply_fn: ``apply_fn(params, x) -> outputs`` with a leading example axis.
        params: parameter pytree.
        x: inputs ``(N, ...)``.
        batch_size: optional tile size (examples must be independent when tiling).

    Returns:
        ``matvec(v) -> Theta v`` on arrays shaped like ``apply_fn(params, x)``.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (4, 16, 3))
        >>> x = jax.random.normal(jax.random.key(1), (10, 4))
        >>> matvec = gl.ntk.ntk_operator(apply_fn, params, x)
        >>> like = jnp.zeros((10, 3))
        >>> top = gl.spectral.eigsh(matvec, like, k=2, key=jax.random.key(2))
        >>> top.eigenvalues.shape
        (2,)
    """
    x, mask = split_mask(x)
    x = jnp.asarray(x)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, 1)
    axis = data_axis("x", x if mask is None else MaskedBatch(x, mask), params)
    out = jax.eval_shape(apply_fn, shape_only(params), shape_only(x))
    if not hasattr(out, "shape") or len(out.shape) == 0:
        raise ValueError("apply_fn(params, x) must return one array with a leading example axis")

    def products(p: Any, xs: jax.Array, vs: jax.Array, ms: Any, reduce: Callable) -> jax.Array:
        if ms is not None:
            vs = vs * ms.reshape((-1,) + (1,) * (vs.ndim - 1)).astype(vs.dtype)
        g = reduce(_transpose_products(apply_fn, p, xs, vs, batch_size))
        res = _forward_products(apply_fn, p, xs, g, batch_size)
        if ms is not None:
            res = res * ms.reshape((-1,) + (1,) * (res.ndim - 1)).astype(res.dtype)
        return res

    if axis is None:

        def matvec(v: jax.Array) -> jax.Array:
            return products(params, x, jnp.asarray(v, out.dtype), mask, lambda g: g)

        return pure_operator(matvec)

    def local(p: Any, shard: Any, _: Any) -> jax.Array:
        xs, vs, ms = shard
        return products(p, xs, vs, ms, lambda g: jax.lax.psum(g, axis.axes))

    def sharded_matvec(v: jax.Array) -> jax.Array:
        shard = (x, jnp.asarray(v, out.dtype), mask)
        return rows_over_examples(local, axis, params, shard, replicate_out=True)

    return pure_operator(sharded_matvec)


def _tiles(x: jax.Array, size: int) -> tuple[jax.Array, int]:
    n = x.shape[0]
    count = -(-n // size)
    pad = count * size - n
    if pad:
        x = jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)], axis=0)
    return x.reshape(count, size, *x.shape[1:]), pad


def _transpose_products(apply_fn: Callable, params: Any, x: jax.Array, v: jax.Array, size: Any):
    """``J^T v`` over the examples of ``x``, tile by tile when ``size`` is set."""
    n = x.shape[0]
    if size is None or size >= n:
        _, vjp = jax.vjp(lambda p: apply_fn(p, x), params)
        return vjp(v)[0]
    xt, pad = _tiles(x, size)
    vt = jnp.concatenate([v, jnp.zeros((pad, *v.shape[1:]), v.dtype)]) if pad else v
    vt = vt.reshape(xt.shape[0], size, *v.shape[1:])
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)

    def accumulate(acc, tile):
        xs, vs = tile
        _, vjp = jax.vjp(lambda p: apply_fn(p, xs), params)
        (g,) = vjp(vs)
        return jax.tree_util.tree_map(jnp.add, acc, g), None

    return jax.lax.scan(accumulate, zero, (xt, vt))[0]


def _forward_products(apply_fn: Callable, params: Any, x: jax.Array, g: Any, size: Any):
    """``J g`` on the examples of ``x``, tile by tile when ``size`` is set."""
    n = x.shape[0]
    if size is None or size >= n:
        return jax.jvp(lambda p: apply_fn(p, x), (params,), (g,))[1]
    xt, _ = _tiles(x, size)
    res = jax.lax.map(lambda xs: jax.jvp(lambda p: apply_fn(p, xs), (params,), (g,))[1], xt)
    return res.reshape(-1, *res.shape[2:])[:n]
