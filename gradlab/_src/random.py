"""Random +-1 (Rademacher) arrays from one random bit per entry.

``jax.random.rademacher`` draws a 32-bit word per entry (it thresholds a Bernoulli draw), so on
CPU a probe as large as the parameters costs about as much as a gradient: 3.6 ms for the wide
digits MLP's 301,066 parameters, against 4.8 ms for the gradient (2026-12-07, 2-core CPU). A
32-bit word holds 32 independent fair bits; :func:`rademacher` uses them all (0.6 ms there).
Every entry is still +1 or -1 with probability 1/2, independently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["rademacher"]

_BITS = 32


def rademacher(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    """An array of independent fair +-1 entries, 32 entries per random 32-bit word."""
    shape = tuple(int(d) for d in shape)
    size = math.prod(shape)
    words = jax.random.bits(key, (-(-size // _BITS),), jnp.uint32)
    bits = (words[:, None] >> jnp.arange(_BITS, dtype=jnp.uint32)) & 1
    bits = bits.reshape(-1)[:size].reshape(shape)
    return (1 - 2 * bits.astype(jnp.int32)).astype(dtype)
