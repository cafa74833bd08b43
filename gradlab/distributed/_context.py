"""Run an algorithm on the mesh its operator's products live on (private).

With ``Explicit`` mesh axes, an array's type records its mesh: a data-parallel product comes
back replicated *on the batch's mesh*, and an algorithm that writes it into a buffer made by
``jnp.zeros`` (no mesh) fails with a ``ShardingTypeError``. Entering the mesh
(``jax.set_mesh`` eagerly, ``jax.sharding.use_abstract_mesh`` while tracing) makes every
buffer the algorithm creates live on it too, replicated. Nothing changes for operators
without a mesh, for ``Auto`` meshes, or inside a user's own ``jax.set_mesh`` block.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import jax
from jax.sharding import AxisType, NamedSharding

__all__ = ["follow_operator_mesh", "remember_mesh"]

F = TypeVar("F", bound=Callable[..., Any])

# Concrete meshes seen by data-parallel operators, by their abstract mesh, so that an eager
# algorithm can enter the very mesh (same device order) the batch was placed on.
_CONCRETE: dict[Any, Any] = {}


def remember_mesh(mesh: Any) -> None:
    """Record a concrete ``jax.sharding.Mesh`` (no-op for an abstract one)."""
    if isinstance(mesh, jax.sharding.Mesh):
        _CONCRETE[mesh.abstract_mesh] = mesh


def _explicit_mesh(tree: Any) -> Any:
    for leaf in jax.tree_util.tree_leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        mesh = getattr(sharding, "mesh", None) if isinstance(sharding, NamedSharding) else None
        if mesh is not None and not mesh.empty and AxisType.Explicit in mesh.axis_types:
            return mesh
    return None


def _traced(tree: Any) -> bool:
    for leaf in jax.tree_util.tree_leaves(tree):
        try:
            leaf.sharding  # noqa: B018  (concrete arrays have one, tracers raise)
        except AttributeError:
            return True
    return False


def _context(matvec: Callable[[Any], Any], vector: Any) -> Any:
    if not jax.sharding.get_abstract_mesh().empty:
        return contextlib.nullcontext()
    try:
        out = jax.eval_shape(matvec, vector)
    except Exception:  # the algorithm's own checks report a bad operator
        return contextlib.nullcontext()
    abstract = _explicit_mesh(out)
    if abstract is None:
        return contextlib.nullcontext()
    if _traced(vector):
        return jax.sharding.use_abstract_mesh(abstract)
    concrete = _CONCRETE.get(abstract)
    if concrete is None:
        concrete = jax.make_mesh(
            abstract.axis_sizes, abstract.axis_names, axis_types=abstract.axis_types
        )
    return jax.set_mesh(concrete)


def follow_operator_mesh(fn: F) -> F:
    """Decorate ``fn(matvec, vector, ...)`` to run on the mesh of ``matvec``'s products."""

    @functools.wraps(fn)
    def wrapper(matvec: Any, vector: Any, *args: Any, **kwargs: Any) -> Any:
        with _context(matvec, vector):
            return fn(matvec, vector, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
