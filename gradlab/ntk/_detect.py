"""The ``vmap_axes=None`` default: detect whether examples are independent, then dispatch.

The per-example path (``vmap_axes=0``) is exact only when row ``n`` of the Jacobian of the
batched outputs equals the Jacobian of ``apply_fn`` on example ``n`` alone. Two probes on the
real inputs decide it, both inside one jitted function of ``(params, x)``:

- **input coupling (exact)**: two JVPs with respect to ``x`` whose tangent is a random vector
  on the first (resp. last) example and zero elsewhere. When no output row ``n`` depends on
  that example through differentiable operations, the other rows' tangents are exact zeros
  (``0 * w`` is ``0`` in floating point, whatever the rounding); any differentiable coupling
  (batch statistics, attention or convolution over the batch axis, a batch mean) gives a
  nonzero tangent for all but a measure-zero set of random tangents. NaN counts as coupling.
- **parameter Jacobian (to rounding)**: one JVP with respect to the parameters, random
  direction ``u``, on the whole batch, against the same JVP of the one-example function on
  the first and last ``m`` examples. If ``J_batch != J_example`` on those rows, the two
  products differ for all but a measure-zero set of ``u``; this catches what the first probe
  cannot see (batch statistics behind ``stop_gradient``, code that depends on the batch
  size, integer inputs). The products are compared to ``sqrt(eps)`` of their largest entry
  (the two computations round differently).

Independent means both probes pass on ``x1`` (and ``x2`` when given). Outside ``jax.jit`` the
verdict is one boolean read back, and only the chosen kernel is computed.

Inside a trace the real verdict is a traced boolean. The probe then also runs at trace time on
random stand-ins of the same shapes and dtypes (``params``, ``x1``, ``x2``: float leaves only),
and that static verdict picks the one kernel that is compiled: coupled gives the whole-batch
kernel (exact for any model); independent gives the per-example kernel, returned when the
run-time probe on the real values agrees and all NaN when it does not (couplings the probes
see generically do not depend on the values, so NaN flags a model whose coupling switches on
with particular values, e.g. a gate parameter that is exactly zero; call it outside ``jit`` or
pass ``whole_batch=True`` for such a model). The compiled
program is the per-example kernel plus the probe: no ``lax.cond``, whose memory plan would also
hold the whole-batch branch's ``N O x P`` Jacobian, allocated at every call (4.2 GB for the
64-512-512-10 MLP at N=128, and 9x the per-example kernel's time on CPU). When stand-ins cannot
be made (an integer leaf such as token ids) or the probe cannot run at trace time (``apply_fn``
closes over traced values), ``jax.lax.cond`` runs the kernel the real verdict picks, with
``fallback`` as its whole-batch branch when given (``implementation="auto"`` passes NTK-vector
products: exact, a few whole-batch passes of memory).
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradlab._src.programs import kept
from gradlab.ntk._layout import make_layout

# rows of the per-example parameter-JVP comparison taken from each end of the batch
PROBE_ROWS = 4


def _inexact_leaves(tree: Any) -> list[jax.Array]:
    leaves = [jnp.asarray(g) for g in jax.tree_util.tree_leaves(tree)]
    return [g for g in leaves if jnp.issubdtype(g.dtype, jnp.inexact)]


def _close(a: jax.Array, b: jax.Array, rtol: float) -> jax.Array:
    """``max |a - b| <= rtol max |a|`` (False on NaN; exact equality for an all-zero ``a``)."""
    return jnp.max(jnp.abs(a - b)) <= rtol * jnp.max(jnp.abs(a))


def _independent(apply_fn: Callable, params: Any, x: jax.Array) -> jax.Array:
    n = x.shape[0]
    rows = np.array(sorted(set(range(min(PROBE_ROWS, n))) | set(range(max(n - PROBE_ROWS, 0), n))))
    xs = x[rows]

    def batched(p):
        return apply_fn(p, xs)

    def examples(p):
        return jax.vmap(lambda xi: apply_fn(p, xi[None])[0])(xs)

    out_s, vjp_s = jax.vjp(batched, params)
    out_e, vjp_e = jax.vjp(examples, params)
    out_full = apply_fn(params, x)[rows]
    rtol = float(np.sqrt(np.finfo(out_e.dtype).eps))
    v = jax.random.normal(jax.random.key(0), out_e.shape, out_e.dtype)
    ok = _close(out_full, out_e, rtol) & _close(out_s, out_e, rtol)
    for g_s, g_e in zip(_inexact_leaves(vjp_s(v)), _inexact_leaves(vjp_e(v)), strict=True):
        ok = ok & _close(g_s, g_e, rtol)  # leaf by leaf: each to its own scale
    m = xs.shape[0]
    if m >= 2 and jnp.issubdtype(x.dtype, jnp.inexact):
        noise = jax.random.normal(jax.random.key(1), (2, *x.shape[1:]), x.dtype)
        ends = jnp.zeros((2, *xs.shape), x.dtype).at[0, 0].set(noise[0]).at[1, -1].set(noise[1])

        def moved(t):
            return jax.jvp(lambda xx: apply_fn(params, xx), (xs,), (t,))[1]

        tx = jax.vmap(moved)(ends)
        ok = ok & jnp.all(tx[0, 1:] == 0) & jnp.all(tx[1, :-1] == 0)
    return ok


# Compiled programs per (what, apply_fn, options), at most _CACHE_SIZE of them, least recently
# used evicted: eager calls with the same apply_fn reuse one program (op by op, the default
# took 0.11 s per call on the small digits MLP, against 5 ms compiled), while a bounded table
# keeps no more than a few apply_fns (and what they close over) alive. ``jax.jit`` with a
# static apply_fn would hold thousands in its own cache.
_CACHE_SIZE = 16
_PROGRAMS: collections.OrderedDict = collections.OrderedDict()


def _cached(key: tuple, make: Callable[[], Callable]) -> Callable:
    try:
        return kept(_PROGRAMS, key, make, _CACHE_SIZE)
    except TypeError:  # an unhashable option (e.g. trace_axes as a list): compile per call
        return make()


def _probe(apply_fn: Callable) -> Callable:
    """``independent`` for one ``apply_fn``, jitted and cached."""

    def check(params: Any, x1: jax.Array, x2: jax.Array | None) -> jax.Array:
        ok = _independent(apply_fn, params, x1)
        if x2 is not None:
            ok = ok & _independent(apply_fn, params, x2)
        return ok

    return _cached(("probe", apply_fn), lambda: jax.jit(check))


def independent(apply_fn: Callable, params: Any, x1: jax.Array, x2: jax.Array | None) -> jax.Array:
    """Whether ``apply_fn`` treats the examples (axis 0) of ``x1`` and ``x2`` independently."""
    return _probe(apply_fn)(params, x1, x2)


def _eligible(apply_fn: Callable, params: Any, x1: jax.Array, x2: jax.Array | None) -> bool:
    """Axis 0 can be the example axis: inputs and float outputs with a leading axis of size N."""
    for x in (x1,) if x2 is None else (x1, x2):
        if jnp.ndim(x) == 0:
            return False
        out = jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct(jnp.shape(x), x.dtype))
        shape = getattr(out, "shape", ())
        if not shape or shape[0] != jnp.shape(x)[0]:
            return False
        if not jnp.issubdtype(out.dtype, jnp.inexact):
            return False
    return True


def dispatch(
    compute: Callable[[Any], jax.Array],
    apply_fn: Callable,
    params: Any,
    x1: jax.Array,
    x2: jax.Array | None,
    *,
    vmap_axes: Any,
    whole_batch: bool,
    batch_size: int | None,
    validate: Callable[[], Any],
    fallback: Callable[[Any], jax.Array] | None = None,
) -> jax.Array:
    """Run ``compute(vmap_axes)``, detecting independence when ``vmap_axes`` is ``None``.

    ``fallback(None)`` replaces ``compute(None)`` as the whole-batch branch of the traced
    verdict's ``lax.cond`` (not elsewhere)."""
    if whole_batch and vmap_axes is not None:
        raise ValueError(
            f"whole_batch=True and vmap_axes={vmap_axes!r} contradict each other: vmap_axes "
            "certifies independent examples, whole_batch differentiates the batch at once"
        )
    if whole_batch and batch_size is not None:
        raise ValueError(
            f"batch_size={batch_size} needs independent examples; whole_batch=True "
            "differentiates the whole batch at once (drop one of them)"
        )
    if vmap_axes is not None or whole_batch:
        return compute(vmap_axes)
    if batch_size is not None:
        raise ValueError(
            f"batch_size={batch_size} needs vmap_axes: tiling over examples is only valid "
            "when examples are independent (pass vmap_axes=0 to certify that)"
        )
    x1 = jnp.asarray(x1)
    x2 = None if x2 is None else jnp.asarray(x2)
    validate()  # argument errors before any probe is traced
    if not _eligible(apply_fn, params, x1, x2):
        return compute(None)
    verdict = independent(apply_fn, params, x1, x2)
    try:
        flag = bool(verdict)
    except jax.errors.ConcretizationTypeError:
        return _traced(compute, fallback, verdict, apply_fn, params, x1, x2)
    return compute(0 if flag else None)


