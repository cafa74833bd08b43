"""Find flax linen layers and capture their inputs and output cotangents (for K-FAC).

Layer structure comes only from ``flax.linen.intercept_methods`` (public flax API), the
mechanism the structured NTK uses: a first abstract pass records every call of a supported
layer (``Dense``, ``Conv`` 2-D, ``Embed``) and which leaves of ``params`` it reads (matched by
object identity); a second pass, run per example under ``vmap``, records each covered call's
input and adds a zero perturbation ``eps`` to its output, so that the gradient with respect to
``eps`` is the output cotangent of that call. No jaxpr is inspected and no tag is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.linear import canonicalize_padding

from gradlab.curvature._blocks import param_paths

__all__ = ["ConvSpec", "Group", "Plan", "discover", "layer_inputs", "make_forward"]

SUPPORTED_LAYERS = ("flax.linen.Dense", "flax.linen.Conv (2-D)", "flax.linen.Embed")


class ConvSpec(NamedTuple):
    """Static geometry of one 2-D convolution call (hashable)."""

    kernel_size: tuple[int, int]
    strides: tuple[int, int]
    padding: Any  # a lax padding string or a tuple of (lo, hi) pairs
    pad_mode: str | None  # "wrap" / "reflect" for flax's CIRCULAR / REFLECT padding
    input_dilation: tuple[int, int]
    kernel_dilation: tuple[int, int]
    in_features: int


class Call(NamedTuple):
    kind: str  # "dense" | "conv" | "embed"
    kernel: int | None  # leaf index of the kernel / embedding table
    bias: int | None
    conv: ConvSpec | None
    out_shape: tuple[int, ...]
    out_dtype: Any


class Group(NamedTuple):
    """One covered layer: the calls sharing a kernel leaf (and its bias)."""

    name: str  # the kernel's path without its last component, e.g. "params/Dense_0"
    kind: str
    kernel: int
    bias: int | None
    calls: tuple[int, ...]


class Plan(NamedTuple):
    """Static description of the covered layers of one model (hashable: jit aux data)."""

    calls: tuple[Call, ...]
    slots: tuple[int | None, ...]  # per call: its position among covered calls, or None
    groups: tuple[Group, ...]
    uncovered: tuple[int, ...]  # leaf indices handled by their exact diagonal
    treedef: Any
    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[Any, ...]


def _pair(value: Any) -> tuple[int, int]:
    if value is None:
        return (1, 1)
    if isinstance(value, int):
        return (value, value)
    return tuple(int(v) for v in value)  # type: ignore[return-value]


def _layer_kind(module: Any) -> str | None:
    if isinstance(module, nn.Dense):
        if module.dot_general is None and module.dot_general_cls is None:
            return "dense"
        return "other"
    if isinstance(module, nn.Conv):
        return "conv"
    if isinstance(module, nn.Embed):
        return "embed"
    return None


def _conv_spec(module: Any, x: Any) -> ConvSpec | None:
    """The geometry of a supported conv call, or None (1-D/3-D, groups, masks, causal...)."""
    ks = module.kernel_size
    ks = (ks,) if isinstance(ks, int) else tuple(ks)
    if (
        len(ks) != 2
        or module.feature_group_count != 1
        or module.mask is not None
        or module.conv_general_dilated is not None
        or module.conv_general_dilated_cls is not None
        or jnp.ndim(x) < 3
    ):
        return None
    padding = canonicalize_padding(module.padding, 2)
    pad_mode = None
    if padding in ("CIRCULAR", "REFLECT"):
        pad_mode = {"CIRCULAR": "wrap", "REFLECT": "reflect"}[padding]
        padding = "VALID"
    elif padding == "CAUSAL":
        return None
    if not isinstance(padding, str):
        padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    return ConvSpec(
        (int(ks[0]), int(ks[1])),
        _pair(module.strides),
        padding,
        pad_mode,
        _pair(module.input_dilation),
        _pair(module.kernel_dilation),
        int(jnp.shape(x)[-1]),
    )


def _inputs_of(args: tuple, kwargs: dict) -> Any:
    return args[0] if args else kwargs.get("inputs")


def _var_index(module: Any, name: str, ids: dict[int, int]) -> int | None:
    if not module.has_variable("params", name):
        return None
    return ids.get(id(module.get_variable("params", name)))


def discover(model_fn: Callable, params: Any, inputs_one: Any) -> Plan:
    """Trace ``model_fn(params, inputs_one)`` abstractly and plan which leaves K-FAC covers.

    A kernel is covered when every call that reads it is a supported layer called through
    ``__call__`` and all those calls share the same bias leaf (or none); anything else is left
    to the exact diagonal.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    calls: list[Call] = []
    other_uses: set[int] = set()

    def probe(leaves_: list, x: Any) -> Any:
        ids = {id(leaf): i for i, leaf in enumerate(leaves_)}

        def interceptor(next_fun, args, kwargs, context):
            kind = _layer_kind(context.module)
            if kind is None or context.method_name == "setup":
                return next_fun(*args, **kwargs)
            m = context.module
            names = ("embedding",) if kind == "embed" else ("kernel", "bias")
            used = [_var_index(m, n, ids) for n in names]
            if kind == "other" or context.method_name != "__call__":
                other_uses.update(i for i in used if i is not None)
                return next_fun(*args, **kwargs)
            x_in = _inputs_of(args, kwargs)
            spec = _conv_spec(m, x_in) if kind == "conv" else None
            if kind == "conv" and spec is None:
                other_uses.update(i for i in used if i is not None)
                kernel = None
            else:
                kernel = used[0]
            bias = used[1] if len(used) > 1 else None
            y = next_fun(*args, **kwargs)
            calls.append(Call(kind, kernel, bias, spec, tuple(jnp.shape(y)), jnp.result_type(y)))
            return y

        with nn.intercept_methods(interceptor):
            return model_fn(jax.tree_util.tree_unflatten(treedef, leaves_), x)

    jax.eval_shape(probe, leaves, inputs_one)
    by_kernel: dict[int, list[int]] = {}
    for j, c in enumerate(calls):
        if c.kernel is not None and c.kernel not in other_uses:
            by_kernel.setdefault(c.kernel, []).append(j)
    kernels = set(by_kernel)
    paths = param_paths(params)
    groups = []
    for k, js in by_kernel.items():
        biases = {calls[j].bias for j in js}
        kinds = {calls[j].kind for j in js}
        specs = {calls[j].conv for j in js}
        bias = next(iter(biases))
        if len(biases) != 1 or len(kinds) != 1 or len(specs) != 1:
            continue
        if bias is not None and (bias in kernels or bias in other_uses):
            continue
        name = paths[k].rsplit("/", 1)[0] if "/" in paths[k] else paths[k]
        groups.append(Group(name, calls[js[0]].kind, k, bias, tuple(js)))
    covered_calls = [j for g in groups for j in g.calls]
    slot_of = {j: s for s, j in enumerate(sorted(covered_calls))}
    covered_leaves = {g.kernel for g in groups} | {g.bias for g in groups if g.bias is not None}
    return Plan(
        calls=tuple(calls),
        slots=tuple(slot_of.get(j) for j in range(len(calls))),
        groups=tuple(groups),
        uncovered=tuple(i for i in range(len(leaves)) if i not in covered_leaves),
        treedef=treedef,
        paths=tuple(paths),
        shapes=tuple(tuple(jnp.shape(x)) for x in leaves),
        dtypes=tuple(jnp.result_type(x) for x in leaves),
    )


