r"""Fastfood random projection ``P_raw z`` in ``O(D log d)`` (Le, Sarlos & Smola, 2013).

The ``D x d`` matrix is a stack of ``ceil(D / L)`` independent ``L x L`` blocks
(``L`` the smallest power of two ``>= d``, ``z`` zero-padded to ``L``), truncated to ``D`` rows:

.. math:: M_b = \tfrac{1}{\sqrt L}\, H\, G_b\, \Pi_b\, H\, B_b ,

with ``H`` the (unnormalized, ``+-1``) Walsh-Hadamard matrix, ``B_b`` a diagonal of random signs,
``Pi_b`` a random permutation and ``G_b`` a diagonal of standard normals. Li et al. (2018) use it
for subspace training of large networks: nothing of size ``D x d`` is ever formed. The kernel
scaling ``S`` of the original Fastfood is left out: the subspace transform normalizes the
columns instead. A full block's columns all have squared norm ``||G_b||^2`` (the entries of
``H`` are ``+-1``), so the exact column norms need only the truncated last block.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "FastfoodFactors",
    "fastfood_column_norms",
    "fastfood_extend",
    "fastfood_factors",
    "fastfood_restrict",
]


class FastfoodFactors(NamedTuple):
    """The random factors of a Fastfood projection, one row per block.

    Attributes:
        signs: ``(num_blocks, L)`` the ``+-1`` diagonals ``B_b``.
        perm: ``(num_blocks, L)`` int32 permutations ``Pi_b`` (``(Pi v)_i = v[perm[i]]``).
        gauss: ``(num_blocks, L)`` the Gaussian diagonals ``G_b``.
        inverse: ``(num_blocks, L)`` int32 inverse permutations (for the transpose).
    """

    signs: jax.Array
    perm: jax.Array
    gauss: jax.Array
    inverse: jax.Array


def block_size(dim: int) -> int:
    """The smallest power of two ``>= dim``."""
    return 1 << max(0, (dim - 1).bit_length())


def fastfood_factors(key: jax.Array, num_params: int, dim: int, dtype: Any) -> FastfoodFactors:
    """Draw the factors of the ``(num_params, dim)`` Fastfood projection from ``key``."""
    size = block_size(dim)
    num_blocks = math.ceil(num_params / size)
    k_sign, k_perm, k_gauss = jax.random.split(key, 3)
    signs = jax.random.rademacher(k_sign, (num_blocks, size), dtype)
    perm = jax.vmap(lambda k: jax.random.permutation(k, size))(jax.random.split(k_perm, num_blocks))
    gauss = jax.random.normal(k_gauss, (num_blocks, size), dtype)
    inverse = jnp.argsort(perm, axis=-1)
    return FastfoodFactors(signs, perm.astype(jnp.int32), gauss, inverse.astype(jnp.int32))


#: Largest Hadamard factor (``2**_MAX_FACTOR_BITS`` square) applied as one matmul.
_MAX_FACTOR_BITS = 6


def _hadamard(size: int, dtype: Any) -> jax.Array:
    """The ``(size, size)`` Sylvester-Hadamard matrix: ``H[i, j] = (-1)^popcount(i & j)``."""
    i = np.arange(size)
    bits = np.bitwise_and(i[:, None], i[None, :])
    parity = np.zeros_like(bits)
    while bits.any():
        parity ^= bits & 1
        bits >>= 1
    return jnp.asarray(1 - 2 * parity, dtype)


def _fwht(x: jax.Array) -> jax.Array:
    r"""Unnormalized Walsh-Hadamard transform along the last axis (length a power of two).

    :math:`H_{2^k} = H_{2^{k_1}} \otimes \dots \otimes H_{2^{k_m}}`: the axis is viewed as
    ``m`` axes of sizes ``2^{k_i} <= 64``, and each small Hadamard matrix multiplies its own
    axis in place (``L \sum_i 2^{k_i}`` multiply-adds, ``64 L`` for ``L = 1024``). On CPU this
    is several times faster than the ``log2 L`` butterfly stages (measured in
    docs/performance.md) and compiles to ``m`` dots instead of ``log2 L`` reshapes and
    concatenations. Exact up to float rounding (the entries are ``+-1``);
    ``Precision.HIGHEST`` keeps GPUs from rounding float32 inputs to TF32.
    """
    size = x.shape[-1]
    bits = size.bit_length() - 1
    if size == 1:
        return x
    num = -(-bits // _MAX_FACTOR_BITS)
    parts = [bits // num + (i < bits % num) for i in range(num)]
    lead = x.shape[:-1]
    y = x
    prefix = 1
    for p in parts:
        # contract factor axis i in place: (n, prefix, 2**p, suffix) with H_{2**p}
        y = y.reshape(-1, prefix, 1 << p, size // (prefix << p))
        h = _hadamard(1 << p, x.dtype)
        y = jnp.einsum("bc,npcq->npbq", h, y, precision=jax.lax.Precision.HIGHEST)
        prefix <<= p
    return y.reshape(*lead, size)


def _blocks(factors: FastfoodFactors, z: jax.Array) -> jax.Array:
    """``M_b z`` for every block: ``(num_blocks, L)``."""
    size = factors.signs.shape[-1]
    v = jnp.pad(z, (0, size - z.shape[0]))
    v = _fwht(factors.signs * v)
    v = jnp.take_along_axis(v, factors.perm, axis=-1)
    return _fwht(factors.gauss * v) / math.sqrt(size)


def fastfood_extend(factors: FastfoodFactors, z: jax.Array, num_params: int) -> jax.Array:
    """``P_raw z``: the ``(d,)`` vector ``z`` mapped to a flat ``(num_params,)`` vector."""
    return _blocks(factors, z).reshape(-1)[:num_params]


def fastfood_restrict(factors: FastfoodFactors, g: jax.Array, dim: int) -> jax.Array:
    """``P_raw^T g``: the transpose of :func:`fastfood_extend` (``H`` symmetric, gathers only)."""
    num_blocks, size = factors.signs.shape
    u = jnp.pad(g, (0, num_blocks * size - g.shape[0])).reshape(num_blocks, size)
    u = factors.gauss * _fwht(u)
    u = jnp.take_along_axis(u, factors.inverse, axis=-1)  # Pi^T
    u = factors.signs * _fwht(u)
    return jnp.sum(u, axis=0)[:dim] / math.sqrt(size)


def fastfood_column_norms(factors: FastfoodFactors, num_params: int, dim: int) -> jax.Array:
    """Exact norms of the ``dim`` columns of ``P_raw`` (full blocks analytic, last one formed)."""
    num_blocks, size = factors.signs.shape
    kept = num_params - (num_blocks - 1) * size  # rows of the last block that are used
    full = jnp.sum(factors.gauss[:-1] ** 2)
    last = FastfoodFactors(*(f[-1:] for f in factors))
    eye = jnp.eye(dim, dtype=factors.gauss.dtype)
    cols = jax.vmap(lambda e: _blocks(last, e)[0, :kept])(eye)  # (dim, kept)
    return jnp.sqrt(full + jnp.sum(cols * cols, axis=1))
