"""Structured empirical NTK for flax linen models: ``dy/dW = I (x) x^T`` without Jacobians.

For a dense layer ``y_t = W^T x_t + b`` applied at positions ``t`` (one position for an MLP,
tokens for a sequence model), the Jacobian of output ``o`` with respect to ``W`` is
``sum_t delta_{o,t} x_t^T`` where ``delta_{o,t} = d f_o / d y_t``. Hence the layer's
contribution to ``Theta(x1, x2)[o1, o2]`` is

    sum_{t, u} <x1_t, x2_u> <delta1_{o1,t}, delta2_{o2,u}>   (+ 1 inside <.,.> for the bias),

which needs only the layer inputs and the output cotangents, never the ``O x P`` Jacobian.
Layer inputs are captured and zero perturbations are added at layer outputs through
``flax.linen.intercept_methods`` (public flax API); the cotangents are the gradients with
respect to those perturbations. Parameters that are not used by a supported layer (conv
kernels, layer-norm scales, the biases of custom layers, ...) are handled by per-example
Jacobian contraction restricted to those leaves, so every model gets the exact kernel.

Supported layers (called through ``__call__``): ``flax.linen.Dense`` (kernel and bias),
``flax.linen.Embed`` (an embedding lookup: ``<x1_t, x2_u>`` is ``[i1_t == i2_u]``) and
``flax.linen.Conv`` (a dense layer on patches, see ``_conv.py``; contraction modes and costs
in ``_plan.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gradlab.ntk import _conv, _jaxpr
from gradlab.ntk._detect import run_default
from gradlab.ntk._layout import Layout, param_letters, prepare_inputs, run
from gradlab.ntk._plan import (
    SUPPORTED_LAYERS,
    Plan,
    add_group,
    discover,
    inputs_of,
    layer_kind,
)


def structured_features(layout: Layout, params: Any, plan: Plan):
    """Return ``features(x_tile)``: leftover Jacobians, (inputs, cotangents) and built Jacobians."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    rest_idx = [i for i in range(len(leaves)) if i not in plan.covered_leaves]
    slots = [i for i, c in enumerate(plan.covered_calls) if c]
    nout = len(layout.unit_shape)

    def unit(rest, eps, xi):
        full = list(leaves)
        for i, leaf in zip(rest_idx, rest, strict=True):
            full[i] = leaf
        p = jax.tree_util.tree_unflatten(treedef, full)
        count = [0]
        captured = []

        def interceptor(next_fun, args, kwargs, context):
            kind = layer_kind(context.module)
            if kind is None or context.method_name != "__call__":
                return next_fun(*args, **kwargs)
            j = count[0]
            count[0] += 1
            y = next_fun(*args, **kwargs)
            if j < len(plan.calls) and plan.covered_calls[j]:
                x = inputs_of(args, kwargs)
                captured.append(_conv.patches(context.module, x) if kind == "conv" else x)
                return y + eps[slots.index(j)]
            return y

        with nn.intercept_methods(interceptor):
            out = layout.unit(p, xi)
        if count[0] != len(plan.calls):
            raise RuntimeError(
                "the model made a different number of layer calls than when it was inspected"
            )
        return out, captured

    def zeros_at_outputs(calls):
        return [
            jnp.zeros(calls[j].out_shape, jnp.result_type(leaves[calls[j].kernel])) for j in slots
        ]

    rest0 = [leaves[i] for i in rest_idx]
    jac = jax.jacrev(unit, argnums=(0, 1), has_aux=True)

    def one(xi):
        # the whole batch is one unit when not vmapped: output shapes depend on its size
        calls = plan.calls if layout.vmapped else discover(layout, params, xi).calls
        (j_rest, j_eps), xs = jac(rest0, zeros_at_outputs(calls), xi)
        grams, jacs = [], []
        for group, mode in zip(plan.groups, plan.modes, strict=True):
            xparts, dparts = [], []
            for j in group:
                c = plan.calls[j]
                x = xs[slots.index(j)]
                d = j_eps[slots.index(j)]
                g = c.groups
                if c.kind == "embed":
                    x = x.reshape(-1)
                else:
                    x = x.reshape(-1, g, x.shape[-1] // g)
                    if c.bias is not None:
                        x = jnp.concatenate([x, jnp.ones((*x.shape[:2], 1), x.dtype)], axis=2)
                xparts.append(x)
                dparts.append(d.reshape(*d.shape[:nout], -1, g, c.out_shape[-1] // g))
            add_group(xparts, dparts, nout, mode, grams, jacs)
        return j_rest, grams, jacs

    if layout.vmapped:
        return jax.vmap(one)
    return one


def structured_contract(layout: Layout, plan: Plan):
    """Return ``contract(f1, f2)``: the einsum of one tile pair with letters ``layout.out``."""
    kinds = [
        plan.calls[g[0]].kind for g, m in zip(plan.groups, plan.modes, strict=True) if m == "gram"
    ]
    if layout.vmapped:
        bl, br = layout.lhs[0], layout.rhs[0]
        gb = bl if bl == br else bl + br
    else:
        bl = br = gb = ""

    def contract(f1, f2):
        (r1, g1, j1), (r2, g2, j2) = f1, f2
        total = 0.0
        for a, b in zip(list(r1) + j1, list(r2) + j2, strict=True):
            p = param_letters(a.ndim - len(layout.lhs))
            total = total + jnp.einsum(f"{layout.lhs}{p},{layout.rhs}{p}->{layout.out}", a, b)
        for kind, (x1, d1), (x2, d2) in zip(kinds, g1, g2, strict=True):
            if kind == "embed":
                if bl and bl != br:
                    gram = x1[:, None, :, None] == x2[None, :, None, :]
                else:
                    gram = x1[..., :, None] == x2[..., None, :]
                gram = gram.astype(d1.dtype)[..., None, :, :]  # one group
            else:
                gram = jnp.einsum(f"{bl}TGI,{br}UGI->{gb}GTU", x1, x2)
            if gram.shape[-3:] == (1, 1, 1):
                term = jnp.einsum(
                    f"{layout.lhs}F,{layout.rhs}F->{layout.out}", d1[..., 0, 0, :], d2[..., 0, 0, :]
                )
                total = total + term * _expand(gram[..., 0, 0, 0], gb, layout.out)
            else:
                total = total + jnp.einsum(
                    f"{layout.lhs}TGF,{layout.rhs}UGF,{gb}GTU->{layout.out}", d1, d2, gram
                )
        return total

    return contract


def _expand(gram: jax.Array, letters: str, out: str) -> jax.Array:
    """Broadcast a (batch-letters) array against a result with letters ``out``."""
    if not letters:
        return gram
    shape = [1] * len(out)
    for i, ch in enumerate(letters):
        shape[out.index(ch)] = gram.shape[i]
    # batch letters lead `out`, so a plain reshape keeps the order
    return gram.reshape(shape)


def structured(
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
    r"""Empirical NTK exploiting the structure ``dy/dW = I (x) x^T`` of flax dense layers.

    A dense layer ``y_t = W^T x_t + b`` (at positions ``t``) contributes
    ``sum_{t,u} <x1_t, x2_u> <delta1_{o1,t}, delta2_{o2,u}>`` (with a constant 1 appended to
    ``x`` for the bias) where ``delta_{o,t} = d f_o / d y_t`` is the output cotangent at the
    layer output. The inputs are captured and the cotangents obtained as gradients of zero
    perturbations added at layer outputs, both through ``flax.linen.intercept_methods``
    (public flax API; no jaxpr interpretation). Per-example weight Jacobians are never
    formed: for an MLP the cost per example pair is ``sum_layers (fan_in + O * fan_out)``
    instead of ``O * P``.

    Supported layers: ``flax.linen.Dense``, ``flax.linen.Embed`` and ``flax.linen.Conv``
    (any strides, padding, input/kernel dilation and ``feature_group_count``: a dense layer
    on the patches, which a clone of the layer with an identity kernel computes), called
    through ``__call__`` inside ``apply_fn`` (any module nesting, any leading axes). Every
    other parameter leaf (masked convolutions, ``ConvLocal``, normalisation scales, custom
    layers, ``Embed.attend`` users, kernels shared between layers with different biases) is
    handled exactly by
    per-example Jacobian contraction restricted to those leaves.

    Plain JAX functions (no flax layers): every parameter leaf used only as a ``dot_general``
    operand (``@``, ``einsum``, after ``transpose``/``reshape`` of the leaf) is factored the
    same way from ``jax.make_jaxpr(apply_fn)`` (public ``jax.extend`` objects), a bias added
    onto such a product is folded in, and every other leaf falls back to the Jacobian path
    (the rule: docs/ntk.md). Not detected: a Dense kernel
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

    Raises:
        ValueError: if ``apply_fn`` calls no supported flax linen layer whose parameters are
            leaves of ``params`` and uses no leaf only in ``dot_general`` contractions
            (``implementation="auto"`` then falls back).

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
    return run_default(
        _structured_kernel,
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


def _structured_kernel(apply_fn, params, x1, x2, trace_axes, diagonal_axes, vmap_axes, bs):
    layout, x1, x2 = prepare_inputs(
        apply_fn, params, x1, x2, trace_axes, diagonal_axes, vmap_axes, bs
    )
    plan = discover_any(layout, params, x1, x2)
    if not plan.applies:
        raise ValueError(NOTHING_SUPPORTED)
    return structured_run(layout, params, plan, x1, x2, bs)


NOTHING_SUPPORTED = (
    "implementation='structured' found no supported layer in apply_fn: it needs flax linen "
    f"layers ({', '.join(SUPPORTED_LAYERS)}) whose parameters are leaves of params, or "
    "parameter leaves used only as dot_general operands (matmul, einsum); use "
    "implementation='auto' to fall back automatically"
)


def _covered_size(plan, leaves) -> int:
    return sum(int(leaves[i].size) for i in plan.covered_leaves)


def discover_any(layout: Layout, params: Any, x1: jax.Array, x2: jax.Array | None):
    """The flax-layer plan, or the jaxpr plan when that covers more parameters."""
    plan = discover(layout, params, x1, x2 is not None)
    if len(plan.covered_leaves) == plan.num_leaves:
        return plan
    leaves = jax.tree_util.tree_leaves(params)
    other = _jaxpr.discover(layout, params, x1, x2)
    return other if _covered_size(other, leaves) > _covered_size(plan, leaves) else plan


def structured_run(layout, params, plan, x1, x2, batch_size):
    if isinstance(plan, _jaxpr.JaxprPlan):
        features = _jaxpr.jaxpr_features(layout, params, plan)
    else:
        features = structured_features(layout, params, plan)
    return run(layout, features, structured_contract(layout, plan), x1, x2, batch_size=batch_size)
