"""Private helpers shared by the attribution functions: checks and chunked maps over examples.

Every per-example quantity in gradlab treats one example as a batch of size one of the *same*
function the user wrote for a batch (DESIGN.md): :func:`one_example` adds that leading axis of
size one back, and :func:`map_examples` applies a per-example function to every example of a
batch, vmapped within chunks and scanned (``lax.map``) across them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradlab._src.errors import check_callable, check_int, check_leading_axis
from gradlab._src.errors import check_scalar_loss as _check_scalar_output_of

__all__ = [
    "check_callable",
    "check_chunk_size",
    "check_labels",
    "check_scalar_loss",
    "even_chunk",
    "gradient_chunk_size",
    "map_examples",
    "num_examples",
    "num_models",
    "one_example",
    "split_supervised_batch",
    "static_fn",
]


#: With ``chunk_size=None``, functions that compute per-example *parameter* gradients vmap over
#: as many examples as keep one chunk of gradients within this many entries (64 MiB in float32):
#: large enough that vmap amortises everything, small enough to stay out of the memory-bound
#: regime of writing huge fresh buffers (see docs/performance.md).
AUTO_CHUNK_ENTRIES = 2**24


class _ByIdentity:
    """A callable wrapper hashed by identity, for functions that cannot be hashed themselves."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


def static_fn(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` itself if hashable (a static ``jit`` argument, cached across calls), else wrapped.

    The compiled programs are cached on the user's function object; an unhashable callable
    (e.g. an instance of a class that defines ``__eq__`` only) still works, compiled per call.
    """
    try:
        hash(fn)
    except TypeError:
        return _ByIdentity(fn)
    return fn


def check_chunk_size(chunk_size: int | None) -> int | None:
    """``None`` (one chunk) or a positive int; raise ``ValueError`` otherwise."""
    if chunk_size is None:
        return None
    return check_int("chunk_size", chunk_size, 1)


def gradient_chunk_size(chunk_size: int | None, num_params: int) -> int:
    """Validated ``chunk_size``, or (``None``) ``AUTO_CHUNK_ENTRIES // num_params`` examples."""
    chunk_size = check_chunk_size(chunk_size)
    if chunk_size is None:
        return max(1, AUTO_CHUNK_ENTRIES // max(num_params, 1))
    return chunk_size


def num_examples(name: str, batch: Any) -> int:
    """Common leading (example) size of every leaf of ``batch``; ``ValueError`` if they differ."""
    n = check_leading_axis(name, batch)
    if n < 1:
        raise ValueError(f"{name} has 0 examples: expected at least one")
    return n


def num_models(name: str, stacked_params: Any) -> int:
    """Leading (model/checkpoint) size shared by every leaf of a stacked params pytree."""
    try:
        k = check_leading_axis(name, stacked_params)
    except ValueError as err:
        raise ValueError(
            f"{err}. {name} must be a *stacked* pytree with a leading model axis; stack a list "
            "of params with jax.tree.map(lambda *p: jnp.stack(p), *params_list)"
        ) from None
    if k < 1:
        raise ValueError(f"{name} has 0 models: expected at least one")
    return k


def split_supervised_batch(name: str, batch: Any) -> tuple[Any, Any]:
    """Split ``batch = (inputs, labels)``; raise ``TypeError`` for anything else."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        got = f"a {type(batch).__name__}"
        if isinstance(batch, (tuple, list)):
            got += f" of length {len(batch)}"
        raise TypeError(
            f"{name} must be a pair (inputs, labels) sharing a leading example axis, got {got}"
        )
    return batch[0], batch[1]


def check_labels(name: str, labels: Any, num_classes: int) -> None:
    """Integer labels must lie in ``[0, num_classes)``; checked when they are concrete.

    Traced labels (inside ``jit``) cannot be inspected and pass through; out-of-range labels
    there give an all-zero one-hot row, as ``jax.nn.one_hot`` does.
    """
    dtype = jnp.result_type(labels)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{name} has dtype {dtype}: expected integer class labels")
    try:
        values = np.asarray(labels)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        bad = values[(values < 0) | (values >= num_classes)].ravel()[0]
        raise ValueError(
            f"{name} contains the label {int(bad)}, which is out of range: expected "
            f"0 <= label < {num_classes} (the number of model outputs)"
        )


def one_example(example: Any) -> Any:
    """Turn one example (leaves without the example axis) into a batch of size one."""
    return jax.tree_util.tree_map(lambda x: jnp.expand_dims(x, 0), example)


def first_example_batch(batch: Any) -> Any:
    """Abstract batch of size one (shapes only), for ``jax.eval_shape`` checks."""
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype), batch)


def check_scalar_loss(name: str, fn: Callable[..., Any], params: Any, batch: Any) -> None:
    """Abstractly evaluate ``fn(params, batch_of_one)`` and require a real scalar."""
    _check_scalar_output_of(name, fn, params, first_example_batch(batch))


def map_examples(fn: Callable[[Any], Any], batch: Any, chunk_size: int | None) -> Any:
    """``fn(example)`` for every example of ``batch``, stacked along a new leading axis.

    ``chunk_size=None`` vmaps over the whole batch (one chunk); otherwise examples are vmapped
    within chunks of at most ``chunk_size`` (see :func:`even_chunk`) and the chunks run one
    after another in a ``lax.map`` (a scan), so peak memory is that of one chunk plus the
    stacked outputs.
    """
    n = jax.tree_util.tree_leaves(batch)[0].shape[0]
    if chunk_size is None or chunk_size >= n:
        return jax.vmap(fn)(batch)
    return lax.map(fn, batch, batch_size=even_chunk(n, chunk_size))


def even_chunk(n: int, chunk_size: int) -> int:
    """The largest divisor of ``n`` in ``[chunk_size / 2, chunk_size]``, else ``chunk_size``.

    ``lax.map`` runs a remainder chunk separately and concatenates it to the scanned chunks,
    which copies the whole stacked output once more; a chunk size that divides ``n`` avoids
    that copy (it matters when the outputs are ``N x P`` gradients). At most 1,024 candidates
    are tried, so this stays cheap for any ``n``.
    """
    low = max(chunk_size // 2, chunk_size - 1024, 1)
    for size in range(chunk_size, low - 1, -1):
        if n % size == 0:
            return size
    return chunk_size
