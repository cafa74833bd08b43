"""Losses whose output-space Hessian has a closed form, used by :func:`ggn`.

A loss ``loss_fn(outputs, targets) -> scalar`` may carry an attribute ``output_hessian``:
``loss_fn.output_hessian(outputs, targets) -> (u -> H_L u)``, the product with the Hessian of
the loss with respect to ``outputs``. :func:`gradlab.curvature.ggn` uses it when present
instead of differentiating the loss twice. The two losses here carry it.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["mse", "softmax_cross_entropy"]


def _soft_targets(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Integer labels ``(...)`` -> one-hot ``(..., C)``; probability targets pass through."""
    logits = jnp.asarray(logits)
    targets = jnp.asarray(targets)
    if targets.shape == logits.shape[:-1] and jnp.issubdtype(targets.dtype, jnp.integer):
        return jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype)
    if targets.shape == logits.shape:
        return targets.astype(logits.dtype)
    raise ValueError(
        f"targets of shape {targets.shape} and dtype {targets.dtype} do not fit logits of shape "
        f"{logits.shape}: expected integer labels of shape {logits.shape[:-1]} or "
        f"probabilities of shape {logits.shape}"
    )


def softmax_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    r"""Mean softmax cross-entropy, with a closed-form output Hessian for :func:`ggn`.

    .. math:: L(z, t) = \frac{1}{M} \sum_{m=1}^{M} -\sum_c t_{mc} \log \mathrm{softmax}(z_m)_c

    where ``m`` runs over all positions of ``logits`` except the last (class) axis, so
    ``M = N`` for logits of shape ``(N, C)``. The output Hessian used by :func:`ggn` is, per
    position, :math:`H_m = s_m(\mathrm{diag}(p_m) - p_m p_m^\top) / M` with
    :math:`p_m = \mathrm{softmax}(z_m)` and :math:`s_m = \sum_c t_{mc}` (1 for labels).

    Args:
        logits: ``(..., C)`` unnormalised log-probabilities.
        targets: integer labels of shape ``logits.shape[:-1]``, or probabilities (e.g. one-hot)
            of the same shape as ``logits``.

    Returns:
        A scalar: the mean over positions.

    Examples:
        >>> import jax.numpy as jnp, gradlab as gl
        >>> float(gl.curvature.softmax_cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3])))
        1.386...
    """
    soft = _soft_targets(logits, targets)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.sum(soft * logp, axis=-1))


def _softmax_ce_output_hessian(
    logits: jax.Array, targets: jax.Array
) -> Callable[[jax.Array], jax.Array]:
    weight = jnp.sum(_soft_targets(logits, targets), axis=-1, keepdims=True)
    p = jax.nn.softmax(logits, axis=-1)
    scale = weight / (logits.size // logits.shape[-1])

    def hvp(u: jax.Array) -> jax.Array:
        pu = p * u
        return scale * (pu - p * jnp.sum(pu, axis=-1, keepdims=True))

    return hvp


def mse(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    r"""Half squared error summed over outputs, averaged over examples; closed-form Hessian.

    .. math:: L(f, y) = \frac{1}{2N} \sum_{n=1}^{N} \lVert f_n - y_n \rVert^2

    with ``n`` the leading (example) axis and the norm over all remaining axes. This is the
    negative log-likelihood of a unit-variance Gaussian (up to a constant), so its output
    Hessian is :math:`I / N` and its GGN equals the Fisher of ``likelihood="gaussian"``.

    Args:
        outputs: ``(N, ...)`` model outputs.
        targets: same shape as ``outputs``.

    Returns:
        A scalar.

    Examples:
        >>> import jax.numpy as jnp, gradlab as gl
        >>> float(gl.curvature.mse(jnp.array([[1.0, 2.0]]), jnp.array([[0.0, 0.0]])))
        2.5
    """
    diff = jnp.reshape(outputs - targets, (jnp.shape(outputs)[0], -1))
    return 0.5 * jnp.mean(jnp.sum(diff**2, axis=-1))


def _mse_output_hessian(outputs: jax.Array, targets: jax.Array) -> Callable[[jax.Array], jax.Array]:
    del targets
    n = jnp.shape(outputs)[0]
    return lambda u: u / n


softmax_cross_entropy.output_hessian = _softmax_ce_output_hessian  # type: ignore[attr-defined]
mse.output_hessian = _mse_output_hessian  # type: ignore[attr-defined]

LOSSES_BY_NAME = {"softmax_cross_entropy": softmax_cross_entropy, "mse": mse}
