"""transforms-B's rows for the contract suite; see ``_registry.py`` for the Row fields."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from gradlab import transforms as gt
from tests.transforms._row import Ctx, Row, per_example_grads, per_task_grads

_KEY = jax.random.key(0)


def _per_example(ctx: Ctx) -> dict:
    return {"per_example_grads": per_example_grads(ctx, 4)}


def _per_task(ctx: Ctx) -> dict:
    return {"per_task_grads": per_task_grads(ctx, 2)}


def _margins(ctx: Ctx) -> dict:
    # Normalized LR+GD scales the gradient by beta = 1 / mean(sigmoid(-margins)). The suite's
    # problems are not classification problems, so the row feeds params-dependent stand-in
    # margins in [-1, 1] (beta varies in [1.4, 3.7] along the run): GD with a varying step.
    flat = jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(ctx.params)])
    return {"margins": jnp.tanh(flat[:4])}


def _task_vectors_like(params):
    """Two fixed random task vectors shaped like ``params`` (leading task axis 2)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    stacked = [jax.random.normal(k, (2, *jnp.shape(x)), jnp.float32) for k, x in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, stacked)


def _adaptive_projective_gd(learning_rate, *, reduction, rank_divisor):
    """``adaptive_projective_gd`` whose task vectors follow the problem's params structure.

    The suite runs one row on two problems with different params pytrees, while DOGE fixes its
    task vectors at construction; this shim builds them from the params at ``init`` (the
    update only uses the bases stored in the state).
    """

    def make(tree):
        return gt.adaptive_projective_gd(
            learning_rate,
            _task_vectors_like(tree),
            reduction=reduction,
            rank_divisor=rank_divisor,
        )

    def init_fn(params):
        return make(params).init(params)

    def update_fn(updates, state, params=None, **extra):
        return make(updates).update(updates, state, params, **extra)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


ROWS_B: list[Row] = [
    Row(
        name="adadagrad",
        factory=gt.adadagrad,
        learning_rate=0.5,
        kwargs={"batch_size": 4, "max_batch_size": 64, "eta": 0.1},
        static_hparams=("batch_size", "max_batch_size"),
        extra_args_fn=_per_example,
        required_extra_args=("per_example_grads",),
        quadratic_tol=1e-3,
        rosenbrock_tol=0.1,
    ),
    Row(
        name="adadagrad-norm-augmented",
        factory=gt.adadagrad,
        learning_rate=0.5,
        kwargs={
            "batch_size": 2,
            "max_batch_size": 32,
            "test": "augmented",
            "variant": "adagrad_norm",
            "theta": 0.2,
            "nu": 0.2,
        },
        static_hparams=("batch_size", "max_batch_size"),
        extra_args_fn=_per_example,
        required_extra_args=("per_example_grads",),
        quadratic_tol=5e-3,
        rosenbrock_tol=0.2,
    ),
    Row(
        name="dicesgd",
        factory=gt.dicesgd,
        learning_rate=0.1,
        kwargs={"clip_norm": 1.0, "error_clip_norm": 2.0, "noise_multiplier": 0.0, "key": _KEY},
        static_hparams=("key",),
        extra_args_fn=_per_example,
        required_extra_args=("per_example_grads",),
        quadratic_tol=1e-3,
        rosenbrock_tol=0.1,
        rosenbrock_learning_rate=3e-3,
    ),
    Row(
        name="pcgrad",
        factory=gt.pcgrad,
        learning_rate=0.1,
        kwargs={"reduction": "mean", "key": _KEY},
        static_hparams=("reduction", "key"),
        extra_args_fn=_per_task,
        required_extra_args=("per_task_grads",),
        quadratic_tol=1e-3,
        rosenbrock_tol=0.1,
        rosenbrock_learning_rate=2e-3,
    ),
    Row(
        name="adaptive-projection",
        factory=_adaptive_projective_gd,
        learning_rate=0.1,
        kwargs={"reduction": "mean", "rank_divisor": 3},
        static_hparams=("reduction", "rank_divisor"),
        extra_args_fn=_per_task,
        required_extra_args=("per_task_grads",),
        # The (4, 3) leaf may not move along its 1-dim shared subspace (k = 3 // 3): the best
        # reachable ratio is the restricted minimum 0.0654 (weighted least squares, computed
        # offline for these task vectors); the vector leaves are not projected.
        quadratic_tol=0.07,
        rosenbrock_tol=0.1,
        rosenbrock_learning_rate=2e-3,
    ),
    Row(
        name="random-subspace-dense",
        factory=gt.random_subspace,
        learning_rate=0.1,
        kwargs={"dim": 4, "key": _KEY},
        static_hparams=("dim", "key", "chunk_size"),
        # A 4-dim subspace of the 15-dim quadratic: the best reachable loss ratio is the
        # restricted minimum min_z f(P z) / f(0) = 0.5645 for this key (computed in closed form).
        quadratic_tol=0.58,
        rosenbrock_tol=0.1,
        rosenbrock_learning_rate=2e-3,
    ),
    Row(
        name="random-subspace-chunked-adam",
        factory=gt.random_subspace,
        learning_rate=0.1,
        kwargs={
            "dim": 4,
            "key": _KEY,
            "projection": "chunked",
            "chunk_size": 3,
            "inner": optax.scale_by_adam(),
        },
        static_hparams=("dim", "key", "projection", "chunk_size", "inner"),
        # Restricted minimum for this P (chunk_size 3 draws another P): 0.8033.
        quadratic_tol=0.82,
        rosenbrock_tol=0.1,
    ),
    Row(
        name="normalized-gd",
        factory=gt.normalized_gd,
        learning_rate=0.05,
        rosenbrock_learning_rate=4e-4,
        rosenbrock_steps=1000,
        extra_args_fn=_margins,
        required_extra_args=("margins",),
        quadratic_tol=1e-3,
        rosenbrock_tol=0.15,
    ),
]
