"""Empirical neural tangent kernel ``Theta(x1, x2) = J(x1) J(x2)^T`` in four implementations."""

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
from gradlab.ntk import _structured
from gradlab.ntk._auto import choose_implementation
from gradlab.ntk._detect import run_default
from gradlab.ntk._layout import Layout, param_letters, prepare_inputs, run
from gradlab.ntk._structured import structured

__all__ = [
    "empirical_ntk",
    "jacobian_contraction",
    "ntk_vector_products",
    "structured",
]

Implementation = Literal["auto", "jacobian_contraction", "ntk_vector_products", "structured"]
IMPLEMENTATIONS = ("auto", "jacobian_contraction", "ntk_vector_products", "structured")


def _jacobian_features(layout: Layout, params: Any):
    jac = jax.jacrev(layout.unit)
    if layout.vmapped:
        return lambda xs: jax.vmap(jac, in_axes=(None, 0))(params, xs)
    return lambda xs: jac(params, xs)


def _jacobian_contract(layout: Layout):
    def contract(f1, f2):
        total = 0.0
        for a, b in zip(jax.tree_util.tree_leaves(f1), jax.tree_util.tree_leaves(f2), strict=True):
            p = param_letters(a.ndim - len(layout.lhs))
            total = total + jnp.einsum(f"{layout.lhs}{p},{layout.rhs}{p}->{layout.out}", a, b)
        return total

    return contract


def _nvp_pair(layout: Layout, params: Any, chunk: int = 8):
    """Theta between two tiles from VJP-then-JVP products over the output basis of one side."""
    unit = layout.unit
    shape = layout.unit_shape

    def kernel_block(f1: Callable, x_other: jax.Array) -> jax.Array:
        # rows: Theta[., e] for every basis output e of `unit(params, x_other)`
        out, vjp = jax.vjp(lambda p: unit(p, x_other), params)
        size = out.size
        basis = jnp.eye(size, dtype=out.dtype).reshape(size, *out.shape)

        def col(e):
            (v,) = vjp(e)
            return jax.jvp(f1, (params,), (v,))[1]

        return jax.lax.map(col, basis, batch_size=min(chunk * 4, size))

    def pair(xa, xb):
        if not layout.vmapped:
            k = kernel_block(lambda p: unit(p, xa), xb)  # (|S2|, S1...)
            k = k.reshape(*jax.eval_shape(unit, params, xb).shape, *k.shape[1:])
            return jnp.einsum(f"{layout.rhs}{layout.lhs}->{layout.out}", k)
        if layout.batch_mode == "keep":

            def per_example(xm):
                return kernel_block(lambda p: jax.vmap(unit, (None, 0))(p, xa), xm)

            k = jax.lax.map(per_example, xb, batch_size=min(chunk, xb.shape[0]))
            k = k.reshape(xb.shape[0], *shape, *k.shape[2:])  # (B2, S, B1, S)
            return jnp.einsum(f"{layout.rhs}{layout.lhs}->{layout.out}", k)

        def same_example(ab):
            xn, xm = ab
            return kernel_block(lambda p: unit(p, xn), xm)

        k = jax.lax.map(same_example, (xa, xb), batch_size=min(chunk, xa.shape[0]))
        k = k.reshape(xa.shape[0], *shape, *shape)  # (B, S2, S1)
        return jnp.einsum(f"{layout.rhs}{layout.lhs[1:]}->{layout.out}", k)

    return pair


def jacobian_contraction(
    apply_fn: Callable,
    params: Any,
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    trace_axes: Any = (-1,),
    diagonal_axes: Any = (),
    vmap_axes: Any = None,
    whole_batch: bool = False,
    batch_size: int | None = None,
) -> jax.Array:
    r"""Empirical NTK by contracting per-example Jacobians leaf by leaf.

    ``Theta = sum_leaves J1_leaf J2_leaf^T``: the Jacobians of the outputs with respect to each
    parameter leaf are computed in reverse mode (``O`` VJPs per example) and contracted with
    one ``einsum`` per leaf, never concatenated into a full ``(N*O, P)`` matrix. Cost:
    ``N O`` backward passes and ``N1 N2 P`` multiply-adds per contracted output pair; memory
    ``N O P``.

    Shape contract (as neural-tangents): for outputs ``f(params, x)`` of shape
    ``(s_0, ..., s_{r-1})``, each output axis in ``trace_axes`` is contracted between the two
    sides and divided by its size, each axis in ``diagonal_axes`` keeps one copy, and every
    other axis appears twice (``x1``'s then ``x2``'s), in output-axis order. For ``(N, O)``
    outputs, ``trace_axes=(-1,)`` gives ``(N1, N2)``, ``trace_axes=()`` gives
    ``(N1, N2, O, O)``, ``diagonal_axes=(0,)`` with ``trace_axes=(-1,)`` gives ``(N,)``.

    Args:
        apply_fn: ``apply_fn(params, x) -> outputs`` with the example axis of ``x`` and of the
            outputs given by ``vmap_axes`` (0 by convention).
        params: parameter pytree.
        x1: inputs, an array with an example axis.
        x2: second inputs with the same feature shape; ``None`` means ``x1`` (cheaper).
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

    Returns:
        The kernel, shaped as the contract above says.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (4, 8, 3))
        >>> x = jnp.ones((5, 4))
        >>> gl.ntk.jacobian_contraction(apply_fn, params, x, vmap_axes=0).shape
        (5, 5)
        >>> gl.ntk.jacobian_contraction(apply_fn, params, x, trace_axes=()).shape
        (5, 5, 3, 3)

    References:
        Novak et al. (2022), Fast finite width neural tangent kernel,
        https://arxiv.org/abs/2206.08720
    """
    return run_default(
        _jacobian_kernel,
        apply_fn,
        params,
        x1,
        x2,
        trace_axes=trace_axes,
        diagonal_axes=diagonal_axes,
        vmap_axes=vmap_axes,
        whole_batch=whole_batch,
        batch_size=batch_size,
    )


