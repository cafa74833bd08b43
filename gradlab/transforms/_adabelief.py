"""AdaBelief with RAdam rectification and decoupled weight decay (Zhuang et al., release 0.2)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradlab._src.errors import check_real

__all__ = ["AdaBeliefState", "adabelief", "scale_by_adabelief"]


class AdaBeliefState(NamedTuple):
    """State of :func:`scale_by_adabelief`.

    Attributes:
        count: int32 scalar, number of updates done so far.
        mu: EMA of the gradients, a pytree like the params.
        nu: EMA of the squared prediction error ``(g - mu)^2`` (plus ``eps_root`` per step),
            a pytree like the params.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> state = gl.transforms.scale_by_adabelief().init(jnp.zeros(3))
        >>> int(state.count), state.mu.shape
        (0, (3,))
    """

    count: jax.Array
    mu: Any
    nu: Any


def _rectification(b2, count):
    """RAdam's ``(rho_t, r_t)`` for step ``count`` (1-based), in the default float dtype."""
    dtype = jnp.result_type(float)
    t = count.astype(dtype)
    b2 = jnp.asarray(b2, dtype)
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    b2_t = b2**t
    rho_t = rho_inf - 2.0 * t * b2_t / (1.0 - b2_t)
    ratio = (rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)
    return rho_t, jnp.sqrt(jnp.maximum(ratio, 0.0))


def scale_by_adabelief(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-16,
    eps_root: float | jax.Array = 1e-16,
    *,
    rectify: bool = True,
    sma_threshold: float = 5.0,
    degenerated_to_sgd: bool = True,
) -> optax.GradientTransformation:
    r"""Rescale updates by AdaBelief, optionally with RAdam's variance rectification.

    With gradient :math:`g_t`,

    .. math::
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        s_t = \beta_2 s_{t-1} + (1-\beta_2)(g_t - m_t)^2 + \epsilon_{root}, \\
        \hat m_t &= m_t / (1-\beta_1^t), \qquad \hat s_t = s_t / (1-\beta_2^t), \qquad
        u_t = \frac{\hat m_t}{\sqrt{\hat s_t} + \epsilon}.

    With ``rectify=False`` this is exactly ``optax.scale_by_belief`` (tested to float
    tolerance). With ``rectify=True`` (the default of the authors' ``adabelief-pytorch`` 0.2
    release) the step is rectified as in RAdam: with
    :math:`\rho_\infty = 2/(1-\beta_2) - 1` and
    :math:`\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)`,

    .. math::
        u_t = \begin{cases}
          r_t \, \hat m_t / (\sqrt{\hat s_t} + \epsilon), &
              r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}
              \quad \text{if } \rho_t \ge 5, \\
          \hat m_t & \text{otherwise (``degenerated_to_sgd=True``; 0 if False).}
        \end{cases}

    With the default ``b2=0.999`` the first 5 steps are SGD with momentum. Defaults
    (``eps=1e-16``, ``eps_root=1e-16``, ``b1=0.9``, ``b2=0.999``) are the 0.2 release's (there
    ``eps`` is added in place to :math:`s_t` every step, which is ``eps_root`` here). The
    release's ``weight_decouple=True`` weight decay lives in the alias :func:`adabelief`.

    Args:
        b1: decay of the gradient EMA, in ``[0, 1)``.
        b2: decay of the prediction-error EMA, in ``[0, 1)``.
        eps: added to the denominator, ``>= 0``.
        eps_root: added to :math:`s_t` at every step, ``>= 0``.
        rectify: apply RAdam's rectification (static).
        sma_threshold: the rectified step is used once :math:`\rho_t` reaches this (static,
            the release uses 5).
        degenerated_to_sgd: before the threshold, step with :math:`\hat m_t` (True) or do not
            move (False). Static.

    Returns:
        An ``optax.GradientTransformation`` with state :class:`AdaBeliefState` (two buffers of
        the size of the params).

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> tx = gl.transforms.scale_by_adabelief()
        >>> state = tx.init(jnp.zeros(2))
        >>> updates, state = tx.update(jnp.array([0.5, -0.5]), state)
        >>> print(updates)  # rho_1 < 5: the first steps are momentum SGD, m_hat = g
        [ 0.5 -0.5]

    References:
        Zhuang et al., *AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
        Gradients*, NeurIPS 2020, https://arxiv.org/abs/2010.07468 (code release 0.2:
        https://github.com/juntang-zhuang/Adabelief-Optimizer).
        Liu et al., *On the Variance of the Adaptive Learning Rate and Beyond* (RAdam),
        https://arxiv.org/abs/1908.03265
    """
    check_real("b1", b1, 0.0, 1.0, hi_open=True)
    check_real("b2", b2, 0.0, 1.0, hi_open=True)
    check_real("eps", eps, 0.0)
    check_real("eps_root", eps_root, 0.0)
    check_real("sma_threshold", sma_threshold, 4.0, lo_open=True)

    def init_fn(params):
        return AdaBeliefState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params),
            nu=optax.tree.zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        del params
        # Same operations, in the same order, as optax.scale_by_belief.
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        prediction_error = optax.tree.sub(updates, mu)
        nu = optax.tree.update_moment_per_elem_norm(prediction_error, state.nu, b2, 2)
        nu = jax.tree.map(lambda v: v + eps_root, nu)
        count = optax.safe_increment(state.count)
        mu_hat = optax.tree.bias_correction(mu, b1, count)
        nu_hat = optax.tree.bias_correction(nu, b2, count)
        adaptive = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu_hat, nu_hat)
        if rectify:
            rho_t, r_t = _rectification(b2, count)
            use_adaptive = rho_t >= sma_threshold
            sgd_scale = 1.0 if degenerated_to_sgd else 0.0

            def leaf(a, m):
                return jnp.where(use_adaptive, r_t.astype(a.dtype) * a, sgd_scale * m).astype(
                    m.dtype
                )

            new_updates = jax.tree.map(leaf, adaptive, mu_hat)
        else:
            new_updates = adaptive
        new_updates = optax.tree.cast_like(new_updates, updates)
        new_state = AdaBeliefState(
            count=count,
            mu=optax.tree.cast_like(mu, state.mu),
            nu=optax.tree.cast_like(nu, state.nu),
        )
        return new_updates, new_state

    return optax.GradientTransformation(init_fn, update_fn)


