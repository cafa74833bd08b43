"""A few eigenpairs of a symmetric operator: thick-restart Lanczos with full reorthogonalisation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gradlab._src.errors import check_choice, check_int, check_real
from gradlab._src.programs import compile_once
from gradlab.distributed._context import follow_operator_mesh
from gradlab.spectral._common import (
    BREAKDOWN_RTOL,
    advance_basis,
    fresh_direction,
    prepare,
    reorthogonalize_step,
)

__all__ = ["Eigen", "eigsh", "default_num_matvecs"]

_WHICH = ("largest", "smallest", "magnitude")


class Eigen(NamedTuple):
    r"""Eigenpairs from :func:`eigsh` or :func:`power_iteration`.

    Attributes:
        eigenvalues: ``(k,)`` Ritz values, ordered by ``which`` (``"largest"``: descending,
            ``"smallest"``: ascending, ``"magnitude"``: descending absolute value).
        eigenvectors: pytree like ``like`` with a leading axis ``k``: unit Ritz vectors.
        residuals: ``(k,)`` residual norms :math:`\|A y_i - \theta_i y_i\|`.
        converged: ``(k,)`` bool, ``residuals <= tol * max_i |theta_i|``; False for NaN.
        num_matvecs: ``()`` int32, the number of operator applications spent.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> eig = gl.spectral.eigsh(lambda v: jnp.arange(5.0) * v, jnp.zeros(5), k=2,
        ...                         key=jax.random.key(0))
        >>> eig.eigenvalues.shape, eig.eigenvectors.shape, eig.converged.shape
        ((2,), (2, 5), (2,))
    """

    eigenvalues: jax.Array
    eigenvectors: Any
    residuals: jax.Array
    converged: jax.Array
    num_matvecs: jax.Array


def default_num_matvecs(k: int, n: int) -> int:
    """The default Krylov depth of :func:`eigsh`: ``min(max(2k + 1, 20), n)``."""
    return min(max(2 * k + 1, 20), n)


def _order(theta: jax.Array, which: str) -> jax.Array:
    if which == "largest":
        return jnp.argsort(-theta)
    if which == "smallest":
        return jnp.argsort(theta)
    return jnp.argsort(-jnp.abs(theta))


@follow_operator_mesh
@compile_once
def eigsh(
    matvec: Callable[[Any], Any],
    like: Any,
    *,
    k: int,
    key: jax.Array,
    num_matvecs: int | None = None,
    which: Literal["largest", "smallest", "magnitude"] = "largest",
    tol: float = 1e-6,
    max_restarts: int = 20,
    matvec_dtype: str | None = None,
) -> Eigen:
    r"""The ``k`` extreme eigenpairs of a symmetric operator (thick-restart Lanczos).

    Runs Lanczos with full reorthogonalisation to depth ``m = num_matvecs`` from a random
    Gaussian start vector, takes the Ritz pairs :math:`(\theta_i, Q^\top s_i)` of the projected
    matrix :math:`T = Q A Q^\top`, and bounds each residual by
    :math:`\|A y_i - \theta_i y_i\| = \beta_m |s_{mi}|`. A pair is converged when its residual
    is at most ``tol * max_i |theta_i|`` (``tol`` is raised to ``100 eps`` of the dtype, since
    residuals below rounding cannot be resolved). If some of the ``k`` wanted pairs have not
    converged, the run is *thick-restarted* (Wu & Simon): the ``p = k + (m - k) // 2`` best
    Ritz vectors (by ``which``) are kept, the residual vector becomes the next basis vector and
    Lanczos continues for ``m - p`` more matvecs, up to ``max_restarts`` times. Everything runs
    in one ``lax.while_loop`` (compile time flat in the depth and number of restarts).

    Eigenvalue error is about ``residual**2 / gap``, so ``tol=1e-6`` gives near machine-precision
    eigenvalues for separated eigenvalues. ``which="smallest"`` finds the most negative
    eigenvalues (negative curvature); ``"magnitude"`` the largest in absolute value.

    Cost: ``m + restarts * (m - p)`` matvecs (reported in ``num_matvecs``), memory ``O(m n)``.

    Args:
        matvec: symmetric operator ``matvec(v) -> Av`` on pytrees shaped like ``like``.
        like: a pytree with the structure, shapes and dtypes of the vectors.
        k: number of eigenpairs, ``1 <= k <= n``.
        key: PRNG key for the start vector.
        num_matvecs: Krylov depth per cycle, ``k <= m <= n``; default
            ``min(max(2k + 1, 20), n)``.
        which: ``"largest"``, ``"smallest"`` or ``"magnitude"``.
        tol: relative residual tolerance for ``converged``.
        max_restarts: maximum number of thick restarts (0 disables restarting).
        matvec_dtype: mixed precision. ``None`` (default): the operator gets vectors of
            ``like``'s dtype and everything runs in it. ``"bfloat16"``, ``"float16"``,
            ``"float32"`` or ``"float64"``: the vectors handed to ``matvec`` are cast to that
            dtype, its output is cast back, and the Lanczos recurrence, reorthogonalisation and the projected eigensolve run in float32 (float64 when
            ``jax_enable_x64`` is on). See ``docs/spectral.md``, "Mixed precision".

    Returns:
        :class:`Eigen` with ``eigenvalues (k,)``, ``eigenvectors`` (pytree, leading axis
        ``k``), ``residuals (k,)``, ``converged (k,)`` and ``num_matvecs ()``.

    Raises:
        ValueError: ``k``, ``num_matvecs``, ``tol`` or ``max_restarts`` out of range, unknown
            ``which``, operator output shapes differ from ``like``.
        TypeError: non-integer ``k``/``num_matvecs``, operator output structure differs.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> a = jnp.diag(jnp.arange(1.0, 101.0))
        >>> eig = gl.spectral.eigsh(lambda v: a @ v, jnp.zeros(100), k=3, key=jax.random.key(0))
        >>> jnp.round(eig.eigenvalues, 3), bool(eig.converged.all())
        (Array([100.,  99.,  98.], dtype=float32), True)

    References:
        Wu & Simon, "Thick-restart Lanczos method for large symmetric eigenvalue problems",
        SIAM J. Matrix Anal. Appl. 2000. Stathopoulos, Saad & Wu, "Dynamic thick restarting of
        the Davidson, and the implicitly restarted Arnoldi methods", SIAM J. Sci. Comput. 1998.
    """
    mv, n, dtype, unravel = prepare(matvec, like, matvec_dtype=matvec_dtype)
    k = check_int("k", k, 1, n)
    if num_matvecs is None:
        m = default_num_matvecs(k, n)
    else:
        m = check_int("num_matvecs", num_matvecs, k, n)
    check_choice("which", which, _WHICH)
    tol = check_real("tol", tol, 0.0, None, lo_open=True)
    max_restarts = check_int("max_restarts", max_restarts, 0, None)
    p = k + (m - k) // 2
    if p >= m:  # m == k: no room to add vectors after a restart
        max_restarts = 0
    tol_eff = jnp.maximum(jnp.asarray(tol, dtype), 100 * jnp.finfo(dtype).eps)
    brk_tol = BREAKDOWN_RTOL * jnp.finfo(dtype).eps
    v0 = jax.random.normal(key, (n,), dtype)
    vals, vecs, res, conv, count = _thick_restart(
        mv, v0, k, m, p, which, tol_eff, brk_tol, max_restarts
    )
    return Eigen(vals, jax.vmap(unravel)(vecs), res, conv, count)


def _thick_restart(mv, v0, k, m, p, which, tol_eff, brk_tol, max_restarts):
    n = v0.shape[0]
    dtype = v0.dtype
    idx_m = jnp.arange(m)

    def step(i, carry):
        basis, t, _, scale = carry
        w = mv(basis[i])
        scale = jnp.maximum(scale, jnp.linalg.norm(w))
        w, coeffs = reorthogonalize_step(basis, i, w, t[jnp.maximum(i - 1, 0), i])
        basis, beta_rec, _ = advance_basis(basis, i, w, scale, brk_tol)
        col = jnp.where(idx_m <= i, coeffs, 0.0) + jnp.where(idx_m == i + 1, beta_rec, 0.0)
        t = t.at[:, i].set(col).at[i, :].set(col)
        return basis, t, w, scale

    def cycle(state):
        basis, t, r, scale, start, it, count, *_ = state
        basis, t, r, scale = lax.fori_loop(start, m, step, (basis, t, r, scale))
        count = count + (m - start)
        theta, s = jnp.linalg.eigh(t)
        order = _order(theta, which)
        theta, s = theta[order], s[:, order]
        beta_m = jnp.linalg.norm(r)
        res = beta_m * jnp.abs(s[m - 1, :])
        anorm = jnp.max(jnp.abs(theta))
        conv = res[:k] <= tol_eff * anorm
        # Thick restart: keep the p best Ritz vectors, continue from the residual direction.
        kept = s[:, :p].T @ basis  # (p, n)
        new_basis = jnp.zeros((m, n), dtype).at[:p].set(kept)
        new_t = jnp.zeros((m, m), dtype)
        new_t = new_t.at[jnp.arange(p), jnp.arange(p)].set(theta[:p])
        if p < m:
            broke = beta_m <= brk_tol * scale
            q_next = lax.cond(
                broke,
                lambda: fresh_direction(new_basis),
                lambda: r / jnp.where(broke, jnp.ones_like(beta_m), beta_m),
            )
            new_basis = new_basis.at[p].set(q_next)
            coupling = jnp.where(broke, 0.0, beta_m * s[m - 1, :p])
            new_t = new_t.at[p, :p].set(coupling).at[:p, p].set(coupling)
        return (new_basis, new_t, r, scale, jnp.int32(p), it + 1, count, theta[:k], res[:k], conv)

    def keep_going(state):
        it, theta, conv = state[5], state[7], state[9]
        finite = jnp.all(jnp.isfinite(theta))
        return (it == 0) | ((it <= max_restarts) & ~jnp.all(conv) & finite)

    basis = jnp.zeros((m, n), dtype).at[0].set(v0 / jnp.linalg.norm(v0))
    state = (
        basis,
        jnp.zeros((m, m), dtype),
        jnp.zeros(n, dtype),
        jnp.zeros((), dtype),
        jnp.int32(0),
        jnp.int32(0),
        jnp.int32(0),
        jnp.zeros(k, dtype),
        jnp.zeros(k, dtype),
        jnp.zeros(k, bool),
    )
    state = lax.while_loop(keep_going, cycle, state)
    basis, count, theta, res, conv = state[0], state[6], state[7], state[8], state[9]
    return theta, basis[:k], res, conv, count
