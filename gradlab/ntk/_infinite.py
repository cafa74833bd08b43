"""Closed-form NNGP and NTK of an infinitely wide fully connected network (NTK parameterisation).

The network is neural-tangents' ``stax.serial(Dense, act, Dense, act, ..., Dense)`` with
``depth`` hidden layers: ``depth`` repetitions of ``Dense(width) -> activation`` followed by a
readout ``Dense(num_outputs)``, so it has ``depth + 1`` dense layers. Every dense layer computes
``z = weight_std / sqrt(fan_in) * W h + bias_std * b`` with ``W, b ~ N(0, 1)``
(:class:`gradlab.models.NTKMLP` is the finite-width network with exactly this convention).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from gradlab._src.errors import check_choice, check_int, check_real

__all__ = ["Kernel", "infinite_mlp"]

_ACTIVATIONS = ("relu", "erf")


class Kernel(NamedTuple):
    """The two infinite-width kernels of a network, each of shape ``(N1, N2)``.

    Attributes:
        nngp: the NNGP kernel ``K(x1, x2) = E[f(x1) f(x2)]`` of one output at initialisation.
        ntk: the neural tangent kernel ``Theta(x1, x2)`` of one output.

    Examples:
        >>> import jax.numpy as jnp, gradlab as gl
        >>> k = gl.ntk.infinite_mlp(1)(jnp.ones((3, 2)))
        >>> k.nngp.shape, k.ntk.shape
        ((3, 3), (3, 3))
    """

    nngp: jax.Array
    ntk: jax.Array


def _relu_moments(k11, k22, k12):
    """``E[relu(u) relu(v)]`` and ``E[relu'(u) relu'(v)]`` for ``(u, v)`` Gaussian (arc-cosine)."""
    norms = jnp.sqrt(k11[:, None] * k22[None, :])
    safe = jnp.where(norms > 0, norms, 1.0)
    cos = jnp.clip(jnp.where(norms > 0, k12 / safe, 0.0), -1.0, 1.0)
    theta = jnp.arccos(cos)
    sin = jnp.sqrt(jnp.maximum(1.0 - cos**2, 0.0))
    value = norms / (2 * math.pi) * (sin + (math.pi - theta) * cos)
    deriv = (math.pi - theta) / (2 * math.pi)
    return value, deriv, k11 / 2, k22 / 2


def _erf_moments(k11, k22, k12):
    """``E[erf(u) erf(v)]`` and ``E[erf'(u) erf'(v)]`` for ``(u, v)`` Gaussian (arcsin kernel)."""
    d1 = 1 + 2 * k11
    d2 = 1 + 2 * k22
    prod = d1[:, None] * d2[None, :]
    arg = jnp.clip(2 * k12 / jnp.sqrt(prod), -1.0, 1.0)
    value = 2 / math.pi * jnp.arcsin(arg)
    deriv = 4 / math.pi / jnp.sqrt(prod - 4 * k12**2)
    var1 = 2 / math.pi * jnp.arcsin(2 * k11 / d1)
    var2 = 2 / math.pi * jnp.arcsin(2 * k22 / d2)
    return value, deriv, var1, var2


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _recursion(x1, x2, depth: int, activation: str, w2: float, b2: float) -> Kernel:
    """The layer recursion of :func:`infinite_mlp`, one compiled program per input shape.

    Jitted so that an eager ``kernel_fn`` call dispatches one program instead of a few dozen
    small ops (each compiled on first use), which dominated its cost at small ``N``.
    """
    moments = _relu_moments if activation == "relu" else _erf_moments
    d = x1.shape[1]
    # first dense layer: covariances of its pre-activations
    k12 = w2 * (x1 @ x2.T) / d + b2
    k11 = w2 * jnp.sum(x1 * x1, axis=1) / d + b2
    k22 = w2 * jnp.sum(x2 * x2, axis=1) / d + b2
    ntk = k12
    for _ in range(depth):
        value, deriv, v1, v2 = moments(k11, k22, k12)
        k12 = w2 * value + b2
        k11 = w2 * v1 + b2
        k22 = w2 * v2 + b2
        ntk = k12 + w2 * ntk * deriv
    return Kernel(nngp=k12, ntk=ntk)


def infinite_mlp(
    depth: int,
    *,
    activation: Literal["relu", "erf"] = "relu",
    weight_std: float = 1.0,
    bias_std: float = 0.0,
) -> Callable[..., Kernel]:
    r"""The analytic NNGP and NTK of an infinitely wide MLP in the NTK parameterisation.

    The network has ``depth`` hidden layers, each ``Dense -> activation``, and a final readout
    ``Dense`` (``depth + 1`` dense layers in all), as neural-tangents'
    ``stax.serial(*[Dense(w), Relu()] * depth, Dense(out))``. Every dense layer is
    ``z = weight_std / sqrt(fan_in) * W h + bias_std * b`` with standard-normal ``W, b``.
    With ``sigma_w = weight_std``, ``sigma_b = bias_std`` and input dimension ``d``, the
    kernels follow the recursion (Jacot et al. 2018, Lee et al. 2019)

    .. math::

        K^{1} = \sigma_w^2 \frac{x_1 \cdot x_2}{d} + \sigma_b^2, \quad \Theta^{1} = K^{1},

        K^{l+1} = \sigma_w^2 \, \mathbb{E}[\phi(u)\phi(v)] + \sigma_b^2, \quad
        \Theta^{l+1} = K^{l+1} + \sigma_w^2 \, \Theta^{l} \, \mathbb{E}[\phi'(u)\phi'(v)],

    with ``(u, v)`` centred Gaussian with covariance ``K^l``. For ReLU the expectations are the
    arc-cosine kernels ``sqrt(k11 k22) (sin t + (pi - t) cos t) / (2 pi)`` and
    ``(pi - t) / (2 pi)`` with ``cos t = k12 / sqrt(k11 k22)``; for ``erf`` they are
    ``2/pi arcsin(2 k12 / sqrt((1 + 2 k11)(1 + 2 k22)))`` and
    ``4/pi ((1 + 2 k11)(1 + 2 k22) - 4 k12^2)^{-1/2}``. The returned kernels are those of one
    output unit (all outputs are independent and identically distributed).

    Args:
        depth: number of hidden layers (nonlinearities), ``>= 1``.
        activation: ``"relu"`` or ``"erf"``.
        weight_std: ``sigma_w >= 0``, the same for every layer.
        bias_std: ``sigma_b >= 0``, the same for every layer (0 means biases do not matter).

    Returns:
        ``kernel_fn(x1, x2=None) -> Kernel(nngp, ntk)`` where ``x1`` is ``(N1, d)``, ``x2`` is
        ``(N2, d)`` (``None`` means ``x1``) and both kernels are ``(N1, N2)``.

    Raises:
        ValueError: for ``depth < 1``, a negative std or an unknown activation.

    Examples:
        >>> import jax.numpy as jnp, gradlab as gl
        >>> kernel_fn = gl.ntk.infinite_mlp(2, activation="relu", weight_std=2**0.5)
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])
        >>> k = kernel_fn(x)
        >>> k.ntk.shape
        (2, 2)
        >>> # sigma_w^2 x.x/d = 2, and each ReLU halves what the next sigma_w^2 = 2 doubles
        >>> round(float(k.nngp[0, 0]), 6)
        2.0

    References:
        Jacot, Gabriel, Hongler (2018), Neural Tangent Kernel, https://arxiv.org/abs/1806.07572;
        Lee et al. (2019), Wide neural networks of any depth evolve as linear models under
        gradient descent, https://arxiv.org/abs/1902.06720;
        Cho, Saul (2009), Kernel methods for deep learning (arc-cosine kernels);
        Williams (1997), Computing with infinite networks (arcsin kernel).
    """
    depth = check_int("depth", depth, 1)
    check_choice("activation", activation, _ACTIVATIONS)
    check_real("weight_std", weight_std, 0.0)
    check_real("bias_std", bias_std, 0.0)
    w2 = float(weight_std) ** 2
    b2 = float(bias_std) ** 2

    def kernel_fn(x1: jax.Array, x2: jax.Array | None = None) -> Kernel:
        x1 = jnp.asarray(x1)
        if x1.ndim != 2:
            raise ValueError(f"x1 must have shape (N1, d), got shape {x1.shape}")
        same = x2 is None
        x2 = x1 if same else jnp.asarray(x2)
        if x2.ndim != 2 or x2.shape[1] != x1.shape[1]:
            raise ValueError(
                f"x2 has shape {x2.shape} but x1 has shape {x1.shape}: expected (N2, "
                f"{x1.shape[1]}) so that both have the same feature size"
            )
        dtype = jnp.result_type(x1.dtype, x2.dtype, jnp.float32)
        x1 = x1.astype(dtype)
        x2 = x2.astype(dtype)
        return _recursion(x1, x2, depth, activation, w2, b2)

    return kernel_fn
