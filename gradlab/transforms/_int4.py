"""Blockwise symmetric int4 quantisation, two codes per byte (Q-GaLore's projector storage)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["dequantize_int4", "quantize_int4"]

_QMAX = 7  # symmetric int4 codes in [-7, 7], stored with an offset of 8 as nibbles


def quantize_int4(x: jax.Array, block_size: int = 256) -> tuple[jax.Array, jax.Array]:
    r"""Quantise ``x`` to symmetric int4 with one float32 scale per block, two codes per byte.

    ``x`` is flattened and cut into blocks of ``block_size`` entries (the last one zero-padded);
    block :math:`b` gets the scale :math:`s_b = \max |x_b| / 7` and the codes
    :math:`q = \operatorname{round}(x / s_b) \in [-7, 7]`. Every entry's error is at most
    :math:`s_b / 2`.

    Args:
        x: a floating array.
        block_size: a positive even number of entries per block.

    Returns:
        ``(packed, scales)``: ``packed`` of shape ``(num_blocks, block_size // 2)`` uint8 (two
        4-bit codes per byte) and ``scales`` of shape ``(num_blocks,)`` float32.

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.transforms import dequantize_int4, quantize_int4
        >>> x = jnp.array([0.7, -0.28, 0.1, 0.0])
        >>> packed, scales = quantize_int4(x, block_size=4)
        >>> packed.dtype, packed.shape
        (dtype('uint8'), (1, 2))
        >>> dequantize_int4(packed, scales, x.shape)
        Array([ 0.7, -0.3,  0.1,  0. ], dtype=float32)
    """
    flat = x.reshape(-1).astype(jnp.float32)
    blocks = -(-flat.size // block_size)
    flat = jnp.pad(flat, (0, blocks * block_size - flat.size)).reshape(blocks, block_size)
    amax = jnp.max(jnp.abs(flat), axis=1)
    scales = jnp.where(amax > 0, amax / _QMAX, 1.0)
    codes = jnp.clip(jnp.round(flat / scales[:, None]), -_QMAX, _QMAX).astype(jnp.int32) + 8
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(jnp.uint8)
    return packed, scales


def dequantize_int4(
    packed: jax.Array, scales: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32
) -> jax.Array:
    """Invert :func:`quantize_int4` (up to its rounding error): the float array of ``shape``.

    Args:
        packed: ``(num_blocks, block_size // 2)`` uint8 codes.
        scales: ``(num_blocks,)`` float32 scales.
        shape: the shape of the original array.
        dtype: the dtype of the result.

    Returns:
        The dequantised array of ``shape`` and ``dtype``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.transforms import dequantize_int4, quantize_int4
        >>> x = jnp.linspace(-1.0, 1.0, 6)
        >>> bool(jnp.max(jnp.abs(dequantize_int4(*quantize_int4(x, 2), x.shape) - x)) <= 1 / 14)
        True
    """
    codes = packed.astype(jnp.int32)
    lo, hi = (codes & 15) - 8, (codes >> 4) - 8
    blocks = jnp.stack([lo, hi], axis=-1).reshape(packed.shape[0], -1)
    flat = (blocks.astype(jnp.float32) * scales[:, None]).reshape(-1)
    return flat[: math.prod(shape)].reshape(shape).astype(dtype)
