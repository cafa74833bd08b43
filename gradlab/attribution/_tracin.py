"""TracIn: training-data influence as a sum over checkpoints of gradient inner products."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import lax

from gradlab._src.errors import check_choice
from gradlab._src.tree import ravel, tree_size
from gradlab._src.typing import Batch, Params
from gradlab.attribution._common import (
    check_callable,
    check_scalar_loss,
    gradient_chunk_size,
    map_examples,
    num_examples,
    num_models,
    static_fn,
)
from gradlab.attribution._per_example import example_grad_fn
from gradlab.attribution._projection import PROJECTIONS, check_dim, check_key, make_projector

__all__ = ["tracin"]


def flat_grad_fn(
    loss_fn: Any, params: Params, project: Callable[[jax.Array], jax.Array] | None
) -> Callable[[Any], jax.Array]:
    """``example -> (projected) flat gradient`` of ``loss_fn`` on that example."""
    grad_one = example_grad_fn(loss_fn, params)

    def one(example: Any) -> jax.Array:
        flat, _ = ravel(grad_one(example))
        return flat if project is None else project(flat)

    return one


@partial(jax.jit, static_argnums=(0,), static_argnames=("dim", "projection", "chunk_size"))
def _tracin(loss_fn, checkpoints, lrs, train, test, key, *, dim, projection, chunk_size):
    def one_checkpoint(acc: jax.Array, inputs: Any) -> tuple[jax.Array, None]:
        k, params, lr = inputs
        project = (
            None
            if dim is None
            else make_projector(projection, jax.random.fold_in(key, k), params, dim)
        )
        feature = flat_grad_fn(loss_fn, params, project)
        test_features = map_examples(feature, test, chunk_size)  # (N_test, P or dim)
        # stream the training examples: only a chunk of their gradients exists at a time
        cols = map_examples(lambda z: test_features @ feature(z), train, chunk_size)
        return acc + lr * cols.T, None

    n_train = jax.tree_util.tree_leaves(train)[0].shape[0]
    n_test = jax.tree_util.tree_leaves(test)[0].shape[0]
    dtype = lrs.dtype
    num = lrs.shape[0]
    acc, _ = lax.scan(
        one_checkpoint, jnp.zeros((n_test, n_train), dtype), (jnp.arange(num), checkpoints, lrs)
    )
    return acc


def tracin(
    loss_fn: Callable[[Params, Batch], jax.Array],
    checkpoints: Params,
    train_batch: Batch,
    test_batch: Batch,
    *,
    learning_rates: Any,
    projection_dim: int | None = None,
    key: jax.Array | None = None,
    projection: Literal["rademacher", "kronecker"] = "rademacher",
    chunk_size: int | None = None,
) -> jax.Array:
    r"""TracInCP scores: influence of every training example on every test example.

    .. math:: \mathrm{TracIn}(z_j, z'_i) = \sum_{k=1}^{K} \eta_k\,
              \langle \nabla_\theta \ell(\theta_k, z'_i), \nabla_\theta \ell(\theta_k, z_j)
              \rangle,

    summed over ``K`` checkpoints :math:`\theta_k` saved during training with learning rates
    :math:`\eta_k`; each gradient is that of ``loss_fn`` on one example as a batch of size one.
    Positive scores mark proponents (training on :math:`z_j` lowered the test loss).

    With ``projection_dim = k`` every gradient is first multiplied by a random Rademacher matrix
    :math:`R_k^\top` (entries :math:`\pm 1/\sqrt{k}`, a fresh one per checkpoint, generated in
    blocks so it is never stored): the inner products are unbiased and, by the
    Johnson-Lindenstrauss lemma, within :math:`\varepsilon \lVert g \rVert \lVert g' \rVert` of
    the exact ones with probability at least :math:`1 - 4 e^{-k(\varepsilon^2/2 -
    \varepsilon^3/3)/2}` per pair (Achlioptas 2003, with polarisation).

    Memory: the test gradients of one checkpoint (``N_test x P``, or ``N_test x k`` projected),
    one chunk of training gradients and the ``N_test x N_train`` result; training gradients are
    streamed, never stored. Checkpoints are scanned one at a time.

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``.
        checkpoints: params of ``K`` checkpoints stacked along a leading axis of every leaf
            (``jax.tree.map(lambda *p: jnp.stack(p), *list_of_params)``).
        train_batch: pytree with a leading axis of ``N_train`` examples.
        test_batch: pytree with a leading axis of ``N_test`` examples.
        learning_rates: a scalar or ``(K,)`` learning rates, one per checkpoint.
        projection_dim: random projection dimension ``k >= 1``; ``None`` for exact products.
        key: PRNG key for the projection; required when ``projection_dim`` is given.
        projection: ``"rademacher"`` (i.i.d. entries, ``P x dim`` multiply-adds per example) or
            ``"kronecker"`` (``R_a ⊗ R_b`` on the gradient reshaped to a near-square matrix,
            about ``P sqrt(dim)``; unbiased too, with heavier tails; pick ``dim`` with a
            balanced factorisation such as a power of two).
        chunk_size: examples per vmapped chunk; ``None`` picks as many as keep one chunk of
            gradients within 2**24 entries (all ``N`` for small models).

    Returns:
        ``(N_test, N_train)`` scores.

    Raises:
        ValueError: ``projection_dim < 1``, a projection without ``key``, checkpoints whose
            leaves disagree on ``K``, ``learning_rates`` of the wrong shape, batch leaves with
            different leading sizes or ``chunk_size < 1``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> def loss_fn(w, batch):
        ...     x, y = batch
        ...     return 0.5 * jnp.mean((x @ w - y) ** 2)
        >>> ckpts = jnp.stack([jnp.zeros(2), jnp.ones(2)])  # K = 2 checkpoints
        >>> train = (jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([1.0, -1.0]))
        >>> test = (jnp.array([[1.0, 1.0]]), jnp.array([0.0]))
        >>> gl.attribution.tracin(loss_fn, ckpts, train, test, learning_rates=0.1)
        Array([[0. , 0.4]], dtype=float32)

    References:
        Pruthi, Liu, Kale, Sundararajan, "Estimating Training Data Influence by Tracing
        Gradient Descent", NeurIPS 2020, https://arxiv.org/abs/2002.08484. Achlioptas,
        "Database-friendly random projections", JCSS 2003.
    """
    check_callable("loss_fn", loss_fn)
    if projection_dim is not None:
        projection_dim = check_dim("projection_dim", projection_dim)
        check_key("key", key, "a random projection (projection_dim is set)")
    check_choice("projection", projection, PROJECTIONS)
    num = num_models("checkpoints", checkpoints)
    num_examples("train_batch", train_batch)
    num_examples("test_batch", test_batch)
    first = jax.tree_util.tree_map(lambda p: p[0], checkpoints)
    chunk_size = gradient_chunk_size(chunk_size, tree_size(first))
    check_scalar_loss("loss_fn", loss_fn, first, train_batch)
    lrs = jnp.asarray(learning_rates, dtype=jnp.result_type(float, *jax.tree.leaves(first)))
    if lrs.ndim == 0:
        lrs = jnp.full((num,), lrs)
    if lrs.shape != (num,):
        raise ValueError(
            f"learning_rates has shape {lrs.shape}: expected a scalar or ({num},), one per "
            "checkpoint"
        )
    return _tracin(
        static_fn(loss_fn),
        checkpoints,
        lrs,
        train_batch,
        test_batch,
        key,
        dim=projection_dim,
        projection=projection,
        chunk_size=chunk_size,
    )
