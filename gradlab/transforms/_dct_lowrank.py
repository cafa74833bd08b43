"""SVD-free low-rank Adam: a fixed DCT basis and per-step column selection (Modoranu et al.)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradlab._src.errors import check_int, check_real
from gradlab.transforms._dicesgd import check_learning_rate

__all__ = ["DCTLowRankState", "dct_lowrank", "scale_by_dct_lowrank"]


class DCTLowRankState(NamedTuple):
    """State of :func:`scale_by_dct_lowrank`.

    Attributes:
        count: int32 scalar, number of updates done so far.
        indices: a pytree like the params: for every matrix leaf the ``(rank,)`` int32 indices
            (ascending) of the DCT basis vectors in use, for every other leaf an empty
            ``(0,)`` int32 array. The basis itself is never stored.
        adam: ``optax.ScaleByAdamState`` of the moments, shaped ``(min(m, n), rank)``
            (``(rank, n)`` when ``m > n``) for an ``(m, n)`` matrix leaf and like the params
            for the others.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> tx = gl.transforms.scale_by_dct_lowrank(rank=2)
        >>> state = tx.init({"w": jnp.zeros((3, 8)), "b": jnp.zeros(8)})
        >>> state.indices["w"].shape, state.adam.mu["w"].shape, state.adam.mu["b"].shape
        ((2,), (3, 2), (8,))
    """

    count: jax.Array
    indices: Any
    adam: optax.ScaleByAdamState


def _axis(shape: tuple[int, ...]) -> int:
    """The projected (larger) axis of a matrix: 1 if ``n >= m`` else 0."""
    return 1 if shape[1] >= shape[0] else 0


def dct_basis(n: int, dtype: Any = jnp.float32) -> jax.Array:
    r"""The orthogonal DCT-II basis :math:`Q \in \mathbb{R}^{n \times n}` (basis vectors as columns).

    :math:`Q_{jk} = \sqrt{2/n}\, c_k \cos(\pi (2j + 1) k / (2n))`, :math:`c_0 = 1/\sqrt 2`,
    :math:`c_{k>0} = 1`; :math:`Q^\top Q = I`. ``x @ Q`` equals
    ``jax.scipy.fft.dct(x, norm="ortho")`` along the last axis (the transform never forms
    ``Q``: it uses the FFT, :math:`O(n \log n)` per row).

    Args:
        n: the size.
        dtype: the floating dtype.

    Returns:
        The ``(n, n)`` matrix.

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.transforms import dct_basis
        >>> q = dct_basis(4)
        >>> bool(jnp.allclose(q.T @ q, jnp.eye(4), atol=1e-6))
        True
    """
    j = jnp.arange(n, dtype=dtype)[:, None]
    k = jnp.arange(n, dtype=dtype)[None, :]
    c = jnp.where(k == 0, jnp.sqrt(jnp.asarray(0.5, dtype)), 1.0)
    return jnp.sqrt(jnp.asarray(2.0 / n, dtype)) * c * jnp.cos(jnp.pi * (2 * j + 1) * k / (2 * n))


def _rotate(g: jax.Array) -> jax.Array:
    """``G Q`` (or ``Q^T G`` when ``m > n``) in float32 or wider, via the FFT."""
    x = g.astype(jnp.promote_types(g.dtype, jnp.float32))
    return jax.scipy.fft.dct(x, type=2, axis=_axis(g.shape), norm="ortho")


def _unrotate(y: jax.Array) -> jax.Array:
    return jax.scipy.fft.idct(y, type=2, axis=_axis(y.shape), norm="ortho")


def _select(rotated: jax.Array, rank: int) -> jax.Array:
    """Ascending indices of the ``rank`` basis vectors with the largest l1 norm of ``G Q``."""
    axis = _axis(rotated.shape)
    l1 = jnp.sum(jnp.abs(rotated), axis=1 - axis)
    return jnp.sort(jax.lax.top_k(l1, rank)[1]).astype(jnp.int32)


def scale_by_dct_lowrank(
    *,
    rank: int,
    update_interval: int = 1,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
) -> optax.GradientTransformation:
    r"""Low-rank Adam in a fixed DCT basis: GaLore without the SVD and without the projector.

    For an ``(m, n)`` matrix leaf with :math:`n \ge m` (else the same on :math:`G^\top`), let
    :math:`Q` be the orthogonal DCT-II basis of :math:`\mathbb{R}^n` (:func:`dct_basis`). Every
    ``update_interval`` steps the ``rank`` columns of :math:`G Q` with the largest
    :math:`\ell_1` norm are selected (indices :math:`I`, kept ascending); then

    .. math::
        R_t = G_t Q_{:, I} \in \mathbb{R}^{m \times r}, \qquad
        U_t = \operatorname{Adam}(R_t), \qquad u_t = U_t Q_{:, I}^\top .

    When the selection changes, the moments follow their basis vectors: a vector that stays
    selected keeps its moments (in its new slot), a newly selected one starts from zero (an
    :math:`r \times r` permutation of the moment matrices, no extra memory).

    The basis is fixed and computed from the shape, so no SVD is needed and only the ``r``
    integer indices are stored (GaLore stores an ``n x r`` projector); both products run as
    FFT-based DCTs (:math:`O(mn \log n)`). Leaves that are not matrices get plain Adam.
    With ``rank = m = n`` every column is kept and the update is Adam in the rotated basis,
    :math:`\operatorname{Adam}(G Q) Q^\top`.

    Args:
        rank: :math:`r \ge 1`, at most the smaller side of every matrix leaf (checked at
            ``init``).
        update_interval: re-select the columns every this many steps (``>= 1``; the paper
            re-selects at every step).
        b1: Adam's first-moment decay.
        b2: Adam's second-moment decay.
        eps: Adam's denominator epsilon.

    Returns:
        An ``optax.GradientTransformation`` with state :class:`DCTLowRankState`: per matrix
        leaf ``2 r min(m, n)`` floats and ``r`` int32.

    Raises:
        ValueError: ``rank < 1`` or ``update_interval < 1`` (at construction), ``rank`` larger
            than a matrix leaf's smaller side (at ``init``).

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> tx = gl.transforms.scale_by_dct_lowrank(rank=1)
        >>> g = jnp.ones((2, 4))  # only the constant DCT vector sees it
        >>> u, state = tx.update(g, tx.init(g))
        >>> state.indices
        Array([0], dtype=int32)
        >>> u.round(3)  # Adam's first step (sign 1) in that direction, rotated back
        Array([[0.5, 0.5, 0.5, 0.5],
               [0.5, 0.5, 0.5, 0.5]], dtype=float32)

    References:
        Modoranu, Safaryan, Schultheis, Ryabinin, Chumachenko, Alistarh, *SVD-Free Low-Rank
        Adaptive Gradient Optimization for Large Language Models*, 2025.
        https://arxiv.org/abs/2505.17967
    """
    rank = check_int("rank", rank, 1)
    update_interval = check_int("update_interval", update_interval, 1)
    check_real("b1", b1, 0.0, 1.0, hi_open=True)
    check_real("b2", b2, 0.0, 1.0, hi_open=True)
    check_real("eps", eps, 0.0)
    adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

    def low_rank_like(p):
        if p.ndim != 2:
            return p
        m, n = p.shape
        if rank > min(m, n):
            raise ValueError(
                f"rank={rank} is out of range for a matrix leaf of shape {p.shape}: expected "
                f"1 <= rank <= {min(m, n)} (its smaller side)"
            )
        return jnp.zeros((m, rank) if n >= m else (rank, n), p.dtype)

    def init_fn(params):
        proxies = jax.tree.map(low_rank_like, params)
        indices = jax.tree.map(
            lambda p: jnp.arange(rank if p.ndim == 2 else 0, dtype=jnp.int32), params
        )
        return DCTLowRankState(
            count=jnp.zeros([], jnp.int32), indices=indices, adam=adam.init(proxies)
        )

    def update_fn(updates, state, params=None):
        del params
        due = state.count % update_interval == 0

        def project(g, idx):
            if g.ndim != 2:
                return g, idx
            rotated = _rotate(g)
            idx = jax.lax.cond(due, lambda: _select(rotated, rank), lambda: idx)
            low = jnp.take(rotated, idx, axis=_axis(g.shape))
            return low.astype(g.dtype), idx

        pairs = jax.tree.map(project, updates, state.indices)
        outer = jax.tree.structure(updates)
        low, indices = jax.tree.transpose(outer, jax.tree.structure((0, 0)), pairs)

        def follow(moment, g, new_idx, old_idx):
            # Slot j of the moments belongs to basis vector new_idx[j]: carry over the moments
            # of vectors that stay selected, start newly selected ones at zero.
            if g.ndim != 2:
                return moment
            match = (new_idx[:, None] == old_idx[None, :]).astype(moment.dtype)
            return moment @ match.T if _axis(g.shape) == 1 else match @ moment

        def remap(tree):
            return jax.tree.map(follow, tree, updates, indices, state.indices)

        adam_state = state.adam._replace(mu=remap(state.adam.mu), nu=remap(state.adam.nu))
        low_updates, adam_state = adam.update(low, adam_state)

        def back(u, g, idx):
            if g.ndim != 2:
                return u
            axis = _axis(g.shape)
            full = jnp.zeros(g.shape, jnp.promote_types(g.dtype, jnp.float32))
            full = full.at[:, idx].set(u) if axis == 1 else full.at[idx, :].set(u)
            return _unrotate(full).astype(g.dtype)

        new_updates = jax.tree.map(back, low_updates, updates, indices)
        return new_updates, DCTLowRankState(
            count=optax.safe_increment(state.count), indices=indices, adam=adam_state
        )

    return optax.GradientTransformation(init_fn, update_fn)


def dct_lowrank(
    learning_rate: optax.ScalarOrSchedule,
    *,
    rank: int,
    update_interval: int = 1,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
) -> optax.GradientTransformationExtraArgs:
    r"""SVD-free low-rank Adam: :func:`scale_by_dct_lowrank` then ``-learning_rate``.

    Args:
        learning_rate: a float or an ``optax`` schedule.
        rank: number of DCT basis vectors per matrix leaf.
        update_interval: re-select the basis vectors every this many steps.
        b1: Adam's first-moment decay.
        b2: Adam's second-moment decay.
        eps: Adam's denominator epsilon.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose updates are added to the params.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> import gradlab as gl
        >>> target = jnp.outer(jnp.arange(4.0), jnp.ones(6))
        >>> obj = lambda w: jnp.sum((w - target) ** 2)
        >>> opt = gl.transforms.dct_lowrank(0.1, rank=2)
        >>> w = jnp.zeros((4, 6))
        >>> state = opt.init(w)
        >>> @jax.jit
        ... def step(w, state):
        ...     updates, state = opt.update(jax.grad(obj)(w), state, w)
        ...     return optax.apply_updates(w, updates), state
        >>> for _ in range(300):
        ...     w, state = step(w, state)
        >>> bool(obj(w) < 1e-2 * obj(jnp.zeros((4, 6))))
        True

    References:
        Modoranu et al., https://arxiv.org/abs/2505.17967
    """
    check_learning_rate(learning_rate)
    return optax.chain(
        scale_by_dct_lowrank(rank=rank, update_interval=update_interval, b1=b1, b2=b2, eps=eps),
        optax.scale_by_learning_rate(learning_rate),
    )
