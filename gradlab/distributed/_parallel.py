"""Find the data axis of a batch and run per-shard products under ``jax.shard_map`` (private).

Operators call :func:`data_axis` once when they are built (it reads the batch's shardings:
``x.sharding`` of a concrete array, ``jax.typeof(x).sharding`` of a traced one) and then
:func:`sum_over_examples` / :func:`rows_over_examples` in every product.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from gradlab.distributed._batch import MaskedBatch
from gradlab.distributed._context import remember_mesh

__all__ = [
    "DataAxis",
    "data_axis",
    "rows_over_examples",
    "shape_only",
    "split_mask",
    "sum_over_examples",
]


class DataAxis(NamedTuple):
    """Where a batch's example axis lives: ``mesh`` axes ``axes`` with ``size`` shards."""

    mesh: Any
    axes: tuple[str, ...]
    size: int

    @property
    def spec(self) -> PartitionSpec:
        return PartitionSpec(self.axes[0] if len(self.axes) == 1 else self.axes)


def split_mask(batch: Any) -> tuple[Any, Any]:
    """``(batch, mask)`` for a :class:`MaskedBatch`, ``(batch, None)`` otherwise."""
    if isinstance(batch, MaskedBatch):
        return batch.batch, batch.mask
    return batch, None


def shape_only(tree: Any) -> Any:
    """Shapes and dtypes without shardings (checks with ``jax.eval_shape`` stay local)."""
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def _sharding(leaf: Any) -> Any:
    """The NamedSharding of a leaf: ``x.sharding`` if concrete, ``jax.typeof(x)`` if traced."""
    try:
        concrete = leaf.sharding
    except AttributeError:  # a tracer: its type carries Explicit shardings only
        concrete = None
    if isinstance(concrete, NamedSharding):
        return concrete
    if concrete is not None:
        return None  # a single-device or other concrete placement
    try:
        typed = jax.typeof(leaf).sharding
    except (TypeError, AttributeError):
        return None
    return typed if isinstance(typed, NamedSharding) else None


def _axes_of(entry: Any) -> tuple[str, ...]:
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def _mesh_key(mesh: Any) -> Any:
    return (tuple(mesh.axis_names), tuple(mesh.axis_sizes))


def _devices(mesh: Any) -> frozenset | None:
    try:
        devices = mesh.devices
    except ValueError:  # an AbstractMesh (traced arrays) has no devices
        return None
    if devices is None or not hasattr(devices, "flat"):
        return None
    return frozenset(d.id for d in devices.flat)


def data_axis(name: str, batch: Any, params: Any = None) -> DataAxis | None:
    """The mesh axes the example axis of ``batch`` is split over, or None (one device).

    Raises:
        ValueError: leaves split over different axes or meshes, an example count that does
            not divide by the shard count, or ``params`` placed on a mesh incompatible with
            the batch's.
    """
    batch, mask = split_mask(batch)
    found: dict[Any, tuple[str, Any]] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path((batch, mask)):
        sharding = _sharding(leaf)
        if sharding is None or len(sharding.spec) == 0:
            continue
        axes = _axes_of(sharding.spec[0])
        if not axes:
            continue
        key = (_mesh_key(sharding.mesh), axes)
        found.setdefault(key, (jax.tree_util.keystr(path) or "<root>", sharding.mesh))
    if not found:
        return None
    if len(found) > 1:
        listed = "; ".join(f"{where} over {k[1]} of mesh {k[0]}" for k, (where, _) in found.items())
        raise ValueError(
            f"{name} leaves are split over different mesh axes ({listed}): place the whole "
            "batch with gradlab.distributed.shard_batch(batch, mesh) so every leaf shares one "
            "data axis"
        )
    ((_, axes), (_, mesh)) = next(iter(found.items()))
    size = math.prod(mesh.shape[a] for a in axes)
    if size == 1:
        return None
    n = jax.tree_util.tree_leaves(batch)[0].shape[0]
    remember_mesh(mesh)
    if n % size:
        raise ValueError(
            f"{name} has {n} examples split over mesh axes {axes} of {size} devices, which does "
            "not divide: place it with gradlab.distributed.shard_batch(batch, mesh, pad=True) "
            "(padding with masked examples keeps every product exact)"
        )
    if params is not None:
        _check_params(name, mesh, params)
    return DataAxis(mesh, axes, size)


def _check_params(name: str, mesh: Any, params: Any) -> None:
    want = _devices(mesh)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        sharding = _sharding(leaf)
        if sharding is None:
            continue
        other = sharding.mesh
        got = _devices(other)
        if want is not None and got is not None:
            bad = got != want
        else:
            bad = not getattr(other, "empty", False) and _mesh_key(other) != _mesh_key(mesh)
        if bad:
            raise ValueError(
                f"params leaf {jax.tree_util.keystr(path) or '<root>'} is placed on mesh "
                f"{dict(other.shape)} while {name} is split over mesh {dict(mesh.shape)} with "
                "other devices: put params on the batch's mesh, e.g. "
                "gradlab.distributed.replicate(params, mesh)"
            )


