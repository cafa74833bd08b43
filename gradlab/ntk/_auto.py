"""The ``implementation="auto"`` rule of :func:`gradlab.ntk.empirical_ntk`: least estimated flops."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradlab.ntk import _structured
from gradlab.ntk._layout import Layout


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
