"""Normalized LR+GD: gradient descent with the step divided by the loss value (Tyurin, 2024)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradlab._src.errors import check_real
from gradlab.transforms._dicesgd import require_extra

__all__ = ["NormalizedGDState", "normalized_gd", "scale_by_normalized_gd"]


class NormalizedGDState(NamedTuple):
    """State of :func:`scale_by_normalized_gd`.

    Attributes:
        count: int32 scalar, number of updates so far.
        scale: float32 scalar, the last factor ``1 / max(f(theta), eps)`` applied (for logging).

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.transforms import scale_by_normalized_gd
        >>> tx = scale_by_normalized_gd()
        >>> _, state = tx.update(jnp.ones(2), tx.init(jnp.ones(2)), value=jnp.asarray(4.0))
        >>> float(state.scale)
        0.25
    """

    count: jax.Array
    scale: jax.Array


def scale_by_normalized_gd(*, eps: Any = 1e-30) -> optax.GradientTransformationExtraArgs:
    r"""Divide the gradient by the current loss value: the Normalized LR+GD direction.

    .. math:: u_t = \frac{\nabla f(\theta_t)}{\max(f(\theta_t), \varepsilon)}

    so that with ``optax.scale_by_learning_rate(gamma)`` after it,
    :math:`\theta_{t+1} = \theta_t - \gamma\, \nabla f(\theta_t) / f(\theta_t)`, the method
    Tyurin proposes for logistic regression on separable data. For the logistic loss
    :math:`f(\theta) = \frac1n \sum_i \log(1 + e^{-y_i a_i^\top \theta})`, plain GD with step
    :math:`\gamma \to \infty` reduces to the batch perceptron, but its step shrinks with the loss
    as the iterates move out; dividing by :math:`f` keeps the step of order :math:`\gamma`
    (:math:`\nabla f / f` is a weighted average of :math:`-y_i a_i` once the loss is small),
    which gives perceptron-like iteration complexity for any step size. The direction is
    invariant to rescaling the loss (:math:`f \to c f`).

    The loss value arrives as the extra argument ``value`` of ``update`` (as for
    ``optax.scale_by_polyak``); ``optax.value_and_grad_from_state`` or
    ``jax.value_and_grad`` give it. The loss must be positive (logistic, cross-entropy,
    exponential losses): near a minimizer with :math:`f^\star = 0` attained (e.g. a quadratic)
    the step :math:`\gamma \|\nabla f\| / f` grows and the iterates only reach a
    :math:`\sqrt{\gamma}`-sized neighbourhood. In float32 the logistic loss underflows for
    margins above ~87, after which ``eps`` bounds the division; use float64 for very large
    :math:`\gamma`.

    Args:
        eps: :math:`\varepsilon \ge 0`, lower bound on the loss in the division (default
            ``1e-30``).

    Returns:
        A ``GradientTransformationExtraArgs``; ``update(updates, state, params=None, *, value)``.

    Raises:
        ValueError: negative ``eps`` (at construction); missing ``value`` (at the call).

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.transforms import scale_by_normalized_gd
        >>> tx = scale_by_normalized_gd()
        >>> state = tx.init(jnp.zeros(2))
        >>> u, state = tx.update(jnp.array([1.0, -2.0]), state, value=jnp.asarray(0.5))
        >>> u
        Array([ 2., -4.], dtype=float32)

    References:
        Tyurin, "From Logistic Regression to the Perceptron Algorithm: Exploring Gradient
        Descent with Large Step Sizes", 2024. https://arxiv.org/abs/2412.08424
    """
    where = "scale_by_normalized_gd"
    check_real("eps", eps, 0.0)

    def init_fn(params):
        del params
        return NormalizedGDState(count=jnp.zeros((), jnp.int32), scale=jnp.zeros((), jnp.float32))

    def update_fn(updates, state, params=None, *, value=None, **extra):
        del params, extra
        require_extra(
            value,
            "value",
            f"{where}(...).update",
            "pass the loss at the current params, e.g. value, grads = jax.value_and_grad(loss)(params)",
        )
        value = jnp.asarray(value)
        if value.shape != ():
            raise ValueError(f"value must be the scalar loss, got an array of shape {value.shape}")
        dtype = jnp.promote_types(jnp.result_type(value, *jax.tree.leaves(updates)), jnp.float32)
        scale = 1.0 / jnp.maximum(value.astype(dtype), eps)
        out = jax.tree.map(lambda g: (g * scale).astype(jnp.result_type(g)), updates)
        new_state = NormalizedGDState(
            count=optax.safe_increment(state.count), scale=scale.astype(jnp.float32)
        )
        return out, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def normalized_gd(
    learning_rate: optax.ScalarOrSchedule, *, eps: Any = 1e-30
) -> optax.GradientTransformationExtraArgs:
    r"""Normalized LR+GD: :math:`\theta_{t+1} = \theta_t - \gamma \nabla f(\theta_t) / f(\theta_t)`.

    :func:`scale_by_normalized_gd` chained with ``optax.scale_by_learning_rate``; ``update``
    needs the extra argument ``value`` (the loss at the current params).

    Args:
        learning_rate: :math:`\gamma`, a float or an optax schedule; the method is meant for
            large steps (the paper's analysis holds for any :math:`\gamma > 0`).
        eps: lower bound on the loss in the division.

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> from gradlab.transforms import normalized_gd
        >>> a = jnp.array([[1.0, 2.0], [2.0, 1.0], [-1.0, -1.5]]); y = jnp.array([1.0, 1.0, -1.0])
        >>> loss = lambda w: jnp.mean(jnp.logaddexp(0.0, -y * (a @ w)))
        >>> opt = normalized_gd(10.0)
        >>> w = jnp.zeros(2); state = opt.init(w)
        >>> for _ in range(3):
        ...     f, g = jax.value_and_grad(loss)(w)
        ...     u, state = opt.update(g, state, w, value=f)
        ...     w = optax.apply_updates(w, u)
        >>> bool(jnp.all(y * (a @ w) > 0))
        True

    References:
        Tyurin, 2024. https://arxiv.org/abs/2412.08424
    """
    return optax.chain(scale_by_normalized_gd(eps=eps), optax.scale_by_learning_rate(learning_rate))
