"""Empirical neural tangent kernel ``Theta(x1, x2) = J(x1) J(x2)^T`` in four implementations."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gradlab._src.errors import check_choice
from gradlab.ntk import _structured
from gradlab.ntk._layout import Layout, make_layout, param_letters, run

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


def _prepare(apply_fn, params, x1, x2, trace_axes, diagonal_axes, vmap_axes, batch_size):
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


def jacobian_contraction(
    apply_fn: Callable,
    params: Any,
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    trace_axes: Any = (-1,),
    diagonal_axes: Any = (),
    vmap_axes: Any = None,
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
        vmap_axes: ``None`` (default: the whole batch is differentiated at once, exact even
            when examples interact, but the cost grows quadratically in ``N``), an int
            (``in_axes = out_axes``) or a pair ``(in_axes, out_axes)``. Passing it
            certifies that ``apply_fn`` treats examples independently; the result is wrong
            (silently) if they interact, e.g. through batch norm in training mode.
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
    layout, x1, x2 = _prepare(
        apply_fn, params, x1, x2, trace_axes, diagonal_axes, vmap_axes, batch_size
    )
    return run(
        layout,
        _jacobian_features(layout, params),
        _jacobian_contract(layout),
        x1,
        x2,
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
        vmap_axes: ``None`` (default: the whole batch is differentiated at once, exact even
            when examples interact, but the cost grows quadratically in ``N``), an int
            (``in_axes = out_axes``) or a pair ``(in_axes, out_axes)``. Passing it
            certifies that ``apply_fn`` treats examples independently; the result is wrong
            (silently) if they interact, e.g. through batch norm in training mode.
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
    layout, x1, x2 = _prepare(
        apply_fn, params, x1, x2, trace_axes, diagonal_axes, vmap_axes, batch_size
    )
    pair = _nvp_pair(layout, params)
    return run(layout, lambda x: x, pair, x1, x2, batch_size=batch_size)


def structured(
    apply_fn: Callable,
    params: Any,
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    trace_axes: Any = (-1,),
    diagonal_axes: Any = (),
    vmap_axes: Any = None,
    batch_size: int | None = None,
) -> jax.Array:
    r"""Empirical NTK exploiting the structure ``dy/dW = I (x) x^T`` of flax dense layers.

    A dense layer ``y_t = W^T x_t + b`` (at positions ``t``) contributes
    ``sum_{t,u} <x1_t, x2_u> <delta1_{o1,t}, delta2_{o2,u}>`` (with a constant 1 appended to
    ``x`` for the bias) where ``delta_{o,t} = d f_o / d y_t`` is the output cotangent at the
    layer output. The inputs are captured and the cotangents obtained as gradients of zero
    perturbations added at layer outputs, both through ``flax.linen.intercept_methods``
    (public flax API; no jaxpr interpretation). Per-example weight Jacobians are never
    formed: for an MLP the cost per example pair is ``sum_layers (fan_in + O * fan_out)``
    instead of ``O * P``.

    Supported layers: ``flax.linen.Dense`` and ``flax.linen.Embed``, called through
    ``__call__`` inside ``apply_fn`` (any module nesting, any leading axes). Every other
    parameter leaf (convolutions, normalisation scales, custom layers, ``Embed.attend``
    users, kernels shared between layers with different biases) is handled exactly by
    per-example Jacobian contraction restricted to those leaves. Not detected: a Dense kernel
    that ``apply_fn`` also uses outside that layer (tied weights through a raw matmul); its
    extra use is missed.

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
        vmap_axes: ``None`` (default: the whole batch is differentiated at once, exact even
            when examples interact, but the cost grows quadratically in ``N``), an int
            (``in_axes = out_axes``) or a pair ``(in_axes, out_axes)``. Passing it
            certifies that ``apply_fn`` treats examples independently; the result is wrong
            (silently) if they interact, e.g. through batch norm in training mode.
        batch_size: compute the kernel in tiles of this many examples per side (requires
            ``vmap_axes``); memory is bounded by two tiles' worth of Jacobians, at the price
            of recomputing them once per tile pair.

    Returns:
        The kernel, shaped as the contract above says.

    Raises:
        ValueError: if ``apply_fn`` calls no supported flax linen layer whose parameters are
            leaves of ``params`` (``implementation="auto"`` then falls back).

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (4, 8, 3))
        >>> x = jnp.ones((5, 4))
        >>> k = gl.ntk.structured(apply_fn, params, x, vmap_axes=0)
        >>> bool(jnp.allclose(k, gl.ntk.jacobian_contraction(apply_fn, params, x), rtol=1e-4))
        True

    References:
        Novak et al. (2022), Fast finite width neural tangent kernel,
        https://arxiv.org/abs/2206.08720
    """
    layout, x1, x2 = _prepare(
        apply_fn, params, x1, x2, trace_axes, diagonal_axes, vmap_axes, batch_size
    )
    plan = _structured.discover(layout, params, x1)
    if not plan.applies:
        raise ValueError(
            "implementation='structured' found no supported layer in apply_fn: it needs "
            f"flax linen layers ({', '.join(_structured.SUPPORTED_LAYERS)}) whose parameters "
            "are leaves of params; use implementation='auto' to fall back automatically"
        )
    return _structured_run(layout, params, plan, x1, x2, batch_size)


def _structured_run(layout, params, plan, x1, x2, batch_size):
    return run(
        layout,
        _structured.structured_features(layout, params, plan),
        _structured.structured_contract(layout, plan),
        x1,
        x2,
        batch_size=batch_size,
    )


class Choice(NamedTuple):
    """The decision of ``implementation="auto"`` and the flop estimates behind it."""

    implementation: str
    costs: dict[str, float]


def _forward_flops(layout: Layout, params: Any, x1: jax.Array) -> float:
    example = jnp.moveaxis(x1, layout.in_axis, 0)[:1][0] if layout.vmapped else x1
    num_params = sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(params))
    try:
        analysis = jax.jit(layout.unit).lower(params, example).cost_analysis()
        if isinstance(analysis, (list, tuple)):
            analysis = analysis[0]
        flops = float(analysis.get("flops", 0.0))
    except Exception:  # cost analysis is best effort on some backends
        flops = 0.0
    return max(flops, 2.0 * num_params)


def choose_implementation(layout: Layout, params: Any, x1, x2) -> tuple[Choice, Any]:
    """The documented ``auto`` rule: the smallest estimated flop count (see ``empirical_ntk``)."""
    leaves = jax.tree_util.tree_leaves(params)
    num_params = sum(int(leaf.size) for leaf in leaves)
    fwd = _forward_flops(layout, params, x1)
    outputs = math.prod(layout.unit_shape)
    units1 = layout.n1 if layout.vmapped else 1
    units2 = layout.n2 if layout.vmapped else 1
    pairs = units1 * (units1 if layout.batch_mode in ("diag", "trace") else units2)
    if not layout.vmapped:
        pairs = 1
    sides = units1 + (0 if x2 is None else units2)
    # output pairs kept (or summed) per example pair: s for a traced/diagonal axis, s^2 else
    own = layout.lhs[1:] if layout.vmapped else layout.lhs
    other = layout.rhs[1:] if layout.vmapped else layout.rhs
    out_pairs = 1
    for a, b, size in zip(own, other, layout.unit_shape, strict=True):
        out_pairs *= size if a == b else size * size
    jac_cost = 3.0 * sides * outputs * fwd + 2.0 * pairs * num_params * out_pairs
    nvp_cost = 3.0 * (units2 * outputs * fwd) + 3.0 * pairs * outputs * fwd
    costs = {"jacobian_contraction": jac_cost, "ntk_vector_products": nvp_cost}
    plan = _structured.discover(layout, params, x1)
    if plan.applies:
        rest = num_params - _structured.count_params(params, plan.covered_leaves)
        per_pair = 0.0
        for group in plan.groups:
            calls = [plan.calls[j] for j in group]
            t = sum(math.prod(c.in_shape[:-1]) if c.kind == "dense" else 1 for c in calls)
            fan_in = calls[0].in_shape[-1] if calls[0].kind == "dense" else 1
            fan_out = calls[0].out_shape[-1]
            per_pair += t * t * (fan_in + out_pairs * fan_out)
        # factor 2: cotangents at every covered layer plus Jacobians of the other leaves, and
        # the interception bookkeeping; structured must save real work to be chosen
        costs["structured"] = 2.0 * (
            3.0 * sides * outputs * fwd + 2.0 * pairs * (per_pair + rest * out_pairs)
        )
    best = min(costs, key=costs.get)
    return Choice(best, costs), plan


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

    The ``auto`` rule estimates the flops of each implementation from the number of
    examples ``N1, N2``, outputs per example ``O``, parameters ``P``, output pairs kept per
    example pair ``Q`` (``O`` when the output axis is traced, ``O^2`` for ``trace_axes=()``)
    and the cost ``F`` of one forward pass per example (XLA's cost analysis, at least
    ``2 P``): Jacobian contraction ``3 N O F + 2 N1 N2 P Q``; NTK-vector products
    ``3 N2 O F + 3 N1 N2 O F``; structured (when a supported layer is found) twice
    ``3 N O F + 2 N1 N2 (sum_layers T^2 (fan_in + Q fan_out) + P_rest Q)`` (the factor 2
    charges its bookkeeping, so it is chosen only when it saves real work), and picks the
    smallest. ``N`` is ``N1`` when ``x2`` is ``None`` and ``N1 + N2`` otherwise, ``T`` the
    number of positions a layer is applied at, ``P_rest`` the parameters outside supported
    layers. Consequences: structured for MLPs; NTK-vector products for dense nets with
    many outputs and ``trace_axes=()`` when structured does not apply (``Q = O^2`` makes
    the contraction dominate); Jacobian contraction for convolutional nets with few
    outputs (``F >> P``).

    Args:
        apply_fn: ``apply_fn(params, x) -> outputs`` with the example axis of ``x`` and of the
            outputs given by ``vmap_axes`` (0 by convention).
        params: parameter pytree.
        x1: inputs, an array with an example axis.
        x2: second inputs with the same feature shape; ``None`` means ``x1`` (cheaper).
        trace_axes: output axes to contract (and divide by their size); default the last.
        diagonal_axes: output axes on which only the diagonal is kept.
        vmap_axes: ``None`` (default: the whole batch is differentiated at once, exact even
            when examples interact, but the cost grows quadratically in ``N``), an int
            (``in_axes = out_axes``) or a pair ``(in_axes, out_axes)``. Passing it
            certifies that ``apply_fn`` treats examples independently; the result is wrong
            (silently) if they interact, e.g. through batch norm in training mode.
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
            shapes; all before any tracing of the model's derivatives.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (4, 8, 3))
        >>> x = jax.random.normal(jax.random.key(1), (6, 4))
        >>> k = gl.ntk.empirical_ntk(apply_fn, params, x, vmap_axes=0)
        >>> k.shape
        (6, 6)
        >>> gl.ntk.empirical_ntk(apply_fn, params, x, x[:2], trace_axes=(), vmap_axes=0).shape
        (6, 2, 3, 3)

    References:
        Jacot, Gabriel, Hongler (2018), https://arxiv.org/abs/1806.07572;
        Novak et al. (2022), Fast finite width neural tangent kernel,
        https://arxiv.org/abs/2206.08720
    """
    check_choice("implementation", implementation, IMPLEMENTATIONS)
    layout, x1, x2 = _prepare(
        apply_fn, params, x1, x2, trace_axes, diagonal_axes, vmap_axes, batch_size
    )
    plan = None
    if implementation == "auto":
        choice, plan = choose_implementation(layout, params, x1, x2)
        implementation = choice.implementation
    if implementation == "structured":
        if plan is None:
            plan = _structured.discover(layout, params, x1)
        if not plan.applies:
            raise ValueError(
                "implementation='structured' found no supported layer in apply_fn "
                f"(supported: {', '.join(_structured.SUPPORTED_LAYERS)})"
            )
        return _structured_run(layout, params, plan, x1, x2, batch_size)
    if implementation == "jacobian_contraction":
        features = _jacobian_features(layout, params)
        return run(layout, features, _jacobian_contract(layout), x1, x2, batch_size=batch_size)
    pair = _nvp_pair(layout, params)
    return run(layout, lambda x: x, pair, x1, x2, batch_size=batch_size)
