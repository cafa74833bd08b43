"""Hessian-vector products of a scalar loss, forward-over-reverse."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from gradlab._src.typing import Batch, MatVec, Params
from gradlab.curvature._checks import (
    as_vector_like,
    check_callable,
    check_scalar_loss,
    num_examples,
)

__all__ = ["hessian"]


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
    num_examples("batch", batch)
    check_scalar_loss("loss_fn", loss_fn, params, batch)
    if not isinstance(linearize, bool):
        raise TypeError(f"linearize={linearize!r} must be a bool (True or False)")

    def grad_fn(p: Params) -> Params:
        return jax.grad(loss_fn)(p, batch)

    if linearize:
        _, hvp_linear = jax.linearize(grad_fn, params)

        def matvec(v: Any) -> Any:
            return hvp_linear(as_vector_like(v, params))

        return matvec

    def matvec(v: Any) -> Any:
        return jax.jvp(grad_fn, (params,), (as_vector_like(v, params),))[1]

    return matvec
