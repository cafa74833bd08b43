"""The Lanczos tridiagonalisation with full reorthogonalisation and a breakdown guard."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gradlab._src.errors import check_int
from gradlab._src.programs import compile_once
from gradlab._src.tree import ravel
from gradlab.distributed._context import follow_operator_mesh
from gradlab.spectral._common import (
    BREAKDOWN_RTOL,
    advance_basis,
    check_vector_like,
    concrete_is_zero,
    local_step,
    prepare,
    reorthogonalize_step,
)

__all__ = ["LanczosResult", "lanczos"]


class LanczosResult(NamedTuple):
    r"""The output of :func:`lanczos`: a Krylov decomposition :math:`A Q^\top = Q^\top T + r e_m^\top`.

    Attributes:
        alphas: ``(m,)`` diagonal of the tridiagonal matrix ``T``.
        betas: ``(m-1,)`` off-diagonal of ``T`` (zero where a breakdown was repaired).
        basis: ``(m, n)`` orthonormal Lanczos vectors ``Q`` as rows, flat (use
            ``jax.flatten_util.ravel_pytree`` of ``v0`` to map rows back to pytrees).
        residual: ``(n,)`` the unnormalised next Lanczos vector ``r = beta_m q_{m+1}``.
        residual_norm: ``()`` :math:`\beta_m = \|r\|`; a Ritz pair ``(theta_i, Q^T s_i)`` of
            ``T`` has residual norm :math:`\beta_m |s_{mi}|`.
        breakdown: ``()`` int32, the first step ``i`` at which :math:`\beta_i` fell below the
            breakdown threshold (the Krylov space became invariant), or ``m`` if none did.
        init_norm: ``()`` the norm of ``v0``. Zero means the start vector was zero (possible
            only inside ``jit``); the other fields are then NaN.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> res = gl.spectral.lanczos(lambda v: 2.0 * v, jnp.ones(4), num_matvecs=2)
        >>> res.alphas.shape, res.betas.shape, res.basis.shape, int(res.breakdown)
        ((2,), (1,), (2, 4), 0)
    """

    alphas: jax.Array
    betas: jax.Array
    basis: jax.Array
    residual: jax.Array
    residual_norm: jax.Array
    breakdown: jax.Array
    init_norm: jax.Array


@follow_operator_mesh
def lanczos(
    matvec: Callable[[Any], Any],
    v0: Any,
    *,
    num_matvecs: int,
    reorthogonalize: bool = True,
    matvec_dtype: str | None = None,
) -> LanczosResult:
    r"""Lanczos tridiagonalisation of a symmetric operator from the start vector ``v0``.

    Builds an orthonormal basis :math:`Q = [q_1, \dots, q_m]^\top` of the Krylov space
    :math:`\mathcal{K}_m(A, v_0)` and the tridiagonal :math:`T = Q A Q^\top` through the
    three-term recurrence
    :math:`\beta_i q_{i+1} = A q_i - \alpha_i q_i - \beta_{i-1} q_{i-1}`, so that
    :math:`A Q^\top = Q^\top T + \beta_m q_{m+1} e_m^\top`. With ``reorthogonalize=True``
    (default) every new vector, after the local three-term step, is orthogonalised against the
    whole filled basis once more (blocked Gram-Schmidt), and a third time when that pass removed
    much of it (the Daniel-Gragg-Kaufman-Stewart criterion, "twice is enough"). This keeps
    :math:`Q` orthonormal to machine precision and removes the ghost eigenvalues of plain
    Lanczos.

    **Breakdown.** If :math:`\beta_i \le 100\,\epsilon \max_{j \le i} \|A q_j\|` (the Krylov space
    is numerically invariant; the threshold is relative to the operator's scale so it does
    not misfire in float32) the run continues with a fresh unit vector orthogonal to the basis
    and records :math:`\beta_i = 0`, so ``T`` splits into blocks whose eigenvalues are all
    exact Ritz values; ``breakdown`` gives the first such step.

    Runs in one ``lax.fori_loop`` with the basis preallocated and updated in place: compile
    time does not grow with ``num_matvecs``. Cost: ``num_matvecs`` matvecs, ``O(m n)`` memory
    and, with reorthogonalisation, about ``4 i n`` extra flops at step ``i`` (only the filled
    rows are read; twice that at the rare steps that need the second pass).

    Args:
        matvec: symmetric linear operator ``matvec(v) -> Av`` on pytrees shaped like ``v0``.
        v0: start vector (any pytree of float arrays, need not be normalised).
        num_matvecs: Krylov depth ``m``, ``1 <= m <= n`` (``n`` = size of ``v0``).
        reorthogonalize: full reorthogonalisation (default) or the plain three-term
            recurrence (cheaper, loses orthogonality once Ritz values converge).
        matvec_dtype: mixed precision. ``None`` (default): the operator gets vectors of
            ``v0``'s dtype and everything runs in it. ``"bfloat16"``, ``"float16"``,
            ``"float32"`` or ``"float64"``: the vectors handed to ``matvec`` are cast to that
            dtype, its output is cast back, and the recurrence and the reorthogonalisation run in float32 (float64 when
            ``jax_enable_x64`` is on). See ``docs/spectral.md``, "Mixed precision".

    Returns:
        :class:`LanczosResult` with ``alphas (m,)``, ``betas (m-1,)``, ``basis (m, n)``,
        ``residual (n,)``, ``residual_norm ()``, ``breakdown ()`` and ``init_norm ()``.

    Raises:
        ValueError: ``num_matvecs`` outside ``[1, n]``; ``v0`` is (concretely) zero; the
            operator's output has leaves of other shapes than ``v0``.
        TypeError: ``matvec`` not callable; ``reorthogonalize`` not a bool; output structure
            differs from ``v0``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> a = jnp.diag(jnp.arange(1.0, 6.0))
        >>> res = gl.spectral.lanczos(lambda v: a @ v, jnp.ones(5), num_matvecs=5)
        >>> t = jnp.diag(res.alphas) + jnp.diag(res.betas, 1) + jnp.diag(res.betas, -1)
        >>> jnp.round(jnp.linalg.eigvalsh(t), 4)
        Array([1., 2., 3., 4., 5.], dtype=float32)

    References:
        Lanczos, "An iteration method for the solution of the eigenvalue problem of linear
        differential and integral operators", J. Res. NBS 1950. Parlett, *The Symmetric
        Eigenvalue Problem*, SIAM 1998 (reorthogonalisation, "twice is enough"). Daniel,
        Gragg, Kaufman & Stewart, "Reorthogonalization and stable algorithms for updating the
        Gram-Schmidt QR factorization", Math. Comp. 1976 (the criterion for the second pass).
    """
    check_vector_like("v0", v0)
    if concrete_is_zero(v0):  # before the kept program, which sees v0 traced
        raise ValueError("v0 has zero norm: the Lanczos start vector must be nonzero")
    return _lanczos(
        matvec,
        v0,
        num_matvecs=num_matvecs,
        reorthogonalize=reorthogonalize,
        matvec_dtype=matvec_dtype,
    )


@compile_once
def _lanczos(matvec, v0, *, num_matvecs, reorthogonalize, matvec_dtype):
    mv, n, dtype, _ = prepare(matvec, v0, "v0", matvec_dtype)
    m = check_int("num_matvecs", num_matvecs, 1, n)
    if not isinstance(reorthogonalize, bool):
        raise TypeError(f"reorthogonalize={reorthogonalize!r} must be a bool (True or False)")
    flat, _ = ravel(v0)
    return run_lanczos(mv, flat.astype(dtype), m, reorthogonalize)


def run_lanczos(
    mv: Callable[[jax.Array], jax.Array], v0: jax.Array, m: int, reorthogonalize: bool = True
) -> LanczosResult:
    """Lanczos on flat vectors (no input checks); see :func:`lanczos`."""
    n = v0.shape[0]
    dtype = v0.dtype
    tol = BREAKDOWN_RTOL * jnp.finfo(dtype).eps
    init_norm = jnp.linalg.norm(v0)
    q0 = v0 / init_norm
    basis = jnp.zeros((m, n), dtype).at[0].set(q0)
    alphas = jnp.zeros(m, dtype)
    betas = jnp.zeros(m, dtype)

    def body(i, carry):
        basis, alphas, betas, _, scale, brk = carry
        w = mv(basis[i])
        scale = jnp.maximum(scale, jnp.linalg.norm(w))
        beta_prev = betas[jnp.maximum(i - 1, 0)]
        if reorthogonalize:
            w, coeffs = reorthogonalize_step(basis, i, w, beta_prev)
            alpha = coeffs[i]
        else:
            w, alpha, _ = local_step(basis, i, w, beta_prev)
        basis, beta, broke = advance_basis(basis, i, w, scale, tol)
        alphas = alphas.at[i].set(alpha)
        betas = betas.at[i].set(beta)
        brk = jnp.where((brk == m) & broke, i, brk)
        return basis, alphas, betas, w, scale, brk

    init = (basis, alphas, betas, jnp.zeros(n, dtype), jnp.zeros((), dtype), jnp.int32(m))
    basis, alphas, betas, residual, _, brk = lax.fori_loop(0, m, body, init)
    return LanczosResult(
        alphas=alphas,
        betas=betas[: m - 1],
        basis=basis,
        residual=residual,
        residual_norm=betas[m - 1],
        breakdown=brk,
        init_norm=init_norm,
    )
