"""Materialise a small matrix-free operator as a dense matrix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from gradlab._src.errors import check_int
from gradlab._src.tree import flat_matvec
from gradlab._src.typing import MatVec, PyTree

__all__ = ["dense"]

DEFAULT_MAX_SIZE = 8192


def dense(
    matvec: MatVec,
    like: PyTree,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    chunk_size: int = 256,
) -> jax.Array:
    r"""The ``(n, n)`` matrix of a linear operator on pytrees, for small ``n``.

    Column ``j`` is :math:`A e_j`, with :math:`e_j` the ``j``-th basis vector of the raveled
    parameter space (the order of ``jax.flatten_util.ravel_pytree(like)``: leaves in
    ``jax.tree_util.tree_leaves`` order, each flattened row-major). The ``n`` products run as
    ``lax.map`` over equal chunks of at most ``chunk_size`` basis vectors, each chunk vmapped,
    so peak extra memory is about ``chunk_size`` products at a time plus the ``n * n`` result.
    It is one compiled scan even when called eagerly.

    Args:
        matvec: ``matvec(v) -> Av`` on pytrees shaped like ``like`` (any curvature operator).
        like: a pytree with the structure, shapes and dtypes of the vectors (e.g. ``params``).
        max_size: the largest ``n`` allowed; raise it deliberately for bigger problems (the
            result takes ``n * n * itemsize`` bytes and ``n`` products).
        chunk_size: number of basis vectors vmapped together (``>= 1``).

    Returns:
        ``(n, n)`` array in the common dtype of ``like``'s leaves, with ``n`` the total number
        of scalars in ``like``.

    Raises:
        ValueError: ``n > max_size``, or ``max_size`` / ``chunk_size`` below 1.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> params = {"a": jnp.zeros(2), "b": jnp.zeros(())}
        >>> def loss_fn(p, batch):
        ...     return jnp.sum(p["a"] ** 2) + 3.0 * p["a"][0] * p["b"] + 0.0 * batch.sum()
        >>> hvp = gl.curvature.hessian(loss_fn, params, jnp.zeros((1,)))
        >>> gl.curvature.dense(hvp, params)
        Array([[2., 0., 3.],
               [0., 2., 0.],
               [3., 0., 0.]], dtype=float32)
    """
    max_size = check_int("max_size", max_size, 1)
    chunk_size = check_int("chunk_size", chunk_size, 1)
    mv, n, dtype, _ = flat_matvec(matvec, like)
    if n > max_size:
        raise ValueError(
            f"dense() would build a {n} x {n} matrix ({n * n * jnp.dtype(dtype).itemsize:,} "
            f"bytes and {n} matrix-vector products): n={n} exceeds max_size={max_size}. "
            f"Pass max_size={n} (or larger) to allow it, or use a matrix-free algorithm "
            "(gradlab.spectral) or a sub-block (gradlab.curvature.restrict)."
        )

    # Balanced chunks: ceil(n / chunk_size) chunks of equal size, the index list padded by
    # fewer than num_chunks entries. No ragged leftover chunk, so even an eager call runs as
    # one compiled scan (with the operator's arrays as its operands, not folded constants).
    num_chunks = -(-n // chunk_size)
    chunk = -(-n // num_chunks)
    index = jnp.minimum(jnp.arange(num_chunks * chunk), n - 1).reshape(num_chunks, chunk)

    def columns(js: jax.Array) -> jax.Array:
        return jax.vmap(lambda j: mv(jax.nn.one_hot(j, n, dtype=dtype)))(js)

    cols = lax.map(columns, index).reshape(num_chunks * chunk, n)[:n]
    return cols.T
