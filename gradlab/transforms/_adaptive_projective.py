"""Adaptive projective gradient descent for model merging (DOGE, Wei et al., 2025)."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradlab._src.errors import check_choice, check_int, check_real
from gradlab.transforms._dicesgd import check_learning_rate, check_stacked_like
from gradlab.transforms._pcgrad import check_per_task_grads

__all__ = [
    "AdaptiveProjectionState",
    "adaptive_projective_gd",
    "merging_coefficients",
    "merging_gap_losses",
    "scale_by_adaptive_projection",
    "shared_subspace",
]

Reduction = Literal["sum", "mean"]


class AdaptiveProjectionState(NamedTuple):
    """State of :func:`scale_by_adaptive_projection`.

    Attributes:
        count: int32 scalar, number of updates so far.
        bases: pytree like the params whose leaves are ``(m, k)`` orthonormal bases ``U`` of the
            shared subspace of each leaf with ``ndim >= 2`` (``m = leaf.shape[0]``), and
            ``None`` for other leaves (not projected). Fixed after ``init``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.transforms import scale_by_adaptive_projection
        >>> tv = {"w": jax.random.normal(jax.random.key(0), (2, 6, 4)), "b": jnp.ones((2, 4))}
        >>> tx = scale_by_adaptive_projection(tv, reduction="sum", rank_divisor=2)
        >>> bases = tx.init({"w": jnp.zeros((6, 4)), "b": jnp.zeros(4)}).bases
        >>> bases["w"].shape, bases["b"] is None
        ((6, 2), True)
    """

    count: jax.Array
    bases: Any


def _as_rows(x: jax.Array) -> jax.Array:
    """View a leaf as ``(shape[0], rest)``; a vector or scalar is one row."""
    return x.reshape(x.shape[0], -1) if x.ndim >= 2 else x.reshape(1, -1)


def _leaf_basis(stacked: jax.Array, rank_divisor: int) -> jax.Array | None:
    num = stacked.shape[0]
    if stacked.ndim < 3:  # task axis + a vector: no matrix structure to decompose
        return None
    mats = stacked.reshape(num, stacked.shape[1], -1).astype(
        jnp.promote_types(stacked.dtype, jnp.float32)
    )
    rank = min(mats.shape[1], mats.shape[2])
    keep = rank // rank_divisor
    if keep == 0:
        return None
    per_task = max(1, rank // num)
    left = [jnp.linalg.svd(m, full_matrices=False)[0][:, :per_task] for m in mats]
    combined = jnp.linalg.svd(jnp.concatenate(left, axis=1), full_matrices=False)[0]
    return combined[:, :keep]


def shared_subspace(task_vectors: Any, *, rank_divisor: int = 6) -> Any:
    r"""Per-leaf orthonormal basis of the subspace shared by all task vectors (DOGE).

    For every leaf with ``ndim >= 2`` (viewed as an ``m x n`` matrix, ``m = shape[0]``, rank
    bound :math:`r = \min(m, n)`): take the top :math:`\lfloor r / T \rfloor` left singular
    vectors of each task's matrix :math:`\tau_i = U_i S_i V_i^\top`, concatenate them, and keep
    the top :math:`k = \lfloor r / \text{rank\_divisor} \rfloor` left singular vectors of the
    concatenation. Leaves with fewer dimensions (biases, norms) and leaves with :math:`k = 0`
    get ``None``.

    Args:
        task_vectors: pytree like the params with a leading task axis ``T`` (fine-tuned minus
            pre-trained weights, one per task).
        rank_divisor: ``k = r // rank_divisor`` basis vectors per leaf (authors' default 6).

    Returns:
        pytree like the params with ``(m, k)`` bases or ``None`` leaves.

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.transforms import shared_subspace
        >>> u = jnp.array([1.0, 0.0, 0.0])
        >>> tv = {"w": jnp.stack([jnp.outer(u, jnp.array([1.0, 2.0, 0.0])),
        ...                       jnp.outer(u, jnp.array([0.0, 1.0, 3.0]))])}
        >>> basis = shared_subspace(tv, rank_divisor=3)["w"]  # k = 3 // 3 = 1
        >>> bool(jnp.allclose(jnp.abs(basis[:, 0]), u))
        True

    References:
        Wei, Tang, Shen, Hu, Yuan, Cao, "Modeling Multi-Task Model Merging as Adaptive
        Projective Gradient Descent", ICML 2025. https://arxiv.org/abs/2501.01230
    """
    rank_divisor = check_int("rank_divisor", rank_divisor, 1)
    check_stacked_like("task_vectors", task_vectors, jax.tree.map(lambda x: x[0], task_vectors))
    leaves, treedef = jax.tree.flatten(task_vectors)
    return jax.tree.unflatten(treedef, [_leaf_basis(x, rank_divisor) for x in leaves])


def merging_coefficients(task_vectors: Any, *, scale: Any = 0.07) -> Any:
    r"""Task-aware, training-free merging coefficients :math:`\lambda_{i,l} = s / \|\tau_{i,l}\|`.

    DOGE reads the merging coefficients as adaptive learning rates: every task ``i`` and leaf
    (layer) ``l`` gets :math:`\lambda_{i,l} = s / \|\tau_{i,l}\|_F`, so no task dominates the
    merge by the sheer size of its update (authors' code: :math:`s = 0.07`).

    Args:
        task_vectors: pytree with a leading task axis ``T``.
        scale: :math:`s > 0`.

    Returns:
        pytree like ``task_vectors`` with ``(T,)`` leaves (zero where a task vector leaf is 0).

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.transforms import merging_coefficients
        >>> merging_coefficients({"w": jnp.array([[3.0, 4.0], [0.0, 1.0]])}, scale=1.0)["w"]
        Array([0.2, 1. ], dtype=float32)
    """
    check_real("scale", scale, 0.0, lo_open=True)

    def leaf(x):
        norms = jnp.sqrt(jnp.sum(jnp.square(x.reshape(x.shape[0], -1)), axis=1))
        return jnp.where(norms > 0, scale / jnp.where(norms > 0, norms, 1.0), 0.0)

    return jax.tree.map(leaf, task_vectors)


def merging_gap_losses(delta: Any, task_vectors: Any, coefficients: Any) -> jax.Array:
    r"""DOGE's data-free per-task losses: the gap between each expert and the merged model.

    With the merged update :math:`\tau_m = \sum_i \lambda_i (\tau_i + \Delta)` (per leaf),
    task ``j``'s loss is the squared first-order change of its expert's outputs, row by row:

    .. math:: L_j(\Delta) = \sum_l \sum_{\text{rows } r}
              \Big(\sum_c \tau_{j,l}[r, c]\, (\tau_{j,l} - \tau_{m,l})[r, c]\Big)^2 ,

    (rows = the leaf's leading axis; a vector leaf is one row). Sum over ``j`` and minimize
    over the modification :math:`\Delta` with :func:`scale_by_adaptive_projection`; the
    per-task gradients are ``jax.jacrev(merging_gap_losses)(delta, ...)``.

    Args:
        delta: pytree like the params, the modification :math:`\Delta`.
        task_vectors: the same pytree with a leading task axis ``T``.
        coefficients: :func:`merging_coefficients` output (``(T,)`` leaves).

    Returns:
        ``(T,)`` array of per-task losses.

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.transforms import merging_gap_losses
        >>> tv = {"w": jnp.array([[[1.0, 0.0]], [[0.0, 2.0]]])}  # T = 2 tasks, one 1x2 leaf
        >>> lam = {"w": jnp.array([0.5, 0.5])}
        >>> merging_gap_losses({"w": jnp.zeros((1, 2))}, tv, lam)  # tau_m = (0.5, 1)
        Array([0.25, 4.  ], dtype=float32)
    """

    def leaf(d, tv, lam):
        lam = lam.reshape((-1,) + (1,) * d.ndim)
        merged = jnp.sum(lam * (tv + d[None]), axis=0)
        per_row = jax.vmap(lambda t: jnp.sum(_as_rows(t * (t - merged)), axis=1))(tv)
        return jnp.sum(jnp.square(per_row), axis=1)

    parts = jax.tree.map(leaf, delta, task_vectors, coefficients)
    return sum(jax.tree.leaves(parts))


def scale_by_adaptive_projection(
    task_vectors: Any,
    *,
    reduction: Reduction,
    rank_divisor: int = 6,
) -> optax.GradientTransformationExtraArgs:
    r"""DOGE's projected step: reduce per-task gradients, remove the shared-subspace component.

    The per-task gradients :math:`g_1, \dots, g_T` of the merging objective (e.g. of
    :func:`merging_gap_losses` with respect to the modification :math:`\Delta`) are reduced
    (``"sum"``, the paper's objective, or ``"mean"``) and, leaf by leaf, projected onto the
    orthogonal complement of the subspace shared by all task vectors
    (:func:`shared_subspace`, basis :math:`U`):

    .. math:: u = (I - U U^\top) \,\mathrm{reduce}_i\, g_i .

    The modification :math:`\Delta` therefore never moves along the directions all tasks
    share, which keeps the shared knowledge of the merged model intact while conflicts are
    optimized away; the merging coefficients of :func:`merging_coefficients` play the role of
    task-aware adaptive learning rates inside the objective. Leaves without a basis (vectors,
    or ``k = 0``) are not projected. The authors follow the projection with Adam
    (``optax.chain(scale_by_adaptive_projection(...), optax.adam(1e-4))``); they also apply a
    top-30% magnitude mask to the final task vectors, which is not part of this transform.

    **How the per-task gradients arrive.** As the extra argument ``per_task_grads``: a pytree
    like the params with a leading task axis of the same size ``T`` as ``task_vectors``. The
    ``updates`` argument only fixes the output's structure and dtypes.

    Args:
        task_vectors: pytree like the params with a leading task axis ``T``.
        reduction: ``"sum"`` or ``"mean"`` over tasks, named explicitly.
        rank_divisor: size of the shared subspace, ``k = min(m, n) // rank_divisor`` per leaf.

    Returns:
        A ``GradientTransformationExtraArgs`` with :class:`AdaptiveProjectionState`; memory:
        ``m k`` floats per projected leaf.

    Raises:
        ValueError: bad ``reduction`` or ``rank_divisor``, task vectors without a common
            leading axis (construction); task vectors that do not match the params (``init``);
            missing ``per_task_grads`` or a task count other than ``T`` (first call).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.transforms import scale_by_adaptive_projection
        >>> u = jnp.array([1.0, 0.0])
        >>> tv = {"w": jnp.stack([jnp.outer(u, jnp.array([1.0, 0.0])),
        ...                       jnp.outer(u, jnp.array([1.0, 1.0]))])}
        >>> tx = scale_by_adaptive_projection(tv, reduction="sum", rank_divisor=2)
        >>> state = tx.init({"w": jnp.zeros((2, 2))})
        >>> g = {"w": jnp.ones((2, 2, 2))}  # two tasks
        >>> out, state = tx.update({"w": jnp.zeros((2, 2))}, state, per_task_grads=g)
        >>> out["w"]  # the shared row direction u = e_1 is removed
        Array([[0., 0.],
               [2., 2.]], dtype=float32)

    References:
        Wei, Tang, Shen, Hu, Yuan, Cao, "Modeling Multi-Task Model Merging as Adaptive
        Projective Gradient Descent", ICML 2025. https://arxiv.org/abs/2501.01230
    """
    where = "scale_by_adaptive_projection"
    check_choice("reduction", reduction, ("sum", "mean"))
    rank_divisor = check_int("rank_divisor", rank_divisor, 1)
    num_tasks = check_stacked_like(
        "task_vectors", task_vectors, jax.tree.map(lambda x: x[0], task_vectors)
    )

    def init_fn(params):
        check_stacked_like("task_vectors", task_vectors, params)
        return AdaptiveProjectionState(
            count=jnp.zeros((), jnp.int32),
            bases=shared_subspace(task_vectors, rank_divisor=rank_divisor),
        )

    def update_fn(updates, state, params=None, *, per_task_grads=None, **extra):
        del params, extra
        num = check_per_task_grads(
            per_task_grads, updates, where, num_tasks, f"task_vectors has {num_tasks}"
        )

        def leaf(g, u, basis):
            dtype = jnp.promote_types(g.dtype, jnp.float32)
            red = jnp.sum(g.astype(dtype), axis=0)
            if reduction == "mean":
                red = red / num
            if basis is not None:
                rows = red.reshape(red.shape[0], -1)
                basis = basis.astype(dtype)
                red = (rows - basis @ (basis.T @ rows)).reshape(red.shape)
            return red.astype(jnp.result_type(u))

        out = jax.tree.map(leaf, per_task_grads, updates, state.bases, is_leaf=lambda x: x is None)
        return out, AdaptiveProjectionState(
            count=optax.safe_increment(state.count), bases=state.bases
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def adaptive_projective_gd(
    learning_rate: optax.ScalarOrSchedule,
    task_vectors: Any,
    *,
    reduction: Reduction,
    rank_divisor: int = 6,
) -> optax.GradientTransformationExtraArgs:
    r"""Adaptive projective gradient descent on the merging modification :math:`\Delta`.

    :func:`scale_by_adaptive_projection` followed by ``optax.scale_by_learning_rate``:
    :math:`\Delta \leftarrow \Delta - \eta (I - UU^\top) \mathrm{reduce}_i \nabla L_i(\Delta)`.
    ``update`` needs the extra argument ``per_task_grads``.

    Args:
        learning_rate: a float or an optax schedule.
        task_vectors: pytree like the params with a leading task axis ``T``.
        reduction: ``"sum"`` or ``"mean"`` over tasks.
        rank_divisor: shared-subspace size divisor.

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> from gradlab.transforms import (adaptive_projective_gd, merging_coefficients,
        ...                                 merging_gap_losses)
        >>> tv = {"w": jax.random.normal(jax.random.key(0), (3, 6, 4))}
        >>> lam = merging_coefficients(tv, scale=0.3)
        >>> opt = adaptive_projective_gd(1e-3, tv, reduction="sum", rank_divisor=2)
        >>> delta = {"w": jnp.zeros((6, 4))}; state = opt.init(delta)
        >>> for _ in range(20):
        ...     g = jax.jacrev(merging_gap_losses)(delta, tv, lam)
        ...     u, state = opt.update(delta, state, per_task_grads=g)
        ...     delta = optax.apply_updates(delta, u)
        >>> bool(merging_gap_losses(delta, tv, lam).sum() < merging_gap_losses(
        ...     jax.tree.map(jnp.zeros_like, delta), tv, lam).sum())
        True

    References:
        Wei et al., ICML 2025. https://arxiv.org/abs/2501.01230
    """
    check_learning_rate(learning_rate)
    return optax.chain(
        scale_by_adaptive_projection(task_vectors, reduction=reduction, rank_divisor=rank_divisor),
        optax.scale_by_learning_rate(learning_rate),
    )
