"""One compiled program per (operator, algorithm, options) for algorithms called eagerly.

An algorithm such as ``gl.spectral.eigsh(hvp, params, ...)`` called outside ``jit`` traces its
``lax`` loops (and the operator inside them) and compiles them again at every call: about a
second or more on a small MLP's Hessian, even when the same operator is asked again with
another key. :func:`compile_once` keeps the compiled program instead, on the operator itself,
so a repeated eager call costs one dispatch.

This is only sound for an operator that is a *pure* function of its vector: a program traced
once bakes in whatever the operator reads when traced. A user's lambda may read a global that
changes between calls, so only operators that gradlab builds itself (they close over fixed
arrays) are marked with :func:`pure_operator` and get a kept program; any other callable runs
the algorithm as before.

The operator's arrays (parameters, batch) are not compiled into the program as constants
(closing ``jax.jit`` over them would embed them in the HLO, which XLA may then try to
constant-fold): the algorithm is traced once with ``jax.make_jaxpr``, and the jaxpr's constants
are passed to the jitted program as arguments (evaluated with ``jax.extend.core.jaxpr_as_fun``,
the public extension API). The table on each operator holds at most :data:`PER_OPERATOR`
entries (least recently used dropped first) and dies with the operator.
"""

from __future__ import annotations

import collections
import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import numpy as np
from jax.extend.core import ClosedJaxpr, jaxpr_as_fun

__all__ = ["PER_OPERATOR", "compile_once", "kept", "pure_operator"]

F = TypeVar("F", bound=Callable[..., Any])

#: Compiled programs kept per operator (algorithm x options x argument shapes).
PER_OPERATOR = 8

_PURE = "_gradlab_pure"
_TABLE = "_gradlab_algorithm_programs"


def kept(table: collections.OrderedDict, key: Any, make: Callable[[], Any], size: int) -> Any:
    """``table[key]``, made by ``make()`` on a miss, with at most ``size`` entries (least
    recently used dropped). A ``None`` from ``make`` is returned but not kept; an unhashable
    ``key`` raises ``TypeError`` before anything is made."""
    value = table.pop(key, None)
    if value is None:
        value = make()
        if value is None:
            return None
    table[key] = value
    while len(table) > size:
        table.popitem(last=False)
    return value


def pure_operator(matvec: F) -> F:
    """Mark ``matvec`` (built by gradlab) as a pure function of its vector; return it."""
    matvec.__dict__[_PURE] = True
    return matvec


def _is_pure(fn: Any) -> bool:
    return callable(fn) and getattr(fn, "__dict__", {}).get(_PURE, False) is True


def _is_concrete_array(leaf: Any) -> bool:
    if isinstance(leaf, np.ndarray):
        return True
    try:
        leaf.sharding  # noqa: B018  (concrete jax arrays have one; tracers raise)
    except AttributeError:
        return False
    return isinstance(leaf, jax.Array)


def _split(kwargs: dict) -> tuple[dict, dict] | None:
    """``(static, dynamic)`` options, or None if an option rules a kept program out."""
    static, dynamic = {}, {}
    for name, value in kwargs.items():
        leaves = jax.tree_util.tree_leaves(value)
        if _is_concrete_array(value) and value.ndim == 0 and _is_count(value.dtype):
            static[name] = value.item()  # k=jnp.asarray(2): a count the algorithm checks
        elif leaves and all(_is_concrete_array(leaf) for leaf in leaves):
            dynamic[name] = value
        elif any(isinstance(leaf, jax.Array | np.ndarray) for leaf in leaves):
            return None  # traced, or arrays mixed with other values
        elif callable(value) and not _is_pure(value):
            return None  # e.g. a user's preconditioner: may read state that changes
        else:
            static[name] = value
    return static, dynamic


def _is_count(dtype: Any) -> bool:
    return jax.numpy.issubdtype(dtype, jax.numpy.integer) or jax.numpy.issubdtype(
        dtype, jax.numpy.bool_
    )


def _signature(tree: Any) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple(jax.typeof(leaf) for leaf in leaves)


def compile_once(fn: F) -> F:
    """Decorate ``fn(matvec, vector, **options)`` to keep its compiled program on ``matvec``.

    Applies only to eager calls on operators marked by :func:`pure_operator`, with a concrete
    ``vector``; options that are arrays (a PRNG key) are the program's arguments, the others
    (ints, floats, strings) are part of the table's key. Anything else calls ``fn`` directly.
    """

    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(matvec: Any, vector: Any, **kwargs: Any) -> Any:
        split = None
        if _is_pure(matvec):
            try:  # defaults filled in: eigsh(k=2) and eigsh(k=2, which="largest") share a key
                bound = signature.bind(matvec, vector, **kwargs)
            except TypeError:
                return fn(matvec, vector, **kwargs)  # let fn report the bad call
            bound.apply_defaults()
            kwargs = dict(list(bound.arguments.items())[2:])
            split = _split(kwargs)
        leaves = jax.tree_util.tree_leaves(vector)
        if split is None or not all(_is_concrete_array(leaf) for leaf in leaves):
            return fn(matvec, vector, **kwargs)
        static, dynamic = split
        key = (
            fn.__qualname__,
            tuple(sorted(static.items())),
            _signature((vector, dynamic)),
            bool(jax.config.jax_enable_x64),
        )

        def make() -> tuple | None:
            closed, out_shape = jax.make_jaxpr(
                lambda v, d: fn(matvec, v, **static, **d), return_shape=True
            )(vector, dynamic)
            consts = list(closed.consts)
            if not all(_is_concrete_array(c) for c in jax.tree_util.tree_leaves(consts)):
                return None  # the operator closes over tracers
            jaxpr = closed.jaxpr

            def run(consts: list, flat: list) -> list:
                return jaxpr_as_fun(ClosedJaxpr(jaxpr, consts))(*flat)

            return jax.jit(run), consts, jax.tree_util.tree_structure(out_shape)

        try:
            hash(key)
        except TypeError:  # an unhashable option value
            return fn(matvec, vector, **kwargs)
        table = matvec.__dict__.setdefault(_TABLE, collections.OrderedDict())
        entry = kept(table, key, make, PER_OPERATOR)
        if entry is None:
            return fn(matvec, vector, **kwargs)
        program, consts, out_tree = entry
        flat = jax.tree_util.tree_leaves((vector, dynamic))
        return jax.tree_util.tree_unflatten(out_tree, program(consts, flat))

    return wrapper  # type: ignore[return-value]
