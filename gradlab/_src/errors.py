"""Error-message builders and argument checks shared by every gradlab module.

Every user-facing error in gradlab names the argument, the value it received and what is
allowed. The ``check_*`` helpers raise; the ``*_message`` helpers only build the text so a
caller can pick the exception type. All checks run in Python on static values, i.e. when a
function is *built* (or on the first call for shapes), never inside traced code.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "bad_choice_message",
    "check_callable",
    "check_choice",
    "check_int",
    "check_leading_axis",
    "check_real",
    "check_same_structure",
    "check_scalar_loss",
    "check_scalar_output",
    "missing_argument_message",
    "out_of_range_message",
    "structure_mismatch_message",
]


def _fmt_bound(lo: Any, hi: Any, name: str, lo_open: bool, hi_open: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{lo} {'<' if lo_open else '<='} ")
    parts.append(name)
    if hi is not None:
        parts.append(f" {'<' if hi_open else '<='} {hi}")
    return "".join(parts)


def out_of_range_message(
    name: str,
    value: Any,
    lo: Any = None,
    hi: Any = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> str:
    """``num_matvecs=0 is out of range: expected 1 <= num_matvecs <= 4096``."""
    return (
        f"{name}={value!r} is out of range: expected {_fmt_bound(lo, hi, name, lo_open, hi_open)}"
    )


def bad_choice_message(name: str, value: Any, choices: Iterable[Any]) -> str:
    """``which='biggest' is not a valid choice: expected one of 'largest', 'smallest'``."""
    listed = ", ".join(repr(c) for c in choices)
    return f"{name}={value!r} is not a valid choice: expected one of {listed}"


def missing_argument_message(name: str, where: str, hint: str = "") -> str:
    """Message for a required extra argument that was not supplied."""
    msg = f"{where} requires the argument {name!r}, but it was not given"
    return f"{msg}: {hint}" if hint else msg


def structure_mismatch_message(name: str, got: Any, expected: Any) -> str:
    """Describe a pytree mismatch, printing both structures and their leaf shapes/dtypes."""

    def describe(tree: Any) -> str:
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        shapes = [
            f"{getattr(x, 'dtype', type(x).__name__)}{list(getattr(x, 'shape', ()))}"
            for x in leaves
        ]
        return f"{treedef} with leaves [{', '.join(shapes)}]"

    return (
        f"{name} does not match the expected pytree:\n"
        f"  got:      {describe(got)}\n"
        f"  expected: {describe(expected)}"
    )


def check_int(
    name: str,
    value: Any,
    lo: int | None = None,
    hi: int | None = None,
) -> int:
    """Return ``value`` as an ``int`` if it is an integer in ``[lo, hi]``; raise otherwise.

    Raises:
        TypeError: if ``value`` is not an integer (bools are rejected too).
        ValueError: if it is outside ``[lo, hi]``.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name}={value!r} must be an integer, not a bool")
    try:
        ivalue = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name}={value!r} must be an integer, got {type(value).__name__}"
        ) from None
    if (lo is not None and ivalue < lo) or (hi is not None and ivalue > hi):
        raise ValueError(out_of_range_message(name, ivalue, lo, hi))
    return ivalue


def check_real(
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> Any:
    """Check a real hyperparameter that may also be a (traced) array.

    Python numbers are range-checked; arrays and tracers are passed through unchanged so that
    ``optax.inject_hyperparams`` and schedules keep working.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name}={value!r} must be a real number, not a bool")
    if isinstance(value, (int, float)):
        v = float(value)
        if math.isnan(v):
            raise ValueError(f"{name}={value!r} is NaN: expected a real number")
        too_low = lo is not None and (v <= lo if lo_open else v < lo)
        too_high = hi is not None and (v >= hi if hi_open else v > hi)
        if too_low or too_high:
            raise ValueError(
                out_of_range_message(name, value, lo, hi, lo_open=lo_open, hi_open=hi_open)
            )
    return value


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Raise ``ValueError`` listing the valid values if ``value`` is not one of ``choices``."""
    if value not in tuple(choices):
        raise ValueError(bad_choice_message(name, value, choices))
    return value


def check_same_structure(name: str, value: Any, like: Any, *, check_dtype: bool = False) -> None:
    """Raise if ``value`` does not have the pytree structure and leaf shapes of ``like``.

    Raises:
        TypeError: the tree structures differ.
        ValueError: a leaf's shape (or dtype, if ``check_dtype``) differs.
    """
    got_def = jax.tree_util.tree_structure(value)
    want_def = jax.tree_util.tree_structure(like)
    if got_def != want_def:
        raise TypeError(structure_mismatch_message(name, value, like))
    for a, b in zip(jax.tree_util.tree_leaves(value), jax.tree_util.tree_leaves(like), strict=True):
        if tuple(getattr(a, "shape", ())) != tuple(getattr(b, "shape", ())):
            raise ValueError(structure_mismatch_message(name, value, like))
        if check_dtype and getattr(a, "dtype", None) != getattr(b, "dtype", None):
            raise ValueError(structure_mismatch_message(name, value, like))


def check_leading_axis(name: str, tree: Any) -> int:
    """Return the common leading (example) axis size of every leaf of ``tree``.

    Raises:
        ValueError: if a leaf is a scalar or if the leaves disagree on the leading size.
    """
    leaves_with_path = jax.tree_util.tree_leaves_with_path(tree)
    if not leaves_with_path:
        raise ValueError(
            f"{name} has no array leaves: expected a pytree of arrays with a leading example axis"
        )
    sizes = {}
    for path, leaf in leaves_with_path:
        shape = getattr(leaf, "shape", ())
        if len(shape) == 0:
            raise ValueError(
                f"{name} leaf {jax.tree_util.keystr(path) or '<root>'} is a scalar: every leaf "
                "must have a leading example axis"
            )
        sizes[jax.tree_util.keystr(path) or "<root>"] = shape[0]
    distinct = set(sizes.values())
    if len(distinct) != 1:
        listed = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise ValueError(
            f"{name} leaves have different leading (example) sizes ({listed}): every leaf must "
            "share the same leading axis"
        )
    return distinct.pop()


def check_scalar_output(name: str, value: Any) -> None:
    """Raise ``ValueError`` if ``value`` (an array or ShapeDtypeStruct) is not a real scalar."""
    shape = tuple(getattr(value, "shape", ()))
    if shape != ():
        raise ValueError(
            f"{name} must return a scalar, but it returned an array of shape {shape}: "
            "reduce it (e.g. with a mean over examples)"
        )


def check_callable(name: str, value: Any) -> None:
    """Raise ``TypeError`` unless ``value`` is callable."""
    if not callable(value):
        raise TypeError(f"{name}={value!r} must be a callable, got {type(value).__name__}")


def check_scalar_loss(name: str, fn: Any, *args: Any) -> jax.ShapeDtypeStruct:
    """Abstractly evaluate ``fn(*args)`` and require a real floating scalar output."""
    out = jax.eval_shape(fn, *args)
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise ValueError(
            f"{name} must return a scalar array, but it returned a "
            f"{type(out).__name__} pytree: {jax.tree_util.tree_structure(out)}"
        )
    check_scalar_output(name, out)
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"{name} must return a real floating scalar, got dtype {out.dtype}")
    return out
