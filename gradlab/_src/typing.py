"""Type aliases used across gradlab.

A *vector* in gradlab is any pytree of arrays; a curvature operator is a plain function
``matvec(v) -> Av`` that maps such a pytree to one with the same structure, shapes and dtypes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import jax

Array: TypeAlias = jax.Array
PyTree: TypeAlias = Any
Params: TypeAlias = PyTree
Batch: TypeAlias = PyTree
MatVec: TypeAlias = Callable[[PyTree], PyTree]
LossFn: TypeAlias = Callable[..., Array]
ModelFn: TypeAlias = Callable[[Params, Any], Any]
PRNGKey: TypeAlias = Array

__all__ = ["Array", "Batch", "LossFn", "MatVec", "ModelFn", "PRNGKey", "Params", "PyTree"]
