"""Spectral summaries of the NTK from :func:`ntk_operator`: step-size edge, condition number,
effective rank."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gradlab import spectral
from gradlab._src.errors import check_choice
from gradlab._src.tree import tree_size
from gradlab.distributed._parallel import shape_only, split_mask
from gradlab.ntk._operator import ntk_operator

__all__ = [
    "ConditionNumber",
    "EffectiveRank",
    "MaxLearningRate",
    "condition_number",
    "effective_rank",
    "max_learning_rate",
]


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


def _extreme(apply_fn, params, x, which, key, num_matvecs, batch_size, lift=None):
    """One extreme eigenvalue of ``Theta`` (plus ``diag(lift)`` on the rows, if given)."""
    theta = ntk_operator(apply_fn, params, x, batch_size=batch_size)
    out = jax.eval_shape(apply_fn, shape_only(params), shape_only(split_mask(x)[0]))
    like = jnp.zeros(out.shape, out.dtype)
    if lift is None:
        matvec = theta
    else:

        def matvec(v):
            return theta(v) + lift.reshape((-1,) + (1,) * (v.ndim - 1)) * v

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
    :func:`ntk_operator`. ``Theta`` has rank at most ``min(N O, P)`` (``P`` parameters): when
    ``N O > P`` it is singular, and ``lambda_min = 0`` and ``value = inf`` are returned exactly
    from this count, without a second eigensolve (cost: one :func:`~gradlab.spectral.eigsh`
    run). Otherwise a second run with ``which="smallest"`` finds ``lambda_min``; its residual
    is bounded relative to ``lambda_max`` (``eigsh``'s rule), so a nearly singular kernel
    converges slowly and its ``lambda_min`` is only as accurate as ``tol * lambda_max``: check
    ``converged``. For a :class:`gradlab.distributed.MaskedBatch`, padded rows (exact zeros of
    ``Theta``) are lifted to ``lambda_max`` for the second run, so they never count as the
    smallest eigenvalue, and the rank count uses the true rows.

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
    batch, mask = split_mask(x)
    out = jax.eval_shape(apply_fn, shape_only(params), shape_only(batch))
    per_example = math.prod(out.shape[1:])
    num_params = tree_size(params)
    k1, k2 = jax.random.split(key)
    hi, ok_hi = _extreme(apply_fn, params, x, "largest", k1, num_matvecs, batch_size)
    if mask is None and out.shape[0] * per_example > num_params:
        # rank(J J^T) <= P < N O: lambda_min is exactly 0, no second eigensolve needed.
        zero = jnp.zeros_like(hi)
        return ConditionNumber(
            value=jnp.inf + zero, lambda_max=hi, lambda_min=zero, converged=ok_hi
        )
    # Padded rows of a MaskedBatch are exact zeros of Theta; lifting them to lambda_max keeps
    # them out of the bottom of the spectrum without touching the true eigenvalues.
    lift = None if mask is None else (1 - mask).astype(out.dtype) * hi
    lo, ok_lo = _extreme(apply_fn, params, x, "smallest", k2, num_matvecs, batch_size, lift)
    if mask is not None:
        by_rank = jnp.sum(mask) * per_example > num_params
        lo = jnp.where(by_rank, 0.0, lo)
        ok_lo = ok_lo | by_rank
    singular = lo <= 0
    value = jnp.where(singular, jnp.inf, hi / jnp.where(singular, 1.0, lo))
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
