"""M-FAC: the inverse of a damped empirical Fisher over a sliding gradient window (Frantar et al.)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradlab._src.errors import check_int, check_real
from gradlab.transforms._dicesgd import check_learning_rate

__all__ = ["MFACState", "mfac", "scale_by_mfac"]


class MFACState(NamedTuple):
    """State of :func:`scale_by_mfac`.

    Attributes:
        count: int32 scalar, number of updates done so far (the gradient of step ``t`` sits in
            slot ``t % num_grads`` of the ring buffer).
        grads: the ring buffer :math:`G`, a pytree like the params with a leading axis
            ``num_grads`` (rows not yet filled are zero).
        gram: ``(num_grads, num_grads)`` float32 (float64 under x64) Gram matrix
            :math:`G G^\\top` of the buffer, updated one row and column per step.
        num_skipped: int32 scalar, number of steps whose ``m x m`` solve was not finite; those
            steps return the damped gradient ``g / damping`` instead.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> state = gl.transforms.scale_by_mfac(num_grads=4).init({"w": jnp.zeros(3)})
        >>> state.grads["w"].shape, state.gram.shape
        ((4, 3), (4, 4))
    """

    count: jax.Array
    grads: Any
    gram: jax.Array
    num_skipped: jax.Array


def _gram_dtype(tree: Any) -> Any:
    return jnp.promote_types(jnp.result_type(*jax.tree.leaves(tree)), jnp.float32)


def _rows_dot(stacked: Any, vec: Any, dtype: Any) -> jax.Array:
    """``G v``: the ``(m,)`` inner products of every buffered gradient with ``vec``.

    Each leaf is viewed as an ``(m, size)`` matrix (a free reshape) so XLA emits a plain
    matrix-vector product rather than a contraction over trailing axes.
    """
    parts = [
        s.reshape(s.shape[0], -1).astype(dtype) @ v.reshape(-1).astype(dtype)
        for s, v in zip(jax.tree.leaves(stacked), jax.tree.leaves(vec), strict=True)
    ]
    return sum(parts)


def _combine(coef: jax.Array, buf: jax.Array, dtype: Any) -> jax.Array:
    """``G^T c`` for one leaf: ``c @ (m, size)`` reshaped back to the leaf's shape."""
    return (coef @ buf.reshape(buf.shape[0], -1).astype(dtype)).reshape(buf.shape[1:])


