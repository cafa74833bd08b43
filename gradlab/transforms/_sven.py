"""Sven: singular value descent, a truncated pseudo-inverse of the residual Jacobian (2604.01279)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradlab._src.errors import check_int, check_real, out_of_range_message
from gradlab._src.tree import tree_size
from gradlab.transforms._common import at_least_float32, require_extra_arg
from gradlab.transforms._dicesgd import canonical_key, check_learning_rate

__all__ = ["SvenState", "scale_by_sven", "sven"]


class SvenState(NamedTuple):
    """State of :func:`scale_by_sven`.

    Attributes:
        count: int32 scalar, number of updates so far.
        key: PRNG key of the randomised SVD (split at every update).
        rank_used: int32 scalar, singular directions used by the last update (``<= rank``:
            those above ``rtol`` times the largest singular value).
        num_skipped: int32 scalar, updates skipped (zero step) because the truncated SVD or
            the step was not finite.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.transforms import scale_by_sven
        >>> int(scale_by_sven(rank=2, key=jax.random.key(0)).init(jnp.zeros(3)).rank_used)
        0
    """

    count: jax.Array
    key: jax.Array
    rank_used: jax.Array
    num_skipped: jax.Array


def _gaussian_like(key, params, num):
    """``num`` standard normal pytrees like ``params``, stacked on a leading axis."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    out = [
        jax.random.normal(k, (num, *x.shape), x.dtype) for k, x in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, out)


def _check_rank(rank, num_residuals, num_params):
    hi = min(num_residuals, num_params)
    if rank > hi:
        raise ValueError(
            out_of_range_message("rank", rank, 1, hi)
            + f" (the Jacobian is {num_residuals} residuals x {num_params} params)"
        )


def truncated_pinv_step(residual_fn, params, *, rank, key, oversample, num_power_iters, rtol):
    r"""``(V_k S_k^{-1} U_k^T r, k_used)`` from a randomised rank-``rank`` SVD of ``J``.

    Range finder on :math:`J = \partial r / \partial\theta` (``m x P``, never formed):
    :math:`Y = J\Omega` with ``l = min(rank + oversample, m)`` Gaussian directions (``l`` JVPs),
    ``num_power_iters`` rounds :math:`Y \leftarrow J J^\top Q`, :math:`Q = \mathrm{qr}(Y)`;
    then :math:`Z = J^\top Q` (``l`` VJPs), :math:`Z^\top Z = Q^\top J J^\top Q = W S^2 W^\top`
    (an ``l x l`` eigenproblem), and with the top ``k`` pairs

    .. math:: V_k S_k^{-1} U_k^\top r = Z\, W_k S_k^{-2} W_k^\top Q^\top r

    (since :math:`U = QW` and :math:`V_k = Z W_k S_k^{-1}`). Singular values below
    ``rtol * s_max`` are dropped. When ``l = m`` and :math:`J` has full row rank, :math:`Q`
    spans :math:`\mathbb R^m` and the SVD is exact.
    """
    r0, jvp_fn = jax.linearize(lambda p: jnp.ravel(residual_fn(p)), params)
    m, n = r0.shape[0], tree_size(params)
    _check_rank(rank, m, n)
    num = min(rank + oversample, m)
    vjp_fn = jax.linear_transpose(jvp_fn, params)
    jv = jax.vmap(jvp_fn, out_axes=1)  # stacked tangents (l, ...) -> (m, l)
    jtv = jax.vmap(lambda q: vjp_fn(q)[0])  # (l, m) -> stacked cotangents (l, ...)

    q, _ = jnp.linalg.qr(jv(_gaussian_like(key, params, num)).astype(r0.dtype))
    if num_power_iters:
        q = jax.lax.fori_loop(
            0, num_power_iters, lambda _, q: jnp.linalg.qr(jv(jtv(q.T)).astype(r0.dtype))[0], q
        )
    z = jtv(q.T.astype(r0.dtype))
    gram = sum(jnp.tensordot(a, a, axes=(tuple(range(1, a.ndim)),) * 2) for a in jax.tree.leaves(z))
    s2, w = jnp.linalg.eigh(gram)  # ascending
    s2, w = s2[-rank:], w[:, -rank:]
    keep = s2 > jnp.maximum(rtol**2 * s2[-1], jnp.finfo(s2.dtype).tiny)
    coef = jnp.where(keep, (w.T @ (q.T @ r0)) / jnp.where(keep, s2, 1.0), 0.0)
    mix = w @ coef  # (l,)
    step = jax.tree.map(lambda a: jnp.tensordot(mix, a, axes=1), z)
    return step, jnp.sum(keep).astype(jnp.int32)


