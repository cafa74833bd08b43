"""Data meshes and batch placement: the two helpers a user calls before going data-parallel."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from gradlab._src.errors import bad_choice_message, check_int, check_leading_axis

__all__ = ["MaskedBatch", "make_data_mesh", "replicate", "shard_batch"]

AXIS_TYPES = {"explicit": AxisType.Explicit, "auto": AxisType.Auto}


@jax.tree_util.register_pytree_node_class
class MaskedBatch:
    """A batch padded to a multiple of the device count, with a mask of its true examples.

    Every :mod:`gradlab.curvature` operator and :func:`gradlab.ntk.ntk_operator` accept a
    ``MaskedBatch`` wherever they accept a batch: the padded examples get weight zero and the
    true ones weight ``1 / N_true``, so products are exact means over the true examples however
    unevenly the mask falls across shards (on one device too). It is a pytree (children
    ``batch`` and ``mask``), so it passes through ``jax.jit``.

    Weighting needs the loss to be a mean of per-example terms (gradlab's convention): the
    Hessian and empirical Fisher evaluate ``loss_fn`` on each example as a batch of one, the
    GGN and Fisher scale the output-space product example by example.

    Attributes:
        batch: pytree of arrays with a common leading axis ``N_pad``.
        mask: ``(N_pad,)`` bool, True for true examples.

    Examples:
        >>> import jax.numpy as jnp, gradlab as gl
        >>> mb = gl.distributed.MaskedBatch(jnp.ones((3, 2)), jnp.array([True, True, False]))
        >>> mb.num_padded, int(mb.mask.sum())
        (3, 2)
    """

    def __init__(self, batch: Any, mask: Any) -> None:
        n = check_leading_axis("MaskedBatch batch", batch)
        shape = tuple(getattr(mask, "shape", ()))
        if shape != (n,):
            raise ValueError(
                f"MaskedBatch mask has shape {shape}: expected ({n},), one flag per example of "
                "the batch"
            )
        if not jnp.issubdtype(mask.dtype, jnp.bool_):
            raise ValueError(
                f"MaskedBatch mask has dtype {mask.dtype}: expected bool (True = true example)"
            )
        self.batch = batch
        self.mask = mask

    @property
    def num_padded(self) -> int:
        """Leading size of the padded batch (static)."""
        return int(self.mask.shape[0])

    def __repr__(self) -> str:
        return f"MaskedBatch(batch={self.batch!r}, mask={self.mask!r})"

    def tree_flatten(self) -> tuple[tuple[Any, Any], None]:
        return (self.batch, self.mask), None

    @classmethod
    def tree_unflatten(cls, aux: None, children: tuple[Any, Any]) -> MaskedBatch:
        obj = object.__new__(cls)
        obj.batch, obj.mask = children
        return obj


def _axis_type(axis_type: Any) -> AxisType:
    if isinstance(axis_type, AxisType):
        return axis_type
    if isinstance(axis_type, str) and axis_type.lower() in AXIS_TYPES:
        return AXIS_TYPES[axis_type.lower()]
    raise ValueError(bad_choice_message("axis_type", axis_type, ("explicit", "auto")))


def make_data_mesh(
    num_devices: int | None = None,
    *,
    axis_name: str = "data",
    axis_type: Literal["explicit", "auto"] | AxisType = "explicit",
    devices: Sequence[Any] | None = None,
) -> Mesh:
    """A one-axis device mesh for data parallelism (``jax.make_mesh`` with checks).

    Equivalent to ``jax.make_mesh((num_devices,), (axis_name,), axis_types=(axis_type,))``
    on the first ``num_devices`` devices. In a multi-process run (after
    ``jax.distributed.initialize``) ``jax.devices()`` lists every process's devices, so the
    default spans all hosts. Any mesh works with gradlab's operators; this one only saves the
    boilerplate.

    Args:
        num_devices: devices on the axis; default all of ``devices`` (or ``jax.devices()``).
        axis_name: name of the example axis (``"data"``).
        axis_type: ``"explicit"`` (the ``jax.make_mesh`` default since JAX 0.9: shardings are
            part of array types) or ``"auto"`` (XLA propagates them), or a
            ``jax.sharding.AxisType``.
        devices: devices to use (default ``jax.devices()``).

    Returns:
        A ``jax.sharding.Mesh`` with one axis ``axis_name`` of size ``num_devices``.

    Raises:
        ValueError: ``num_devices`` outside ``1..len(devices)``, an unknown ``axis_type`` or an
            empty ``axis_name``.

    Examples:
        >>> import gradlab as gl
        >>> mesh = gl.distributed.make_data_mesh(1)
        >>> dict(mesh.shape)
        {'data': 1}
    """
    pool = list(jax.devices() if devices is None else devices)
    count = len(pool) if num_devices is None else num_devices
    count = check_int("num_devices", count, 1, len(pool))
    if not isinstance(axis_name, str) or not axis_name:
        raise ValueError(f"axis_name={axis_name!r} must be a non-empty string")
    kind = _axis_type(axis_type)
    return jax.make_mesh((count,), (axis_name,), axis_types=(kind,), devices=pool[:count])


def _axes(mesh: Mesh, axis_name: Any) -> tuple[str, ...]:
    names = (axis_name,) if isinstance(axis_name, str) else tuple(axis_name)
    missing = [a for a in names if a not in mesh.axis_names]
    if not names or missing:
        raise ValueError(
            f"axis_name={axis_name!r} is not an axis of the mesh: expected one (or a tuple) of "
            f"{', '.join(repr(a) for a in mesh.axis_names)}"
        )
    return names


def shard_batch(
    batch: Any,
    mesh: Mesh,
    *,
    axis_name: str | Sequence[str] = "data",
    pad: bool = False,
) -> Any:
    """Place a batch on ``mesh`` with its example axis split over ``axis_name``.

    Every leaf gets ``NamedSharding(mesh, P(axis_name))`` (examples split, other dims and
    other mesh axes replicated). gradlab's operators see this placement and run data-parallel
    (see the Scaling out guide). ``N`` must divide by the number of shards ``D``; otherwise
    ``pad=True`` appends ``D * ceil(N / D) - N`` copies of the last example and returns a
    :class:`MaskedBatch` whose mask marks them, which the operators weight by zero: the
    products stay exact means over the ``N`` true examples.

    Args:
        batch: pytree of arrays sharing a leading example axis (or a :class:`MaskedBatch`).
        mesh: a ``jax.sharding.Mesh`` (e.g. from :func:`make_data_mesh` or ``jax.make_mesh``).
        axis_name: the mesh axis (or tuple of axes) to split the examples over.
        pad: pad to a multiple of the shard count and return a :class:`MaskedBatch` (always,
            even when no padding was needed, so the return type does not depend on ``N``).

    Returns:
        The batch (same structure) placed on ``mesh``; a :class:`MaskedBatch` with ``pad=True``
        or when ``batch`` was one.

    Raises:
        ValueError: ``axis_name`` is not an axis of ``mesh``, or ``N`` does not divide by the
            shard count and ``pad=False``; leaves without a common leading axis.

    Examples:
        >>> import jax.numpy as jnp, gradlab as gl
        >>> mesh = gl.distributed.make_data_mesh(1)
        >>> x = gl.distributed.shard_batch(jnp.ones((5, 3)), mesh)
        >>> x.sharding.spec
        P('data',)
        >>> mb = gl.distributed.shard_batch((jnp.ones((5, 3)), jnp.zeros(5)), mesh, pad=True)
        >>> mb.mask.shape
        (5,)
    """
    names = _axes(mesh, axis_name)
    spec = PartitionSpec(names[0] if len(names) == 1 else names)
    shards = math.prod(mesh.shape[a] for a in names)
    mask = None
    if isinstance(batch, MaskedBatch):
        batch, mask = batch.batch, batch.mask
    n = check_leading_axis("batch", batch)
    extra = -n % shards
    if extra and not pad and mask is None:
        raise ValueError(
            f"batch has {n} examples, which do not split evenly over the {shards} devices of "
            f"mesh axis {axis_name!r}: pass pad=True to pad with masked examples (the operators "
            f"ignore them), or keep {n - n % shards} examples"
        )
    if pad or mask is not None:
        if mask is None:
            mask = jnp.ones(n, bool)
        if extra:
            batch = jax.tree_util.tree_map(
                lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)]), batch
            )
            mask = jnp.concatenate([mask, jnp.zeros(extra, bool)])
    sharding = NamedSharding(mesh, spec)
    batch = jax.device_put(batch, sharding)
    if mask is None:
        return batch
    return MaskedBatch(batch, jax.device_put(mask, sharding))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of ``tree`` (params, vectors) fully replicated on ``mesh``.

    Data-parallel operators keep one copy of the params per device; placing them on the
    batch's mesh up front avoids a transfer per call and makes results live on the mesh.

    Args:
        tree: pytree of arrays.
        mesh: a ``jax.sharding.Mesh``.

    Returns:
        ``tree`` with every leaf on ``NamedSharding(mesh, P())``.

    Examples:
        >>> import jax.numpy as jnp, gradlab as gl
        >>> mesh = gl.distributed.make_data_mesh(1)
        >>> gl.distributed.replicate({"w": jnp.ones(2)}, mesh)["w"].sharding.spec
        P()
    """
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
