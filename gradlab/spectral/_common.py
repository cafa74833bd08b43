"""Private helpers shared by the spectral algorithms: input checks, Gram-Schmidt, chunking."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradlab._src.errors import check_same_structure
from gradlab._src.tree import flat_matvec, tree_size
from gradlab.spectral._precision import cast_operator, check_matvec_dtype, working_dtype

__all__ = [
    "BREAKDOWN_RTOL",
    "advance_basis",
    "check_callable",
    "check_vector_like",
    "chunked_mean_var",
    "concrete_is_zero",
    "eigh_high_precision",
    "fresh_direction",
    "local_step",
    "map_rows",
    "prepare",
    "reorthogonalize_step",
]

#: Rows per block of the blocked Gram-Schmidt pass in :func:`reorthogonalize_step`: blocks past
#: the filled part of the basis are skipped, and a block (8 x n) is small enough to stay in cache
#: between its two reads.
REORTH_BLOCK = 8

#: Daniel-Gragg-Kaufman-Stewart criterion: a second pass runs when one pass shrank the vector's
#: norm below this fraction (heavy cancellation means the rounding left in it is no longer tiny).
DGKS_ETA = 0.7071067811865476

#: Breakdown threshold of the Krylov methods, in machine epsilons of the working dtype, relative
#: to the running estimate ``max_i ||A q_i||`` of the operator's norm.
BREAKDOWN_RTOL = 100.0


def check_callable(name: str, fn: Any) -> None:
    """Raise ``TypeError`` if ``fn`` is not callable."""
    if not callable(fn):
        raise TypeError(f"{name}={fn!r} must be callable: a function matvec(v) -> Av")


def check_vector_like(name: str, tree: Any) -> int:
    """Check that ``tree`` is a non-empty pytree of real floating arrays; return its size."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise ValueError(f"{name} has no array leaves: expected a non-empty pytree of float arrays")
    for leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{name} has a leaf of dtype {dtype}: expected real floating-point arrays"
            )
    size = tree_size(tree)
    if size < 1:
        raise ValueError(f"{name} has size 0: expected at least one entry")
    return size


def prepare(
    matvec: Callable[[Any], Any], like: Any, name: str = "like", matvec_dtype: Any = None
) -> tuple[Callable[[jax.Array], jax.Array], int, Any, Callable[[jax.Array], Any]]:
    """Validate ``(matvec, like)`` and return ``(flat_mv, n, dtype, unravel)``.

    The operator is evaluated abstractly once (``jax.eval_shape``) so a matvec whose output does
    not have the structure of ``like`` fails here, with a clear message, before any tracing of
    the algorithm. ``dtype`` is the working dtype: that of ``like``, or float32/float64 when
    ``matvec_dtype`` is set (then ``flat_mv`` hands the operator ``matvec_dtype`` vectors; see
    :mod:`gradlab.spectral._precision`).
    """
    check_callable("matvec", matvec)
    check_vector_like(name, like)
    low = check_matvec_dtype(matvec_dtype)
    if low is not None:
        low_mv, _, like_low = cast_operator(matvec, like, low)
        probe = like_low
    else:
        probe = like
    out = jax.eval_shape(matvec, probe)
    try:
        check_same_structure("matvec(like)", out, like)
    except (TypeError, ValueError) as err:
        raise type(err)(f"the operator's output must have the structure of {name}; {err}") from None
    mv, n, dtype, unravel = flat_matvec(matvec, like)
    if low is None:
        return mv, n, dtype, unravel
    work = working_dtype(dtype, low)
    return (lambda x: low_mv(x).astype(work)), n, work, unravel


def concrete_is_zero(tree: Any) -> bool | None:
    """True/False if every leaf of ``tree`` is concrete and all-zero / not; None if traced."""
    try:
        arrays = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None
    return not any(np.any(a != 0) for a in arrays)


