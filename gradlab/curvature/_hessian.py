"""Hessian-vector products of a scalar loss, forward-over-reverse."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradlab._src.programs import pure_operator
from gradlab._src.typing import Batch, MatVec, Params
from gradlab.curvature._checks import (
    as_vector_like,
    check_callable,
    check_scalar_loss,
    num_examples,
)
from gradlab.distributed._parallel import data_axis, shape_only, split_mask, sum_over_examples

__all__ = ["hessian", "per_example_losses"]


def hessian(
    loss_fn: Callable[[Params, Batch], jax.Array],
    params: Params,
    batch: Batch,
    *,
    linearize: bool = False,
) -> MatVec:
    r"""Matrix-free Hessian of ``loss_fn`` at ``params`` on ``batch``.

    Returns the map :math:`v \mapsto H v` with :math:`H = \nabla^2_\theta L(\theta; B)`,
    computed forward-over-reverse: the JVP of ``jax.grad(loss_fn)`` in the direction ``v``
    (Pearlmutter's trick). One product costs about two to three gradient evaluations and the
    memory of one gradient; the matrix is never formed.

    The returned ``matvec`` is a pure function of ``v`` that closes over ``params`` and
    ``batch``: it can be jitted, vmapped over a stack of vectors, differentiated, and called
    inside ``lax.fori_loop`` by the algorithms in :mod:`gradlab.spectral`. To avoid baking the
    data into a compiled program as constants, build the operator *inside* the jitted function
    (``jax.jit(lambda params, batch, v: hessian(loss_fn, params, batch)(v))``).

    **Data parallel.** If the example axis of ``batch`` is split over a device mesh (e.g. by
    :func:`gradlab.distributed.shard_batch`), every product runs per shard in
    ``jax.shard_map`` and the shards' products are summed with ``psum``: the same result, one
    shard's activations per device. A :class:`gradlab.distributed.MaskedBatch` weights out
    padded examples exactly. With ``linearize=True`` the whole data-parallel gradient is
    linearized once: its residuals are global arrays split over the mesh like the batch. See
    the Scaling out guide.

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``.
        params: the point at which the Hessian is taken (any pytree of float arrays).
        batch: any pytree of arrays sharing a leading example axis.
        linearize: if True, run ``jax.linearize`` on the gradient once, when the operator is
            built, and reuse its stored residuals in every product, so each product is only
            the tangent (linear) pass. The default (False) recomputes the gradient's primal
            work inside every product. On the benchmark MLPs ``linearize=True`` was not
            measurably faster, neither for one product nor per product inside a
            ``lax.fori_loop`` (the tangent pass dominates: for a dense layer it costs two
            matmuls per primal matmul, and inside a loop XLA's loop-invariant code motion hoists
            the primal work out of the default version too: both compile to the same loop),
            while it keeps the residuals (all activations) alive for the operator's lifetime;
            hence the default. See ``docs/performance.md``.

    Returns:
        ``matvec(v) -> Hv``, where ``v`` and ``Hv`` are pytrees with the structure and leaf
        shapes of ``params`` (``v`` is cast to the dtypes of ``params``).

    Raises:
        ValueError: ``loss_fn`` does not return a real scalar, or the leaves of ``batch``
            disagree on the leading (example) size; on the first call, a leaf of ``v`` with
            the wrong shape.
        TypeError: ``loss_fn`` is not callable; on the first call, ``v`` has a different
            pytree structure than ``params``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> def loss_fn(w, batch):
        ...     x, y = batch
        ...     return 0.5 * jnp.mean((x @ w - y) ** 2)
        >>> x = jnp.array([[1.0, 0.0], [1.0, 2.0]]); y = jnp.zeros(2)
        >>> hvp = gl.curvature.hessian(loss_fn, jnp.zeros(2), (x, y))
        >>> hvp(jnp.array([1.0, 0.0]))  # H = x^T x / 2
        Array([1., 1.], dtype=float32)
        >>> jax.vmap(hvp)(jnp.eye(2))
        Array([[1., 1.],
               [1., 2.]], dtype=float32)

    References:
        Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation 1994.
    """
    check_callable("loss_fn", loss_fn)
    if not isinstance(linearize, bool):
        raise TypeError(f"linearize={linearize!r} must be a bool (True or False)")
    data, mask = split_mask(batch)
    num_examples("batch", data)
    axis = data_axis("batch", batch, params)
    check_scalar_loss("loss_fn", loss_fn, shape_only(params), shape_only(data))
    if mask is not None:
        one = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct((1, *a.shape[1:]), a.dtype), data
        )
        check_scalar_loss("loss_fn (on a batch of one example)", loss_fn, shape_only(params), one)

    def grad_fn(p: Params, shard: Any, weights: Any) -> Params:
        if weights is None:
            return jax.grad(loss_fn)(p, shard)
        return jax.grad(lambda q: jnp.sum(weights * per_example_losses(loss_fn, q, shard)))(p)

    if linearize:
        # Sharded, the whole shard_map-ped, psum-ed gradient is linearized: its residuals are
        # global arrays split over the mesh (one shard's activations per device).
        _, hvp_linear = jax.linearize(
            lambda p: sum_over_examples(grad_fn, axis, p, data, mask), params
        )

        def linear_matvec(v: Any) -> Any:
            return hvp_linear(as_vector_like(v, params))

        return pure_operator(linear_matvec)

    def local(rep: Any, shard: Any, weights: Any) -> Any:
        p, v = rep
        return jax.jvp(lambda q: grad_fn(q, shard, weights), (p,), (v,))[1]

    def matvec(v: Any) -> Any:
        v = as_vector_like(v, params)
        return sum_over_examples(local, axis, (params, v), data, mask)

    return pure_operator(matvec)


def per_example_losses(loss_fn: Callable[[Params, Batch], jax.Array], p: Params, batch: Any) -> Any:
    """``(N,)`` losses, each example evaluated as a batch of one of the same ``loss_fn``."""

    def single(example: Any) -> jax.Array:
        return loss_fn(p, jax.tree_util.tree_map(lambda a: a[None], example))

    return jax.vmap(single)(batch)
