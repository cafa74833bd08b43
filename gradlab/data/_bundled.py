"""scikit-learn's bundled datasets as JAX arrays (no download ever happens)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from gradlab._src.errors import check_int

__all__ = ["breast_cancer", "digits"]


def _standardize(x: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return (x - mean) / np.where(std > 0, std, 1.0)


def digits(
    n: int | None = 1024, *, standardize: bool = True, dtype: jnp.dtype = jnp.float32
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The 8x8 handwritten digits bundled with scikit-learn, as ``(x, y)``.

    The benchmark workload of gradlab uses the first 1,024 examples, standardised per feature
    (features with zero variance are left centred, not divided).

    Args:
        n: number of examples to keep (the first ``n`` of 1,797); ``None`` keeps all.
        standardize: centre each of the 64 pixel features and scale it to unit variance,
            with statistics computed on the kept examples.
        dtype: floating dtype of ``x``.

    Returns:
        ``x`` of shape ``(n, 64)`` and integer labels ``y`` of shape ``(n,)`` in ``0..9``.

    Examples:
        >>> import gradlab as gl
        >>> x, y = gl.data.digits(256)
        >>> x.shape, y.shape, int(y.max())
        ((256, 64), (256,), 9)
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    total = data.data.shape[0]
    if n is not None:
        n = check_int("n", n, 1, total)
    x = np.asarray(data.data[:n], dtype=np.float64)
    y = np.asarray(data.target[:n], dtype=np.int32)
    if standardize:
        x = _standardize(x)
    return jnp.asarray(x, dtype=dtype), jnp.asarray(y)


def breast_cancer(
    *, standardize: bool = True, dtype: jnp.dtype = jnp.float32
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The Wisconsin breast-cancer dataset bundled with scikit-learn, as ``(x, y)``.

    Args:
        standardize: centre and scale each of the 30 features to unit variance.
        dtype: floating dtype of ``x``.

    Returns:
        ``x`` of shape ``(569, 30)`` and binary labels ``y`` of shape ``(569,)``.

    Examples:
        >>> import gradlab as gl
        >>> x, y = gl.data.breast_cancer()
        >>> x.shape, sorted(set(y.tolist()))
        ((569, 30), [0, 1])
    """
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = np.asarray(data.data, dtype=np.float64)
    if standardize:
        x = _standardize(x)
    return jnp.asarray(x, dtype=dtype), jnp.asarray(data.target.astype(np.int32))
