"""What the structured NTK path handles: layer discovery, per-kernel contraction mode, flop costs.

Every supported layer is, for the NTK, a dense map ``y_t^g = W_g^T p_t^g + b_g`` applied at
positions ``t`` in ``G`` groups (``G = 1`` except for grouped convolutions): the input ``p_t``
is the layer input (``Dense``), a one-hot index (``Embed``) or a patch (``Conv``). Per kernel
the contribution to ``Theta`` is computed in one of two modes, whichever costs fewer flops:

- ``"gram"``: ``sum_{t,u} <p1_t, p2_u> <delta1_t, delta2_u>`` per example pair, cost
  ``pairs G T^2 (I + Q F)``: cheap for few positions (MLPs: ``T = 1``).
- ``"jac"``: the per-example weight Jacobian ``J_o = sum_t p_t delta_{o,t}^T`` from patches and
  cotangents (a matmul, no transposed convolution), then contracted like any parameter: cost
  ``sides O T G I F + pairs Q G I F``: cheap for many positions and small kernels (CNNs).

``I`` is the fan-in per group (plus 1 for the bias), ``F`` the fan-out per group, ``Q`` the
output pairs per example pair, ``O`` the outputs per example.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from gradlab.ntk import _conv
from gradlab.ntk._layout import Layout

SUPPORTED_LAYERS = ("flax.linen.Dense", "flax.linen.Embed", "flax.linen.Conv")


class Call(NamedTuple):
    kind: str  # "dense" | "embed" | "conv"
    kernel: int | None  # leaf index of the kernel/embedding in params, None if not found
    bias: int | None
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    fan_in: int  # per group, without the bias (1 for embed)
    groups: int


class Plan(NamedTuple):
    """What the structured path found: the calls it handles and the leaves it covers."""

    calls: tuple[Call, ...]
    covered_calls: tuple[bool, ...]
    groups: tuple[tuple[int, ...], ...]  # call indices per covered kernel leaf
    modes: tuple[str, ...]  # "gram" | "jac" per group
    covered_leaves: frozenset[int]
    num_leaves: int

    @property
    def applies(self) -> bool:
        return bool(self.groups)


def layer_kind(module: Any) -> str | None:
    if getattr(module, "name", None) == _conv.PATCH_NAME:
        return None  # the identity-kernel clone computing patches
    if isinstance(module, nn.Dense):
        return "dense"
    if isinstance(module, nn.Embed):
        return "embed"
    if _conv.supported(module):
        return "conv"
    return None


def inputs_of(args: tuple, kwargs: dict) -> Any:
    if args:
        return args[0]
    return kwargs.get("inputs")


def sizes(layout: Layout, two_sides: bool) -> tuple[int, int, int, int]:
    """``(sides, pairs, O, Q)``: feature evaluations, example pairs, outputs, output pairs."""
    outputs = math.prod(layout.unit_shape)
    if not layout.vmapped:
        sides, pairs = (2 if two_sides else 1), 1
    else:
        sides = layout.n1 + (layout.n2 if two_sides else 0)
        pairs = layout.n1 * (layout.n1 if layout.batch_mode in ("diag", "trace") else layout.n2)
    own = layout.lhs[1:] if layout.vmapped else layout.lhs
    other = layout.rhs[1:] if layout.vmapped else layout.rhs
    q = 1
    for a, b, size in zip(own, other, layout.unit_shape, strict=True):
        q *= size if a == b else size * size
    return sides, pairs, outputs, q


def mode_costs(calls: list[Call], layout: Layout, two_sides: bool) -> dict[str, float]:
    """Flops of the two contraction modes for one kernel used by ``calls``."""
    sides, pairs, outputs, q = sizes(layout, two_sides)
    c = calls[0]
    t = sum(math.prod(k.out_shape[:-1]) for k in calls)
    g = c.groups
    i = c.fan_in + (c.bias is not None)
    f = c.out_shape[-1] // g
    gram = 2.0 * pairs * g * t * t * (i + q * f)
    if c.kind == "embed":
        return {"gram": gram}
    jac = 2.0 * (sides * outputs * t * g * i * f + pairs * q * g * i * f)
    return {"gram": gram, "jac": jac}


def discover(layout: Layout, params: Any, x1: jax.Array, two_sides: bool = False) -> Plan:
    """Trace one unit abstractly and record every supported layer call and its parameter leaves."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    example = jnp.moveaxis(x1, layout.in_axis, 0)[0] if layout.vmapped else x1
    calls: list[Call] = []
    other_uses: set[int] = set()

    def probe(leaves_, xi):
        ids = {id(leaf): i for i, leaf in enumerate(leaves_)}
        p = jax.tree_util.tree_unflatten(treedef, leaves_)

        def interceptor(next_fun, args, kwargs, context):
            kind = layer_kind(context.module)
            if kind is None:
                return next_fun(*args, **kwargs)
            m = context.module
            name = "embedding" if kind == "embed" else "kernel"
            kernel = (
                ids.get(id(m.get_variable("params", name)))
                if m.has_variable("params", name)
                else None
            )
            bias = None
            if kind != "embed" and m.use_bias and m.has_variable("params", "bias"):
                bias = ids.get(id(m.get_variable("params", "bias")))
            if context.method_name != "__call__":
                other_uses.update(i for i in (kernel, bias) if i is not None)
                return next_fun(*args, **kwargs)
            x = inputs_of(args, kwargs)
            y = next_fun(*args, **kwargs)
            groups, fan_in = 1, (1 if kind == "embed" else jnp.shape(x)[-1])
            if kind == "conv":
                groups = m.feature_group_count
                fan_in = jnp.shape(x)[-1] // groups * _conv.window(m)
            shapes = (tuple(jnp.shape(x)), tuple(jnp.shape(y)))
            calls.append(Call(kind, kernel, bias, *shapes, fan_in, groups))
            return y

        with nn.intercept_methods(interceptor):
            return layout.unit(p, xi)

    jax.eval_shape(probe, leaves, example)
    by_kernel: dict[int, list[int]] = {}
    for i, c in enumerate(calls):
        if c.kernel is not None and c.kernel not in other_uses:
            by_kernel.setdefault(c.kernel, []).append(i)
    # a kernel shared by layers with different biases or kinds, or a bias that is someone's
    # kernel, is left to the Jacobian path
    kernels = set(by_kernel)
    for k in list(by_kernel):
        sig = {
            (calls[j].bias, calls[j].kind, calls[j].fan_in, calls[j].groups) for j in by_kernel[k]
        }
        bias = next(iter(sig))[0]
        if len(sig) != 1 or bias in kernels or bias in other_uses:
            del by_kernel[k]
    covered = set(by_kernel)
    modes = []
    for group in by_kernel.values():
        bias = calls[group[0]].bias
        if bias is not None:
            covered.add(bias)
        costs = mode_costs([calls[j] for j in group], layout, two_sides)
        modes.append(min(costs, key=costs.get))
    return Plan(
        calls=tuple(calls),
        covered_calls=tuple(c.kernel in by_kernel for c in calls),
        groups=tuple(tuple(v) for v in by_kernel.values()),
        modes=tuple(modes),
        covered_leaves=frozenset(covered),
        num_leaves=len(leaves),
    )


