"""The NTK as a matrix-free operator on output space, and spectral summaries built on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gradlab import spectral
from gradlab._src.errors import check_choice, check_int
from gradlab.distributed._batch import MaskedBatch
from gradlab.distributed._parallel import data_axis, rows_over_examples, shape_only, split_mask

__all__ = [
    "ConditionNumber",
    "EffectiveRank",
    "MaxLearningRate",
    "condition_number",
    "effective_rank",
    "max_learning_rate",
    "ntk_operator",
]


def ntk_operator(
    apply_fn: Callable,
    params: Any,
    x: jax.Array,
    *,
    batch_size: int | None = None,
) -> Callable[[jax.Array], jax.Array]:
    r"""The full empirical NTK of a batch as a matvec: ``v -> Theta v = J (J^T v)``.

    ``J`` is the Jacobian of the stacked outputs ``f(params, x)`` (shape ``(N, ...)``) with
    respect to the parameters, so ``Theta`` is the ``(N O) x (N O)`` kernel that
    :func:`empirical_ntk` returns with ``trace_axes=()`` (reshaped). One matvec costs one VJP
    and one JVP over the batch (about three forward passes) and never forms ``Theta`` or
    ``J``; with ``batch_size`` the batch is processed in tiles of that many examples (``J^T v``
    accumulated tile by tile, then ``J`` applied tile by tile), so memory is bounded by one
    tile's activations. The matvec plugs into :mod:`gradlab.spectral` with
    ``like = jnp.zeros_like(apply_fn(params, x))``.

    With ``x`` split over a device mesh (:func:`gradlab.distributed.shard_batch`), each device
    applies ``J_s^T`` to its rows, the sums are ``psum``-ed and each device applies ``J_s`` to
    its rows; the result is returned replicated. ``x`` may be a
    :class:`gradlab.distributed.MaskedBatch`: padded rows of ``v`` are ignored and come back 0.

    Args:
        apply_fn: ``apply_fn(params, x) -> outputs`` with a leading example axis.
        params: parameter pytree.
        x: inputs ``(N, ...)``.
        batch_size: optional tile size (examples must be independent when tiling).

    Returns:
        ``matvec(v) -> Theta v`` on arrays shaped like ``apply_fn(params, x)``.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (4, 16, 3))
        >>> x = jax.random.normal(jax.random.key(1), (10, 4))
        >>> matvec = gl.ntk.ntk_operator(apply_fn, params, x)
        >>> like = jnp.zeros((10, 3))
        >>> top = gl.spectral.eigsh(matvec, like, k=2, key=jax.random.key(2))
        >>> top.eigenvalues.shape
        (2,)
    """
    x, mask = split_mask(x)
    x = jnp.asarray(x)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, 1)
    axis = data_axis("x", x if mask is None else MaskedBatch(x, mask), params)
    out = jax.eval_shape(apply_fn, shape_only(params), shape_only(x))
    if not hasattr(out, "shape") or len(out.shape) == 0:
        raise ValueError("apply_fn(params, x) must return one array with a leading example axis")

    def products(p: Any, xs: jax.Array, vs: jax.Array, ms: Any, reduce: Callable) -> jax.Array:
        if ms is not None:
            vs = vs * ms.reshape((-1,) + (1,) * (vs.ndim - 1)).astype(vs.dtype)
        g = reduce(_transpose_products(apply_fn, p, xs, vs, batch_size))
        res = _forward_products(apply_fn, p, xs, g, batch_size)
        if ms is not None:
            res = res * ms.reshape((-1,) + (1,) * (res.ndim - 1)).astype(res.dtype)
        return res

    if axis is None:

        def matvec(v: jax.Array) -> jax.Array:
            return products(params, x, jnp.asarray(v, out.dtype), mask, lambda g: g)

        return matvec

    def local(p: Any, shard: Any, _: Any) -> jax.Array:
        xs, vs, ms = shard
        return products(p, xs, vs, ms, lambda g: jax.lax.psum(g, axis.axes))

    def sharded_matvec(v: jax.Array) -> jax.Array:
        shard = (x, jnp.asarray(v, out.dtype), mask)
        return rows_over_examples(local, axis, params, shard, replicate_out=True)

    return sharded_matvec


def _tiles(x: jax.Array, size: int) -> tuple[jax.Array, int]:
    n = x.shape[0]
    count = -(-n // size)
    pad = count * size - n
    if pad:
        x = jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)], axis=0)
    return x.reshape(count, size, *x.shape[1:]), pad


def _transpose_products(apply_fn: Callable, params: Any, x: jax.Array, v: jax.Array, size: Any):
    """``J^T v`` over the examples of ``x``, tile by tile when ``size`` is set."""
    n = x.shape[0]
    if size is None or size >= n:
        _, vjp = jax.vjp(lambda p: apply_fn(p, x), params)
        return vjp(v)[0]
    xt, pad = _tiles(x, size)
    vt = jnp.concatenate([v, jnp.zeros((pad, *v.shape[1:]), v.dtype)]) if pad else v
    vt = vt.reshape(xt.shape[0], size, *v.shape[1:])
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)

    def accumulate(acc, tile):
        xs, vs = tile
        _, vjp = jax.vjp(lambda p: apply_fn(p, xs), params)
        (g,) = vjp(vs)
        return jax.tree_util.tree_map(jnp.add, acc, g), None

    return jax.lax.scan(accumulate, zero, (xt, vt))[0]


def _forward_products(apply_fn: Callable, params: Any, x: jax.Array, g: Any, size: Any):
    """``J g`` on the examples of ``x``, tile by tile when ``size`` is set."""
    n = x.shape[0]
    if size is None or size >= n:
        return jax.jvp(lambda p: apply_fn(p, x), (params,), (g,))[1]
    xt, _ = _tiles(x, size)
    res = jax.lax.map(lambda xs: jax.jvp(lambda p: apply_fn(p, xs), (params,), (g,))[1], xt)
    return res.reshape(-1, *res.shape[2:])[:n]


class MaxLearningRate(NamedTuple):
    """Largest stable step size of gradient descent on the linearised model with MSE.

    Attributes:
        value: ``()`` the step size ``2 / lambda_max`` of the loss-normalised kernel.
        lambda_max: ``()`` top eigenvalue of the (unnormalised) NTK ``Theta = J J^T``.
        converged: ``()`` bool, whether the eigensolver converged.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (4, 16, 2))
        >>> x = jax.random.normal(jax.random.key(1), (6, 4))
        >>> r = gl.ntk.max_learning_rate(apply_fn, params, x, key=jax.random.key(2))
        >>> r._fields
        ('value', 'lambda_max', 'converged')
    """

    value: jax.Array
    lambda_max: jax.Array
    converged: jax.Array


class ConditionNumber(NamedTuple):
    """``lambda_max / lambda_min`` of the NTK.

    Attributes:
        value: ``()`` the condition number (``inf`` if ``lambda_min <= 0``).
        lambda_max: ``()`` largest eigenvalue of ``Theta``.
        lambda_min: ``()`` smallest eigenvalue of ``Theta``.
        converged: ``()`` bool, both eigenvalues converged.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (4, 16, 2))
        >>> x = jax.random.normal(jax.random.key(1), (6, 4))
        >>> r = gl.ntk.condition_number(apply_fn, params, x, key=jax.random.key(2))
        >>> r._fields
        ('value', 'lambda_max', 'lambda_min', 'converged')
    """

    value: jax.Array
    lambda_max: jax.Array
    lambda_min: jax.Array
    converged: jax.Array


class EffectiveRank(NamedTuple):
    """``tr(Theta) / lambda_max(Theta)``, the number of directions with comparable eigenvalues.

    Attributes:
        value: ``()`` the effective rank, between 1 and ``rank(Theta)``.
        trace: ``()`` the exact trace ``sum_{n,o} ||d f_o(x_n) / d params||^2``.
        lambda_max: ``()`` largest eigenvalue.
        converged: ``()`` bool, whether the eigensolver converged.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (4, 16, 2))
        >>> x = jax.random.normal(jax.random.key(1), (6, 4))
        >>> r = gl.ntk.effective_rank(apply_fn, params, x, key=jax.random.key(2))
        >>> r._fields
        ('value', 'trace', 'lambda_max', 'converged')
    """

    value: jax.Array
    trace: jax.Array
    lambda_max: jax.Array
    converged: jax.Array


def _extreme(apply_fn, params, x, which, key, num_matvecs, batch_size):
    matvec = ntk_operator(apply_fn, params, x, batch_size=batch_size)
    out = jax.eval_shape(apply_fn, params, x)
    like = jnp.zeros(out.shape, out.dtype)
    res = spectral.eigsh(matvec, like, k=1, key=key, num_matvecs=num_matvecs, which=which)
    return res.eigenvalues[0], res.converged[0]


def max_learning_rate(
    apply_fn: Callable,
    params: Any,
    x: jax.Array,
    *,
    key: jax.Array,
    normalization: Literal["mean", "sum"] = "mean",
    num_matvecs: int | None = None,
    batch_size: int | None = None,
) -> MaxLearningRate:
    r"""The largest stable gradient-descent step for MSE in the kernel regime, matrix-free.

    For the linearised model the outputs on the training batch evolve as
    ``f_{k+1} - y = (I - eta H Theta)(f_k - y)`` where ``H`` is the output-space Hessian of the
    loss. With ``normalization="mean"`` the loss is ``0.5 / N sum_n ||f(x_n) - y_n||^2``
    (:func:`gradlab.models.mse`), ``H = I / N`` and the bound is ``2 N / lambda_max(Theta)``;
    with ``"sum"`` (``0.5 sum_n ||f(x_n) - y_n||^2``) it is ``2 / lambda_max(Theta)``.
    ``lambda_max`` comes from :func:`gradlab.spectral.eigsh` on :func:`ntk_operator`; cost
    ``num_matvecs`` (plus restarts) operator applications, each about three forward passes.

    Args:
        apply_fn: ``apply_fn(params, x) -> outputs``.
        params: parameters.
        x: training inputs ``(N, ...)``.
        key: PRNG key for the Lanczos start vector.
        normalization: ``"mean"`` (default) or ``"sum"`` over examples in the loss.
        num_matvecs: Krylov depth (default as :func:`gradlab.spectral.eigsh`).
        batch_size: optional tile size for the operator.

    Returns:
        :class:`MaxLearningRate` with the step size, ``lambda_max`` and a ``converged`` flag.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (4, 16, 3))
        >>> x = jax.random.normal(jax.random.key(1), (10, 4))
        >>> lr = gl.ntk.max_learning_rate(apply_fn, params, x, key=jax.random.key(2))
        >>> bool(lr.converged), bool(lr.value > 0)
        (True, True)

    References:
        Lee et al. (2019), https://arxiv.org/abs/1902.06720 (Section 2.3: the critical
        learning rate 2 / lambda_max of the NTK).
    """
    check_choice("normalization", normalization, ("mean", "sum"))
    lam, ok = _extreme(apply_fn, params, x, "largest", key, num_matvecs, batch_size)
    scale = jnp.shape(x)[0] if normalization == "mean" else 1
    return MaxLearningRate(value=2.0 * scale / lam, lambda_max=lam, converged=ok)


def condition_number(
    apply_fn: Callable,
    params: Any,
    x: jax.Array,
    *,
    key: jax.Array,
    num_matvecs: int | None = None,
    batch_size: int | None = None,
) -> ConditionNumber:
    r"""Condition number ``lambda_max / lambda_min`` of the NTK of a batch, matrix-free.

    Both extreme eigenvalues come from :func:`gradlab.spectral.eigsh` on
    :func:`ntk_operator`. ``Theta`` has rank at most ``min(N O, P)``; when ``N O > P`` it is
    singular and the condition number is infinite (reported as ``inf``). The smallest
    eigenvalue of a nearly singular kernel converges slowly: check ``converged``.

    Args:
        apply_fn: ``apply_fn(params, x) -> outputs``.
        params: parameters.
        x: inputs ``(N, ...)``.
        key: PRNG key for the Lanczos start vectors.
        num_matvecs: Krylov depth (default as :func:`gradlab.spectral.eigsh`).
        batch_size: optional tile size for the operator.

    Returns:
        :class:`ConditionNumber`.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (4, 16, 2))
        >>> x = jax.random.normal(jax.random.key(1), (6, 4))
        >>> c = gl.ntk.condition_number(apply_fn, params, x, key=jax.random.key(2))
        >>> bool(c.value >= 1)
        True
    """
    k1, k2 = jax.random.split(key)
    hi, ok_hi = _extreme(apply_fn, params, x, "largest", k1, num_matvecs, batch_size)
    lo, ok_lo = _extreme(apply_fn, params, x, "smallest", k2, num_matvecs, batch_size)
    value = jnp.where(lo > 0, hi / jnp.where(lo > 0, lo, 1.0), jnp.inf)
    return ConditionNumber(value=value, lambda_max=hi, lambda_min=lo, converged=ok_hi & ok_lo)


def ntk_trace(apply_fn: Callable, params: Any, x: jax.Array) -> jax.Array:
    """Exact ``tr(Theta) = sum_{n,o} ||J_{n,o}||^2`` from per-example VJPs (no storage)."""
    x = jnp.asarray(x)

    def one(xi):
        def f(p):
            return apply_fn(p, xi[None])[0]

        out, vjp = jax.vjp(f, params)
        basis = jnp.eye(out.size, dtype=out.dtype).reshape(out.size, *out.shape)

        def sq(e):
            (g,) = vjp(e)
            return sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(g))

        return jax.lax.map(sq, basis).sum()

    return jax.lax.map(one, x, batch_size=min(32, x.shape[0])).sum()


def effective_rank(
    apply_fn: Callable,
    params: Any,
    x: jax.Array,
    *,
    key: jax.Array,
    num_matvecs: int | None = None,
    batch_size: int | None = None,
) -> EffectiveRank:
    r"""Effective rank ``tr(Theta) / lambda_max(Theta)`` of the NTK of a batch, matrix-free.

    The trace is exact, ``sum_{n,o} ||d f_o(x_n) / d params||^2`` from one VJP per example
    and output (``N O`` single-example backward passes, about ``O`` operator applications,
    assuming examples are independent); ``lambda_max`` comes from
    :func:`gradlab.spectral.eigsh`. The ratio counts the eigen-directions whose eigenvalues
    are comparable to the top one (``1`` for rank one, ``N O`` for a flat spectrum).

    Args:
        apply_fn: ``apply_fn(params, x) -> outputs`` (examples independent).
        params: parameters.
        x: inputs ``(N, ...)``.
        key: PRNG key for the Lanczos start vector.
        num_matvecs: Krylov depth (default as :func:`gradlab.spectral.eigsh`).
        batch_size: optional tile size for the operator.

    Returns:
        :class:`EffectiveRank`.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (4, 16, 3))
        >>> x = jax.random.normal(jax.random.key(1), (10, 4))
        >>> r = gl.ntk.effective_rank(apply_fn, params, x, key=jax.random.key(2))
        >>> bool(1 <= r.value <= 30)
        True

    References:
        Tropp (2015), An introduction to matrix concentration inequalities (intrinsic
        dimension), https://arxiv.org/abs/1501.01571
    """
    lam, ok = _extreme(apply_fn, params, x, "largest", key, num_matvecs, batch_size)
    tr = ntk_trace(apply_fn, params, x)
    return EffectiveRank(value=tr / lam, trace=tr, lambda_max=lam, converged=ok)
