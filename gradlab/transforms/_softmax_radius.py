"""Softmax-radius step control: cap a step at the Taylor radius of cross-entropy (Sao, 2026)."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradlab._src.errors import check_real
from gradlab.transforms._common import require_extra_arg
from gradlab.transforms._dicesgd import check_learning_rate

__all__ = ["SoftmaxRadiusState", "scale_by_softmax_radius", "softmax_radius"]


class SoftmaxRadiusState(NamedTuple):
    r"""State of :func:`scale_by_softmax_radius`.

    Attributes:
        count: int32 scalar, number of updates so far.
        spread: float32 scalar, the last :math:`\Delta_a = \max_b (\max_c a_{bc} - \min_c
            a_{bc})` (0 for a zero step).
        scale: float32 scalar, the last factor :math:`\min(1, \text{ratio} \cdot \pi /
            \Delta_a)` the update was multiplied by (0 when :math:`\Delta_a` was not finite).

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.transforms import scale_by_softmax_radius
        >>> scale_by_softmax_radius().init(jnp.zeros(2)).scale
        Array(1., dtype=float32)
    """

    count: jax.Array
    spread: jax.Array
    scale: jax.Array


def _as_params_dtype(updates, params):
    return jax.tree.map(lambda u, p: jnp.asarray(u).astype(jnp.result_type(p)), updates, params)


def scale_by_softmax_radius(
    *, ratio: float | jax.Array = 1.0
) -> optax.GradientTransformationExtraArgs:
    r"""Scale a proposed step so that it stays inside the softmax Taylor radius.

    For cross-entropy on logits :math:`z(\theta) \in \mathbb R^{B \times C}`, the loss along a
    step :math:`\theta + \tau v` (:math:`\|v\|` arbitrary, :math:`\tau = 1` the proposed
    update :math:`u = v`) is, with the logits linearised, a sum of
    :math:`\log \sum_c e^{z_{bc} + \tau a_{bc}}` terms whose complex zeros of the partition
    function ("ghosts of softmax") bound the radius of convergence of its Taylor series in
    :math:`\tau` from below by

    .. math::

        \rho_a = \frac{\pi}{\Delta_a}, \qquad
        \Delta_a = \max_b \Big(\max_c a_{bc} - \min_c a_{bc}\Big), \qquad
        a = J_z u \in \mathbb R^{B \times C},

    one Jacobian-vector product of ``logits_fn`` along the update. The paper's controller
    enforces the normalised step :math:`r = \tau / \rho_a \le` ``ratio``: the update is
    multiplied by :math:`\min(1, \text{ratio} \cdot \rho_a)`. A zero step
    (:math:`\Delta_a = 0`, infinite radius) is left unchanged (no division by zero); a
    non-finite :math:`\Delta_a` gives factor 0 (the step is dropped). Logits with more than two
    axes ``(..., C)`` are treated as independent positions (the max runs over all of them).

    Place it *after* the optimizer, on the final step (learning rate included):
    ``optax.chain(optax.adam(lr), scale_by_softmax_radius())``.

    Cost: one JVP of ``logits_fn`` (about one forward pass); no parameter-sized state.

    Args:
        ratio: the largest allowed normalised step :math:`r = \tau/\rho_a`, ``> 0`` (the paper
            finds no failures below 1); a float or an array (``inject_hyperparams``).

    Returns:
        A ``GradientTransformationExtraArgs``; ``update(updates, state, params, *,
        logits_fn)`` with ``logits_fn(params) -> (B, C)`` logits on the current batch.

    Raises:
        ValueError: ``ratio <= 0`` (at construction); missing ``logits_fn`` or ``params`` (in
            ``update``).

    Examples:
        >>> import jax.numpy as jnp, optax
        >>> from gradlab.transforms import scale_by_softmax_radius
        >>> x = jnp.array([[1.0, 0.0], [0.0, 2.0]])
        >>> logits_fn = lambda w: x @ w  # (2, 3) logits, w of shape (2, 3)
        >>> tx = optax.chain(optax.sgd(1.0), scale_by_softmax_radius())
        >>> w = jnp.zeros((2, 3)); g = jnp.array([[0.0, 0.0, 0.0], [-4.0, 0.0, 0.0]])
        >>> u, state = tx.update(g, tx.init(w), w, logits_fn=logits_fn)
        >>> float(state[1].spread), round(float(state[1].scale), 4)  # Delta = 8, pi / 8
        (8.0, 0.3927)

    References:
        Sao, "Ghosts of Softmax: Complex Singularities That Limit Safe Step Sizes in
        Cross-Entropy", 2026. https://arxiv.org/abs/2603.13552
    """
    check_real("ratio", ratio, 0.0, None, lo_open=True)
    where = "scale_by_softmax_radius(...).update"

    def init_fn(params):
        del params
        return SoftmaxRadiusState(
            count=jnp.zeros((), jnp.int32),
            spread=jnp.zeros((), jnp.float32),
            scale=jnp.ones((), jnp.float32),
        )

    def update_fn(updates, state, params=None, *, logits_fn=None, **extra):
        del extra
        hint = "pass logits_fn(params) -> (B, C) logits on the current batch"
        require_extra_arg(logits_fn, "logits_fn", where, hint)
        require_extra_arg(params, "params", where, "call update(updates, state, params, ...)")
        _, a = jax.jvp(logits_fn, (params,), (_as_params_dtype(updates, params),))
        a = jnp.asarray(a)
        if a.ndim < 2:
            raise ValueError(f"logits_fn must return (B, C) logits, got shape {a.shape}")
        a = a.astype(jnp.promote_types(a.dtype, jnp.float32))
        spread = jnp.max(jnp.max(a, axis=-1) - jnp.min(a, axis=-1))
        limit = jnp.asarray(ratio, a.dtype) * math.pi  # ratio * rho * Delta
        safe = jnp.where(spread > limit, spread, 1.0)
        scale = jnp.where(spread > limit, limit / safe, 1.0)
        scale = jnp.where(jnp.isfinite(spread), scale, 0.0)
        out = jax.tree.map(lambda u: (u * scale).astype(jnp.result_type(u)), updates)
        new_state = SoftmaxRadiusState(
            count=optax.safe_increment(state.count),
            spread=spread.astype(jnp.float32),
            scale=scale.astype(jnp.float32),
        )
        return out, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def softmax_radius(
    learning_rate: optax.ScalarOrSchedule, *, ratio: float | jax.Array = 1.0
) -> optax.GradientTransformationExtraArgs:
    r"""SGD whose every step is capped at the softmax radius: :math:`-\eta g` scaled by
    :math:`\min(1, \text{ratio} \cdot \pi / \Delta_a)`.

    ``optax.chain(optax.scale_by_learning_rate(learning_rate),
    scale_by_softmax_radius(ratio=ratio))``: the radius is measured on the final step. To
    guard another optimizer, chain :func:`scale_by_softmax_radius` after it instead.

    Args:
        learning_rate: :math:`\eta`, a float or an optax schedule.
        ratio: largest allowed normalised step, ``> 0``.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``logits_fn``.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> from gradlab.transforms import softmax_radius
        >>> x = jnp.array([[1.0, 0.5], [-1.0, 1.0]]); y = jnp.array([0, 1])
        >>> logits_fn = lambda w: x @ w
        >>> loss = lambda w: optax.softmax_cross_entropy_with_integer_labels(
        ...     logits_fn(w), y).mean()
        >>> opt = softmax_radius(1e4)  # a huge rate: every step is capped at the radius
        >>> w = jnp.zeros((2, 2)); state = opt.init(w)
        >>> for _ in range(5):
        ...     u, state = opt.update(jax.grad(loss)(w), state, w, logits_fn=logits_fn)
        ...     w = optax.apply_updates(w, u)
        >>> bool(loss(w) < loss(jnp.zeros((2, 2))))
        True

    References:
        Sao, 2026. https://arxiv.org/abs/2603.13552
    """
    check_learning_rate(learning_rate)
    return optax.chain(
        optax.scale_by_learning_rate(learning_rate), scale_by_softmax_radius(ratio=ratio)
    )
