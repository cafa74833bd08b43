"""AdaHessian: Adam with the Hutchinson estimate of the Hessian diagonal (Yao et al., 2020)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradlab._src.errors import check_int, check_real
from gradlab._src.tree import tree_random_like
from gradlab.transforms._common import require_extra_arg
from gradlab.transforms._dicesgd import canonical_key, check_learning_rate

__all__ = ["AdaHessianState", "adahessian", "scale_by_adahessian"]


class AdaHessianState(NamedTuple):
    """State of :func:`scale_by_adahessian`.

    Attributes:
        count: int32 scalar, number of updates done so far.
        hessian_count: int32 scalar, number of Hessian estimates folded into ``nu`` (the bias
            correction of ``nu`` uses it, so ``update_interval > 1`` and skipped estimates
            are corrected exactly).
        num_skipped: int32 scalar, number of Hessian estimates that were not finite (NaN or
            inf anywhere) and were therefore skipped: ``nu`` kept its previous value.
        mu: first moment (EMA of gradients), a pytree like the params.
        nu: second moment (EMA of the squared, spatially averaged Hessian diagonal), a pytree
            like the params.
        key: the PRNG key of the Rademacher probes (a typed key array, shape ``()``).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> tx = gl.transforms.scale_by_adahessian(key=jax.random.key(0))
        >>> int(tx.init(jnp.zeros(3)).num_skipped)
        0
    """

    count: jax.Array
    hessian_count: jax.Array
    num_skipped: jax.Array
    mu: Any
    nu: Any
    key: jax.Array


def _spatial_average(d: jax.Array) -> jax.Array:
    """Average a rank-4 (flax ``HWIO``) conv kernel's Hessian diagonal over its spatial dims."""
    if d.ndim == 4:
        return jnp.broadcast_to(jnp.mean(d, axis=(0, 1), keepdims=True), d.shape)
    return d


def hutchinson_diagonal(obj_fn: Any, params: Any, key: jax.Array) -> Any:
    """One Rademacher probe ``z * (H z)`` of the Hessian diagonal of ``obj_fn`` at ``params``.

    One forward-over-reverse Hessian-vector product (``jax.jvp`` of ``jax.grad``).
    """
    z = tree_random_like(key, params)  # Rademacher, one random bit per entry
    hz = jax.jvp(jax.grad(obj_fn), (params,), (z,))[1]
    return jax.tree.map(lambda zi, hi: (zi * hi).astype(zi.dtype), z, hz)


