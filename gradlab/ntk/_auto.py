"""The ``implementation="auto"`` rule of :func:`gradlab.ntk.empirical_ntk`: least estimated flops."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradlab._src.tree import tree_size
from gradlab.ntk import _plan, _structured
from gradlab.ntk._layout import Layout

# The structured path's cost relative to its flop count. Its cotangent passes are charged
# 2 N O F (forward and input-cotangent backward, no weight gradients) against 3 N O F for
# reverse-mode Jacobians; with that split, measured times on the benchmark workloads (MLPs,
# the 8-8-10 CNN, traced and full, N=128 and 512) need no extra overhead factor: structured
# was never slower than its flop count relative to Jacobian contraction (docs/performance.md).
STRUCTURED_FACTOR = 1.0


class Choice(NamedTuple):
    """The decision of ``implementation="auto"`` and the flop estimates behind it."""

    implementation: str
    costs: dict[str, float]


def _forward_flops(layout: Layout, params: Any, x1: jax.Array) -> float:
    shape = jnp.shape(x1)
    if layout.vmapped:
        shape = shape[: layout.in_axis] + shape[layout.in_axis + 1 :]
    num_params = tree_size(params)
    # abstract arguments: lowering works the same under an outer jit (tracers inside)
    specs = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)),
        (params, jax.ShapeDtypeStruct(shape, jnp.result_type(x1))),
    )
    try:
        analysis = jax.jit(layout.unit).lower(*specs).cost_analysis()
        if isinstance(analysis, (list, tuple)):
            analysis = analysis[0]
        flops = float(analysis.get("flops", 0.0))
    except Exception:  # cost analysis is best effort on some backends
        flops = 0.0
    return max(flops, 2.0 * num_params)


def choose_implementation(layout: Layout, params: Any, x1, x2) -> tuple[Choice, Any]:
    """The documented ``auto`` rule: the smallest estimated flop count (see ``empirical_ntk``)."""
    num_params = tree_size(params)
    fwd = _forward_flops(layout, params, x1)
    sides, pairs, outputs, out_pairs = _plan.sizes(layout, x2 is not None)
    units2 = layout.n2 if layout.vmapped else 1
    jac_cost = 3.0 * sides * outputs * fwd + 2.0 * pairs * num_params * out_pairs
    nvp_cost = 3.0 * (units2 * outputs * fwd) + 3.0 * pairs * outputs * fwd
    costs = {"jacobian_contraction": jac_cost, "ntk_vector_products": nvp_cost}
    plan = _structured.discover_any(layout, params, x1, x2)
    if plan.applies:
        contraction = _plan.contraction_flops(plan, layout, params, x2 is not None)
        costs["structured"] = STRUCTURED_FACTOR * (2.0 * sides * outputs * fwd + contraction)
    best = min(costs, key=costs.get)
    return Choice(best, costs), plan
