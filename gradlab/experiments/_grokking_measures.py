"""Measures of the grokking_lazy_rich reproduction (re-exported there): alignment, drops, grid."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["centred_alignment", "drop_step", "log_steps", "rise_after_fraction"]


def centred_alignment(kernel, y) -> jax.Array:
    r"""Centred kernel alignment :math:`y_c^\top K_c y_c / (\lVert K_c\rVert_F\lVert y_c\rVert^2)`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.experiments.grokking_lazy_rich import centred_alignment
        >>> y = jnp.array([1.0, -1.0, 2.0])
        >>> round(float(centred_alignment(jnp.outer(y, y), y)), 6)  # K = y y^T aligns fully
        1.0
    """
    kernel = kernel - jnp.mean(kernel, axis=0, keepdims=True)
    kernel = kernel - jnp.mean(kernel, axis=1, keepdims=True)
    yc = y - jnp.mean(y)
    return yc @ kernel @ yc / (jnp.linalg.norm(kernel) * jnp.sum(yc**2))


def log_steps(num_steps: int, dense_steps: int, log_every: int) -> np.ndarray:
    """The logged steps: 0, every step up to ``dense_steps``, then every ``log_every``.

    Examples:
        >>> from gradlab.experiments.grokking_lazy_rich import log_steps
        >>> log_steps(20, 4, 8).tolist()
        [0, 1, 2, 3, 4, 12, 20]
    """
    dense = min(dense_steps, num_steps)
    sparse = (num_steps - dense) // log_every
    return np.concatenate([np.arange(dense + 1), dense + log_every * np.arange(1, sparse + 1)])


def drop_step(steps, loss, fraction: float) -> float:
    """First logged step at which ``loss <= fraction * loss[0]`` (``nan`` if none).

    Examples:
        >>> from gradlab.experiments.grokking_lazy_rich import drop_step
        >>> drop_step([0, 10, 20, 30], [1.0, 0.8, 0.5, 0.1], 0.5)
        20.0
        >>> drop_step([0, 10], [1.0, 0.9], 0.5)
        nan
    """
    loss = np.asarray(loss, np.float64)
    hit = np.flatnonzero(loss <= fraction * loss[0])
    return float(np.asarray(steps)[hit[0]]) if hit.size else float("nan")


def rise_after_fraction(initial: float, at_step: float, final: float) -> float:
    """Share ``(A_T - A_t) / (A_T - A_0)`` of the alignment change made after step ``t``.

    Examples:
        >>> from gradlab.experiments.grokking_lazy_rich import rise_after_fraction
        >>> rise_after_fraction(0.1, 0.2, 0.5)
        0.75
    """
    return float((final - at_step) / (final - initial))
