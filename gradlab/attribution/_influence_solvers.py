"""The inverse-curvature solvers behind :func:`gradlab.attribution.influence` (private).

Every solver maps the flat test gradients ``(T, P)`` to the solved vectors
``x_j ~ (C + damping I)^{-1} g_j`` with per-query status. They share one shape so
:func:`influence` can stream the train gradients against any of them the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import gradlab.spectral as spectral
from gradlab.attribution._common import map_examples
from gradlab.curvature import dense as dense_matrix

__all__ = ["Solved", "solve_arnoldi", "solve_cg", "solve_dense", "solve_factored"]

FlatMatVec = Callable[[jax.Array], jax.Array]


class Solved(NamedTuple):
    """Solved test vectors ``x (T, P)`` with per-query status ``(T,)`` arrays."""

    x: jax.Array
    converged: jax.Array
    residual_norm: jax.Array
    num_matvecs: jax.Array


def _true_residuals(mv: FlatMatVec, damping: Any, x: jax.Array, g: jax.Array) -> jax.Array:
    """``||(C + damping I) x_j - g_j||`` for every row, one operator product per row."""
    return jnp.linalg.norm(jax.vmap(mv)(x) + damping * x - g, axis=-1)


def solve_dense(mv: FlatMatVec, damping: Any, g: jax.Array) -> Solved:
    """Materialise ``C`` (``P`` products, chunked), then one linear solve for all queries."""
    t, p = g.shape
    mat = dense_matrix(mv, jnp.zeros((p,), g.dtype), max_size=p)
    a = 0.5 * (mat + mat.T) + damping * jnp.eye(p, dtype=g.dtype)  # symmetrise rounding
    x = jnp.linalg.solve(a, g.T).T
    res = jnp.linalg.norm(x @ a - g, axis=-1)
    conv = jnp.all(jnp.isfinite(x), axis=-1)
    return Solved(x, conv, res, jnp.full((t,), p, dtype=jnp.int32))


def solve_cg(
    mv: FlatMatVec,
    damping: Any,
    g: jax.Array,
    *,
    tol: float,
    max_iters: int,
    chunk_size: int | None,
) -> Solved:
    """One CG solve per query, vmapped within chunks of ``chunk_size`` queries."""

    def one(b: jax.Array) -> tuple:
        sol = spectral.cg(mv, b, damping=damping, tol=tol, max_iters=max_iters)
        return sol.x, sol.converged, sol.residual_norm, sol.num_iters

    x, conv, res, iters = map_examples(one, g, chunk_size)
    return Solved(x, conv, res, iters.astype(jnp.int32))


def solve_arnoldi(
    mv: FlatMatVec,
    like: Any,
    damping: Any,
    g: jax.Array,
    *,
    k: int,
    key: jax.Array,
    num_matvecs: int | None,
    tol: float,
) -> Solved:
    """Top-``k`` eigenpairs (by magnitude) once; every query is a projection onto them."""
    eig = spectral.eigsh(
        mv, like, k=k, key=key, num_matvecs=num_matvecs, which="magnitude", tol=tol
    )
    u = eig.eigenvectors  # (k, P), flat because ``like`` is flat
    coords = (g @ u.T) / (eig.eigenvalues + damping)  # (T, k)
    x = coords @ u
    t = g.shape[0]
    res = _true_residuals(mv, damping, x, g)
    conv = jnp.broadcast_to(jnp.all(eig.converged), (t,))
    return Solved(x, conv, res, jnp.broadcast_to(eig.num_matvecs, (t,)))


def solve_factored(
    inverse: FlatMatVec, mv: FlatMatVec, damping: Any, g: jax.Array, chunk_size: int | None
) -> Solved:
    """Apply a factored inverse to every query; residuals against the exact curvature ``mv``."""
    x = map_examples(inverse, g, chunk_size)
    t = g.shape[0]
    res = _true_residuals(mv, damping, x, g)
    return Solved(x, jnp.all(jnp.isfinite(x), axis=-1), res, jnp.zeros((t,), dtype=jnp.int32))