def scale_by_adahessian(
    *,
    key: Any = None,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-4,
    hessian_power: float | jax.Array = 1.0,
    spatial_average: bool = True,
    update_interval: int = 1,
) -> optax.GradientTransformationExtraArgs:
    r"""Rescale updates by AdaHessian: Adam whose second moment tracks the Hessian diagonal.

    Every ``update_interval`` steps one Rademacher probe :math:`z` (entries :math:`\pm 1`)
    gives Hutchinson's unbiased estimate of the Hessian diagonal of ``obj_fn`` at the params,
    :math:`D_t = z \odot (H_t z)`, with one forward-over-reverse Hessian-vector product. For
    rank-4 leaves (flax conv kernels, layout ``(H, W, in, out)``) and ``spatial_average=True``
    :math:`D_t` is replaced by its mean over the two spatial axes. Then, as Adam,

    .. math::
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        v_k = \beta_2 v_{k-1} + (1-\beta_2) D_{t}^2, \\
        u_t &= \frac{m_t / (1-\beta_1^t)}{\left(\sqrt{v_k / (1-\beta_2^k)}\right)^{p} + \epsilon},

    with :math:`k` the number of Hessian estimates so far (``hessian_count``) and
    :math:`p` = ``hessian_power``. With ``b1 = b2 = 0`` on a separable quadratic
    (:math:`H` diagonal, so :math:`D = \operatorname{diag} H` exactly) the first update is
    :math:`g / (|\operatorname{diag} H| + \epsilon)`: a diagonal Newton step.

    **How it differs from** ``optax.contrib.sophia``: Sophia keeps an EMA of the diagonal
    estimate itself (:math:`h_t = \beta_2 h_{t-1} + (1-\beta_2) \hat D`, signed, no bias
    correction), divides by :math:`\max(\gamma h_t, \epsilon)` and clips every coordinate of
    the step to ``clip_threshold``; AdaHessian keeps the EMA of the *squared* diagonal (an RMS,
    so negative curvature does not flip the step), bias-corrects both moments, raises the
    denominator to ``hessian_power``, averages conv kernels spatially and never clips.

    A non-finite estimate (NaN or inf in any leaf) is skipped: ``nu`` and ``hessian_count``
    keep their values and ``num_skipped`` is incremented. Until the first finite estimate the
    update is zero.

    Args:
        key: PRNG key for the Rademacher probes (required); kept and split in the state.
        b1: decay of the gradient EMA, in ``[0, 1)``.
        b2: decay of the squared-Hessian-diagonal EMA, in ``[0, 1)``.
        eps: added to the denominator, ``>= 0`` (the paper's default ``1e-4``).
        hessian_power: the exponent :math:`p \in [0, 1]` of the denominator.
        spatial_average: average rank-4 kernels' diagonals over their spatial axes.
        update_interval: estimate the Hessian every this many steps (``>= 1``); between
            estimates the previous ``nu`` is used and no Hessian-vector product is computed.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update(updates, state, params, *,
        obj_fn)`` with ``obj_fn(params) -> scalar`` the loss on the current batch. State
        :class:`AdaHessianState` (two parameter-sized buffers). Cost: one Hessian-vector
        product (about two gradients) per Hessian estimate.

    Raises:
        ValueError: missing ``key``, out-of-range ``b1``/``b2``/``eps``/``hessian_power`` or
            ``update_interval < 1`` (at construction); missing ``obj_fn`` or ``params`` (at
            ``update``).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> obj = lambda p: 0.5 * jnp.sum(jnp.array([1.0, 4.0]) * p**2)
        >>> tx = gl.transforms.scale_by_adahessian(key=jax.random.key(0), b1=0.0, b2=0.0, eps=0.0)
        >>> p = jnp.array([1.0, 1.0])
        >>> u, _ = tx.update(jax.grad(obj)(p), tx.init(p), p, obj_fn=obj)
        >>> u  # g / |diag H|: the Newton step
        Array([1., 1.], dtype=float32)

    References:
        Yao, Gholami, Shen, Mustafa, Keutzer, Mahoney, *ADAHESSIAN: An Adaptive Second Order
        Optimizer for Machine Learning*, AAAI 2021. https://arxiv.org/abs/2006.00719
    """
    where = "scale_by_adahessian"
    key = canonical_key(key, where)
    check_real("b1", b1, 0.0, 1.0, hi_open=True)
    check_real("b2", b2, 0.0, 1.0, hi_open=True)
    check_real("eps", eps, 0.0)
    check_real("hessian_power", hessian_power, 0.0, 1.0)
    update_interval = check_int("update_interval", update_interval, 1)

    def init_fn(params):
        def zero():  # a distinct buffer per field, so the state can be donated
            return jnp.zeros([], jnp.int32)

        return AdaHessianState(
            count=zero(),
            hessian_count=zero(),
            num_skipped=zero(),
            mu=optax.tree.zeros_like(params),
            nu=optax.tree.zeros_like(params),
            key=key,
        )

    def update_fn(updates, state, params=None, *, obj_fn=None, **extra):
        del extra
        hint = "pass obj_fn=lambda p: loss(p, batch), the loss on the current batch"
        require_extra_arg(obj_fn, "obj_fn", f"{where}(...).update", hint)
        require_extra_arg(params, "params", f"{where}(...).update", "pass the current params")
        new_key, probe_key = jax.random.split(state.key)

        def estimate(nu):
            diag = hutchinson_diagonal(obj_fn, params, probe_key)
            if spatial_average:
                diag = jax.tree.map(_spatial_average, diag)
            finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(d)) for d in jax.tree.leaves(diag)]))
            new_nu = optax.tree.update_moment_per_elem_norm(diag, nu, b2, 2)
            new_nu = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new_nu, nu)
            added = finite.astype(jnp.int32)
            return optax.tree.cast_like(new_nu, nu), added, 1 - added

        def keep(nu):
            zero = jnp.zeros([], jnp.int32)
            return nu, zero, zero

        if update_interval == 1:
            # No lax.cond: in the same program as the caller's gradient, XLA merges the
            # HVP's own gradient pass with it (2.5 gradients per step instead of 2.9).
            nu, added, skipped = estimate(state.nu)
        else:
            due = state.count % update_interval == 0
            nu, added, skipped = jax.lax.cond(due, estimate, keep, state.nu)
        count = optax.safe_increment(state.count)
        hessian_count = state.hessian_count + added
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        mu_hat = optax.tree.bias_correction(mu, b1, count)
        nu_hat = optax.tree.bias_correction(nu, b2, jnp.maximum(hessian_count, 1))
        ready = hessian_count > 0

        def leaf(g, m, v):
            denom = jnp.sqrt(v) ** hessian_power + eps
            step = jnp.where(ready, m / jnp.where(ready, denom, 1.0), 0.0)
            return step.astype(g.dtype)

        new_updates = jax.tree.map(leaf, updates, mu_hat, nu_hat)
        return new_updates, AdaHessianState(
            count=count,
            hessian_count=hessian_count,
            num_skipped=state.num_skipped + skipped,
            mu=optax.tree.cast_like(mu, state.mu),
            nu=nu,
            key=new_key,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def adahessian(
    learning_rate: optax.ScalarOrSchedule = 0.15,
    *,
    key: Any = None,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-4,
    hessian_power: float | jax.Array = 1.0,
    spatial_average: bool = True,
    update_interval: int = 1,
) -> optax.GradientTransformationExtraArgs:
    r"""The AdaHessian optimizer: :func:`scale_by_adahessian` then ``-learning_rate``.

    .. math:: \theta_{t+1} = \theta_t - \eta_t u_t

    with :math:`u_t` as in :func:`scale_by_adahessian`. ``update`` needs the extra argument
    ``obj_fn(params) -> scalar`` (the loss on the current batch) and the params. The default
    learning rate ``0.15`` is the paper's for image classification.

    Args:
        learning_rate: a float or an ``optax`` schedule.
        key: PRNG key for the Rademacher probes (required).
        b1: decay of the gradient EMA.
        b2: decay of the squared-Hessian-diagonal EMA.
        eps: added to the denominator.
        hessian_power: exponent of the denominator, in ``[0, 1]``.
        spatial_average: average rank-4 kernels' diagonals over their spatial axes.
        update_interval: estimate the Hessian every this many steps.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose updates are added to the params.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> import gradlab as gl
        >>> obj = lambda p: jnp.sum(jnp.array([1.0, 10.0]) * (p - 3.0) ** 2)
        >>> opt = gl.transforms.adahessian(0.5, key=jax.random.key(0))
        >>> params = jnp.zeros(2)
        >>> state = opt.init(params)
        >>> @jax.jit
        ... def step(params, state):
        ...     updates, state = opt.update(jax.grad(obj)(params), state, params, obj_fn=obj)
        ...     return optax.apply_updates(params, updates), state
        >>> for _ in range(100):
        ...     params, state = step(params, state)
        >>> bool(obj(params) < 1e-2)
        True

    References:
        Yao et al., https://arxiv.org/abs/2006.00719
    """
    check_learning_rate(learning_rate)
    return optax.chain(
        scale_by_adahessian(
            key=key,
            b1=b1,
            b2=b2,
            eps=eps,
            hessian_power=hessian_power,
            spatial_average=spatial_average,
            update_interval=update_interval,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )
