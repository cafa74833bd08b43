"""Structured NTK for plain JAX functions: the dense contractions found in the jaxpr.

A parameter leaf ``W`` whose every use is a ``dot_general`` with some other operand ``a``
(an activation, possibly after ``transpose``/``reshape`` of ``W``, which only relabel its
entries) enters the outputs only through ``y = dot_general(a, W)``. Writing the contraction
as ``y[t, g, f] = sum_i a[t, g, i] W'[g, i, f]`` (``t`` the free axes of ``a``, ``g`` the
batch axes, ``i`` the contracted axes, ``f`` the free axes of ``W``), the Jacobian of output
``o`` is ``sum_t a[t, g, i] delta_o[t, g, f]`` with ``delta_o = d f_o / d y``: a dense layer
at positions ``t``, which ``_plan`` and ``_structured`` contract in factored form (gram or
jac mode) without differentiating through the layer. Several uses of ``W`` with the same
axis roles add up (their positions are concatenated), exactly, whatever ``a`` depends on.

A bias leaf ``b`` whose only use is ``add(y, broadcast_in_dim(b))`` onto the output of such a
single-use, batch-free contraction, with ``b``'s axes landing one-to-one on the free axes of
``W`` in ``y``, is folded into that layer as a constant-one input column (``y``'s only use
must be that ``add``, so ``d f / d y`` is also the bias' cotangent).

Every other leaf (a use in anything else: elementwise products, convolutions, ``scan``,
custom derivatives, a dtype conversion, being returned) goes to the Jacobian path, exactly.
The inputs ``a`` are captured and zero perturbations added at the ``y``'s by evaluating the
jaxpr of ``apply_fn`` primitive by primitive (``jax.make_jaxpr`` and the public
``jax.extend.core`` objects; nested ``jit`` calls are inlined, everything else is bound as
traced), then differentiating that evaluation with ``jax.jacrev``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from gradlab.ntk._layout import Layout
from gradlab.ntk._plan import Call, add_group, mode_costs

_VIEWS = ("transpose", "reshape")  # bijections of a leaf's entries


class _Const(NamedTuple):
    value: Any


class Op(NamedTuple):
    prim: Any
    params: dict
    ins: tuple  # int references or _Const
    outs: tuple[int, ...]


class Graph(NamedTuple):
    """A flattened jaxpr: ops in order, references of the params leaves, input and outputs."""

    ops: tuple[Op, ...]
    leaves: tuple[int, ...]
    x: int
    outs: tuple
    avals: dict  # reference -> (shape, dtype)


class Use(NamedTuple):
    """One ``dot_general`` use of a covered kernel, in canonical ``(T, G, I)``/``(T, G, F)``."""

    op: int
    act: int  # operand position of the activation
    a_perm: tuple[int, ...]
    x_shape: tuple[int, int, int]
    y_perm: tuple[int, ...]
    d_shape: tuple[int, int, int]
    sig: tuple  # the kernel's axis roles: uses with equal signatures add up


class JaxprPlan(NamedTuple):
    """What the jaxpr path covers; ``calls``/``groups``/``modes`` as in ``_plan.Plan``."""

    calls: tuple[Call, ...]
    groups: tuple[tuple[int, ...], ...]
    modes: tuple[str, ...]
    covered_leaves: frozenset[int]
    num_leaves: int
    biases: tuple[bool, ...]  # per group: a bias column is appended
    graphs: tuple  # ((input shape, Graph, uses per group), ...)

    @property
    def applies(self) -> bool:
        return bool(self.groups)


def _flatten(closed: Any, in_refs: list, ops: list, avals: dict, counter) -> list:
    env: dict = {}
    for v, c in zip(closed.jaxpr.constvars, closed.consts, strict=True):
        env[v] = _Const(c)
    for v, r in zip(closed.jaxpr.invars, in_refs, strict=True):
        env[v] = r

    def read(v):
        return _Const(v.val) if isinstance(v, jcore.Literal) else env[v]

    for eqn in closed.jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        if eqn.primitive is jcore.primitives.jit_p:  # a plain function call: inline it
            outs = _flatten(eqn.params["jaxpr"], ins, ops, avals, counter)
        else:
            outs = []
            for v in eqn.outvars:
                r = next(counter)
                avals[r] = (tuple(v.aval.shape), v.aval.dtype)
                outs.append(r)
            ops.append(Op(eqn.primitive, dict(eqn.params), tuple(ins), tuple(outs)))
        for v, r in zip(eqn.outvars, outs, strict=True):
            env[v] = r
    return [read(v) for v in closed.jaxpr.outvars]


def trace_graph(unit, treedef, leaves: list, example: jax.ShapeDtypeStruct) -> Graph:
    specs = [jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) for a in leaves]
    closed = jax.make_jaxpr(lambda ls, x: unit(jax.tree_util.tree_unflatten(treedef, ls), x))(
        specs, example
    )
    invars = closed.jaxpr.invars
    if len(invars) != len(leaves) + 1:
        raise RuntimeError("the traced function has an unexpected number of inputs")
    counter = itertools.count()
    refs = [next(counter) for _ in invars]
    avals = {r: (tuple(v.aval.shape), v.aval.dtype) for r, v in zip(refs, invars, strict=True)}
    ops: list = []
    outs = _flatten(closed, refs, ops, avals, counter)
    return Graph(tuple(ops), tuple(refs[:-1]), refs[-1], tuple(outs), avals)


def _shape(graph: Graph, ref) -> tuple[int, ...]:
    return tuple(np.shape(ref.value)) if isinstance(ref, _Const) else graph.avals[ref][0]


def _factor(graph: Graph, i: int, pos: int) -> Use:
    op = graph.ops[i]
    (lc, rc), (lb, rb) = op.params["dimension_numbers"]
    wc, wb, ac, ab = (rc, rb, lc, lb) if pos == 1 else (lc, lb, rc, rb)
    sw, sa = _shape(graph, op.ins[pos]), _shape(graph, op.ins[1 - pos])
    wf = [d for d in range(len(sw)) if d not in wc and d not in wb]
    af = [d for d in range(len(sa)) if d not in ac and d not in ab]
    nb = len(wb)
    first, second = (af, wf) if pos == 1 else (wf, af)
    y_first = tuple(range(nb, nb + len(first)))
    y_second = tuple(range(nb + len(first), nb + len(first) + len(second)))
    y_af, y_wf = (y_first, y_second) if pos == 1 else (y_second, y_first)
    t = math.prod(sa[d] for d in af)
    g = math.prod(sa[d] for d in ab)
    size_i = math.prod(sa[d] for d in ac)
    f = math.prod(sw[d] for d in wf)
    return Use(
        op=i,
        act=1 - pos,
        a_perm=tuple(af) + tuple(ab) + tuple(ac),
        x_shape=(t, g, size_i),
        y_perm=y_af + tuple(range(nb)) + y_wf,
        d_shape=(t, g, f),
        sig=(tuple(wb), tuple(wc), sw, y_wf),
    )


def _analyse(graph: Graph) -> dict[int, tuple[tuple[Use, ...], int | None]]:
    """Leaf index -> (its dot_general uses, the leaf index of a folded bias or None)."""
    uses: dict = {}
    producer: dict = {}
    for i, op in enumerate(graph.ops):
        for p, r in enumerate(op.ins):
            if isinstance(r, int):
                uses.setdefault(r, []).append((i, p))
        for r in op.outs:
            producer[r] = i
    returned = {r for r in graph.outs if isinstance(r, int)}

    def inexact(ref):
        return jnp.issubdtype(graph.avals[ref][1], jnp.inexact)

    kernels: dict[int, tuple[Use, ...]] = {}
    for li, ref in enumerate(graph.leaves):
        cur = ref
        while cur not in returned and len(uses.get(cur, ())) == 1:
            op = graph.ops[uses[cur][0][0]]
            if op.prim.name not in _VIEWS or len(op.ins) != 1:
                break
            cur = op.outs[0]
        found = uses.get(cur, [])
        if not inexact(ref) or cur in returned or not found:
            continue
        ok = all(
            graph.ops[i].prim is jcore.primitives.dot_general_p and graph.ops[i].ins[1 - p] != cur
            for i, p in found
        )
        if not ok:
            continue
        factors = tuple(_factor(graph, i, p) for i, p in found)
        if len({u.sig for u in factors}) == 1:
            kernels[li] = factors

    single = {us[0].op: li for li, us in kernels.items() if len(us) == 1 and us[0].x_shape[1] == 1}
    out: dict = {li: (us, None) for li, us in kernels.items()}
    for li, ref in enumerate(graph.leaves):
        if li in kernels or not inexact(ref):
            continue
        target = _bias_target(graph, uses, returned, ref)
        if target is None:
            continue
        add, other, dims, shape = target
        owner = single.get(producer.get(other)) if isinstance(other, int) else None
        if owner is None or out[owner][1] is not None:
            continue
        use = kernels[owner][0]
        y_shape = graph.avals[other][0]
        if (
            other in returned
            or len(uses[other]) != 1
            or graph.avals[graph.ops[add].outs[0]][0] != y_shape
            or sorted(dims) != sorted(use.sig[3])
            or any(shape[d] != y_shape[d] for d in dims)
        ):
            continue
        out[owner] = (kernels[owner], li)
    return out


def _bias_target(graph: Graph, uses: dict, returned: set, ref: int):
    """``(add op, other operand, axes of b in the sum, shape)`` if ``b`` is only broadcast+added."""
    cur, shape = ref, graph.avals[ref][0]
    dims = list(range(len(shape)))
    while cur not in returned and len(uses.get(cur, ())) == 1:
        i, p = uses[cur][0]
        op = graph.ops[i]
        if op.prim.name == "broadcast_in_dim" and len(op.ins) == 1:
            bd, new = op.params["broadcast_dimensions"], tuple(op.params["shape"])
            if any(shape[k] != new[bd[k]] for k in range(len(shape))):
                return None
            dims = [bd[d] for d in dims]
            cur, shape = op.outs[0], new
            continue
        if op.prim.name == "add" and len(op.ins) == 2 and op.ins[1 - p] != cur:
            return i, op.ins[1 - p], dims, shape
        return None
    return None


def discover(layout: Layout, params: Any, x1: jax.Array, x2: jax.Array | None) -> JaxprPlan:
    """Trace ``layout.unit`` on one example (or each distinct batch) and plan the covered leaves."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    xs = [x1] if x2 is None or layout.vmapped else [x1, x2]
    graphs, found = {}, []
    for x in xs:
        shape = tuple(jnp.shape(x))
        if layout.vmapped:
            shape = shape[: layout.in_axis] + shape[layout.in_axis + 1 :]
        if shape not in graphs:
            spec = jax.ShapeDtypeStruct(shape, jnp.result_type(x))
            graphs[shape] = trace_graph(layout.unit, treedef, leaves, spec)
            found.append(_analyse(graphs[shape]))
    first = found[0]
    keep = sorted(
        li
        for li in first
        if all(
            li in f
            and f[li][1] == first[li][1]
            and [u.sig for u in f[li][0]] == [u.sig for u in first[li][0]]
            for f in found
        )
    )
    calls, groups, modes = [], [], []
    for li in keep:
        us, bias = first[li]
        group = []
        for u in us:
            t, g, i = u.x_shape
            group.append(len(calls))
            calls.append(Call("dense", li, bias, (t, g * i), (t, g * u.d_shape[2]), i, g))
        groups.append(tuple(group))
        costs = mode_costs([calls[j] for j in group], layout, x2 is not None)
        modes.append(min(costs, key=costs.get))
    covered = set(keep) | {first[li][1] for li in keep if first[li][1] is not None}
    per_shape = tuple(
        (shape, graph, tuple(f[li][0] for li in keep))
        for (shape, graph), f in zip(graphs.items(), found, strict=True)
    )
    return JaxprPlan(
        calls=tuple(calls),
        groups=tuple(groups),
        modes=tuple(modes),
        covered_leaves=frozenset(covered),
        num_leaves=len(leaves),
        biases=tuple(first[li][1] is not None for li in keep),
        graphs=per_shape,
    )


