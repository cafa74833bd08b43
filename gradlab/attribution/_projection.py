"""Random projections of flat gradients, generated block by block (never the full matrix).

The projection is :math:`R \\in \\mathbb{R}^{P \\times k}` with i.i.d. Rademacher entries
:math:`\\pm 1/\\sqrt{k}`, so :math:`\\mathbb{E}[\\langle R^\\top u, R^\\top v \\rangle] = \\langle u, v
\\rangle` (Achlioptas' database-friendly Johnson-Lindenstrauss projection). Rows of :math:`R` are
generated from the key in blocks of :func:`block_rows` rows inside a ``lax.scan``, so memory is
one block, ``block x k``, whatever ``P``; the same key gives the same :math:`R` on every call
(train and test features share it). Under ``vmap`` over examples the block does not depend on the
example, so it is generated once per chunk and the products become matrix products.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradlab._src.errors import check_int
from gradlab._src.random import rademacher
from gradlab._src.tree import tree_dtype, tree_size

__all__ = [
    "BLOCK_ENTRIES",
    "PROJECTIONS",
    "block_rows",
    "check_dim",
    "check_key",
    "kronecker_factors",
    "make_projector",
    "projector",
]

#: Projection kinds: i.i.d. Rademacher (``P x dim`` multiply-adds per example) or the Kronecker
#: product of two small Rademacher matrices (about ``P sqrt(dim)``).
PROJECTIONS = ("rademacher", "kronecker")

#: Entries of one generated block of the projection (``block_rows x dim``): 4M floats, 16 MiB.
BLOCK_ENTRIES = 2**22


def check_dim(name: str, dim: Any) -> int:
    """A projection dimension: a positive int."""
    return check_int(name, dim, 1)


def check_key(name: str, key: Any, needed_by: str) -> None:
    """``key`` must be given (a PRNG key array) when ``needed_by`` asks for randomness."""
    if key is None:
        raise ValueError(
            f"{name}=None: {needed_by} needs a PRNG key (e.g. jax.random.key(0)); gradlab has "
            "no hidden default seed"
        )


def block_rows(num_params: int, dim: int) -> int:
    """Rows of ``R`` generated at a time: all ``P`` if small, else ``BLOCK_ENTRIES // dim``."""
    return max(1, min(num_params, BLOCK_ENTRIES // dim))


def projector(key: jax.Array, like: Any, dim: int) -> Callable[[jax.Array], jax.Array]:
    """``flat (P,) -> R^T flat (dim,)`` for parameters shaped like ``like`` (``P`` entries)."""
    num_params = tree_size(like)
    dtype = tree_dtype(like)
    rows = block_rows(num_params, dim)
    num_blocks = -(-num_params // rows)
    padded = num_blocks * rows
    scale = 1.0 / jnp.sqrt(jnp.asarray(dim, dtype))

    def block(b: jax.Array) -> jax.Array:
        return rademacher(jax.random.fold_in(key, b), (rows, dim), dtype=dtype)

    def project(flat: jax.Array) -> jax.Array:
        flat = jnp.pad(flat.astype(dtype), (0, padded - num_params))

        def step(acc: jax.Array, b: jax.Array) -> tuple[jax.Array, None]:
            part = lax.dynamic_slice_in_dim(flat, b * rows, rows)
            return acc + part @ block(b), None

        if num_blocks == 1:
            return scale * (flat @ block(jnp.asarray(0)))
        acc, _ = lax.scan(step, jnp.zeros((dim,), dtype), jnp.arange(num_blocks))
        return scale * acc

    return project


def kronecker_factors(num_params: int, dim: int) -> tuple[int, int, int, int]:
    """``(a, b, k_a, k_b)``: the flat gradient padded to an ``a x b`` matrix, ``k_a k_b = dim``.

    ``a = ceil(sqrt(P))``, ``b = ceil(P / a)``; ``k_b`` is the largest divisor of ``dim`` not
    above ``sqrt(dim)`` (the cost ``a b k_b + a k_a k_b`` is smallest when the factor applied
    to the long side is the small one).
    """
    a = max(1, int(np.ceil(np.sqrt(num_params))))
    b = max(1, -(-num_params // a))
    k_b = max(d for d in range(1, int(np.sqrt(dim)) + 1) if dim % d == 0)
    return a, b, dim // k_b, k_b


def kronecker_projector(key: jax.Array, like: Any, dim: int) -> Callable[[jax.Array], jax.Array]:
    """``flat -> vec(R_a^T M R_b)`` with ``M`` the zero-padded ``(a, b)`` reshape of ``flat``.

    Equals ``padded_flat @ kron(R_a, R_b)`` with independent Rademacher ``R_a (a, k_a)``,
    ``R_b (b, k_b)`` scaled by ``1/sqrt(k_a)``, ``1/sqrt(k_b)``, so inner products stay
    unbiased; only ``a k_a + b k_b`` random entries are drawn.
    """
    num_params = tree_size(like)
    dtype = tree_dtype(like)
    a, b, k_a, k_b = kronecker_factors(num_params, dim)
    key_a, key_b = jax.random.split(key)

    def project(flat: jax.Array) -> jax.Array:
        r_a = rademacher(key_a, (a, k_a), dtype=dtype) / jnp.sqrt(jnp.asarray(k_a, dtype))
        r_b = rademacher(key_b, (b, k_b), dtype=dtype) / jnp.sqrt(jnp.asarray(k_b, dtype))
        m = jnp.pad(flat.astype(dtype), (0, a * b - num_params)).reshape(a, b)
        return (r_a.T @ (m @ r_b)).reshape(dim)

    return project


def make_projector(
    kind: str, key: jax.Array, like: Any, dim: int
) -> Callable[[jax.Array], jax.Array]:
    """The projection of the given ``kind`` (one of :data:`PROJECTIONS`)."""
    if kind == "kronecker":
        return kronecker_projector(key, like, dim)
    return projector(key, like, dim)