def _filled_pass(basis: jax.Array, w: jax.Array, last: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One block-modified Gram-Schmidt pass of ``w`` against rows ``0..last`` of ``basis``.

    Blocks of :data:`REORTH_BLOCK` rows are visited in a ``fori_loop``; a block that starts after
    row ``last`` is skipped by ``lax.cond`` (its index is not batched under ``vmap``, so it stays
    a real branch), so a step reads only the filled part of the buffer. Returns ``(w, coeffs)``
    with the coefficients of every row (``(m,)``, zero for skipped rows).
    """
    m = basis.shape[0]
    size = min(REORTH_BLOCK, m)
    num_blocks = -(-m // size)

    def body(b, carry):
        start = jnp.minimum(b * size, m - size)  # the last block may overlap its neighbour

        def project(carry):
            w, coeffs = carry
            rows = lax.dynamic_slice_in_dim(basis, start, size, 0)
            c = rows @ w
            w = w - c @ rows
            old = lax.dynamic_slice_in_dim(coeffs, start, size, 0)
            return w, lax.dynamic_update_slice_in_dim(coeffs, old + c, start, 0)

        return lax.cond(b * size <= last, project, lambda carry: carry, carry)

    return lax.fori_loop(0, num_blocks, body, (w, jnp.zeros(m, w.dtype)))


def local_step(
    basis: jax.Array, i: jax.Array, w: jax.Array, prev_coeff: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""The three-term recurrence step on ``w = A q_i``: ``w - b q_{i-1} - alpha q_i``.

    ``b`` is ``prev_coeff`` (the known off-diagonal :math:`\beta_{i-1}`; zero at ``i = 0``) and
    :math:`\alpha = q_i^\top (w - b q_{i-1})` is computed after that subtraction (Paige's
    ordering, the stable one). Returns ``(w, alpha, b)``.
    """
    prev = jnp.maximum(i - 1, 0)
    b = jnp.where(i > 0, prev_coeff, jnp.zeros_like(prev_coeff))
    w = w - b * basis[prev]
    alpha = jnp.vdot(basis[i], w)
    return w - alpha * basis[i], alpha, b


def reorthogonalize_step(
    basis: jax.Array, i: jax.Array, w: jax.Array, prev_coeff: jax.Array
) -> tuple[jax.Array, jax.Array]:
    r"""Orthogonalise ``w = A q_i`` against the filled rows ``0..i`` of the Lanczos ``basis``.

    1. The local step of the three-term recurrence: subtract ``prev_coeff * q_{i-1}`` (the known
       off-diagonal, ignored at ``i = 0``), then :math:`\alpha q_i` with
       :math:`\alpha = q_i^\top w`. In exact arithmetic this is all; it removes the large
       components cheaply (two vectors).
    2. One Gram-Schmidt pass over the filled rows (blocked, see :func:`_filled_pass`), which
       removes the rounding and the loss of orthogonality the local step leaves behind.
    3. A second pass only if the first shrank the vector below :data:`DGKS_ETA` of its norm
       (Daniel, Gragg, Kaufman & Stewart 1976): after a pass that removed little, the vector is
       orthogonal to working precision ("twice is enough" needs the second pass only when
       cancellation was heavy, e.g. right after a thick restart).

    Returns ``(w, coeffs)``: the orthogonalised vector and the total coefficients
    :math:`Q w_\text{in}` of every row (``(m,)``; zero beyond row ``i``), i.e. column ``i`` of
    :math:`Q A Q^\top`.
    """
    m = basis.shape[0]
    w, alpha, b = local_step(basis, i, w, prev_coeff)
    local = jnp.zeros(m, w.dtype).at[jnp.maximum(i - 1, 0)].add(b).at[i].add(alpha)
    norm_in = jnp.linalg.norm(w)
    w, c1 = _filled_pass(basis, w, i)
    heavy = jnp.linalg.norm(w) < DGKS_ETA * norm_in
    w, c2 = lax.cond(
        heavy,
        lambda w: _filled_pass(basis, w, i),
        lambda w: (w, jnp.zeros(m, w.dtype)),
        w,
    )
    return w, local + c1 + c2


def fresh_direction(basis: jax.Array) -> jax.Array:
    """A unit vector orthogonal to the rows of ``basis`` (orthonormal, fewer rows than columns).

    Deterministic: the coordinate vector ``e_j`` least represented in the span of the basis
    (smallest column norm, at most ``rows / n``), orthogonalised twice against every row.
    """
    colnorm = jnp.sum(basis * basis, axis=0)
    j = jnp.argmin(colnorm)
    e = jnp.zeros(basis.shape[1], basis.dtype).at[j].set(1.0)
    for _ in range(2):
        e, _ = _filled_pass(basis, e, basis.shape[0] - 1)
    return e / jnp.linalg.norm(e)


def advance_basis(
    basis: jax.Array, i: jax.Array, w: jax.Array, scale: jax.Array, brk_tol: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Write the next Lanczos vector ``w / ||w||`` into row ``i + 1`` of ``basis``.

    ``w`` is the new direction already orthogonalised against ``basis``. If its norm ``beta``
    is at most ``brk_tol * scale`` the Krylov space is numerically invariant (a breakdown):
    the row gets a fresh unit vector orthogonal to the basis instead and the recorded
    off-diagonal is zero. Nothing is written after the last row.

    Returns:
        ``(basis, beta_recorded, broke)``.
    """
    m = basis.shape[0]
    beta = jnp.linalg.norm(w)
    broke = beta <= brk_tol * scale
    has_next = i + 1 < m
    repair = broke & has_next
    q_next = lax.cond(
        repair,
        lambda: fresh_direction(basis),
        lambda: w / jnp.where(broke, jnp.ones_like(beta), beta),
    )
    nxt = jnp.minimum(i + 1, m - 1)
    row = jnp.where(has_next, q_next, basis[nxt])
    basis = lax.dynamic_update_index_in_dim(basis, row, nxt, 0)
    return basis, jnp.where(repair, jnp.zeros_like(beta), beta), broke


def eigh_high_precision(t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``eigh`` of a small symmetric matrix in float64 when x64 is enabled, else as given."""
    wide = jnp.float64 if jax.config.jax_enable_x64 else t.dtype
    vals, vecs = jnp.linalg.eigh(t.astype(wide))
    return vals, vecs


def chunked_mean_var(
    fn: Callable[[jax.Array], Any], keys: jax.Array, chunk_size: int
) -> tuple[Any, Any]:
    """Mean and unbiased variance (``ddof=1``) of ``fn(key)`` over ``keys``, chunk by chunk.

    ``fn`` is vmapped inside a chunk of ``chunk_size`` keys and the chunks are scanned, so peak
    memory is that of ``chunk_size`` evaluations, not ``len(keys)``; a remainder chunk is
    handled separately. Chunk statistics are merged with Chan et al.'s pairwise update, which
    stays accurate when the variance is small relative to the mean (no ``E[x^2] - E[x]^2``).
    """
    num = keys.shape[0]
    chunk_size = max(1, min(chunk_size, num))
    num_full = num // chunk_size
    # chunk_size == 1: no vmap at all (a batch-1 vmap of an HVP is slower on CPU).
    batched = (
        (lambda ks: jax.tree_util.tree_map(lambda v: v[None], fn(ks[0])))
        if chunk_size == 1
        else jax.vmap(fn)
    )

    def chunk_stats(ks):
        vals = batched(ks)
        mean = jax.tree_util.tree_map(lambda v: jnp.mean(v, axis=0), vals)
        m2 = jax.tree_util.tree_map(lambda v, mu: jnp.sum((v - mu) ** 2, axis=0), vals, mean)
        return mean, m2

    def merge(acc, count_a, stats, count_b):
        mean_a, m2_a = acc
        mean_b, m2_b = stats
        total = count_a + count_b
        delta = jax.tree_util.tree_map(jnp.subtract, mean_b, mean_a)
        mean = jax.tree_util.tree_map(lambda a, d: a + d * (count_b / total), mean_a, delta)
        m2 = jax.tree_util.tree_map(
            lambda x, y, d: x + y + d * d * (count_a * count_b / total), m2_a, m2_b, delta
        )
        return mean, m2

    full = keys[: num_full * chunk_size].reshape((num_full, chunk_size, *keys.shape[1:]))
    shapes = jax.eval_shape(chunk_stats, full[0])
    zero = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)

    def body(carry, xs):
        ks, index = xs
        count_a = index * float(chunk_size)  # merging into an empty accumulator is exact
        return merge(carry, count_a, chunk_stats(ks), float(chunk_size)), None

    acc, _ = lax.scan(body, zero, (full, jnp.arange(num_full)))
    rest = num - num_full * chunk_size
    if rest:
        acc = merge(
            acc,
            float(num_full * chunk_size),
            chunk_stats(keys[num_full * chunk_size :]),
            float(rest),
        )
    mean, m2 = acc
    var = jax.tree_util.tree_map(lambda x: x / max(num - 1, 1), m2)
    return mean, var


def map_rows(fn: Callable[[Any], Any], rows: Any, chunk_size: int) -> Any:
    """``fn`` applied to every row of ``rows`` (an array or a pytree of arrays with a common
    leading axis), vmapped within chunks of ``chunk_size`` and scanned across them."""
    if chunk_size <= 1:  # sequential: no batch-1 vmap (it turns lax.cond into select)
        return lax.map(fn, rows)
    num = jax.tree_util.tree_leaves(rows)[0].shape[0]
    return lax.map(fn, rows, batch_size=min(chunk_size, num))
