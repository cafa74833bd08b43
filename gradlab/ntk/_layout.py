"""Shape contract shared by every empirical-NTK implementation (neural-tangents' conventions).

For outputs ``f(params, x)`` of shape ``S = (s_0, ..., s_{r-1})`` the full kernel pairs every
output entry of ``x1`` with every output entry of ``x2``. For each output axis ``i`` in order:
an axis in ``trace_axes`` is contracted (the kernel is summed over ``a_i == b_i`` and divided
by ``s_i``), an axis in ``diagonal_axes`` keeps one copy (``a_i == b_i``), any other axis
contributes two axes ``(s_i of x1, s_i of x2)``. So ``(N, O)`` outputs give ``(N1, N2)`` for
``trace_axes=(-1,)`` and ``(N1, N2, O, O)`` for ``trace_axes=()``.

Implementations produce per-tile "features" (Jacobians, cotangents, ...) and an einsum per pair
of tiles; this module owns the axis letters, the tiling over examples and the final layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradlab._src.errors import check_int, out_of_range_message

_LHS = "abcdefghijkl"
_RHS = "opqrstuvwxyz"


class Layout(NamedTuple):
    """Static description of one kernel computation (all Python values)."""

    unit: Callable[[Any, jax.Array], jax.Array]  # apply on one example (or the whole batch)
    vmapped: bool  # True when examples are independent (vmap_axes given)
    in_axis: int  # example axis of x (0 after moving), meaningful when vmapped
    out_axis: int | None  # example axis of f(x) when vmapped
    unit_shape: tuple[int, ...]  # output shape of `unit` (per example when vmapped)
    lhs: str  # einsum letters of a side-1 feature's output axes (batch letter first)
    rhs: str
    out: str  # letters of one tile pair's result (batch letters first)
    batch_mode: str | None  # "keep" | "diag" | "trace" | None (not vmapped)
    batch_position: int  # where the batch axes go in the final result
    divisor: int  # product of traced axis sizes
    n1: int
    n2: int


def _canonical_axes(name: str, axes: Any, ndim: int) -> tuple[int, ...]:
    if isinstance(axes, bool):
        raise TypeError(f"{name}={axes!r} must be an int or a tuple of ints")
    items = (axes,) if isinstance(axes, int) else tuple(axes)
    out = []
    for a in items:
        a = check_int(name, a)
        if not -ndim <= a < ndim:
            raise ValueError(
                out_of_range_message(f"{name} entry", a, -ndim, ndim - 1)
                + f" (the output f(params, x) has rank {ndim})"
            )
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}={axes!r} lists the same axis twice")
    return tuple(sorted(out))


def _vmap_axes(vmap_axes: Any) -> tuple[int, int] | None:
    if vmap_axes is None:
        return None
    if isinstance(vmap_axes, int) and not isinstance(vmap_axes, bool):
        return vmap_axes, vmap_axes
    if isinstance(vmap_axes, tuple) and len(vmap_axes) == 2:
        return check_int("vmap_axes[0]", vmap_axes[0]), check_int("vmap_axes[1]", vmap_axes[1])
    raise ValueError(
        f"vmap_axes={vmap_axes!r} is not valid: expected None, an int (in_axes = out_axes) "
        "or a pair (in_axes, out_axes)"
    )


def make_layout(
    apply_fn: Callable,
    params: Any,
    x1: jax.Array,
    x2: jax.Array | None,
    *,
    trace_axes: Any,
    diagonal_axes: Any,
    vmap_axes: Any,
    batch_size: int | None,
) -> Layout:
    """Validate every static argument and build the :class:`Layout` (runs ``eval_shape`` once)."""
    x1s = jax.ShapeDtypeStruct(jnp.shape(x1), jnp.result_type(x1))
    x2s = x1s if x2 is None else jax.ShapeDtypeStruct(jnp.shape(x2), jnp.result_type(x2))
    axes = _vmap_axes(vmap_axes)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, 1)
        if axes is None:
            raise ValueError(
                f"batch_size={batch_size} needs vmap_axes: tiling over examples is only valid "
                "when examples are independent (pass vmap_axes=0 to certify that)"
            )
    if x1s.ndim == 0:
        raise ValueError("x1 must have a leading example axis, got a scalar")
    in_axis = 0
    if axes is not None:
        in_axis = axes[0] % max(x1s.ndim, 1)
        if not -x1s.ndim <= axes[0] < x1s.ndim:
            raise ValueError(out_of_range_message("vmap_axes in_axes", axes[0], 0, x1s.ndim - 1))
    feat1 = x1s.shape[:in_axis] + x1s.shape[in_axis + 1 :]
    feat2 = x2s.shape[:in_axis] + x2s.shape[in_axis + 1 :] if x2s.ndim == x1s.ndim else None
    if feat1 != feat2:
        raise ValueError(
            f"x1 has shape {x1s.shape} and x2 has shape {x2s.shape}: they must agree on every "
            f"axis except the example axis {in_axis} (feature shape {feat1})"
        )
    fx1 = jax.eval_shape(apply_fn, params, x1s)
    if not hasattr(fx1, "shape"):
        raise TypeError("apply_fn(params, x) must return a single array")
    ndim = len(fx1.shape)
    trace = _canonical_axes("trace_axes", trace_axes, ndim)
    diag = _canonical_axes("diagonal_axes", diagonal_axes, ndim)
    overlap = sorted(set(trace) & set(diag))
    if overlap:
        raise ValueError(
            f"trace_axes={trace_axes!r} and diagonal_axes={diagonal_axes!r} overlap on output "
            f"axes {overlap}: an axis can be traced or diagonal, not both"
        )
    n1 = x1s.shape[in_axis]
    n2 = x2s.shape[in_axis]
    out_axis = None
    if axes is not None:
        if not -ndim <= axes[1] < ndim:
            raise ValueError(out_of_range_message("vmap_axes out_axes", axes[1], -ndim, ndim - 1))
        out_axis = axes[1] % ndim
        if fx1.shape[out_axis] != n1:
            raise ValueError(
                f"vmap_axes={vmap_axes!r}: output axis {out_axis} has size "
                f"{fx1.shape[out_axis]}, expected the number of examples {n1}"
            )
    fx2_shape = list(fx1.shape)
    if x2 is not None:
        if axes is None:
            fx2_shape = list(jax.eval_shape(apply_fn, params, x2s).shape)
        else:
            fx2_shape[out_axis] = n2
    for i in trace + diag:
        if fx1.shape[i] != fx2_shape[i]:
            raise ValueError(
                f"output axis {i} has size {fx1.shape[i]} for x1 and {fx2_shape[i]} for x2: "
                "traced and diagonal axes need equal sizes"
            )
    divisor = math.prod(fx1.shape[i] for i in trace)

    lhs, rhs, out = [], [], []
    li = iter(_LHS)
    ri = iter(_RHS)
    batch_mode = None
    position = 0
    for i in range(ndim):
        if i == out_axis:
            batch_mode = "trace" if i in trace else "diag" if i in diag else "keep"
            continue
        a = next(li)
        b = a if (i in trace or i in diag) else next(ri)
        lhs.append(a)
        rhs.append(b)
        if i in diag:
            out.append(a)
        elif i not in trace:
            out += [a, b]
        if out_axis is not None and i < out_axis:
            position += 0 if i in trace else 1 if i in diag else 2
    if out_axis is not None:
        same = batch_mode != "keep"
        lhs.insert(0, "n")
        rhs.insert(0, "n" if same else "m")
        out = (["n"] if same else ["n", "m"]) + out
        if same and n1 != n2:
            raise ValueError(
                f"the example axis is traced or diagonal but x1 has {n1} and x2 has {n2} "
                "examples: they must be equal"
            )

    if axes is None:
        unit = apply_fn
        unit_shape = tuple(fx1.shape)
    else:
        in_ax, o_ax = axes[0], out_axis

        def unit(p: Any, xi: jax.Array) -> jax.Array:
            return jnp.squeeze(apply_fn(p, jnp.expand_dims(xi, in_ax)), o_ax)

        unit_shape = tuple(s for i, s in enumerate(fx1.shape) if i != out_axis)
    return Layout(
        unit=unit,
        vmapped=axes is not None,
        in_axis=in_axis,
        out_axis=out_axis,
        unit_shape=unit_shape,
        lhs="".join(lhs),
        rhs="".join(rhs),
        out="".join(out),
        batch_mode=batch_mode,
        batch_position=position,
        divisor=divisor,
        n1=n1,
        n2=n2,
    )


def _tiles(x: jax.Array, size: int) -> jax.Array:
    n = x.shape[0]
    count = -(-n // size)
    pad = count * size - n
    if pad:
        x = jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)], axis=0)
    return x.reshape(count, size, *x.shape[1:])


def run(
    layout: Layout,
    features: Callable[[jax.Array], Any],
    contract: Callable[[Any, Any], jax.Array],
    x1: jax.Array,
    x2: jax.Array | None,
    *,
    batch_size: int | None,
    pair: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """Evaluate the kernel tile by tile and lay it out as the shape contract says.

    ``features(x_tile)`` computes what one side needs; ``contract(f1, f2)`` returns the tile
    pair's einsum with letters ``layout.out``. ``pair(x_tile1, x_tile2)``, when given, replaces
    ``contract(features(.), features(.))`` (used by implementations that cannot split the work
    into two sides).
    """
    if pair is None:

        def pair(a, b):
            return contract(features(a), features(b))

    if not layout.vmapped:
        if x2 is None:
            f1 = features(x1)
            res = contract(f1, f1)
        else:
            res = pair(x1, x2)
        return res / layout.divisor

    xa = jnp.moveaxis(x1, layout.in_axis, 0)
    xb = xa if x2 is None else jnp.moveaxis(x2, layout.in_axis, 0)
    n1, n2 = layout.n1, layout.n2
    same_examples = layout.batch_mode in ("diag", "trace")
    if batch_size is None or batch_size >= max(n1, n2):
        if x2 is None:
            f1 = features(xa)
            res = contract(f1, f1)
        else:
            res = pair(xa, xb)
    elif same_examples:
        ta, tb = _tiles(xa, batch_size), _tiles(xb, batch_size)
        if x2 is None:

            def same(a):
                f = features(a)
                return contract(f, f)

            res = jax.lax.map(same, ta)
        else:
            res = jax.lax.map(lambda ab: pair(ab[0], ab[1]), (ta, tb))
        res = res.reshape(-1, *res.shape[2:])[:n1]
    else:
        ta, tb = _tiles(xa, batch_size), _tiles(xb, batch_size)

        def row(a):
            return jax.lax.map(lambda b: pair(a, b), tb)

        res = jax.lax.map(row, ta)  # (T1, T2, bs, bs, ...)
        t1, t2 = res.shape[:2]
        res = jnp.swapaxes(res, 1, 2).reshape(t1 * batch_size, t2 * batch_size, *res.shape[4:])
        res = res[:n1, :n2]
    if layout.batch_mode == "trace":
        res = res.sum(axis=0)
    elif layout.batch_mode == "diag":
        res = jnp.moveaxis(res, 0, layout.batch_position)
    else:
        res = jnp.moveaxis(res, (0, 1), (layout.batch_position, layout.batch_position + 1))
    return res / layout.divisor


def param_letters(ndim: int) -> str:
    """Uppercase einsum letters for the axes of one parameter leaf."""
    if ndim > 20:
        raise ValueError(f"a parameter leaf has {ndim} axes; at most 20 are supported")
    return "ABCDEFGHIJKLMNOPQRST"[:ndim]


def prepare_inputs(apply_fn, params, x1, x2, trace_axes, diagonal_axes, vmap_axes, batch_size):
    """Convert the inputs to arrays and build their :class:`Layout` (shared argument checks)."""
    x1 = jnp.asarray(x1)
    x2 = None if x2 is None else jnp.asarray(x2)
    layout = make_layout(
        apply_fn,
        params,
        x1,
        x2,
        trace_axes=trace_axes,
        diagonal_axes=diagonal_axes,
        vmap_axes=vmap_axes,
        batch_size=batch_size,
    )
    return layout, x1, x2
