"""A finite-width MLP in the NTK parameterisation, matching :func:`gradlab.ntk.infinite_mlp`.

Each dense layer computes ``z = weight_std / sqrt(fan_in) * h @ W + bias_std * b`` with
``W, b ~ N(0, 1)`` at initialisation (neural-tangents' ``stax.Dense(..., parameterization="ntk")``).
The weight product is done by a plain ``flax.linen.Dense`` on the rescaled input, so the
structured NTK path of :func:`gradlab.ntk.empirical_ntk` recognises it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gradlab._src.errors import check_choice, check_int, check_real

__all__ = ["NTKDense", "NTKMLP", "init_ntk_mlp"]

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "erf": jax.scipy.special.erf,
    "tanh": jnp.tanh,
    "identity": lambda x: x,
}


class NTKDense(nn.Module):
    """Dense layer in the NTK parameterisation: ``weight_std / sqrt(fan_in) * x @ W + bias_std * b``.

    ``W`` (``linear/kernel``, shape ``(fan_in, features)``) and ``b`` (``bias``) are
    standard normal at initialisation.

    Attributes:
        features: number of outputs.
        weight_std: ``sigma_w``.
        bias_std: ``sigma_b`` (the bias parameter always exists; ``0`` switches it off).
        dtype: parameter and computation dtype.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> layer = gl.models.NTKDense(3)
        >>> params = layer.init(jax.random.key(0), jnp.ones((1, 4)))
        >>> layer.apply(params, jnp.ones((2, 4))).shape
        (2, 3)
    """

    features: int
    weight_std: float = 1.0
    bias_std: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.weight_std / math.sqrt(x.shape[-1])
        linear = nn.Dense(
            self.features,
            use_bias=False,
            kernel_init=nn.initializers.normal(1.0),
            dtype=self.dtype,
            param_dtype=self.dtype,
            name="linear",
        )
        bias = self.param("bias", nn.initializers.normal(1.0), (self.features,), self.dtype)
        return linear(x * jnp.asarray(scale, self.dtype)) + self.bias_std * bias


class NTKMLP(nn.Module):
    """MLP ``[NTKDense -> activation] * (len(features) - 1) -> NTKDense`` in NTK parameterisation.

    With ``features = (width,) * depth + (num_outputs,)`` its NTK and NNGP converge, as the
    width grows, to ``gradlab.ntk.infinite_mlp(depth, activation=..., weight_std=...,
    bias_std=...)`` (the same ``weight_std`` and ``bias_std`` are used in every layer).

    Attributes:
        features: output sizes of the layers; the last entry is the number of outputs.
        activation: ``"relu"``, ``"erf"``, ``"tanh"`` or ``"identity"``.
        weight_std: ``sigma_w`` of every layer.
        bias_std: ``sigma_b`` of every layer.
        dtype: parameter and computation dtype.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> model = gl.models.NTKMLP((64, 64, 1), activation="relu")
        >>> params = model.init(jax.random.key(0), jnp.ones((1, 3)))
        >>> model.apply(params, jnp.ones((5, 3))).shape
        (5, 1)
    """

    features: Sequence[int]
    activation: str = "relu"
    weight_std: float = 1.0
    bias_std: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _ACTIVATIONS[check_choice("activation", self.activation, tuple(_ACTIVATIONS))]
        for i, width in enumerate(self.features):
            x = NTKDense(width, self.weight_std, self.bias_std, dtype=self.dtype)(x)
            if i < len(self.features) - 1:
                x = act(x)
        return x


def init_ntk_mlp(
    key: jax.Array,
    sizes: Sequence[int],
    *,
    activation: str = "relu",
    weight_std: float = 1.0,
    bias_std: float = 0.0,
    dtype: Any = jnp.float32,
) -> tuple[dict, Callable[[dict, jax.Array], jax.Array]]:
    """Initialise an :class:`NTKMLP`; return ``(params, apply_fn)``.

    ``sizes`` includes the input size: ``(d, width, ..., width, num_outputs)`` has
    ``depth = len(sizes) - 2`` hidden layers and matches
    ``gradlab.ntk.infinite_mlp(len(sizes) - 2, activation=activation, weight_std=weight_std,
    bias_std=bias_std)``.

    Args:
        key: PRNG key (all weights and biases standard normal).
        sizes: layer sizes including the input size, at least ``(d, num_outputs)``.
        activation: hidden activation (see :class:`NTKMLP`).
        weight_std: ``sigma_w >= 0``.
        bias_std: ``sigma_b >= 0``.
        dtype: parameter dtype.

    Returns:
        ``params`` (flax variables) and ``apply_fn(params, x) -> outputs``.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_ntk_mlp(jax.random.key(0), (3, 128, 128, 1))
        >>> apply_fn(params, jnp.ones((4, 3))).shape
        (4, 1)
    """
    sizes = tuple(sizes)
    if len(sizes) < 2:
        raise ValueError(
            f"sizes={sizes!r} is too short: expected the input size and at least one layer size"
        )
    for i, s in enumerate(sizes):
        check_int(f"sizes[{i}]", s, 1)
    check_real("weight_std", weight_std, 0.0)
    check_real("bias_std", bias_std, 0.0)
    check_choice("activation", activation, tuple(_ACTIVATIONS))
    model = NTKMLP(
        sizes[1:], activation=activation, weight_std=weight_std, bias_std=bias_std, dtype=dtype
    )
    params = model.init(key, jnp.zeros((1, sizes[0]), dtype))
    return params, model.apply
