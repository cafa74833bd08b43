"""Mean losses over a batch, written ``loss(outputs, targets) -> scalar``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

__all__ = ["mse", "softmax_cross_entropy"]


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of ``logits (N, C)`` against integer ``labels (N,)``.

    ``-mean_i log softmax(logits_i)[labels_i]`` (optax's integer-label form, averaged).

    Examples:
        >>> import jax.numpy as jnp, gradlab as gl
        >>> float(gl.models.softmax_cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3])))  # log 4
        1.386...
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def mse(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Half mean squared error ``0.5 * mean_i ||outputs_i - targets_i||^2`` (sum over outputs).

    The factor 1/2 makes the output-space Hessian the identity divided by N.

    Examples:
        >>> import jax.numpy as jnp, gradlab as gl
        >>> float(gl.models.mse(jnp.array([[1.0, 2.0]]), jnp.array([[0.0, 0.0]])))
        2.5
    """
    diff = (outputs - targets).reshape(outputs.shape[0], -1)
    return 0.5 * jnp.mean(jnp.sum(diff**2, axis=-1))