def adabelief(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-16,
    eps_root: float | jax.Array = 1e-16,
    *,
    weight_decay: float | jax.Array = 0.0,
    rectify: bool = True,
    sma_threshold: float = 5.0,
    degenerated_to_sgd: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""AdaBelief (release 0.2): :func:`scale_by_adabelief`, decoupled weight decay, ``-lr``.

    .. math::
        \theta_{t+1} = \theta_t - \alpha_t \left(u_t + \lambda \theta_t\right)

    i.e. ``optax.chain(scale_by_adabelief(...), optax.add_decayed_weights(weight_decay),
    optax.scale_by_learning_rate(learning_rate))``: the release's ``weight_decouple=True``
    decay :math:`\theta \leftarrow \theta(1 - \alpha\lambda)` (AdamW-style, scaled by the
    learning rate). With ``rectify=False`` and ``weight_decay=0`` this equals
    ``optax.adabelief(learning_rate, b1, b2, eps, eps_root)`` (tested).

    Args:
        learning_rate: a float or an ``optax`` schedule.
        b1: decay of the gradient EMA.
        b2: decay of the prediction-error EMA.
        eps: added to the denominator.
        eps_root: added to the second moment every step.
        weight_decay: decoupled weight-decay coefficient :math:`\lambda \ge 0`.
        rectify: RAdam rectification (default True, as the 0.2 release).
        sma_threshold: see :func:`scale_by_adabelief`.
        degenerated_to_sgd: see :func:`scale_by_adabelief`.

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> import gradlab as gl
        >>> loss = lambda p: jnp.sum((p - 3.0) ** 2)
        >>> opt = gl.transforms.adabelief(0.1, weight_decay=1e-4)
        >>> params = jnp.zeros(2)
        >>> state = opt.init(params)
        >>> for _ in range(300):
        ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
        ...     params = optax.apply_updates(params, updates)
        >>> bool(loss(params) < 1e-2)
        True

    References:
        Zhuang et al., https://arxiv.org/abs/2010.07468
    """
    check_real("weight_decay", weight_decay, 0.0)
    return optax.chain(
        scale_by_adabelief(
            b1=b1,
            b2=b2,
            eps=eps,
            eps_root=eps_root,
            rectify=rectify,
            sma_threshold=sma_threshold,
            degenerated_to_sgd=degenerated_to_sgd,
        ),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
