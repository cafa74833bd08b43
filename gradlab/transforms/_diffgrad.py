"""diffGrad: Adam with a friction coefficient from the change of the gradient (Dubey et al.)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradlab._src.errors import check_real

__all__ = ["DiffGradState", "diffgrad", "scale_by_diffgrad"]


class DiffGradState(NamedTuple):
    """State of :func:`scale_by_diffgrad`.

    Attributes:
        count: int32 scalar, number of updates done so far.
        mu: first moment (EMA of gradients), a pytree like the params.
        nu: second moment (EMA of squared gradients), a pytree like the params.
        prev_grad: the previous gradient **stored by value** (zeros before the first step), a
            pytree like the params.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> tx = gl.transforms.scale_by_diffgrad()
        >>> _, state = tx.update(jnp.array([1.0, 2.0]), tx.init(jnp.zeros(2)))
        >>> state.prev_grad
        Array([1., 2.], dtype=float32)
    """

    count: jax.Array
    mu: Any
    nu: Any
    prev_grad: Any


def scale_by_diffgrad(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
) -> optax.GradientTransformation:
    r"""Rescale updates by diffGrad: Adam whose first moment is damped by a friction coefficient.

    With gradient :math:`g_t` and the previous gradient :math:`g_{t-1}` (:math:`g_0 = 0`),

    .. math::
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
        \xi_t &= \operatorname{sigmoid}(|g_{t-1} - g_t|) = \frac{1}{1 + e^{-|g_{t-1} - g_t|}}, \\
        u_t &= \xi_t \, \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t) + \epsilon_{root}}
               + \epsilon},

    all elementwise, and ``diffgrad`` steps :math:`\theta_{t+1} = \theta_t - \alpha u_t`.
    :math:`\xi_t \in [1/2, 1)`: where the gradient barely changes (flat or converged region)
    the step is halved; where it changes fast the step is close to Adam's.

    **The aliasing bug of the original code.** The authors' PyTorch implementation stores
    ``state['previous_grad'] = grad``, a *reference* to the parameter's ``.grad`` tensor, which
    PyTorch then overwrites in place with the next gradient. From the second step on
    ``previous_grad`` *is* the current gradient, so ``|g_{t-1} - g_t| = 0`` and
    :math:`\xi_t = 0.5` always: the published code is Adam with half the learning rate after
    step 1. Here the previous gradient is a separate state buffer (stored by value), which is
    the method as the paper describes it. ``tests/transforms/test_diffgrad.py`` shows both.

    Defaults (``b1=0.9``, ``b2=0.999``, ``eps=1e-8``) are the paper's; ``eps`` is added to the
    bias-corrected :math:`\sqrt{\hat v_t}` as in the paper's algorithm (the PyTorch code adds it
    before the bias correction, a negligible difference).

    Args:
        b1: decay of the first-moment EMA, in ``[0, 1)``.
        b2: decay of the second-moment EMA, in ``[0, 1)``.
        eps: added to the denominator, ``>= 0``.
        eps_root: added inside the square root, ``>= 0``.

    Returns:
        An ``optax.GradientTransformation`` with state :class:`DiffGradState` (three buffers
        of the size of the params). Updates have the structure, shapes and dtypes of the input.

    Examples:
        >>> import jax.numpy as jnp, optax
        >>> import gradlab as gl
        >>> tx = gl.transforms.scale_by_diffgrad()
        >>> params = jnp.array([1.0, -2.0])
        >>> state = tx.init(params)
        >>> updates, state = tx.update(jnp.array([0.5, -0.5]), state)
        >>> # first step: m_hat / sqrt(v_hat) = sign(g), xi = sigmoid(0.5)
        >>> print(jnp.round(updates, 4))
        [ 0.6225 -0.6225]

    References:
        Dubey et al., *diffGrad: An Optimization Method for Convolutional Neural Networks*,
        IEEE TNNLS 2019, https://arxiv.org/abs/1909.11015
    """
    check_real("b1", b1, 0.0, 1.0, hi_open=True)
    check_real("b2", b2, 0.0, 1.0, hi_open=True)
    check_real("eps", eps, 0.0)
    check_real("eps_root", eps_root, 0.0)

    def init_fn(params):
        zeros = optax.tree.zeros_like(params)
        return DiffGradState(
            count=jnp.zeros([], jnp.int32),
            mu=zeros,
            nu=optax.tree.zeros_like(params),
            prev_grad=optax.tree.zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        mu_hat = optax.tree.bias_correction(mu, b1, count)
        nu_hat = optax.tree.bias_correction(nu, b2, count)

        def leaf(g, g_prev, m, v):
            xi = jax.nn.sigmoid(jnp.abs(g_prev - g))
            return (xi * m / (jnp.sqrt(v + eps_root) + eps)).astype(g.dtype)

        new_updates = jax.tree.map(leaf, updates, state.prev_grad, mu_hat, nu_hat)
        new_state = DiffGradState(
            count=count,
            mu=optax.tree.cast_like(mu, state.mu),
            nu=optax.tree.cast_like(nu, state.nu),
            prev_grad=optax.tree.cast_like(updates, state.prev_grad),
        )
        return new_updates, new_state

    return optax.GradientTransformation(init_fn, update_fn)


def diffgrad(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""The diffGrad optimizer: :func:`scale_by_diffgrad` then ``-learning_rate``.

    ``diffgrad(lr, ...) == optax.chain(scale_by_diffgrad(...), optax.scale_by_learning_rate(lr))``.
    See :func:`scale_by_diffgrad` for the update rule and the aliasing bug of the original
    code. Default learning rate ``1e-3`` as in the paper.

    Args:
        learning_rate: a float or an ``optax`` schedule.
        b1: decay of the first-moment EMA.
        b2: decay of the second-moment EMA.
        eps: added to the denominator.
        eps_root: added inside the square root.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose updates are added to the params.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> import gradlab as gl
        >>> loss = lambda p: jnp.sum((p - 3.0) ** 2)
        >>> opt = gl.transforms.diffgrad(0.1)
        >>> params = jnp.zeros(2)
        >>> state = opt.init(params)
        >>> for _ in range(200):
        ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
        ...     params = optax.apply_updates(params, updates)
        >>> bool(loss(params) < 1e-2)
        True

    References:
        Dubey et al., https://arxiv.org/abs/1909.11015
    """
    return optax.chain(
        scale_by_diffgrad(b1=b1, b2=b2, eps=eps, eps_root=eps_root),
        optax.scale_by_learning_rate(learning_rate),
    )