def ntk_vector_products(
    apply_fn: Callable,
    params: Any,
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    trace_axes: Any = (-1,),
    diagonal_axes: Any = (),
    vmap_axes: Any = None,
    whole_batch: bool = False,
    batch_size: int | None = None,
) -> jax.Array:
    r"""Empirical NTK from NTK-vector products: ``Theta e = J1 (J2^T e)`` over the output basis.

    For every example of ``x2`` and every output basis vector ``e`` one VJP gives
    ``J2^T e`` (a parameter-shaped vector, consumed at once) and one JVP over the whole ``x1``
    tile gives the corresponding kernel column. No Jacobian is stored; the cost is ``N2 O``
    VJPs and ``N2 O`` JVPs over ``N1`` examples, i.e. ``~ 3 N1 N2 O`` forward passes, which wins
    over Jacobian contraction when a forward pass costs much more than ``2 P`` flops
    (convolutions with weight sharing) and ``O`` is small.

    Shape contract (as neural-tangents): for outputs ``f(params, x)`` of shape
    ``(s_0, ..., s_{r-1})``, each output axis in ``trace_axes`` is contracted between the two
    sides and divided by its size, each axis in ``diagonal_axes`` keeps one copy, and every
    other axis appears twice (``x1``'s then ``x2``'s), in output-axis order. For ``(N, O)``
    outputs, ``trace_axes=(-1,)`` gives ``(N1, N2)``, ``trace_axes=()`` gives
    ``(N1, N2, O, O)``, ``diagonal_axes=(0,)`` with ``trace_axes=(-1,)`` gives ``(N,)``.

    Args:
        apply_fn: ``apply_fn(params, x) -> outputs`` with the example axis of ``x`` and of the
            outputs given by ``vmap_axes`` (0 by convention).
        params: parameter pytree.
        x1: inputs, an array with an example axis.
        x2: second inputs with the same feature shape; ``None`` means ``x1`` (cheaper).
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

    Returns:
        The kernel, shaped as the contract above says.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (4, 8, 3))
        >>> x = jnp.ones((5, 4))
        >>> gl.ntk.ntk_vector_products(apply_fn, params, x, vmap_axes=0).shape
        (5, 5)

    References:
        Novak et al. (2022), Fast finite width neural tangent kernel,
        https://arxiv.org/abs/2206.08720
    """
    return run_default(
        _nvp_kernel,
        apply_fn,
        params,
        x1,
        x2,
        trace_axes=trace_axes,
        diagonal_axes=diagonal_axes,
        vmap_axes=vmap_axes,
        whole_batch=whole_batch,
        batch_size=batch_size,
    )


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
    the batch). Under ``jax.jit`` the verdict stays on device and ``jax.lax.cond`` picks the
    kernel (both are compiled); outside it only the chosen kernel is computed.

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


def _jacobian_kernel(apply_fn, params, x1, x2, trace_axes, diagonal_axes, vmap_axes, batch_size):
    layout, x1, x2 = prepare_inputs(
        apply_fn, params, x1, x2, trace_axes, diagonal_axes, vmap_axes, batch_size
    )
    features = _jacobian_features(layout, params)
    return run(layout, features, _jacobian_contract(layout), x1, x2, batch_size=batch_size)


def _nvp_kernel(apply_fn, params, x1, x2, trace_axes, diagonal_axes, vmap_axes, batch_size):
    layout, x1, x2 = prepare_inputs(
        apply_fn, params, x1, x2, trace_axes, diagonal_axes, vmap_axes, batch_size
    )
    pair = _nvp_pair(layout, params)
    return run(layout, lambda x: x, pair, x1, x2, batch_size=batch_size)


def _kernel(implementation, apply_fn, params, x1, x2, trace_axes, diagonal_axes, vmap_axes, bs):
    """One implementation (``auto`` resolved here) for a fixed ``vmap_axes``."""
    layout, x1, x2 = prepare_inputs(
        apply_fn, params, x1, x2, trace_axes, diagonal_axes, vmap_axes, bs
    )
    plan = None
    if implementation == "auto":
        choice, plan = choose_implementation(layout, params, x1, x2)
        implementation = choice.implementation
    if implementation == "structured":
        if plan is None:
            plan = _structured.discover_any(layout, params, x1, x2)
        if not plan.applies:
            raise ValueError(_structured.NOTHING_SUPPORTED)
        return _structured.structured_run(layout, params, plan, x1, x2, bs)
    if implementation == "jacobian_contraction":
        features = _jacobian_features(layout, params)
        return run(layout, features, _jacobian_contract(layout), x1, x2, batch_size=bs)
    return run(layout, lambda x: x, _nvp_pair(layout, params), x1, x2, batch_size=bs)
