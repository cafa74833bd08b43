"""Argument checks shared by the curvature constructors (private).

Everything here runs in Python on static information (tree structures, shapes from
``jax.eval_shape``), so a bad argument fails when the operator is built or on its first call,
never deep inside XLA.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradlab._src.errors import (
    check_callable,
    check_leading_axis,
    check_same_structure,
    check_scalar_loss,
)

__all__ = [
    "as_vector_like",
    "check_callable",
    "check_labels",
    "check_scalar_loss",
    "num_examples",
    "split_supervised_batch",
]


def num_examples(name: str, batch: Any) -> int:
    """Common leading (example) size of every leaf of ``batch`` (static int)."""
    return check_leading_axis(name, batch)


def split_supervised_batch(name: str, batch: Any, hint: str = "") -> tuple[Any, Any]:
    """Split ``batch = (inputs, targets)``; raise ``TypeError`` for anything else."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        got = f"a {type(batch).__name__}"
        if isinstance(batch, (tuple, list)):
            got += f" of length {len(batch)}"
        raise TypeError(
            f"{name} must be a pair (inputs, targets) of pytrees sharing a leading example "
            f"axis, got {got}{hint}"
        )
    return batch[0], batch[1]


def as_vector_like(v: Any, params: Any, name: str = "v") -> Any:
    """Check that ``v`` has the structure and leaf shapes of ``params``; cast to its dtypes.

    Raises:
        TypeError: the tree structures differ.
        ValueError: a leaf shape differs.
    """
    check_same_structure(name, v, params)
    return jax.tree_util.tree_map(lambda x, p: jnp.asarray(x, dtype=jnp.result_type(p)), v, params)


def check_labels(name: str, logits_shape: tuple[int, ...], targets: Any) -> None:
    """Integer labels must lie in ``[0, C)``: check them whenever they are concrete.

    Raises:
        ValueError: naming the first offending example index and its value.
    """
    if targets is None or not hasattr(targets, "dtype"):
        return
    if not jnp.issubdtype(targets.dtype, jnp.integer) or len(logits_shape) < 1:
        return
    if tuple(jnp.shape(targets)) != tuple(logits_shape[:-1]):
        return
    try:
        labels = np.asarray(targets)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return  # traced: nothing to check here
    num_classes = logits_shape[-1]
    bad = np.argwhere((labels < 0) | (labels >= num_classes))
    if bad.size:
        index = tuple(int(i) for i in bad[0])
        where = f"{index[0]}" if len(index) == 1 else f"{index[0]}, position {index[1:]}"
        raise ValueError(
            f"{name} holds the integer label {int(labels[index])} at example {where}, outside "
            f"the {num_classes} classes of the logits: expected 0 <= label < {num_classes} "
            f"({len(bad)} label(s) out of range)"
        )