def scale_by_sven(
    *,
    rank: int,
    key: Any,
    rtol: float | jax.Array = 1e-3,
    oversample: int = 4,
    num_power_iters: int = 1,
) -> optax.GradientTransformationExtraArgs:
    r"""Sven direction: the truncated pseudo-inverse of the residual Jacobian applied to the residuals.

    Sven treats every residual :math:`r_i(\theta)` (one per example, or per example and
    output) as a condition to satisfy and takes the minimum-norm step that best satisfies
    their linearisation, :math:`\delta = -\eta J^+ r`, with the Moore-Penrose pseudo-inverse
    of :math:`J = \partial r / \partial \theta` (``m x P``) truncated to its top ``rank``
    singular triplets:

    .. math:: \delta = -\eta\, V_k S_k^{-1} U_k^\top r, \qquad J \approx U_k S_k V_k^\top .

    The SVD is randomised and matrix-free (``rank + oversample`` JVPs and as many VJPs, plus
    twice that per power iteration; an ``l x l`` eigenproblem): :math:`J` is never formed, the
    largest buffer is ``l`` parameter-sized vectors. In the under-parametrised limit this is
    Gauss-Newton (natural gradient); with ``rank = m`` on linear least squares one step with
    :math:`\eta = 1` lands on the minimum-norm solution. The update returned is
    :math:`V_k S_k^{-1} U_k^\top r` (to be scaled by ``-learning_rate``); the gradient passed
    as ``updates`` is not used (only its structure and dtypes). A non-finite step is replaced
    by zero and counted in ``num_skipped``.

    Args:
        rank: :math:`k \ge 1` singular triplets kept; at most ``min(m, P)`` (checked when
            ``update`` is first traced, where ``m`` is known).
        key: PRNG key for the random test matrix (kept in the state).
        rtol: singular values below ``rtol * s_max`` are dropped (``>= 0``; the authors'
            example uses 1e-3). The ``l x l`` Gram squares the condition number, so in
            float32 singular values below about ``3e-4 * s_max`` are inaccurate: keep
            ``rtol`` above that unless the params are float64.
        oversample: extra random directions of the range finder (``>= 0``).
        num_power_iters: power iterations of the range finder (``>= 0``).

    Returns:
        A ``GradientTransformationExtraArgs``; ``update(updates, state, params, *,
        residual_fn)`` with ``residual_fn(params) -> (B,)`` or ``(B, O)`` per-example residuals
        on the current batch (the loss is :math:`\tfrac12 \sum_i r_i^2` up to scaling).

    Raises:
        ValueError: ``rank < 1``, negative ``rtol``, ``oversample`` or ``num_power_iters``, or
            missing ``key`` (at construction); missing ``residual_fn`` or ``params``, or
            ``rank > min(m, P)`` (first ``update``).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.transforms import scale_by_sven
        >>> a = jnp.array([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0]]); b = jnp.array([1.0, 2.0])
        >>> tx = scale_by_sven(rank=2, key=jax.random.key(0))
        >>> x = jnp.zeros(3)
        >>> u, state = tx.update(x, tx.init(x), x, residual_fn=lambda x: a @ x - b)
        >>> bool(jnp.allclose(x - u, jnp.linalg.pinv(a) @ b, atol=1e-5))  # min-norm solution
        True

    References:
        Bright-Thonney, Harvey, Lukas & Thaler, "Sven: Singular Value Descent as a
        Computationally Efficient Natural Gradient Method", 2026.
        https://arxiv.org/abs/2604.01279
    """
    rank = check_int("rank", rank, 1)
    check_real("rtol", rtol, 0.0, None)
    oversample = check_int("oversample", oversample, 0)
    num_power_iters = check_int("num_power_iters", num_power_iters, 0)
    key = canonical_key(key, "scale_by_sven")
    where = "scale_by_sven(...).update"

    def init_fn(params):
        del params
        zero = jnp.zeros((), jnp.int32)
        return SvenState(count=zero, key=key, rank_used=zero, num_skipped=zero)

    def update_fn(updates, state, params=None, *, residual_fn=None, **extra):
        del extra
        hint = "pass residual_fn(params) -> (B,) or (B, O) residuals on the current batch"
        require_extra_arg(residual_fn, "residual_fn", where, hint)
        require_extra_arg(params, "params", where, "call update(updates, state, params, ...)")
        key, sub = jax.random.split(state.key)
        x = at_least_float32(params)
        step, used = truncated_pinv_step(
            residual_fn,
            x,
            rank=rank,
            key=sub,
            oversample=oversample,
            num_power_iters=num_power_iters,
            rtol=rtol,
        )
        ok = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(s)) for s in jax.tree.leaves(step)]))
        out = jax.tree.map(
            lambda s, u: jnp.where(ok, s, 0.0).astype(jnp.result_type(u)), step, updates
        )
        new_state = SvenState(
            count=optax.safe_increment(state.count),
            key=key,
            rank_used=jnp.where(ok, used, 0).astype(jnp.int32),
            num_skipped=state.num_skipped + (~ok).astype(jnp.int32),
        )
        return out, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sven(
    learning_rate: optax.ScalarOrSchedule,
    *,
    rank: int,
    key: Any,
    rtol: float | jax.Array = 1e-3,
    oversample: int = 4,
    num_power_iters: int = 1,
) -> optax.GradientTransformationExtraArgs:
    r"""Sven: :math:`\theta \leftarrow \theta - \eta\, V_k S_k^{-1} U_k^\top r` (truncated :math:`J^+ r`).

    :func:`scale_by_sven` chained with ``optax.scale_by_learning_rate``; ``update`` needs the
    extra argument ``residual_fn``.

    Args:
        learning_rate: :math:`\eta`, a float or an optax schedule.
        rank: as :func:`scale_by_sven`.
        key: as :func:`scale_by_sven`.
        rtol: as :func:`scale_by_sven`.
        oversample: as :func:`scale_by_sven`.
        num_power_iters: as :func:`scale_by_sven`.

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> from gradlab.transforms import sven
        >>> x = jax.random.normal(jax.random.key(1), (8, 3))
        >>> y = jnp.tanh(x @ jnp.array([0.5, -0.3, 0.2]))
        >>> residual_fn = lambda w: jnp.tanh(x @ w) - y  # 8 residuals, 3 params
        >>> loss = lambda w: 0.5 * jnp.sum(residual_fn(w) ** 2)
        >>> opt = sven(1.0, rank=3, key=jax.random.key(0))  # Gauss-Newton steps
        >>> w = jnp.zeros(3); state = opt.init(w)
        >>> for _ in range(3):
        ...     u, state = opt.update(w, state, w, residual_fn=residual_fn)
        ...     w = optax.apply_updates(w, u)
        >>> bool(loss(w) < 1e-6 * loss(jnp.zeros(3)))
        True

    References:
        Bright-Thonney, Harvey, Lukas & Thaler, 2026. https://arxiv.org/abs/2604.01279
    """
    check_learning_rate(learning_rate)
    return optax.chain(
        scale_by_sven(
            rank=rank,
            key=key,
            rtol=rtol,
            oversample=oversample,
            num_power_iters=num_power_iters,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )
