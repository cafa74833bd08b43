"""Synthetic data generators: Gaussian blobs, points on the unit circle, linear teachers."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradlab._src.errors import check_int, check_real

__all__ = ["gaussian_blobs", "linear_teacher", "unit_circle"]


def gaussian_blobs(
    key: jax.Array,
    *,
    num_classes: int,
    num_per_class: int,
    dim: int,
    center_norm: float = 2.0,
    noise: float = 1.0,
    dtype: jnp.dtype = jnp.float32,
) -> tuple[jax.Array, jax.Array]:
    """Isotropic Gaussian clusters, one per class, with random centres of a fixed norm.

    Centres are drawn uniformly on the sphere of radius ``center_norm``; each example is its
    class centre plus ``noise`` times a standard normal vector. Examples are ordered by class.

    Args:
        key: PRNG key.
        num_classes: number of clusters C (>= 1).
        num_per_class: examples per cluster.
        dim: input dimension d.
        center_norm: Euclidean norm of every cluster centre.
        noise: standard deviation of the within-cluster noise.
        dtype: floating dtype of ``x``.

    Returns:
        ``x`` of shape ``(C * num_per_class, dim)`` and labels ``y`` of shape
        ``(C * num_per_class,)``.

    Examples:
        >>> import jax, gradlab as gl
        >>> x, y = gl.data.gaussian_blobs(jax.random.key(0), num_classes=3, num_per_class=5, dim=4)
        >>> x.shape, y.tolist()[:6]
        ((15, 4), [0, 0, 0, 0, 0, 1])
    """
    num_classes = check_int("num_classes", num_classes, 1)
    num_per_class = check_int("num_per_class", num_per_class, 1)
    dim = check_int("dim", dim, 1)
    check_real("center_norm", center_norm, 0.0)
    check_real("noise", noise, 0.0)
    k_centres, k_noise = jax.random.split(key)
    centres = jax.random.normal(k_centres, (num_classes, dim), dtype)
    centres = center_norm * centres / jnp.linalg.norm(centres, axis=1, keepdims=True)
    y = jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), num_per_class)
    x = centres[y] + noise * jax.random.normal(k_noise, (y.shape[0], dim), dtype)
    return x, y


def unit_circle(n: int, *, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """``n`` evenly spaced points on the unit circle, shape ``(n, 2)``.

    Examples:
        >>> import gradlab as gl
        >>> x = gl.data.unit_circle(4)
        >>> x.shape, bool(abs((x ** 2).sum(1) - 1).max() < 1e-6)
        ((4, 2), True)
    """
    n = check_int("n", n, 1)
    angles = jnp.arange(n, dtype=dtype) * (2 * jnp.pi / n)
    return jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)


def linear_teacher(
    key: jax.Array,
    *,
    num_examples: int,
    dim: int,
    noise_std: float = 0.0,
    dtype: jnp.dtype = jnp.float32,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A linear student-teacher regression problem ``y = x w* / sqrt(d) + noise``.

    Inputs and teacher weights are standard normal; the targets have unit signal variance.

    Args:
        key: PRNG key.
        num_examples: number of examples P.
        dim: input dimension d.
        noise_std: standard deviation of the additive label noise.
        dtype: floating dtype.

    Returns:
        ``(x (P, d), y (P,), w_star (d,))``.

    Examples:
        >>> import jax, gradlab as gl
        >>> x, y, w = gl.data.linear_teacher(jax.random.key(0), num_examples=8, dim=3)
        >>> x.shape, y.shape, w.shape
        ((8, 3), (8,), (3,))
    """
    num_examples = check_int("num_examples", num_examples, 1)
    dim = check_int("dim", dim, 1)
    check_real("noise_std", noise_std, 0.0)
    kx, kw, kn = jax.random.split(key, 3)
    x = jax.random.normal(kx, (num_examples, dim), dtype)
    w_star = jax.random.normal(kw, (dim,), dtype)
    y = x @ w_star / jnp.sqrt(jnp.asarray(dim, dtype))
    y = y + noise_std * jax.random.normal(kn, (num_examples,), dtype)
    return x, y, w_star
