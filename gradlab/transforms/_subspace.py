"""Training in a fixed random subspace: theta = theta0 + P z (Li et al., 2018)."""

from __future__ import annotations

import functools
import math
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradlab._src.errors import check_choice, check_int
from gradlab._src.tree import tree_dtype, tree_size
from gradlab.transforms._dicesgd import canonical_key, check_learning_rate
from gradlab.transforms._fastfood import (
    fastfood_column_norms,
    fastfood_extend,
    fastfood_factors,
    fastfood_restrict,
)
from gradlab.transforms._pcgrad import unravel_like

__all__ = [
    "RandomSubspaceState",
    "random_subspace",
    "random_subspace_basis",
    "scale_by_random_subspace",
]

Projection = Literal["dense", "chunked", "fastfood"]


class RandomSubspaceState(NamedTuple):
    """State of :func:`scale_by_random_subspace`.

    Attributes:
        count: int32 scalar, number of updates so far.
        key: the PRNG key (typed, shape ``()``) that defines the subspace; never split.
        z: ``(d,)`` sum of the subspace updates emitted so far: the transform's outputs sum to
            ``P z`` (so after ``scale_by_learning_rate(lr)`` with a constant ``lr``,
            ``theta_t - theta_0 = -lr * P z``).
        column_norms: ``(d,)`` norms of the raw Gaussian columns (``P`` has unit columns).
        basis: ``(D, d)`` the normalized projection ``P`` for ``projection="dense"``; ``None``
            for ``"chunked"``, which regenerates ``P`` from ``key`` at every step; for
            ``"fastfood"`` the ``FastfoodFactors`` (four ``(ceil(D / L), L)`` arrays, ``L`` the
            smallest power of two ``>= d``).
        inner_state: state of the ``inner`` transform acting on the ``(d,)`` coordinates.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.transforms import scale_by_random_subspace
        >>> tx = scale_by_random_subspace(2, key=jax.random.key(0), projection="chunked")
        >>> state = tx.init(jnp.zeros(5))
        >>> state.z.shape, state.basis is None
        ((2,), True)
    """

    count: jax.Array
    key: jax.Array
    z: jax.Array
    column_norms: jax.Array
    basis: jax.Array | None
    inner_state: Any


def _layout(num_params: int, chunk_size: int) -> tuple[int, int]:
    chunk = min(chunk_size, num_params)
    return chunk, math.ceil(num_params / chunk)


def _chunk(key: jax.Array, c: jax.Array, chunk: int, dim: int, dtype: Any) -> jax.Array:
    return jax.random.normal(jax.random.fold_in(key, c), (chunk, dim), dtype)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _column_norms(key, num_params, dim, chunk_size, dtype):
    chunk, num_chunks = _layout(num_params, chunk_size)

    def body(acc, c):
        rows = c * chunk + jnp.arange(chunk)
        block = jnp.where((rows < num_params)[:, None], _chunk(key, c, chunk, dim, dtype), 0.0)
        return acc + jnp.sum(block * block, axis=0), None

    sq, _ = jax.lax.scan(body, jnp.zeros(dim, dtype), jnp.arange(num_chunks))
    return jnp.sqrt(sq)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _dense(key, num_params, dim, chunk_size, dtype):
    chunk, num_chunks = _layout(num_params, chunk_size)
    blocks = jax.vmap(lambda c: _chunk(key, c, chunk, dim, dtype))(jnp.arange(num_chunks))
    return blocks.reshape(num_chunks * chunk, dim)[:num_params]


@functools.partial(jax.jit, static_argnums=(2, 3))
def _restrict(key, g, dim, chunk_size):
    """``P_raw^T g`` for a flat ``g`` of size ``D``, one chunk of rows at a time."""
    num_params = g.shape[0]
    chunk, num_chunks = _layout(num_params, chunk_size)
    g = jnp.pad(g, (0, num_chunks * chunk - num_params)).reshape(num_chunks, chunk)

    def body(acc, c):
        return acc + _chunk(key, c, chunk, dim, g.dtype).T @ g[c], None

    out, _ = jax.lax.scan(body, jnp.zeros(dim, g.dtype), jnp.arange(num_chunks))
    return out