def scale_by_mfac(
    *, num_grads: int = 32, damping: float | jax.Array = 1e-4
) -> optax.GradientTransformation:
    r"""Precondition by the inverse of the damped empirical Fisher of the last ``m`` gradients.

    The ring buffer holds the last :math:`m` = ``num_grads`` gradients (the current one
    included) as the rows of :math:`G \in \mathbb{R}^{k \times d}`, :math:`k = \min(t, m)`
    the number filled. The update is

    .. math::
        u_t = \Big(\lambda I + \tfrac{1}{k} G^\top G\Big)^{-1} g_t
            = \frac{1}{\lambda}\Big(g_t - G^\top \big(k \lambda I + G G^\top\big)^{-1} G g_t\Big)

    (Woodbury), so only the :math:`m \times m` Gram :math:`G G^\top` is ever formed: each
    step replaces one buffer row, recomputes that row and column of the Gram (:math:`m d`
    flops), solves an :math:`m \times m` system (Cholesky, :math:`m^3/3`) and forms
    :math:`G^\top c` (:math:`m d`). Unfilled rows are zero, which leaves both sides unchanged.
    Memory: ``num_grads`` parameter-sized buffers. The paper's dense M-FAC computes the same
    inverse-Fisher product through a recursive Sherman-Morrison scheme; the Gram form here
    has the same :math:`O(md + m^2)` memory and per-step cost (plus the small solve).

    Note the scale: in directions the window does not span the update is :math:`g / \lambda`,
    so the learning rate should be of the order of ``damping`` (or ``damping`` of the order of
    the Fisher's eigenvalues).

    Args:
        num_grads: :math:`m \ge 1`, the window length (the paper uses 1024 for ResNets; 32 is
            a CPU-friendly default).
        damping: :math:`\lambda > 0`.

    Returns:
        An ``optax.GradientTransformation`` with state :class:`MFACState`.

    Raises:
        ValueError: ``num_grads < 1`` or ``damping <= 0`` (at construction).

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> tx = gl.transforms.scale_by_mfac(num_grads=2, damping=1.0)
        >>> g = jnp.array([2.0, 0.0])
        >>> u, _ = tx.update(g, tx.init(g))
        >>> u  # (I + g g^T)^{-1} g = g / (1 + |g|^2)
        Array([0.4, 0. ], dtype=float32)

    References:
        Frantar, Kurtic, Alistarh, *M-FAC: Efficient Matrix-Free Approximations of
        Second-Order Information*, NeurIPS 2021. https://arxiv.org/abs/2107.03356
    """
    num_grads = check_int("num_grads", num_grads, 1)
    check_real("damping", damping, 0.0, lo_open=True)

    def init_fn(params):
        dtype = _gram_dtype(params)
        return MFACState(
            count=jnp.zeros([], jnp.int32),
            grads=jax.tree.map(lambda p: jnp.zeros((num_grads, *p.shape), p.dtype), params),
            gram=jnp.zeros((num_grads, num_grads), dtype),
            num_skipped=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None):
        del params
        dtype = state.gram.dtype
        slot = state.count % num_grads
        stored = jax.tree.map(lambda buf, g: g.astype(buf.dtype), state.grads, updates)
        old_slot = jax.tree.map(
            lambda buf: jax.lax.dynamic_index_in_dim(buf, slot, 0, keepdims=False), state.grads
        )
        # Everything below reads the *old* buffer only, so the one write (the new row) can be
        # done in place when the state is donated: G_new g is G_old g with entry `slot`
        # replaced by |g|^2, and G_new^T c = G_old^T c + c_slot (g - G_old[slot]).
        gg = sum(jnp.vdot(x.astype(dtype), x.astype(dtype)) for x in jax.tree.leaves(stored))
        row = _rows_dot(state.grads, stored, dtype).at[slot].set(gg)  # row `slot` of the Gram
        gram = state.gram.at[slot, :].set(row).at[:, slot].set(row)
        filled = jnp.minimum(state.count + 1, num_grads).astype(dtype)
        lam = jnp.asarray(damping, dtype)
        system = gram + filled * lam * jnp.eye(num_grads, dtype=dtype)
        coef = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(system), row)
        ok = jnp.all(jnp.isfinite(coef))
        coef = jnp.where(ok, coef, 0.0)

        def leaf(g, buf, new, old):
            gt_c = _combine(coef, buf, dtype) + coef[slot] * (new.astype(dtype) - old.astype(dtype))
            return ((g.astype(dtype) - gt_c) / lam).astype(g.dtype)

        new_updates = jax.tree.map(leaf, updates, state.grads, stored, old_slot)
        grads = jax.tree.map(
            lambda buf, new: jax.lax.dynamic_update_index_in_dim(buf, new, slot, 0),
            state.grads,
            stored,
        )
        return new_updates, MFACState(
            count=optax.safe_increment(state.count),
            grads=grads,
            gram=gram,
            num_skipped=state.num_skipped + (1 - ok.astype(jnp.int32)),
        )

    return optax.GradientTransformation(init_fn, update_fn)


def mfac(
    learning_rate: optax.ScalarOrSchedule,
    *,
    num_grads: int = 32,
    damping: float | jax.Array = 1e-4,
) -> optax.GradientTransformationExtraArgs:
    r"""The M-FAC optimizer: :func:`scale_by_mfac` then ``-learning_rate``.

    .. math:: \theta_{t+1} = \theta_t - \eta_t \Big(\lambda I + \tfrac{1}{k} G^\top G\Big)^{-1} g_t

    Args:
        learning_rate: a float or an ``optax`` schedule.
        num_grads: window length :math:`m`.
        damping: :math:`\lambda > 0`.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose updates are added to the params.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> import gradlab as gl
        >>> obj = lambda p: jnp.sum(jnp.array([1.0, 2.0]) * (p - 1.0) ** 2)
        >>> opt = gl.transforms.mfac(0.3, num_grads=4, damping=1.0)  # lr / damping < 2 / L
        >>> params = jnp.zeros(2)
        >>> state = opt.init(params)
        >>> @jax.jit
        ... def step(params, state):
        ...     updates, state = opt.update(jax.grad(obj)(params), state, params)
        ...     return optax.apply_updates(params, updates), state
        >>> for _ in range(300):
        ...     params, state = step(params, state)
        >>> bool(obj(params) < 1e-2)
        True

    References:
        Frantar, Kurtic, Alistarh, https://arxiv.org/abs/2107.03356
    """
    check_learning_rate(learning_rate)
    return optax.chain(
        scale_by_mfac(num_grads=num_grads, damping=damping),
        optax.scale_by_learning_rate(learning_rate),
    )
