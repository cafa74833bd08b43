"""Private helpers shared by the transform modules (stable: both transform authors import them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradlab._src.errors import missing_argument_message

__all__ = ["at_least_float32", "require_extra_arg", "resolve_schedule", "zeros_scalar"]


def require_extra_arg(value: Any, name: str, where: str, hint: str = "") -> Any:
    """Return ``value`` or raise ``ValueError`` naming the missing extra argument ``name``.

    ``where`` is the public name of the transform (``"am_sgd.update"``), ``hint`` says how to
    pass it (``"call update(grads, state, params, value=loss)"``).
    """
    if value is None:
        raise ValueError(missing_argument_message(name, where, hint))
    return value


def resolve_schedule(value: Any, count: jax.Array) -> Any:
    """``value(count)`` if ``value`` is a schedule (callable), otherwise ``value`` itself."""
    return value(count) if callable(value) else value


def zeros_scalar(dtype: Any = jnp.float32) -> jax.Array:
    """A strongly typed scalar zero (never weak-typed, so jitted state types do not drift)."""
    return jnp.zeros([], dtype)


ScheduleOrFloat = float | jax.Array | Callable[[jax.Array], jax.Array]


def at_least_float32(params: Any) -> Any:
    """``params`` with every leaf cast up to float32 (kept wider, e.g. float64 under x64)."""
    return jax.tree.map(
        lambda p: jnp.asarray(p).astype(jnp.promote_types(jnp.result_type(p), jnp.float32)), params
    )