@functools.partial(jax.jit, static_argnums=(2, 3))
def _extend(key, z, num_params, chunk_size):
    """``P_raw z`` as a flat vector of size ``D``, one chunk of rows at a time."""
    chunk, num_chunks = _layout(num_params, chunk_size)
    dim = z.shape[0]
    rows = jax.lax.map(lambda c: _chunk(key, c, chunk, dim, z.dtype) @ z, jnp.arange(num_chunks))
    return rows.reshape(-1)[:num_params]


def random_subspace_basis(
    like: Any,
    dim: int,
    *,
    key: jax.Array,
    chunk_size: int = 4096,
    projection: Projection = "dense",
) -> jax.Array:
    r"""The ``(D, d)`` projection ``P`` (unit-norm columns) used by the subspace transform.

    ``"dense"`` and ``"chunked"`` (:func:`scale_by_random_subspace`) use this same Gaussian
    matrix for the same ``key``, ``dim`` and ``chunk_size``; ``projection="fastfood"`` gives the
    Fastfood matrix of that mode instead. Rows are in the order of the flattened leaves of
    ``like``. Meant for inspection and tests on small models (it materializes ``D x d``).

    Args:
        like: a pytree shaped like the params (``D`` scalars in total).
        dim: subspace dimension ``d``, ``1 <= d <= D``.
        key: the PRNG key given to the transform.
        chunk_size: rows generated per random draw (must match the transform's).
        projection: ``"dense"`` / ``"chunked"`` (the same matrix) or ``"fastfood"``.

    Returns:
        ``(D, d)`` array (float32, or float64 for float64 params).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.transforms import random_subspace_basis
        >>> p = random_subspace_basis(jnp.zeros(10), 3, key=jax.random.key(0))
        >>> p.shape, bool(jnp.allclose(jnp.linalg.norm(p, axis=0), 1.0))
        ((10, 3), True)
    """
    num_params = tree_size(like)
    dim = check_int("dim", dim, 1, num_params)
    chunk_size = check_int("chunk_size", chunk_size, 1)
    check_choice("projection", projection, ("dense", "chunked", "fastfood"))
    key = canonical_key(key, "random_subspace_basis")
    dtype = jnp.promote_types(tree_dtype(like), jnp.float32)
    if projection == "fastfood":
        factors = fastfood_factors(key, num_params, dim, dtype)
        norms = fastfood_column_norms(factors, num_params, dim)
        eye = jnp.eye(dim, dtype=dtype)
        cols = jax.vmap(lambda e: fastfood_extend(factors, e, num_params))(eye)
        return cols.T / norms
    norms = _column_norms(key, num_params, dim, chunk_size, dtype)
    return _dense(key, num_params, dim, chunk_size, dtype) / norms


