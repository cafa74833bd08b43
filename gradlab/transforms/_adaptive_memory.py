"""Adaptive Memory momentum: beta_t from a two-plane proximal model (Topollai & Choromanska)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradlab._src.errors import check_real
from gradlab.transforms._common import require_extra_arg, resolve_schedule

__all__ = ["AdaptiveMemoryState", "am_adamw", "am_sgd", "scale_by_adaptive_memory"]


class AdaptiveMemoryState(NamedTuple):
    """State of :func:`scale_by_adaptive_memory`.

    Attributes:
        count: int32 scalar, number of updates done so far.
        momentum: the memory direction :math:`d_t` (a convex combination of past gradients),
            a pytree like the params.
        nu: EMA of squared gradients (preconditioner of AM-AdamW), a pytree like the params,
            or ``()`` without preconditioning.
        memory_value: scalar :math:`\\bar f_t` (float32, or float64 for float64 params), the
            memory plane's value at the current iterate.
        beta: scalar (same dtype), the momentum coefficient :math:`\\beta_t` chosen at the last step
            (for monitoring).

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> tx = gl.transforms.scale_by_adaptive_memory(0.1)
        >>> _, state = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)), value=jnp.array(1.0))
        >>> float(state.beta), state.momentum
        (0.0, Array([1., 1.], dtype=float32))
    """

    count: jax.Array
    momentum: Any
    nu: Any
    memory_value: jax.Array
    beta: jax.Array


def _compute_dtype(tree):
    """float32, or wider if the leaves are wider (float64 under x64)."""
    return jnp.promote_types(optax.tree.dtype(tree, "highest"), jnp.float32)


def _vdot(a, b, weight, dtype):
    """sum over leaves of <a, weight * b>, accumulated in ``dtype``."""
    if weight is None:
        parts = jax.tree.map(lambda x, y: jnp.vdot(x.astype(dtype), y.astype(dtype)), a, b)
    else:
        parts = jax.tree.map(
            lambda x, y, w: jnp.vdot(x.astype(dtype), (w * y).astype(dtype)), a, b, weight
        )
    return sum(jax.tree.leaves(parts), jnp.zeros([], dtype))


def scale_by_adaptive_memory(
    learning_rate: optax.ScalarOrSchedule,
    *,
    lam: float | jax.Array = 0.0,
    precondition: bool = False,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""Momentum whose coefficient :math:`\beta_t` solves a two-plane proximal model each step.

    **Model.** At iterate :math:`x_t` with loss value :math:`f_t` and gradient :math:`g_t`, the
    objective is approximated by the maximum of two planes: the current linearisation
    :math:`\ell_g(x) = f_t + \langle g_t, x - x_t\rangle` and the *memory plane*
    :math:`\ell_d(x) = \bar f_t + \langle d_t, x - x_t\rangle`, the running convex
    combination of all past linearisations (its slope :math:`d_t` is the momentum, its value at
    :math:`x_t` is :math:`\bar f_t`). The step solves

    .. math::
        x_{t+1} = \arg\min_x \max(\ell_g(x), \ell_d(x)) + \tfrac{1}{2\eta}\|x - x_t\|_P^2
                  + \tfrac{\lambda}{2\eta}\|x - (x_t - \eta P^{-1} d_t)\|_P^2 .

    Its dual is a concave quadratic in the weight :math:`\theta \in [0, 1]` of the current
    plane, which gives the closed form (:math:`\beta_t = 1 - \theta_t`)

    .. math::
        \theta_t = \operatorname{clip}_{[0,1]}\left( (1+\lambda)\,
            \frac{(f_t - \bar f_t)/\eta + \langle d_t, d_t - g_t\rangle_{P^{-1}}}
                 {\|g_t - d_t\|_{P^{-1}}^2} \right), \qquad
        d_{t+1} = \frac{\beta_t + \lambda}{1+\lambda} d_t + \frac{1-\beta_t}{1+\lambda} g_t,

    :math:`x_{t+1} = x_t - \eta P^{-1} d_{t+1}`, and the memory plane is carried forward,
    :math:`\bar f_{t+1} = \beta'_t \bar f_t + (1-\beta'_t) f_t - \eta\|d_{t+1}\|_{P^{-1}}^2`
    with :math:`\beta'_t = (\beta_t+\lambda)/(1+\lambda)`. A loss that is higher than the
    memory predicts (:math:`f_t > \bar f_t`) or a gradient that disagrees with the memory
    shortens the memory. The first step uses :math:`\beta_0 = 0` (there is no memory yet).
    ``precondition=False`` is AM-SGD (:math:`P = I`); ``precondition=True`` is the AM-Adam
    preconditioner :math:`P = \operatorname{diag}(\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)`
    with Adam's bias-corrected second moment.

    **Reading of the paper.** The arXiv abstract and secondary summaries give the two-plane
    construction and the resulting step
    :math:`d_{t+1} = \frac{\beta_t+\lambda}{1+\lambda}d_t + \frac{1-\beta_t}{1+\lambda}g_t`; the
    full text was not available to us, so the proximal problem above (and in particular the
    memory plane's intercept :math:`\bar f_t` as the carried-forward convex combination of
    past planes) is our derivation of that step, not a transcription. ``lam=0`` (default) gives
    the plain EMA form :math:`d_{t+1} = \beta_t d_t + (1-\beta_t) g_t`.

    Args:
        learning_rate: the step size :math:`\eta` of the proximal model (a float or schedule);
            use the same value as the final ``scale_by_learning_rate`` (the aliases do).
        lam: :math:`\lambda \ge 0`, pull towards the pure momentum step.
        precondition: use Adam's diagonal preconditioner (AM-AdamW). Static.
        b2: second-moment decay for the preconditioner, in ``[0, 1)``.
        eps: added to :math:`\sqrt{\hat v}`.
        eps_root: added inside the square root.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose ``update(grads, state, params, *,
        value)`` needs the loss ``value`` at the current params (``ValueError`` naming
        ``value`` if it is missing). Updates are :math:`P^{-1} d_{t+1}` (to be scaled by
        :math:`-\eta`). State :class:`AdaptiveMemoryState`: one (AM-SGD) or two (AM-AdamW)
        parameter-sized buffers.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> tx = gl.transforms.scale_by_adaptive_memory(0.1)
        >>> params = jnp.array([1.0, 1.0])
        >>> state = tx.init(params)
        >>> u, state = tx.update(jnp.array([1.0, 0.0]), state, params, value=jnp.array(1.0))
        >>> float(state.beta)  # first step: no memory yet
        0.0
        >>> u, state = tx.update(jnp.array([0.0, 1.0]), state, params, value=jnp.array(0.95))
        >>> round(float(state.beta), 3)  # f - f_bar = 0.05, <d, d-g> = 1, |g-d|^2 = 2
        0.25

    References:
        Topollai & Choromanska, *Adaptive Memory Momentum via a Model-Based Framework for
        Deep Learning Optimization*, https://arxiv.org/abs/2510.04988
    """
    if not callable(learning_rate):
        check_real("learning_rate", learning_rate, 0.0, lo_open=True)
    check_real("lam", lam, 0.0)
    check_real("b2", b2, 0.0, 1.0, hi_open=True)
    check_real("eps", eps, 0.0)
    check_real("eps_root", eps_root, 0.0)
    where = "scale_by_adaptive_memory.update"

    def init_fn(params):
        return AdaptiveMemoryState(
            count=jnp.zeros([], jnp.int32),
            momentum=optax.tree.zeros_like(params),
            nu=optax.tree.zeros_like(params) if precondition else (),
            memory_value=jnp.zeros([], _compute_dtype(params)),
            beta=jnp.zeros([], _compute_dtype(params)),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        value = require_extra_arg(
            value,
            "value",
            where,
            "pass the loss at the current params: update(grads, state, params, value=loss)",
        )
        ct = state.memory_value.dtype
        value = jnp.asarray(value, ct)
        count = optax.safe_increment(state.count)
        lr = jnp.asarray(resolve_schedule(learning_rate, state.count), ct)
        if precondition:
            nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
            nu_hat = optax.tree.bias_correction(nu, b2, count)
            p_inv = jax.tree.map(lambda v: 1.0 / (jnp.sqrt(v.astype(ct) + eps_root) + eps), nu_hat)
        else:
            nu, p_inv = (), None
        d = state.momentum
        first = state.count == 0
        f_bar = jnp.where(first, value, state.memory_value)
        diff = jax.tree.map(lambda g, m: g.astype(ct) - m.astype(ct), updates, d)
        den = _vdot(diff, diff, p_inv, ct)
        num = (value - f_bar) / lr - _vdot(d, diff, p_inv, ct)
        safe_den = jnp.where(den > 0, den, 1.0)
        theta = jnp.where(den > 0, jnp.clip((1.0 + lam) * num / safe_den, 0.0, 1.0), 1.0)
        theta = jnp.where(first, 1.0, theta)
        beta = (1.0 - theta).astype(ct)
        keep = (beta + lam) / (1.0 + lam)
        d_new = jax.tree.map(
            lambda m, g: keep * m.astype(ct) + (1.0 - keep) * g.astype(ct), d, updates
        )
        direction = d_new if p_inv is None else jax.tree.map(lambda m, w: w * m, d_new, p_inv)
        f_bar_new = keep * f_bar + (1.0 - keep) * value - lr * _vdot(d_new, direction, None, ct)
        new_state = AdaptiveMemoryState(
            count=count,
            momentum=optax.tree.cast_like(d_new, state.momentum),
            nu=optax.tree.cast_like(nu, state.nu) if precondition else (),
            memory_value=f_bar_new.astype(ct),
            beta=beta,
        )
        return optax.tree.cast_like(direction, updates), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def am_sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    lam: float | jax.Array = 0.0,
    weight_decay: float | jax.Array = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""AM-SGD: SGD with adaptive-memory momentum (:func:`scale_by_adaptive_memory`).

    ``optax.chain(scale_by_adaptive_memory(learning_rate, lam=lam),
    optax.add_decayed_weights(weight_decay), optax.scale_by_learning_rate(learning_rate))``;
    ``update`` needs ``value=loss``.

    Args:
        learning_rate: a float or schedule (also the proximal model's step size).
        lam: :math:`\lambda \ge 0` of the model.
        weight_decay: decoupled weight decay, ``>= 0``.

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> import gradlab as gl
        >>> loss = lambda p: jnp.sum((p - 3.0) ** 2)
        >>> opt = gl.transforms.am_sgd(0.1)
        >>> params = jnp.zeros(2)
        >>> state = opt.init(params)
        >>> for _ in range(100):
        ...     value, grads = jax.value_and_grad(loss)(params)
        ...     updates, state = opt.update(grads, state, params, value=value)
        ...     params = optax.apply_updates(params, updates)
        >>> bool(loss(params) < 1e-4)
        True

    References:
        Topollai & Choromanska, https://arxiv.org/abs/2510.04988
    """
    check_real("weight_decay", weight_decay, 0.0)
    return optax.chain(
        scale_by_adaptive_memory(learning_rate, lam=lam),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


def am_adamw(
    learning_rate: optax.ScalarOrSchedule,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    *,
    lam: float | jax.Array = 0.0,
    weight_decay: float | jax.Array = 1e-4,
) -> optax.GradientTransformationExtraArgs:
    r"""AM-AdamW: Adam's preconditioner, adaptive-memory momentum, decoupled weight decay.

    ``optax.chain(scale_by_adaptive_memory(learning_rate, lam=lam, precondition=True, b2=b2,
    eps=eps), optax.add_decayed_weights(weight_decay),
    optax.scale_by_learning_rate(learning_rate))``; the first moment of AdamW (fixed
    :math:`\beta_1`) is replaced by the adaptive memory. ``update`` needs ``value=loss``.

    Args:
        learning_rate: a float or schedule (also the proximal model's step size).
        b2: second-moment decay.
        eps: added to :math:`\sqrt{\hat v}`.
        lam: :math:`\lambda \ge 0` of the model.
        weight_decay: decoupled weight decay, ``>= 0`` (AdamW's default 1e-4).

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> import gradlab as gl
        >>> loss = lambda p: jnp.sum((p - 3.0) ** 2)
        >>> opt = gl.transforms.am_adamw(0.1, weight_decay=0.0)
        >>> params = jnp.zeros(2)
        >>> state = opt.init(params)
        >>> for _ in range(200):
        ...     value, grads = jax.value_and_grad(loss)(params)
        ...     updates, state = opt.update(grads, state, params, value=value)
        ...     params = optax.apply_updates(params, updates)
        >>> bool(loss(params) < 1e-2)
        True

    References:
        Topollai & Choromanska, https://arxiv.org/abs/2510.04988
    """
    check_real("weight_decay", weight_decay, 0.0)
    return optax.chain(
        scale_by_adaptive_memory(learning_rate, lam=lam, precondition=True, b2=b2, eps=eps),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