def _traced(compute, fallback, verdict, apply_fn, params, x1, x2) -> jax.Array:
    """The kernel for a traced verdict (module docstring)."""
    static = stand_in_verdict(apply_fn, params, x1, x2)
    if static is None:
        whole = compute if fallback is None else fallback
        return jax.lax.cond(verdict, lambda: compute(0), lambda: whole(None))
    if not static:
        return compute(None)
    kernel = compute(0)
    return jnp.where(verdict, kernel, jnp.asarray(jnp.nan, kernel.dtype))


def stand_in_verdict(apply_fn: Callable, params: Any, x1: Any, x2: Any) -> bool | None:
    """:func:`independent` on random stand-ins of the arguments, evaluated at trace time.

    ``None`` when a leaf is not a float array or the probe cannot run eagerly."""
    leaves, treedef = jax.tree_util.tree_flatten((params, x1, x2))
    if not all(jnp.issubdtype(jnp.result_type(leaf), jnp.floating) for leaf in leaves):
        return None
    rng = np.random.default_rng(0)

    def stand_in(leaf: Any) -> np.ndarray:
        shape = jnp.shape(leaf)
        fan_in = int(np.prod(shape[:-1])) if len(shape) >= 2 else 4  # a Lecun-like scale
        value = rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))
        return value.astype(jnp.result_type(leaf))

    p, a, b = jax.tree_util.tree_unflatten(treedef, [stand_in(leaf) for leaf in leaves])
    try:
        # Compiled ahead of time and run on the concrete stand-ins: one program, where
        # jax.ensure_compile_time_eval would dispatch the probe primitive by primitive (about
        # 50 small compiles, 5 s of a 6.8 s first call on the small digits MLP).
        return bool(_probe(apply_fn).lower(p, a, b).compile()(p, a, b))
    except Exception:  # e.g. apply_fn closes over traced values: lax.cond decides instead
        return None


