"""Convolution patches for the structured NTK: ``flax.linen.Conv`` as a dense layer on patches.

A convolution ``y_t = W^T p_t + b`` is a dense layer applied at every output position ``t`` to
the input patch ``p_t`` (the ``kh x kw x C_in`` window the kernel sees there). With
``feature_group_count = G`` the input channels, the kernel's output channels and hence the
patches split into ``G`` independent dense layers ``y_t^g = W_g^T p_t^g + b_g``.

The patches are computed by the layer itself: a clone of the ``nn.Conv`` (same padding,
strides, input and kernel dilation, groups, custom ``conv_general_dilated``) with an identity
kernel and no bias, at ``Precision.HIGHEST``, so every padding mode flax supports (``SAME``,
``VALID``, ``CIRCULAR``, ``CAUSAL``, explicit pairs) gives exactly the windows the layer uses.
Patch features are ordered ``(group, channel, window position)``; only inner products of
patches are ever used, so the order is immaterial within a group.

Unsupported (the kernel then goes to the Jacobian path): ``mask`` (masked kernels),
``flax.linen.ConvLocal`` and ``ConvTranspose`` (different classes, not intercepted).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

PATCH_NAME = "gradlab_ntk_patches"


def supported(module: Any) -> bool:
    """A plain ``nn.Conv`` (not masked) whose patches the identity clone reproduces."""
    return isinstance(module, nn.Conv) and module.mask is None


def window(module: Any) -> int:
    ks = module.kernel_size
    return math.prod((ks,) if isinstance(ks, int) else tuple(ks))


def _identity_kernel(module: Any, in_features: int, dtype) -> jax.Array:
    groups = module.feature_group_count
    cg = in_features // groups
    k = window(module)
    ks = module.kernel_size
    ks = (ks,) if isinstance(ks, int) else tuple(ks)
    eye = jnp.eye(cg * k, dtype=dtype).reshape(cg, k, cg * k)  # (channel, position, feature)
    eye = jnp.moveaxis(eye, 1, 0).reshape(*ks, cg, cg * k)
    return jnp.tile(eye, (1,) * (len(ks) + 1) + (groups,))


def patches(module: Any, x: jax.Array) -> jax.Array:
    """``(..., *out_spatial, G * (C_in / G) * window)``: the patches ``module`` convolves."""
    in_features = x.shape[-1]
    dtype = jnp.result_type(x) if module.dtype is None else module.dtype
    kernel = _identity_kernel(module, in_features, dtype)
    clone = module.clone(
        parent=None,
        name=PATCH_NAME,
        features=kernel.shape[-1],
        use_bias=False,
        precision=jax.lax.Precision.HIGHEST,
        dtype=dtype,
        param_dtype=dtype,
    )
    return clone.apply({"params": {"kernel": kernel}}, x)
