"""Q-GaLore: GaLore with an int4 projector and lazy, layer-adaptive SVD refreshes (Zhang et al.)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradlab._src.errors import check_int, check_real
from gradlab.transforms._dicesgd import check_learning_rate
from gradlab.transforms._int4 import dequantize_int4, quantize_int4

__all__ = ["QGaLoreState", "q_galore", "scale_by_q_galore"]


class QGaLoreState(NamedTuple):
    """State of :func:`scale_by_q_galore`. Per-leaf fields are pytrees like the params.

    Attributes:
        count: int32 scalar, number of updates done so far.
        adam: ``optax.ScaleByAdamState`` on the projected gradients (``(r, n)`` for an
            ``(m, n)`` matrix with ``m >= n``, ``(m, r)`` otherwise; like the params for
            non-matrix leaves).
        projector: per matrix leaf, with ``quantize=True`` a pair ``(packed, scales)`` of
            :func:`quantize_int4` (uint8 codes, float32 block scales); with ``quantize=False``
            the float projector (``(m, r)`` or ``(n, r)``, the params' dtype). Empty ``(0,)``
            arrays for non-matrix leaves.
        quant_error: per leaf, float32 scalar, the relative Frobenius error
            ``|P - deq(q(P))| / |P|`` of the last stored projector (0 when not quantised):
            the reported int4 reconstruction error.
        interval: per leaf, int32 scalar, the current SVD interval (starts at
            ``update_proj_gap``, doubles on every lazy step).
        next_refresh: per leaf, int32 scalar, the step of the next SVD.
        streak: per leaf, int32 scalar, consecutive refreshes whose projector stayed
            aligned with the previous one (cosine similarity >= ``cos_threshold``).
        num_svds: per leaf, int32 scalar, SVDs computed so far.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> state = gl.transforms.scale_by_q_galore(rank=2).init({"w": jnp.zeros((8, 4))})
        >>> packed, scales = state.projector["w"]
        >>> packed.dtype, int(state.interval["w"])
        (dtype('uint8'), 200)
    """

    count: jax.Array
    adam: optax.ScaleByAdamState
    projector: Any
    quant_error: Any
    interval: Any
    next_refresh: Any
    streak: Any
    num_svds: Any


def _projector_shape(shape: tuple[int, ...], rank: int) -> tuple[int, int]:
    m, n = shape
    return (m, rank) if m >= n else (n, rank)


def scale_by_q_galore(
    *,
    rank: int = 128,
    update_proj_gap: int = 200,
    quantize: bool = True,
    block_size: int = 256,
    cos_threshold: float | jax.Array | None = 0.4,
    patience: int = 2,
    scale: float | jax.Array = 1.0,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
) -> optax.GradientTransformation:
    r"""GaLore whose projector is stored in int4 and refreshed lazily per layer (Q-GaLore).

    As ``optax.contrib.scale_by_galore`` with Adam: for an ``(m, n)`` matrix leaf with
    :math:`m \ge n` the projector :math:`P \in \mathbb{R}^{m \times r}` holds the top
    :math:`r` left singular vectors of the gradient at a refresh step, the update is
    :math:`\alpha P\, \operatorname{Adam}(P^\top G)` (right singular vectors and
    :math:`\operatorname{Adam}(G P) P^\top` when :math:`m < n`); other leaves get plain Adam.
    Q-GaLore adds two things:

    * **int4 projector** (``quantize=True``): :math:`P` is stored as 4-bit codes with one
      float32 scale per ``block_size`` entries (:func:`quantize_int4`, the paper's block
      size 256) and dequantised at every step; ``quant_error`` reports the relative
      reconstruction error.
    * **lazy, layer-adaptive refresh**: each leaf refreshes at its own ``next_refresh`` step.
      At a refresh the new projector's cosine similarity to the previous one,
      :math:`\frac1r \sum_i |\langle p_i^{new}, p_i^{old}\rangle|` (columns are unit vectors;
      the absolute value removes the SVD's sign ambiguity), is compared with
      ``cos_threshold``; after ``patience`` consecutive aligned refreshes the leaf's interval
      doubles, so a layer whose subspace has settled skips most SVDs. ``num_svds`` counts
      them.

    With ``quantize=False`` and ``cos_threshold=None`` this is ``optax.contrib.galore`` with
    ``optax.scale_by_adam`` (tested to match it). The paper's int8 weights with stochastic
    rounding are not part of this transform (params stay in their own dtype).

    Args:
        rank: :math:`r \ge 1`, at most the smaller side of every matrix leaf (checked at
            ``init``).
        update_proj_gap: the initial SVD interval :math:`T \ge 1`.
        quantize: store the projector in int4.
        block_size: entries per quantisation block, a positive even number.
        cos_threshold: alignment threshold in ``[0, 1]`` (the paper's 0.4), or ``None`` to
            refresh every ``update_proj_gap`` steps as GaLore.
        patience: :math:`k \ge 1` consecutive aligned refreshes before the interval doubles.
        scale: :math:`\alpha`, the GaLore scale of the projected-back update.
        b1: Adam's first-moment decay.
        b2: Adam's second-moment decay.
        eps: Adam's denominator epsilon.

    Returns:
        An ``optax.GradientTransformation`` with state :class:`QGaLoreState`. Projector
        memory per matrix leaf: ``max(m, n) r / 2`` bytes plus 4 bytes per block
        (``4 max(m, n) r`` bytes unquantised in float32).

    Raises:
        ValueError: bad ``rank``, ``update_proj_gap``, ``block_size``, ``patience`` or
            ``cos_threshold`` (at construction), ``rank`` larger than a matrix leaf's
            smaller side (at ``init``).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> tx = gl.transforms.scale_by_q_galore(rank=1, block_size=4)
        >>> g = jnp.outer(jnp.array([1.0, 2.0, 2.0]), jnp.array([1.0, 0.0]))  # rank one
        >>> u, state = tx.update(g, tx.init(g))
        >>> # Adam's first step is sign(P^T g) = +-1: u = P P^T g / |P^T g| up to the int4 error
        >>> bool(jnp.allclose(u, g / 3.0, atol=0.1))
        True
        >>> int(state.num_svds), bool(state.quant_error < 0.1)
        (1, True)

    References:
        Zhang, Jaiswal, Yin, Liu, Zhao, Tian, Wang, *Q-GaLore: Quantized GaLore with INT4
        Projection and Layer-Adaptive Low-Rank Gradients*, 2024.
        https://arxiv.org/abs/2407.08296
    """
    rank = check_int("rank", rank, 1)
    update_proj_gap = check_int("update_proj_gap", update_proj_gap, 1)
    block_size = check_int("block_size", block_size, 2)
    if block_size % 2:
        raise ValueError(f"block_size={block_size} is not even: expected an even block size")
    patience = check_int("patience", patience, 1)
    lazy = cos_threshold is not None
    if lazy:
        check_real("cos_threshold", cos_threshold, 0.0, 1.0)
    check_real("b1", b1, 0.0, 1.0, hi_open=True)
    check_real("b2", b2, 0.0, 1.0, hi_open=True)
    check_real("eps", eps, 0.0)
    adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

    def store(p_float):
        if not quantize:
            return p_float, jnp.zeros([], jnp.float32)
        packed, scales = quantize_int4(p_float, block_size)
        rebuilt = dequantize_int4(packed, scales, p_float.shape)
        p32 = p_float.astype(jnp.float32)
        err = jnp.linalg.norm(rebuilt - p32) / jnp.maximum(jnp.linalg.norm(p32), 1e-30)
        return (packed, scales), err

    def load(stored, shape, dtype):
        if not quantize:
            return stored
        return dequantize_int4(*stored, shape, dtype)

    def init_leaf(p):
        def zero():  # a distinct buffer per field, so the state can be donated
            return jnp.zeros([], jnp.int32)

        gap = jnp.full([], update_proj_gap, jnp.int32)
        if p.ndim != 2:
            empty = jnp.zeros((0,), p.dtype)
            return p, empty, jnp.zeros([], jnp.float32), gap, zero(), zero(), zero()
        if rank > min(p.shape):
            raise ValueError(
                f"rank={rank} is out of range for a matrix leaf of shape {p.shape}: expected "
                f"1 <= rank <= {min(p.shape)} (its smaller side)"
            )
        m, n = p.shape
        proxy = jnp.zeros((rank, n) if m >= n else (m, rank), p.dtype)
        stored, _ = store(jnp.zeros(_projector_shape(p.shape, rank), p.dtype))
        return proxy, stored, jnp.zeros([], jnp.float32), gap, zero(), zero(), zero()

    def init_fn(params):
        leaves, treedef = jax.tree.flatten(params)
        cols = list(zip(*[init_leaf(p) for p in leaves], strict=True)) if leaves else [[]] * 7
        proxy, proj, err, interval, nxt, streak, nsvd = (
            jax.tree.unflatten(treedef, c) for c in cols
        )
        return QGaLoreState(
            count=jnp.zeros([], jnp.int32),
            adam=adam.init(proxy),
            projector=proj,
            quant_error=err,
            interval=interval,
            next_refresh=nxt,
            streak=streak,
            num_svds=nsvd,
        )

    def project_leaf(count, g, stored, err, interval, nxt, streak, nsvd):
        if g.ndim != 2:
            return g, stored, err, interval, nxt, streak, nsvd
        m, n = g.shape
        pshape = _projector_shape(g.shape, rank)

        def refresh():
            old = load(stored, pshape, jnp.float32)
            u, _, vh = jnp.linalg.svd(g.astype(jnp.float32), full_matrices=False)
            new = (u[:, :rank] if m >= n else vh[:rank, :].T).astype(g.dtype)
            new_stored, new_err = store(new)
            if lazy:
                sim = jnp.mean(jnp.abs(jnp.sum(new.astype(jnp.float32) * old, axis=0)))
                aligned = (sim >= cos_threshold) & (nsvd > 0)
                run = jnp.where(aligned, streak + 1, 0)
                grow = run >= patience
                new_interval = jnp.where(grow, 2 * interval, interval)
                new_streak = jnp.where(grow, 0, run)
            else:
                new_interval, new_streak = interval, streak
            return (
                new_stored,
                new_err,
                new_interval,
                count + new_interval,
                new_streak,
                nsvd + 1,
            )

        def keep():
            return stored, err, interval, nxt, streak, nsvd

        stored, err, interval, nxt, streak, nsvd = jax.lax.cond(count >= nxt, refresh, keep)
        p = load(stored, pshape, g.dtype)
        low = p.T @ g if m >= n else g @ p
        return low, stored, err, interval, nxt, streak, nsvd

    def update_fn(updates, state, params=None):
        del params
        leaves, treedef = jax.tree.flatten(updates)
        fields = (
            state.projector,
            state.quant_error,
            state.interval,
            state.next_refresh,
            state.streak,
            state.num_svds,
        )
        per_leaf = [treedef.flatten_up_to(f) for f in fields]
        outs = [
            project_leaf(state.count, g, *cols) for g, *cols in zip(leaves, *per_leaf, strict=True)
        ]
        cols = list(zip(*outs, strict=True)) if outs else [[]] * 7
        low, proj, err, interval, nxt, streak, nsvd = (jax.tree.unflatten(treedef, c) for c in cols)
        low_updates, adam_state = adam.update(low, state.adam)

        def back(u, g, stored):
            if g.ndim != 2:
                return u
            m, n = g.shape
            p = load(stored, _projector_shape(g.shape, rank), g.dtype)
            full = p @ u if m >= n else u @ p.T
            return (scale * full).astype(g.dtype)

        new_updates = [
            back(u, g, s)
            for u, g, s in zip(
                treedef.flatten_up_to(low_updates), leaves, treedef.flatten_up_to(proj), strict=True
            )
        ]
        return jax.tree.unflatten(treedef, new_updates), QGaLoreState(
            count=optax.safe_increment(state.count),
            adam=adam_state,
            projector=proj,
            quant_error=err,
            interval=interval,
            next_refresh=nxt,
            streak=streak,
            num_svds=nsvd,
        )

    return optax.GradientTransformation(init_fn, update_fn)


def q_galore(
    learning_rate: optax.ScalarOrSchedule,
    *,
    rank: int = 128,
    update_proj_gap: int = 200,
    quantize: bool = True,
    block_size: int = 256,
    cos_threshold: float | jax.Array | None = 0.4,
    patience: int = 2,
    scale: float | jax.Array = 1.0,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
) -> optax.GradientTransformationExtraArgs:
    r"""The Q-GaLore optimizer: :func:`scale_by_q_galore` then ``-learning_rate``.

    Args:
        learning_rate: a float or an ``optax`` schedule.
        rank: projection rank :math:`r`.
        update_proj_gap: initial SVD interval.
        quantize: store the projector in int4.
        block_size: entries per quantisation block.
        cos_threshold: alignment threshold for the lazy refresh (``None``: GaLore's schedule).
        patience: aligned refreshes before an interval doubles.
        scale: GaLore's scale :math:`\alpha`.
        b1: Adam's first-moment decay.
        b2: Adam's second-moment decay.
        eps: Adam's denominator epsilon.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose updates are added to the params.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> import gradlab as gl
        >>> target = jnp.outer(jnp.arange(6.0), jnp.ones(4))
        >>> obj = lambda w: jnp.sum((w - target) ** 2)
        >>> opt = gl.transforms.q_galore(0.1, rank=1, update_proj_gap=20, block_size=8)
        >>> w = jnp.zeros((6, 4))
        >>> state = opt.init(w)
        >>> @jax.jit
        ... def step(w, state):
        ...     updates, state = opt.update(jax.grad(obj)(w), state, w)
        ...     return optax.apply_updates(w, updates), state
        >>> for _ in range(200):
        ...     w, state = step(w, state)
        >>> bool(obj(w) < 1e-2 * obj(jnp.zeros((6, 4))))
        True

    References:
        Zhang et al., https://arxiv.org/abs/2407.08296
    """
    check_learning_rate(learning_rate)
    return optax.chain(
        scale_by_q_galore(
            rank=rank,
            update_proj_gap=update_proj_gap,
            quantize=quantize,
            block_size=block_size,
            cos_threshold=cos_threshold,
            patience=patience,
            scale=scale,
            b1=b1,
            b2=b2,
            eps=eps,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )
