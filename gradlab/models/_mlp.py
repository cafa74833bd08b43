"""Small flax (linen) models used by experiments, tests and benchmarks: an MLP and a tiny CNN.

Every model is used params-first, ``apply_fn(params, x)``, as DESIGN.md requires; the ``init_*``
helpers return ``(params, apply_fn)`` so callers never touch the flax module directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gradlab._src.errors import check_choice, check_int

__all__ = ["MLP", "TinyCNN", "init_cnn", "init_mlp"]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "erf": jax.scipy.special.erf,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda x: x,
}


class MLP(nn.Module):
    """A fully connected network ``Dense -> act -> ... -> Dense`` (no activation at the end).

    Attributes:
        features: output sizes of the layers; the last entry is the number of outputs.
        activation: one of ``"tanh"``, ``"relu"``, ``"gelu"``, ``"erf"``, ``"sigmoid"``,
            ``"identity"``.
        use_bias: whether the dense layers have biases.
        dtype: parameter and computation dtype.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> model = gl.models.MLP((16, 3))
        >>> params = model.init(jax.random.key(0), jnp.ones((1, 4)))
        >>> model.apply(params, jnp.ones((5, 4))).shape
        (5, 3)
    """

    features: Sequence[int]
    activation: str = "tanh"
    use_bias: bool = True
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[check_choice("activation", self.activation, tuple(ACTIVATIONS))]
        for i, width in enumerate(self.features):
            x = nn.Dense(width, use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.dtype)(x)
            if i < len(self.features) - 1:
                x = act(x)
        return x


def init_mlp(
    key: jax.Array,
    sizes: Sequence[int],
    *,
    activation: str = "tanh",
    use_bias: bool = True,
    dtype: jnp.dtype = jnp.float32,
) -> tuple[dict, Callable[[dict, jax.Array], jax.Array]]:
    """Initialise an :class:`MLP` and return ``(params, apply_fn)``.

    Args:
        key: PRNG key for the initialisation (flax defaults: LeCun-normal kernels, zero biases).
        sizes: layer sizes *including the input size*, e.g. ``(64, 128, 128, 10)``.
        activation: hidden activation (see :class:`MLP`).
        use_bias: whether dense layers have biases.
        dtype: parameter dtype.

    Returns:
        ``params`` (a flax variables dict) and ``apply_fn(params, x) -> outputs``.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (64, 128, 128, 10))
        >>> apply_fn(params, jnp.zeros((2, 64))).shape
        (2, 10)
        >>> sum(x.size for x in jax.tree_util.tree_leaves(params))
        26122
    """
    sizes = tuple(sizes)
    if len(sizes) < 2:
        raise ValueError(
            f"sizes={sizes!r} is too short: expected the input size and at least one layer size"
        )
    for i, s in enumerate(sizes):
        check_int(f"sizes[{i}]", s, 1)
    model = MLP(sizes[1:], activation=activation, use_bias=use_bias, dtype=dtype)
    params = model.init(key, jnp.zeros((1, sizes[0]), dtype))
    return params, model.apply


class TinyCNN(nn.Module):
    """A small convolutional network: ``[Conv 3x3 -> act] * len(channels) -> mean pool -> Dense``.

    Attributes:
        channels: output channels of each convolution.
        num_outputs: size of the final dense layer.
        activation: hidden activation (see :class:`MLP`).
        dtype: parameter and computation dtype.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> model = gl.models.TinyCNN(channels=(4,), num_outputs=2)
        >>> params = model.init(jax.random.key(0), jnp.ones((1, 6, 6, 1)))
        >>> model.apply(params, jnp.ones((3, 6, 6, 1))).shape
        (3, 2)
    """

    channels: Sequence[int] = (8, 8)
    num_outputs: int = 10
    activation: str = "tanh"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[check_choice("activation", self.activation, tuple(ACTIVATIONS))]
        for c in self.channels:
            x = act(nn.Conv(c, (3, 3), dtype=self.dtype, param_dtype=self.dtype)(x))
        x = x.mean(axis=(-3, -2))
        return nn.Dense(self.num_outputs, dtype=self.dtype, param_dtype=self.dtype)(x)


def init_cnn(
    key: jax.Array,
    input_shape: Sequence[int],
    num_outputs: int,
    *,
    channels: Sequence[int] = (8, 8),
    activation: str = "tanh",
    dtype: jnp.dtype = jnp.float32,
) -> tuple[dict, Callable[[dict, jax.Array], jax.Array]]:
    """Initialise a :class:`TinyCNN` for inputs of shape ``(H, W, C)``; return ``(params, apply_fn)``.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_cnn(jax.random.key(0), (8, 8, 1), 10)
        >>> apply_fn(params, jnp.zeros((4, 8, 8, 1))).shape
        (4, 10)
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape={input_shape!r} must be (height, width, channels)")
    num_outputs = check_int("num_outputs", num_outputs, 1)
    model = TinyCNN(
        channels=tuple(channels), num_outputs=num_outputs, activation=activation, dtype=dtype
    )
    params = model.init(key, jnp.zeros((1, *input_shape), dtype))
    return params, model.apply