def _kernel_key(kernel: Callable) -> Any:
    if isinstance(kernel, functools.partial):  # a fresh partial per call: key on its contents
        return (kernel.func, kernel.args, tuple(sorted(kernel.keywords.items())))
    return kernel


def run_default(
    kernel: Callable[..., jax.Array],
    apply_fn: Callable,
    params: Any,
    x1: jax.Array,
    x2: jax.Array | None,
    *,
    trace_axes: Any,
    diagonal_axes: Any,
    vmap_axes: Any,
    whole_batch: bool,
    batch_size: int | None,
    fallback: Callable[..., jax.Array] | None = None,
) -> jax.Array:
    """``kernel(apply_fn, params, x1, x2, trace_axes, diagonal_axes, vmap_axes, batch_size)``
    with the ``vmap_axes=None`` default resolved by :func:`dispatch`; ``fallback`` (same
    signature) is the whole-batch branch under a traced verdict."""

    def bind(fn):
        def compute(axes):
            def program(p, a, b):
                return fn(apply_fn, p, a, b, trace_axes, diagonal_axes, axes, batch_size)

            # Called eagerly, the kernel runs as one compiled program (cached, see _cached);
            # under an outer jit or shard_map it is inlined into the caller's program.
            key = ("kernel", _kernel_key(fn), apply_fn, trace_axes, diagonal_axes, axes, batch_size)
            return _cached(key, lambda: jax.jit(program))(params, x1, x2)

        return compute

    def validate():
        make_layout(
            apply_fn,
            params,
            x1,
            x2,
            trace_axes=trace_axes,
            diagonal_axes=diagonal_axes,
            vmap_axes=None,
            batch_size=None,
        )

    return dispatch(
        bind(kernel),
        apply_fn,
        params,
        x1,
        x2,
        vmap_axes=vmap_axes,
        whole_batch=whole_batch,
        batch_size=batch_size,
        validate=validate,
        fallback=None if fallback is None else bind(fallback),
    )
