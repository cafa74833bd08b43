"""The per-example kernel implementations: Jacobian contraction and NTK-vector products.

:func:`jacobian_contraction` and :func:`ntk_vector_products` (public), and ``kernel`` which
runs one implementation (``auto`` resolved, ``structured`` delegated) for a fixed
``vmap_axes``; :func:`gradlab.ntk.empirical_ntk` dispatches to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradlab.ntk import _structured
from gradlab.ntk._auto import choose_implementation
from gradlab.ntk._detect import _inexact_leaves, run_default
from gradlab.ntk._layout import Layout, param_letters, prepare_inputs, run

__all__ = ["jacobian_contraction", "kernel", "ntk_vector_products"]


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
    # Jacobian entries carry the parameters' dtype (as in the other implementations), while a
    # JVP comes back in the output's: float64 params under a float32-output model would give
    # a float32 kernel here and a float64 one elsewhere.
    floats = _inexact_leaves(params)
    param_dtype = jnp.result_type(*floats) if floats else None

    def kernel_block(f1: Callable, x_other: jax.Array) -> jax.Array:
        # rows: Theta[., e] for every basis output e of `unit(params, x_other)`
        out, vjp = jax.vjp(lambda p: unit(p, x_other), params)
        size = out.size
        basis = jnp.eye(size, dtype=out.dtype).reshape(size, *out.shape)

        def col(e):
            (v,) = vjp(e)
            return jax.jvp(f1, (params,), (v,))[1]

        block = jax.lax.map(col, basis, batch_size=min(chunk * 4, size))
        if param_dtype is None:
            return block
        return block.astype(jnp.result_type(block.dtype, param_dtype))

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


def kernel(implementation, apply_fn, params, x1, x2, trace_axes, diagonal_axes, vmap_axes, bs):
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
