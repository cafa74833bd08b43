"""PCGrad: projecting conflicting per-task gradients (Yu et al., 2020)."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradlab._src.errors import check_choice, check_int
from gradlab.transforms._dicesgd import (
    canonical_key,
    check_learning_rate,
    check_stacked_like,
    require_extra,
)

__all__ = ["PCGradState", "pcgrad", "scale_by_pcgrad"]

Reduction = Literal["sum", "mean"]


class PCGradState(NamedTuple):
    """State of :func:`scale_by_pcgrad`.

    Attributes:
        count: int32 scalar, number of updates so far.
        key: PRNG key (typed key array, shape ``()``) from which each step draws the random
            order in which every task's gradient is projected against the others.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.transforms import scale_by_pcgrad
        >>> state = scale_by_pcgrad(reduction="sum", key=jax.random.key(0)).init(jnp.zeros(2))
        >>> int(state.count)
        0
    """

    count: jax.Array
    key: jax.Array


def check_per_task_grads(
    per_task_grads: Any, updates: Any, where: str, num_tasks: int | None, source: str
) -> int:
    """Validate the ``per_task_grads`` extra argument of a multi-task transform's ``update``.

    It must be given, be stacked like ``updates`` on a leading task axis and, when
    ``num_tasks`` is known, have that many tasks (``source`` names where the number comes
    from in the error message). Returns the number of tasks.
    """
    require_extra(
        per_task_grads,
        "per_task_grads",
        f"{where}(...).update",
        "pass the per-task gradients stacked on a leading task axis",
    )
    num = check_stacked_like("per_task_grads", per_task_grads, updates)
    if num_tasks is not None and num != num_tasks:
        raise ValueError(f"per_task_grads has {num} tasks on its leading axis, but {source}")
    return num


def stack_ravel(stacked: Any, dtype: Any) -> jax.Array:
    """Flatten a pytree with a leading axis ``T`` into a ``(T, P)`` matrix of ``dtype``."""
    leaves = jax.tree.leaves(stacked)
    num = leaves[0].shape[0]
    return jnp.concatenate([x.reshape(num, -1).astype(dtype) for x in leaves], axis=1)


def unravel_like(flat: jax.Array, like: Any) -> Any:
    """Inverse of :func:`stack_ravel` for one row: a ``(P,)`` vector back to a pytree like ``like``."""
    leaves, treedef = jax.tree.flatten(like)
    out, start = [], 0
    for leaf in leaves:
        size = int(jnp.size(leaf))
        out.append(
            flat[start : start + size].reshape(jnp.shape(leaf)).astype(jnp.result_type(leaf))
        )
        start += size
    return jax.tree.unflatten(treedef, out)


def pcgrad_coefficients(gram: jax.Array, orders: jax.Array) -> jax.Array:
    r"""PCGrad in coefficient space: ``C`` with ``g_i^{PC} = sum_j C[i, j] g_j``.

    Every projection subtracts a multiple of an *original* task gradient, so each projected
    gradient stays in the span of the originals and only the Gram matrix ``G G^T`` is needed.

    Args:
        gram: ``(T, T)`` Gram matrix of the task gradients.
        orders: ``(T, T)`` int array; row ``i`` is the order in which task ``i`` visits the
            tasks (entries equal to ``i`` are skipped).

    Returns:
        ``(T, T)`` coefficient matrix.
    """
    num = gram.shape[0]
    sq_norms = jnp.diagonal(gram)

    def one_task(i, order):
        def body(c, j):
            dot = c @ gram[:, j]
            conflict = (j != i) & (dot < 0) & (sq_norms[j] > 0)
            step = jnp.where(conflict, dot / jnp.where(sq_norms[j] > 0, sq_norms[j], 1.0), 0.0)
            return c - step * jax.nn.one_hot(j, num, dtype=c.dtype), None

        c0 = jax.nn.one_hot(i, num, dtype=gram.dtype)
        c, _ = jax.lax.scan(body, c0, order)
        return c

    return jax.vmap(one_task)(jnp.arange(num), orders)


def scale_by_pcgrad(
    *,
    reduction: Reduction,
    key: jax.Array | None = None,
    num_tasks: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""PCGrad ("gradient surgery"): project away the conflicting parts of per-task gradients.

    For every task :math:`i`, start from :math:`g_i^{PC} = g_i` and visit the other tasks
    :math:`j` in a random order; whenever :math:`g_i^{PC} \cdot g_j < 0`,

    .. math:: g_i^{PC} \leftarrow g_i^{PC} - \frac{g_i^{PC} \cdot g_j}{\|g_j\|^2}\, g_j ,

    (always against the *original* :math:`g_j`, Algorithm 1 of the paper). The update is
    :math:`\sum_i g_i^{PC}` (``reduction="sum"``, the paper) or its mean over tasks
    (``reduction="mean"``, same scale as the mean loss's gradient). Tasks whose gradients do
    not conflict are left untouched, so with no conflicts the update is the sum (mean) of the
    task gradients. Computed in the span of the task gradients from their ``T x T`` Gram
    matrix: ``O(T^2 P)`` work, no parameter-sized state.

    **How the per-task gradients arrive.** As the extra argument ``per_task_grads`` of
    ``update``: a pytree like the params with a leading task axis ``T`` (e.g.
    ``jax.vmap(jax.grad(task_loss), (None, 0))(params, task_ids)`` or ``jnp.stack`` of the task
    gradients). The ``updates`` argument only fixes the output's structure and dtypes and is
    otherwise replaced, so put this transform first in an ``optax.chain``.

    Args:
        reduction: ``"sum"`` or ``"mean"`` over tasks, named explicitly (no default).
        key: PRNG key for the random task orders (required); kept and split in the state.
        num_tasks: optional expected number of tasks; a ``per_task_grads`` with another leading
            size raises ``ValueError``.

    Returns:
        A ``GradientTransformationExtraArgs``; ``update(updates, state, params=None, *,
        per_task_grads)``.

    Raises:
        ValueError: unknown ``reduction``, missing ``key``, ``num_tasks < 1`` (construction);
            missing ``per_task_grads``, leaves without a common leading task axis or a task
            count other than ``num_tasks`` (first call).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.transforms import scale_by_pcgrad
        >>> tx = scale_by_pcgrad(reduction="sum", key=jax.random.key(0))
        >>> g = jnp.array([[1.0, 0.0], [-1.0, 1.0]])  # two conflicting task gradients
        >>> state = tx.init(jnp.zeros(2))
        >>> u, state = tx.update(jnp.zeros(2), state, per_task_grads=g)
        >>> u  # (1, 0) -> (0.5, 0.5); (-1, 1) -> (0, 1)
        Array([0.5, 1.5], dtype=float32)

    References:
        Yu, Kumar, Gupta, Levine, Hausman, Finn, "Gradient Surgery for Multi-Task Learning",
        NeurIPS 2020. https://arxiv.org/abs/2001.06782
    """
    where = "scale_by_pcgrad"
    check_choice("reduction", reduction, ("sum", "mean"))
    if num_tasks is not None:
        num_tasks = check_int("num_tasks", num_tasks, 1)
    key = canonical_key(key, where)

    def init_fn(params):
        del params
        return PCGradState(count=jnp.zeros((), jnp.int32), key=key)

    def update_fn(updates, state, params=None, *, per_task_grads=None, **extra):
        del params, extra
        num = check_per_task_grads(
            per_task_grads, updates, where, num_tasks, f"num_tasks={num_tasks}"
        )
        dtype = jnp.promote_types(jnp.result_type(*jax.tree.leaves(updates)), jnp.float32)
        flat = stack_ravel(per_task_grads, dtype)
        new_key, order_key = jax.random.split(state.key)
        orders = jax.vmap(lambda k: jax.random.permutation(k, num))(
            jax.random.split(order_key, num)
        )
        coeffs = pcgrad_coefficients(flat @ flat.T, orders)
        weights = jnp.sum(coeffs, axis=0)
        if reduction == "mean":
            weights = weights / num
        out = unravel_like(weights @ flat, updates)
        return out, PCGradState(count=optax.safe_increment(state.count), key=new_key)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def pcgrad(
    learning_rate: optax.ScalarOrSchedule,
    *,
    reduction: Reduction,
    key: jax.Array | None = None,
    num_tasks: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""PCGrad SGD: :func:`scale_by_pcgrad` followed by ``optax.scale_by_learning_rate``.

    .. math:: \theta_{t+1} = \theta_t - \eta \,\mathrm{reduce}_i\, g_i^{PC}

    ``update`` needs the extra argument ``per_task_grads`` (leading task axis). To use PCGrad
    with Adam as in the paper's experiments, chain ``scale_by_pcgrad`` with
    ``optax.adam(...)`` instead.

    Args:
        learning_rate: a float or an optax schedule.
        reduction: ``"sum"`` or ``"mean"`` over tasks (required).
        key: PRNG key for the random task orders (required).
        num_tasks: optional expected number of tasks.

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.transforms import pcgrad
        >>> opt = pcgrad(0.1, reduction="mean", key=jax.random.key(0))
        >>> state = opt.init(jnp.zeros(2))
        >>> u, _ = opt.update(jnp.zeros(2), state, per_task_grads=jnp.array([[1.0, 0.0], [0.0, 1.0]]))
        >>> u
        Array([-0.05, -0.05], dtype=float32)

    References:
        Yu et al., NeurIPS 2020. https://arxiv.org/abs/2001.06782
    """
    check_learning_rate(learning_rate)
    return optax.chain(
        scale_by_pcgrad(reduction=reduction, key=key, num_tasks=num_tasks),
        optax.scale_by_learning_rate(learning_rate),
    )