def contraction_flops(plan: Plan, layout: Layout, params: Any, two_sides: bool) -> float:
    """Flops of the structured path's per-tile work beyond the cotangent passes."""
    leaves = jax.tree_util.tree_leaves(params)
    rest = sum(int(leaves[i].size) for i in range(len(leaves)) if i not in plan.covered_leaves)
    _, pairs, _, q = sizes(layout, two_sides)
    total = 2.0 * pairs * rest * q
    for group, mode in zip(plan.groups, plan.modes, strict=True):
        total += mode_costs([plan.calls[j] for j in group], layout, two_sides)[mode]
    return total


def add_group(xparts, dparts, nout: int, mode: str, grams: list, jacs: list) -> None:
    """Append one weight group's factors to ``grams`` (gram mode) or its Jacobian to ``jacs``.

    ``xparts`` are the group's layer inputs ``(T_i, G, I)`` and ``dparts`` its output cotangents
    ``(*out, T_i, G, F)`` (one entry per use, concatenated over the use axis ``T``). In ``"jac"``
    mode ``J_o = sum_t x_t delta_{o,t}^T`` is formed with one matmul per group.
    """
    x = jnp.concatenate(xparts, 0)
    d = jnp.concatenate(dparts, nout)
    if mode == "jac":
        flat = d.reshape(-1, *d.shape[nout:])
        jm = jnp.einsum("TGI,oTGF->oGIF", x, flat)
        jacs.append(jm.reshape(*d.shape[:nout], *jm.shape[1:]))
    else:
        grams.append((x, d))