def make_forward(model_fn: Callable, params: Any, plan: Plan) -> Callable:
    """``forward(uncovered, eps, inputs) -> (outputs, captured_inputs)`` for one batch.

    ``uncovered`` replaces the uncovered leaves (so that their gradient can be taken), ``eps``
    holds one zero array per covered call, added to that call's output.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)

    def forward(uncovered: list, eps: list, inputs: Any) -> tuple[Any, list]:
        full = list(leaves)
        for i, leaf in zip(plan.uncovered, uncovered, strict=True):
            full[i] = leaf
        count = [0]
        captured: list = []

        def interceptor(next_fun, args, kwargs, context):
            kind = _layer_kind(context.module)
            if kind is None or kind == "other" or context.method_name != "__call__":
                return next_fun(*args, **kwargs)
            j = count[0]
            count[0] += 1
            y = next_fun(*args, **kwargs)
            slot = plan.slots[j] if j < len(plan.slots) else None
            if slot is None:
                return y
            captured.append(_inputs_of(args, kwargs))
            return y + eps[slot].astype(jnp.result_type(y))

        with nn.intercept_methods(interceptor):
            out = model_fn(jax.tree_util.tree_unflatten(treedef, full), inputs)
        if count[0] != len(plan.calls):
            raise RuntimeError(
                "model_fn made a different number of layer calls than when it was inspected "
                f"({count[0]} instead of {len(plan.calls)}): K-FAC needs a fixed layer sequence"
            )
        return out, captured

    return forward


def _patches(x: jax.Array, spec: ConvSpec) -> jax.Array:
    """``(B, H, W, C)`` -> ``(B, H', W', kh * kw * C)`` in the kernel's (kh, kw, C) order."""
    if spec.pad_mode is not None:
        kh, kw = (
            (k - 1) * d + 1 for k, d in zip(spec.kernel_size, spec.kernel_dilation, strict=False)
        )
        pads = [(0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)]
        x = jnp.pad(x, pads, mode=spec.pad_mode)
    p = jax.lax.conv_general_dilated_patches(
        x,
        spec.kernel_size,
        spec.strides,
        spec.padding,
        lhs_dilation=spec.input_dilation,
        rhs_dilation=spec.kernel_dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )
    c, (kh, kw) = spec.in_features, spec.kernel_size
    p = p.reshape(*p.shape[:3], c, kh, kw)
    return jnp.moveaxis(p, 3, 5).reshape(*p.shape[:3], kh * kw * c)


def layer_inputs(call: Call, x: jax.Array, n: int) -> jax.Array:
    """Captured input of one call -> ``(n, T, d_in)`` rows (``(n, T)`` indices for embed)."""
    if call.kind == "embed":
        return x.reshape(n, -1)
    if call.kind == "conv":
        spec = call.conv
        flat = x.reshape(-1, *x.shape[-3:])
        return _patches(flat, spec).reshape(
            n, -1, spec.kernel_size[0] * spec.kernel_size[1] * spec.in_features
        )
    return x.reshape(n, -1, x.shape[-1])