def scale_by_random_subspace(
    dim: int,
    *,
    key: jax.Array | None = None,
    projection: Projection = "dense",
    chunk_size: int = 4096,
    inner: optax.GradientTransformation | None = None,
) -> optax.GradientTransformation:
    r"""Restrict updates to a fixed random ``d``-dimensional subspace: :math:`\theta = \theta_0 + P z`.

    :math:`P \in \mathbb{R}^{D \times d}` has i.i.d. Gaussian entries with columns normalized to
    unit length (Li et al.: nearly orthonormal for large ``D``), drawn once from ``key``. The
    gradient with respect to the subspace coordinates is :math:`\nabla_z = P^\top \nabla_\theta`;
    the optional ``inner`` transform (e.g. ``optax.scale_by_adam()``) turns it into a step
    :math:`u` on :math:`z`, and the emitted update is :math:`P u`:

    .. math:: u_t = \mathrm{inner}(P^\top g_t), \qquad \text{update}_t = P u_t,
              \qquad z_{t+1} = z_t + u_t .

    With ``optax.scale_by_learning_rate(lr)`` after it the params move as
    :math:`\theta_t = \theta_0 - \mathrm{lr}\, P z_t` (constant ``lr``), i.e. gradient descent
    on :math:`z \mapsto f(\theta_0 + P z)`; measuring the smallest ``d`` that reaches a target
    loss gives the paper's intrinsic dimension.

    ``projection="dense"`` stores ``P`` in the state (``D d`` floats, fast).
    ``projection="chunked"`` is the memory-light option: only ``key`` and the ``d`` column
    norms are stored, and every step regenerates ``P`` from the key ``chunk_size`` rows at a
    time inside a ``lax.scan`` (two passes, ``O(chunk_size * d)`` extra memory, ~2x the
    random-number work of one dense draw). Both modes use exactly the same ``P``
    (:func:`random_subspace_basis`). ``projection="fastfood"`` is Li et al.'s choice for large
    ``D``: ``P`` is a stack of ``ceil(D / L)`` Fastfood blocks
    :math:`H G \Pi H B / \sqrt{L}` (Walsh-Hadamard ``H``, random signs ``B``, permutation
    :math:`\Pi`, Gaussian diagonal ``G``; ``L`` the smallest power of two ``>= d``) with
    columns normalized exactly; each product costs ``O(D log d)`` and the state holds
    ``4 L ceil(D / L)`` numbers (about ``4 D``) instead of ``D d``. It is a different random
    matrix from the Gaussian one (:func:`random_subspace_basis` with ``projection="fastfood"``).

    Args:
        dim: subspace dimension ``d``; checked at ``init`` to satisfy ``1 <= d <= D``.
        key: PRNG key defining the subspace (required).
        projection: ``"dense"``, ``"chunked"`` or ``"fastfood"``.
        chunk_size: rows of ``P`` generated per random draw (``"dense"`` and ``"chunked"``; part
            of the definition of ``P``; unused by ``"fastfood"``).
        inner: optional transform on the ``(d,)`` subspace gradient (default: identity).

    Returns:
        A ``GradientTransformation`` with :class:`RandomSubspaceState`. Memory: ``D d`` floats
        (dense), ``2 d`` (chunked) or about ``4 D`` (fastfood, up to ``8 D`` when ``d`` is just
        above a power of two), plus ``inner``'s state on ``d`` coordinates.

    Raises:
        ValueError: missing ``key``, unknown ``projection``, ``dim < 1`` or ``chunk_size < 1``
            (construction); ``dim`` larger than the number of parameters (``init``).

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> from gradlab.transforms import random_subspace
        >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
        >>> opt = random_subspace(0.1, 5, key=jax.random.key(0), projection="chunked")
        >>> state = opt.init(params)
        >>> grads = jax.tree.map(jnp.ones_like, params)
        >>> updates, state = opt.update(grads, state)
        >>> jax.tree.map(jnp.shape, updates)
        {'b': (3,), 'w': (4, 3)}

    References:
        Li, Farkhoor, Liu, Yosinski, "Measuring the Intrinsic Dimension of Objective
        Landscapes", ICLR 2018. https://arxiv.org/abs/1804.08838
    """
    where = "scale_by_random_subspace"
    dim = check_int("dim", dim, 1)
    chunk_size = check_int("chunk_size", chunk_size, 1)
    check_choice("projection", projection, ("dense", "chunked", "fastfood"))
    key = canonical_key(key, where)
    inner = optax.identity() if inner is None else inner

    def init_fn(params):
        num_params = tree_size(params)
        if dim > num_params:
            raise ValueError(
                f"dim={dim} is out of range: expected 1 <= dim <= {num_params} (the number of "
                "parameters)"
            )
        dtype = jnp.promote_types(tree_dtype(params), jnp.float32)
        basis = None
        if projection == "fastfood":
            basis = fastfood_factors(key, num_params, dim, dtype)
            norms = fastfood_column_norms(basis, num_params, dim)
        else:
            norms = _column_norms(key, num_params, dim, chunk_size, dtype)
        if projection == "dense":
            basis = _dense(key, num_params, dim, chunk_size, dtype) / norms
        z = jnp.zeros(dim, dtype)
        return RandomSubspaceState(
            count=jnp.zeros((), jnp.int32),
            key=key,
            z=z,
            column_norms=norms,
            basis=basis,
            inner_state=inner.init(z),
        )

    def update_fn(updates, state, params=None):
        dtype = state.z.dtype
        leaves = jax.tree.leaves(updates)
        flat = jnp.concatenate([x.reshape(-1).astype(dtype) for x in leaves])
        if projection == "dense":
            grad_z = state.basis.T @ flat
        elif projection == "fastfood":
            grad_z = fastfood_restrict(state.basis, flat, dim) / state.column_norms
        else:
            grad_z = _restrict(state.key, flat, dim, chunk_size) / state.column_norms
        step, inner_state = inner.update(grad_z, state.inner_state, params)
        step = step.astype(dtype)
        if projection == "dense":
            out = state.basis @ step
        elif projection == "fastfood":
            out = fastfood_extend(state.basis, step / state.column_norms, flat.shape[0])
        else:
            out = _extend(state.key, step / state.column_norms, flat.shape[0], chunk_size)
        new_state = RandomSubspaceState(
            count=optax.safe_increment(state.count),
            key=state.key,
            z=state.z + step,
            column_norms=state.column_norms,
            basis=state.basis,
            inner_state=inner_state,
        )
        return unravel_like(out, updates), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def random_subspace(
    learning_rate: optax.ScalarOrSchedule,
    dim: int,
    *,
    key: jax.Array | None = None,
    projection: Projection = "dense",
    chunk_size: int = 4096,
    inner: optax.GradientTransformation | None = None,
) -> optax.GradientTransformation:
    r"""SGD (or ``inner``) in a fixed random subspace: :func:`scale_by_random_subspace` + learning rate.

    .. math:: \theta_{t+1} = \theta_t - \eta\, P\, \mathrm{inner}(P^\top g_t)

    Args:
        learning_rate: a float or an optax schedule.
        dim: subspace dimension ``d`` (``1 <= d <= D``).
        key: PRNG key defining the subspace (required).
        projection: ``"dense"`` (store ``P``), ``"chunked"`` (regenerate it from ``key``) or
            ``"fastfood"`` (structured ``P``, ``O(D log d)`` per product).
        chunk_size: rows of ``P`` per random draw.
        inner: optional transform on the subspace gradient (e.g. ``optax.scale_by_adam()``).

    Returns:
        An ``optax.GradientTransformation``.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> from gradlab.transforms import random_subspace
        >>> from gradlab.transforms import random_subspace_basis
        >>> key = jax.random.key(1)
        >>> w = jnp.zeros(20); g = jnp.arange(20.0)
        >>> opt = random_subspace(0.2, 5, key=key)
        >>> u, state = opt.update(g, opt.init(w))
        >>> p = random_subspace_basis(w, 5, key=key)  # (20, 5), unit columns
        >>> bool(jnp.allclose(u, -0.2 * p @ (p.T @ g), atol=1e-4))
        True

    References:
        Li et al., ICLR 2018. https://arxiv.org/abs/1804.08838
    """
    check_learning_rate(learning_rate)
    return optax.chain(
        scale_by_random_subspace(
            dim, key=key, projection=projection, chunk_size=chunk_size, inner=inner
        ),
        optax.scale_by_learning_rate(learning_rate),
    )