def conform(tree: Any, axis: DataAxis, dim: int | None) -> Any:
    """Reshard leaves to the placement ``shard_map`` expects (examples split, or replicated).

    Explicit meshes require inputs to match ``in_specs`` exactly; leaves already placed that
    way are left alone (no copy).
    """
    if AxisType.Explicit not in axis.mesh.axis_types:
        return tree  # Auto axes: shard_map places its inputs itself
    want = axis.spec if dim == 0 else PartitionSpec()

    def place(leaf: Any) -> Any:
        sharding = _sharding(leaf)
        if sharding is not None and _key(sharding.spec) == _key(want):
            return leaf
        return jax.reshard(leaf, NamedSharding(axis.mesh, want))

    return jax.tree_util.tree_map(place, tree)


def _key(spec: PartitionSpec) -> tuple:
    entries = list(spec)
    while entries and entries[-1] is None:
        entries.pop()
    return tuple(entries)


def _weights(mask: Any, total: Any) -> Any:
    return mask.astype(jnp.result_type(float)) / total


# One jitted program per (local, axis, kind): called eagerly, a shard_map otherwise runs
# primitive by primitive (a dispatch and a compile per operation: about 10x slower than one
# program for an NTK or a Hessian-vector product), and an operator's repeated eager products
# reuse the compiled program (on one device too: ``local`` alone). The programs are stored on
# ``local`` itself (it closes over the model and loss, and lives as long as the operator), so
# they die with it: a global table would keep every operator's params and data alive. Under
# an outer ``jit`` the program is inlined.
_PROGRAMS = "_gradlab_programs"


def _program(local: Callable, key: tuple, build: Callable[[], Callable]) -> Callable:
    programs = getattr(local, "__dict__", None)
    if programs is None:  # no attributes (a builtin): compile per call
        return jax.jit(build())
    table = programs.setdefault(_PROGRAMS, {})
    if key not in table:
        table[key] = jax.jit(build())
    return table[key]


def sum_over_examples(
    local: Callable[[Any, Any, Any], Any],
    axis: DataAxis | None,
    replicated: Any,
    batch: Any,
    mask: Any,
) -> Any:
    """Exact mean over the true examples of a per-example product, summed across shards.

    ``local(replicated, batch, weights)`` returns the product on ``batch``: with
    ``weights=None`` the plain mean over ``batch``'s examples, else ``sum_n weights[n] *
    (example n's product)``. Sharded, each device evaluates its shard and the results are
    ``psum``-ed (divided by the shard count, or weighted by ``mask / N_true``).
    """
    if axis is None:  # one device: the product alone, jitted and kept per operator all the same
        weights = None if mask is None else _weights(mask, jnp.sum(mask))
        return _program(local, ("one",), lambda: local)(replicated, batch, weights)
    names = axis.axes

    def build() -> Callable:
        def body(replicated: Any, batch: Any, mask: Any) -> Any:
            if mask is None:
                out = local(replicated, batch, None)
                return jax.tree_util.tree_map(lambda a: jax.lax.psum(a, names) / axis.size, out)
            total = jax.lax.psum(jnp.sum(mask), names)
            out = local(replicated, batch, _weights(mask, total))
            return jax.lax.psum(out, names)

        return jax.shard_map(
            body,
            mesh=axis.mesh,
            in_specs=(PartitionSpec(), axis.spec, axis.spec),
            out_specs=PartitionSpec(),
            check_vma=False,
        )

    run = _program(local, ("sum", axis), build)  # jit retraces for a mask vs None
    return run(conform(replicated, axis, None), conform(batch, axis, 0), conform(mask, axis, 0))


def rows_over_examples(
    local: Callable[[Any, Any, Any], Any],
    axis: DataAxis,
    replicated: Any,
    sharded: Any,
    *,
    gathered: Any = None,
    replicate_out: bool = False,
) -> Any:
    """Run ``local(replicated, shard, gathered)`` per shard; its rows come back split.

    ``gathered`` (pytree) is passed whole to every device; ``local`` may ``psum`` over
    ``axis.axes`` (the shards run with ``check_vma=False``: gradients are per shard). With
    ``replicate_out`` the row blocks are all-gathered so every device holds the whole result.
    """

    def build() -> Callable:
        def body(replicated: Any, shard: Any, gathered: Any) -> Any:
            out = local(replicated, shard, gathered)
            if replicate_out:
                out = jax.lax.all_gather(out, axis.axes, tiled=True)
            return out

        return jax.shard_map(
            body,
            mesh=axis.mesh,
            in_specs=(PartitionSpec(), axis.spec, PartitionSpec()),
            out_specs=PartitionSpec() if replicate_out else axis.spec,
            check_vma=False,
        )

    run = _program(local, ("rows", axis, replicate_out), build)
    return run(
        conform(replicated, axis, None), conform(sharded, axis, 0), conform(gathered, axis, None)
    )
