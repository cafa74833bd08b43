"""Row type and extra-argument helpers of the contract registry (see ``_registry.py``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class Ctx(NamedTuple):
    """What ``Row.extra_args_fn`` sees at every step (all traced arrays except ``obj_fn``)."""

    params: Any
    grads: Any
    obj_fn: Callable[[Any], jax.Array]
    value: jax.Array
    step: jax.Array
    key: jax.Array


@dataclasses.dataclass(frozen=True)
class Row:
    """One contract-suite entry; see the module docstring for the meaning of each field."""

    name: str
    factory: Callable[..., optax.GradientTransformation]
    learning_rate: float
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    static_hparams: tuple[str, ...] = ()
    extra_args_fn: Callable[[Ctx], dict] | None = None
    required_extra_args: tuple[str, ...] = ()
    quadratic_tol: float = 1e-3
    rosenbrock_tol: float = 0.1
    quadratic_steps: int = 200
    rosenbrock_steps: int = 500
    rosenbrock_learning_rate: float | None = None
    bf16_ok: bool = True

    def make(self, learning_rate: Any = None) -> optax.GradientTransformationExtraArgs:
        """Build the transform (with ``learning_rate`` overriding the row's)."""
        lr = self.learning_rate if learning_rate is None else learning_rate
        return optax.with_extra_args_support(self.factory(lr, **self.kwargs))

    def extra_args(self, ctx: Ctx) -> dict:
        return {} if self.extra_args_fn is None else dict(self.extra_args_fn(ctx))


def _spread(num: int, spread: float, dtype) -> jax.Array:
    return jnp.linspace(-spread, spread, num, dtype=dtype)


def per_example_grads(ctx: Ctx, num: int = 4, spread: float = 0.5) -> Any:
    """Per-example gradients with a leading axis ``num`` whose mean is exactly ``ctx.grads``.

    Example ``i`` is ``g + s_i * reverse(g)`` (``reverse`` flips each flattened leaf; ``s_i``
    evenly spaced in ``[-spread, spread]``), so the examples disagree in direction but average
    to the full gradient.
    """

    def leaf(g):
        s = _spread(num, spread, g.dtype).reshape((num,) + (1,) * g.ndim)
        flipped = jnp.flip(g.reshape(-1)).reshape(g.shape)
        return g[None] + s * flipped[None]

    return jax.tree.map(leaf, ctx.grads)


def per_task_grads(ctx: Ctx, num: int = 2, spread: float = 1.0) -> Any:
    """Per-task gradients with a leading task axis ``num`` whose mean is ``ctx.grads``.

    Same construction as :func:`per_example_grads`; with ``spread >= 1`` tasks conflict
    (negative inner products) on most problems.
    """
    return per_example_grads(ctx, num, spread)
