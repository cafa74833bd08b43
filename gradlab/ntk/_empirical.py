"""The empirical NTK ``Theta(x1, x2) = J(x1) J(x2)^T``: dispatch, split rows and masked batches.

:func:`empirical_ntk` picks the implementation (:mod:`gradlab.ntk._implementations`,
:mod:`gradlab.ntk._structured`) and, when ``x1`` is split over a device mesh or either input
is a :class:`gradlab.distributed.MaskedBatch`, runs it row block by row block and zeroes the
padded examples.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp

from gradlab._src.errors import check_choice
from gradlab.distributed._batch import MaskedBatch
from gradlab.distributed._parallel import (
    data_axis,
    rows_over_examples,
    shape_only,
    split_mask,
)
from gradlab.ntk._detect import run_default
from gradlab.ntk._implementations import kernel as _kernel

__all__ = ["empirical_ntk"]

Implementation = Literal["auto", "jacobian_contraction", "ntk_vector_products", "structured"]
IMPLEMENTATIONS = ("auto", "jacobian_contraction", "ntk_vector_products", "structured")


def empirical_ntk(
    apply_fn: Callable,
    params: Any,
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    implementation: Implementation = "auto",
    trace_axes: Any = (-1,),
    diagonal_axes: Any = (),
    vmap_axes: Any = None,
    whole_batch: bool = False,
    batch_size: int | None = None,
) -> jax.Array:
    r"""The empirical neural tangent kernel ``Theta(x1, x2) = J(x1) J(x2)^T``.

    ``J(x) = d apply_fn(params, x) / d params``; the kernel measures how a gradient step on
    one example moves the outputs on another. All implementations give the same numbers;
    they differ in cost. Call it inside ``jax.jit`` (with ``apply_fn`` and the keyword options
    static) for speed.

    Shape contract (as neural-tangents): for outputs ``f(params, x)`` of shape
    ``(s_0, ..., s_{r-1})``, each output axis in ``trace_axes`` is contracted between the two
    sides and divided by its size, each axis in ``diagonal_axes`` keeps one copy, and every
    other axis appears twice (``x1``'s then ``x2``'s), in output-axis order. For ``(N, O)``
    outputs, ``trace_axes=(-1,)`` gives ``(N1, N2)``, ``trace_axes=()`` gives
    ``(N1, N2, O, O)``, ``diagonal_axes=(0,)`` with ``trace_axes=(-1,)`` gives ``(N,)``.

    The default ``vmap_axes=None`` probes whether examples are independent (axis 0 of inputs
    and outputs): JVPs with respect to the first and last examples' inputs must leave the
    other outputs' tangents exactly zero, and a VJP of the batched outputs must equal the
    per-example one to ``sqrt(eps)``, on the first and last 4 examples. If so the per-example
    path runs, else the exact whole-batch kernel (BatchNorm in training mode, attention over
    the batch). Outside ``jax.jit`` the verdict is read once and only the chosen kernel is
    computed. Under ``jax.jit`` the probes also run at trace time on random stand-ins of the
    same shapes, which pick the one kernel compiled; the run-time verdict on the real values
    stays on device and, in the rare case it disagrees (a coupling that only particular values
    switch on), the kernel comes back all NaN. Without stand-ins (integer leaves such as token
    ids) ``jax.lax.cond`` runs the kernel the real verdict picks, with NTK-vector products as
    ``auto``'s whole-batch branch to keep XLA's memory plan small (``gradlab.ntk`` guide).

    The ``auto`` rule estimates the flops of each implementation from the number of
    examples ``N1, N2``, outputs per example ``O``, parameters ``P``, output pairs kept per
    example pair ``Q`` (``O`` when the output axis is traced, ``O^2`` for ``trace_axes=()``)
    and the cost ``F`` of one forward pass per example (XLA's cost analysis, at least
    ``2 P``): Jacobian contraction ``3 N O F + 2 N1 N2 P Q``; NTK-vector products
    ``3 N2 O F + 3 N1 N2 O F``; structured (when a layer or contraction is found)
    ``c (3 N O F + sum_kernels min(gram, jac) + 2 N1 N2 P_rest Q)`` with per kernel
    ``gram = 2 N1 N2 G T^2 (I + Q F_g)`` and ``jac = 2 (N O T G I F_g + N1 N2 Q G I F_g)``
    (``T`` positions, ``G`` groups, fan-in ``I`` and fan-out ``F_g`` per group, ``c`` a
    calibrated overhead factor), and picks the smallest. ``N`` is ``N1`` when ``x2`` is
    ``None`` and ``N1 + N2`` otherwise, ``P_rest`` the parameters outside supported layers.

    With ``x1`` split over a device mesh (its example axis placed with
    :func:`gradlab.distributed.shard_batch`), each device computes its row block against the
    whole of ``x2`` (``None``: all of ``x1``, gathered) and the kernel comes back sharded by
    rows; examples must be independent (``vmap_axes=None`` is taken as 0).

    ``x1`` and ``x2`` may be :class:`gradlab.distributed.MaskedBatch` es (e.g. from
    ``shard_batch(x, mesh, pad=True)`` when ``N`` does not divide over the devices, or built by
    hand on one device): the kernel keeps the padded shape, its rows (columns) of padded
    examples are exactly zero and the other entries are the kernel of the true examples. This
    too needs independent examples (``vmap_axes=None`` is taken as 0) and no trace over the
    example axis.

    Args:
        apply_fn: ``apply_fn(params, x) -> outputs`` with the example axis of ``x`` and of the
            outputs given by ``vmap_axes`` (0 by convention).
        params: parameter pytree.
        x1: inputs, an array with an example axis, or a ``MaskedBatch`` of one (above).
        x2: second inputs with the same feature shape (an array or a ``MaskedBatch``);
            ``None`` means ``x1`` (cheaper).
        trace_axes: output axes to contract (and divide by their size); default the last.
        diagonal_axes: output axes on which only the diagonal is kept.
        vmap_axes: ``None`` (default): probe whether ``apply_fn`` treats the examples
            (axis 0 of inputs and outputs) independently and use the per-example path if
            so, the whole-batch kernel if not (the rule: :func:`empirical_ntk`). An int
            (``in_axes = out_axes``) or a pair ``(in_axes, out_axes)`` certifies
            independence without probing; the result is wrong (silently) if examples
            interact, e.g. through batch norm in training mode.
        whole_batch: ``True`` skips the probe and differentiates the whole batch at once:
            exact for any model, cost growing like ``N^2``.
        batch_size: compute the kernel in tiles of this many examples per side (requires
            ``vmap_axes``); memory is bounded by two tiles' worth of Jacobians, at the price
            of recomputing them once per tile pair.
        implementation: ``"auto"``, ``"jacobian_contraction"``, ``"ntk_vector_products"``
            or ``"structured"`` (see the functions of the same names).

    Returns:
        The kernel, shaped as the contract above says.

    Raises:
        ValueError: for an unknown implementation, axes out of range for the output rank,
            overlapping trace and diagonal axes, or ``x1``/``x2`` with different feature
            shapes; with split rows or a ``MaskedBatch``, also ``whole_batch=True``, a
            ``vmap_axes`` other than 0, a trace over axis 0, or ``x2`` with a diagonal over
            axis 0; all before any tracing of the model's derivatives.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (4, 8, 3))
        >>> x = jax.random.normal(jax.random.key(1), (6, 4))
        >>> k = gl.ntk.empirical_ntk(apply_fn, params, x, vmap_axes=0)
        >>> k.shape
        (6, 6)
        >>> gl.ntk.empirical_ntk(apply_fn, params, x, x[:2], trace_axes=(), vmap_axes=0).shape
        (6, 2, 3, 3)
        >>> mb = gl.distributed.MaskedBatch(x, jnp.arange(6) < 4)  # 2 padded examples
        >>> km = gl.ntk.empirical_ntk(apply_fn, params, mb, vmap_axes=0)
        >>> bool(jnp.all(km[4:] == 0)), bool(jnp.allclose(km[:4, :4], k[:4, :4]))
        (True, True)

    References:
        Jacot, Gabriel, Hongler (2018), https://arxiv.org/abs/1806.07572;
        Novak et al. (2022), Fast finite width neural tangent kernel,
        https://arxiv.org/abs/2206.08720
    """
    check_choice("implementation", implementation, IMPLEMENTATIONS)
    x1, mask1 = split_mask(x1)
    x2, mask2 = split_mask(x2)
    masked = mask1 is not None or mask2 is not None
    kernel = functools.partial(_kernel, implementation)
    # under jit, auto's whole-batch branch stays light in memory (see _detect's docstring)
    fallback = (
        functools.partial(_kernel, "ntk_vector_products") if implementation == "auto" else None
    )
    options = dict(trace_axes=trace_axes, diagonal_axes=diagonal_axes, batch_size=batch_size)
    axis = data_axis("x1", x1 if mask1 is None else MaskedBatch(x1, mask1), params)
    if axis is None and not masked:
        return run_default(
            kernel,
            apply_fn,
            params,
            x1,
            x2,
            vmap_axes=vmap_axes,
            whole_batch=whole_batch,
            fallback=fallback,
            **options,
        )
    where = f"x1 is split over mesh axes {axis.axes}" if axis else "x1 or x2 is a MaskedBatch"
    same = _check_rows(where, apply_fn, params, x1, x2, vmap_axes, whole_batch, options)
    if x2 is None and not same:
        x2, mask2 = x1, mask1

    def local(p: Any, rows: Any, other: Any) -> jax.Array:
        (x_rows, m_rows), (x_other, m_other) = rows, other
        k = run_default(
            kernel, apply_fn, p, x_rows, x_other, vmap_axes=0, whole_batch=False, **options
        )
        return _zero_padded(k, m_rows, None if same else m_other)

    if axis is None:
        return local(params, (x1, mask1), (x2, mask2))
    return rows_over_examples(local, axis, params, (x1, mask1), gathered=(x2, mask2))


def _check_rows(where, apply_fn, params, x1, x2, vmap_axes, whole_batch, options) -> bool:
    """Checks for the row-wise path (split rows or masks); True for a diagonal over examples."""
    if whole_batch or vmap_axes not in (None, 0, (0, 0)):
        raise ValueError(
            f"{where}, which needs independent examples on axis 0: got "
            f"whole_batch={whole_batch!r}, vmap_axes={vmap_axes!r}; use vmap_axes=0 (or None)"
            " or pass plain arrays on one device"
        )
    out = jax.eval_shape(apply_fn, shape_only(params), shape_only(x1))
    rank = len(getattr(out, "shape", ()))
    if rank == 0:
        raise ValueError("apply_fn(params, x1) must return one array with a leading example axis")
    trace = {a % rank for a in _axes_tuple(options["trace_axes"])}
    diagonal = {a % rank for a in _axes_tuple(options["diagonal_axes"])}
    if 0 in trace:
        raise ValueError(
            f"{where}, so the example axis 0 cannot be in trace_axes={options['trace_axes']!r}: "
            "its rows are computed separately (or some are padding)"
        )
    same = 0 in diagonal  # a diagonal over examples pairs each row with itself
    if same and x2 is not None:
        raise ValueError(
            f"{where}: with diagonal_axes containing the example axis 0, pass x2=None (the "
            "diagonal pairs each example of x1 with itself)"
        )
    return same


def _zero_padded(k: jax.Array, rows: Any, columns: Any) -> jax.Array:
    """Zero the kernel's rows (axis 0) and columns (axis 1) of padded examples."""
    if rows is not None:
        k = jnp.where(rows.reshape(-1, *(1,) * (k.ndim - 1)), k, 0)
    if columns is not None:
        k = jnp.where(columns.reshape(1, -1, *(1,) * (k.ndim - 2)), k, 0)
    return k


def _axes_tuple(axes: Any) -> tuple[int, ...]:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, int) else tuple(axes)