def _evaluate(graph: Graph, leaves: list, x, eps_at: dict, capture: dict):
    env = dict(zip(graph.leaves, leaves, strict=True))
    env[graph.x] = x

    def read(r):
        return r.value if isinstance(r, _Const) else env[r]

    captured = {}
    for i, op in enumerate(graph.ops):
        ins = [read(r) for r in op.ins]
        out = op.prim.bind(*ins, **op.prim.get_bind_params(op.params))
        out = list(out) if op.prim.multiple_results else [out]
        if i in eps_at:
            out[0] = out[0] + eps_at[i]
        for pos in capture.get(i, ()):
            captured[(i, pos)] = jnp.asarray(ins[pos])
        for r, v in zip(op.outs, out, strict=True):
            env[r] = v
    return [read(r) for r in graph.outs], captured


def jaxpr_features(layout: Layout, params: Any, plan: JaxprPlan):
    """``features(x_tile)`` as ``_structured.structured_features`` returns them."""
    leaves = jax.tree_util.tree_leaves(params)
    rest_idx = [i for i in range(len(leaves)) if i not in plan.covered_leaves]
    rest0 = [leaves[i] for i in rest_idx]
    nout = len(layout.unit_shape)
    by_shape = {shape: (graph, uses) for shape, graph, uses in plan.graphs}

    def one(xi):
        graph, uses = by_shape[tuple(xi.shape)]
        taps = sorted({u.op for group in uses for u in group})
        capture: dict = {}
        for group in uses:
            for u in group:
                capture.setdefault(u.op, []).append(u.act)

        def unit(rest, eps, xv):
            full = list(leaves)
            for i, leaf in zip(rest_idx, rest, strict=True):
                full[i] = leaf
            eps_at = dict(zip(taps, eps, strict=True))
            outs, captured = _evaluate(graph, full, xv, eps_at, capture)
            return outs[0], captured

        zeros = [jnp.zeros(*graph.avals[graph.ops[i].outs[0]]) for i in taps]
        (j_rest, j_eps), caps = jax.jacrev(unit, argnums=(0, 1), has_aux=True)(rest0, zeros, xi)
        grams, jacs = [], []
        for group, mode, bias in zip(uses, plan.modes, plan.biases, strict=True):
            xparts, dparts = [], []
            for u in group:
                a = jnp.transpose(caps[(u.op, u.act)], u.a_perm).reshape(u.x_shape)
                if bias:
                    a = jnp.concatenate([a, jnp.ones((*u.x_shape[:2], 1), a.dtype)], axis=2)
                d = j_eps[taps.index(u.op)]
                perm = tuple(range(nout)) + tuple(nout + q for q in u.y_perm)
                dparts.append(jnp.transpose(d, perm).reshape(*d.shape[:nout], *u.d_shape))
                xparts.append(a)
            add_group(xparts, dparts, nout, mode, grams, jacs)
        return j_rest, grams, jacs

    if layout.vmapped:
        return jax.vmap(one)
    return one
