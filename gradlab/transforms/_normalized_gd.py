"""Normalized LR+GD: logistic-regression GD rescaled towards the normalized batch perceptron (Tyurin)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradlab.transforms._dicesgd import check_learning_rate, require_extra

__all__ = ["NormalizedGDState", "normalized_gd", "scale_by_normalized_gd"]


class NormalizedGDState(NamedTuple):
    """State of :func:`scale_by_normalized_gd`.

    Attributes:
        count: int32 scalar, number of updates so far.
        beta: float32 scalar, the last normalization factor :math:`\\beta_t` applied (>= 1).

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.transforms import scale_by_normalized_gd
        >>> tx = scale_by_normalized_gd()
        >>> _, state = tx.update(jnp.ones(2), tx.init(jnp.ones(2)), margins=jnp.zeros(5))
        >>> float(state.beta)  # 1 / mean(sigmoid(0))
        2.0
    """

    count: jax.Array
    beta: jax.Array


def scale_by_normalized_gd() -> optax.GradientTransformationExtraArgs:
    r"""Normalized LR+GD scaling: multiply the logistic-loss gradient by :math:`\beta_t`.

    For logistic regression :math:`f(\theta) = \frac1n \sum_i \log(1 + e^{-m_i})` with
    margins :math:`m_i = y_i a_i^\top \theta_t` (labels :math:`y_i \in \{-1, 1\}`),

    .. math::

        u_t = \beta_t \nabla f(\theta_t), \qquad
        \beta_t = \Big(\frac1n \sum_{i=1}^n \big(1 + e^{m_i}\big)^{-1}\Big)^{-1},

    so that with ``optax.scale_by_learning_rate(gamma)`` after it,
    :math:`\theta_{t+1} = \theta_t - \gamma \beta_t \nabla f(\theta_t)`: Tyurin's
    Normalized LR+GD. Plain GD with step :math:`\gamma \to \infty` becomes the batch
    perceptron (step :math:`\frac1n \sum_{i \in S_t} y_i a_i` over the misclassified set
    :math:`S_t`), whose iteration count can grow linearly with :math:`n`; since
    :math:`(1 + e^{m_i})^{-1} \to \mathbf 1[m_i < 0]`, :math:`\beta_t \to n / |S_t|` and
    Normalized LR+GD tends to the *normalized* batch perceptron
    (:math:`\frac{1}{|S_t|} \sum_{i \in S_t} y_i a_i`), which needs at most
    :math:`R^2/\mu^2` steps. The paper's Theorem 6.1: from :math:`\theta_0 = 0` it separates
    the data after at most :math:`R^2/\mu^2 + 2\log(2n - 1)/(\gamma \mu^2)` iterations, so
    large steps are encouraged. :math:`\beta_t \ge 1` is computed in log space
    (:math:`(1 + e^{m})^{-1} = \sigma(-m)`), so it stays finite for any margin; but once all
    margins exceed ~88 (float32) the logistic loss and its gradient underflow to zero, and
    the step is then zero (the data are separated). Use float64 for very large :math:`\gamma`.

    The margins arrive as the extra argument ``margins`` of ``update``: a ``(n,)`` array of
    :math:`y_i \cdot \text{logit}_i` at the current params for the examples whose mean
    logistic loss produced ``updates``. (For a nonlinear classifier :math:`g(a; \theta)` use
    :math:`y_i g(a_i; \theta_t)`, the generalisation the paper leaves to future work.)

    Returns:
        A ``GradientTransformationExtraArgs``; ``update(updates, state, params=None, *,
        margins)``. No parameter-sized state.

    Raises:
        ValueError: missing ``margins``, or ``margins`` that is not a non-empty 1-D array.

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.transforms import scale_by_normalized_gd
        >>> tx = scale_by_normalized_gd()
        >>> state = tx.init(jnp.zeros(2))
        >>> u, state = tx.update(jnp.array([1.0, -2.0]), state, margins=jnp.zeros(3))
        >>> u  # beta = 1 / sigmoid(0) = 2
        Array([ 2., -4.], dtype=float32)

    References:
        Tyurin, "From Logistic Regression to the Perceptron Algorithm: Exploring Gradient
        Descent with Large Step Sizes", AAAI 2025. https://arxiv.org/abs/2412.08424
    """
    where = "scale_by_normalized_gd"

    def init_fn(params):
        del params
        return NormalizedGDState(count=jnp.zeros((), jnp.int32), beta=jnp.ones((), jnp.float32))

    def update_fn(updates, state, params=None, *, margins=None, **extra):
        del params, extra
        require_extra(
            margins,
            "margins",
            f"{where}(...).update",
            "pass y * logits (shape (n,)) of the examples in the loss, e.g. margins=y * (x @ w)",
        )
        margins = jnp.asarray(margins)
        if margins.ndim != 1 or margins.shape[0] == 0:
            raise ValueError(
                f"margins must be a non-empty 1-D array of y_i * logit_i, got shape {margins.shape}"
            )
        dtype = jnp.promote_types(jnp.result_type(margins, *jax.tree.leaves(updates)), jnp.float32)
        m = margins.astype(dtype)
        # log mean_i sigmoid(-m_i), stable for any margin; beta = exp(-log_mean) >= 1.
        log_mean = jax.nn.logsumexp(-jax.nn.softplus(m)) - jnp.log(m.shape[0])
        beta = jnp.exp(jnp.minimum(-log_mean, jnp.log(jnp.finfo(dtype).max) - 1.0))

        def scale(g):
            out = g.astype(dtype) * beta
            # Margins so large that the loss (and so the gradient) underflowed: the data are
            # separated with a huge margin; return a zero step instead of 0 * inf.
            return jnp.where(jnp.isfinite(out), out, 0.0).astype(jnp.result_type(g))

        out = jax.tree.map(scale, updates)
        new_state = NormalizedGDState(
            count=optax.safe_increment(state.count), beta=beta.astype(jnp.float32)
        )
        return out, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def normalized_gd(learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformationExtraArgs:
    r"""Normalized LR+GD: :math:`\theta_{t+1} = \theta_t - \gamma \beta_t \nabla f(\theta_t)`.

    :func:`scale_by_normalized_gd` chained with ``optax.scale_by_learning_rate``; ``update``
    needs the extra argument ``margins`` (:math:`y_i a_i^\top \theta_t`, shape ``(n,)``).

    Args:
        learning_rate: :math:`\gamma`, a float or an optax schedule; the method is meant for
            large steps (Theorem 6.1's bound decreases with :math:`\gamma`).

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> from gradlab.transforms import normalized_gd
        >>> a = jnp.array([[1.0, 2.0], [2.0, 1.0], [-1.0, -1.5]]); y = jnp.array([1.0, 1.0, -1.0])
        >>> loss = lambda w: jnp.mean(jnp.logaddexp(0.0, -y * (a @ w)))
        >>> opt = normalized_gd(100.0)
        >>> w = jnp.zeros(2); state = opt.init(w)
        >>> for _ in range(3):
        ...     u, state = opt.update(jax.grad(loss)(w), state, w, margins=y * (a @ w))
        ...     w = optax.apply_updates(w, u)
        >>> bool(jnp.all(y * (a @ w) > 0))
        True

    References:
        Tyurin, AAAI 2025. https://arxiv.org/abs/2412.08424
    """
    check_learning_rate(learning_rate)
    return optax.chain(scale_by_normalized_gd(), optax.scale_by_learning_rate(learning_rate))
