"""Pytree helpers: ravelling at algorithm boundaries and small vector-space operations.

Algorithms in gradlab take pytree vectors at their public boundary, flatten them *once* with
:func:`ravel` / :func:`flat_matvec`, and run on flat 1-D arrays inside ``lax`` loops. For tree
arithmetic beyond what lives here use ``optax.tree`` (``add``, ``scale``, ``vdot``, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gradlab._src.errors import check_choice
from gradlab._src.random import rademacher

__all__ = [
    "flat_matvec",
    "ravel",
    "tree_dtype",
    "tree_norm",
    "tree_random_like",
    "tree_size",
    "tree_vdot",
]


def ravel(tree: Any) -> tuple[jax.Array, Callable[[jax.Array], Any]]:
    """Flatten a pytree into one 1-D array; return it with the inverse function.

    Leaves of different dtypes are promoted to their common dtype (as ``ravel_pytree`` does);
    the inverse casts each leaf back.
    """
    return ravel_pytree(tree)


def tree_size(tree: Any) -> int:
    """Total number of scalars in a pytree (a static Python int)."""
    return sum(int(jnp.size(x)) for x in jax.tree_util.tree_leaves(tree))


def tree_dtype(tree: Any) -> jnp.dtype:
    """The common (promoted) dtype of the leaves of ``tree``."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.dtype(jnp.float32)
    return jnp.result_type(*leaves)


def tree_vdot(a: Any, b: Any) -> jax.Array:
    """Inner product of two pytrees with the same structure: ``sum_leaves vdot(a, b)``."""
    parts = jax.tree_util.tree_map(lambda x, y: jnp.vdot(x, y), a, b)
    return sum(jax.tree_util.tree_leaves(parts), jnp.zeros((), tree_dtype(a)))


def tree_norm(a: Any) -> jax.Array:
    """Euclidean norm of a pytree viewed as one long vector."""
    return jnp.sqrt(tree_vdot(a, a))


def tree_random_like(
    key: jax.Array,
    like: Any,
    distribution: Literal["rademacher", "normal"] = "rademacher",
) -> Any:
    """A random pytree shaped like ``like``: Rademacher (+-1) or standard normal entries."""
    check_choice("distribution", distribution, ("rademacher", "normal"))
    leaves, treedef = jax.tree_util.tree_flatten(like)
    keys = jax.random.split(key, max(len(leaves), 1))
    out = []
    for k, leaf in zip(keys, leaves, strict=False):
        dtype = jnp.result_type(leaf)
        if distribution == "rademacher":
            out.append(rademacher(k, jnp.shape(leaf), dtype=dtype))
        else:
            out.append(jax.random.normal(k, jnp.shape(leaf), dtype=dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def flat_matvec(
    matvec: Callable[[Any], Any], like: Any
) -> tuple[Callable[[jax.Array], jax.Array], int, jnp.dtype, Callable[[jax.Array], Any]]:
    """Wrap a pytree matvec as a function on flat vectors.

    Returns:
        ``(mv, n, dtype, unravel)`` where ``mv(x_flat) -> (A x)_flat`` with ``x_flat`` of shape
        ``(n,)`` and dtype ``dtype``, and ``unravel`` maps a flat vector back to a pytree shaped
        like ``like``.
    """
    flat, unravel = ravel(like)
    n = int(flat.shape[0])
    dtype = flat.dtype

    def mv(x: jax.Array) -> jax.Array:
        y, _ = ravel(matvec(unravel(x)))
        return y.astype(dtype)

    return mv, n, dtype, unravel
