"""Conjugate gradients on pytrees, with status fields and implicit differentiation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gradlab._src.errors import check_int, check_real, check_same_structure
from gradlab._src.programs import compile_once
from gradlab._src.tree import ravel
from gradlab.distributed._context import follow_operator_mesh
from gradlab.spectral._common import check_callable, check_vector_like
from gradlab.spectral._precision import cast_operator, check_matvec_dtype, working_dtype

__all__ = ["Solution", "cg"]


class Solution(NamedTuple):
    r"""The output of :func:`cg`.

    Attributes:
        x: pytree like ``b``, the approximate solution of :math:`(A + \lambda I) x = b`.
        num_iters: ``()`` int32, iterations (= matvecs) performed.
        residual_norm: ``()`` :math:`\|b - (A + \lambda I) x\|` of the recursive residual.
        converged: ``()`` bool, ``residual_norm <= tol * ||b||`` (False if NaN appeared).

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> sol = gl.spectral.cg(lambda v: 2.0 * v, jnp.ones(3))
        >>> sol.x, int(sol.num_iters), bool(sol.converged)
        (Array([0.5, 0.5, 0.5], dtype=float32), 1, True)
    """

    x: Any
    num_iters: jax.Array
    residual_norm: jax.Array
    converged: jax.Array


@follow_operator_mesh
@compile_once
def cg(
    matvec: Callable[[Any], Any],
    b: Any,
    *,
    damping: float = 0.0,
    tol: float = 1e-6,
    max_iters: int = 100,
    preconditioner: Callable[[Any], Any] | None = None,
    matvec_dtype: str | None = None,
) -> Solution:
    r"""Solve :math:`(A + \lambda I) x = b` for symmetric positive-definite ``A`` by conjugate gradients.

    Starting from :math:`x_0 = 0`, CG minimises :math:`\tfrac12 x^\top (A + \lambda I) x - b^\top x`
    over growing Krylov spaces; with a preconditioner :math:`M \approx (A + \lambda I)^{-1}`
    (SPD) it runs on the preconditioned system. The loop is a ``lax.while_loop`` that stops
    when :math:`\|r_i\| \le \mathrm{tol}\,\|b\|`, after ``max_iters`` iterations, or as soon as
    a NaN appears (then ``converged`` is False). Unlike ``jax.scipy.sparse.linalg.cg``, the
    status is returned.

    The solve is wrapped in ``lax.custom_linear_solve``: gradients with respect to ``b`` and
    to anything ``matvec`` closes over are computed by implicit differentiation (one more CG
    solve with the same operator), not by unrolling the iterations.

    Cost: one matvec (and one preconditioner application) per iteration; memory ``O(n)``.

    Args:
        matvec: SPD operator ``matvec(v) -> Av`` on pytrees shaped like ``b``.
        b: right-hand side, any pytree of float arrays.
        damping: :math:`\lambda \ge 0` added to the diagonal.
        tol: relative residual tolerance, ``> 0``.
        max_iters: maximum number of iterations, ``>= 1``.
        preconditioner: optional SPD map ``M(r) -> z`` on pytrees like ``b``.
        matvec_dtype: mixed precision. ``None`` (default): the operator gets vectors of
            ``b``'s dtype and everything runs in it. ``"bfloat16"``, ``"float16"``,
            ``"float32"`` or ``"float64"``: the vectors handed to ``matvec`` are cast to that
            dtype, its output is cast back, and the CG recurrence and the preconditioner run in float32 (float64 when
            ``jax_enable_x64`` is on). See ``docs/spectral.md``, "Mixed precision".

    Returns:
        :class:`Solution` with ``x`` (pytree like ``b``), ``num_iters ()``,
        ``residual_norm ()`` and ``converged ()``.

    Raises:
        TypeError: ``matvec``/``preconditioner`` not callable, or the operator's output
            structure differs from ``b``.
        ValueError: ``damping < 0``, ``tol <= 0``, ``max_iters < 1``, or leaf shapes differ.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> a = jnp.array([[4.0, 1.0], [1.0, 3.0]])
        >>> sol = gl.spectral.cg(lambda v: a @ v, jnp.array([1.0, 2.0]))
        >>> sol.x, bool(sol.converged), int(sol.num_iters)
        (Array([0.09090909, 0.6363636 ], dtype=float32), True, 2)

    References:
        Hestenes & Stiefel, "Methods of conjugate gradients for solving linear systems",
        J. Res. NBS 1952.
    """
    check_callable("matvec", matvec)
    check_vector_like("b", b)
    damping = check_real("damping", damping, 0.0, None)
    tol = check_real("tol", tol, 0.0, None, lo_open=True)
    max_iters = check_int("max_iters", max_iters, 1, None)
    low = check_matvec_dtype(matvec_dtype)
    if low is None:
        _check_operator("matvec", matvec, b)
    else:
        low_mv, _, b_low = cast_operator(matvec, b, low)
        _check_operator("matvec", matvec, b, probe=b_low)
    if preconditioner is not None:
        check_callable("preconditioner", preconditioner)
        _check_operator("preconditioner", preconditioner, b)

    b_flat, unravel = ravel(b)
    dtype = working_dtype(b_flat.dtype, low)
    b_flat = b_flat.astype(dtype)

    def flat(fn):
        return lambda v: ravel(fn(unravel(v)))[0].astype(dtype)

    mv = flat(matvec) if low is None else (lambda v: low_mv(v).astype(dtype))
    precond = flat(preconditioner) if preconditioner is not None else (lambda v: v)

    def damped(v):
        return mv(v) + damping * v

    def solve(op, rhs):
        return _cg_loop(op, precond, rhs, tol, max_iters)

    x, (num_iters, rnorm, converged) = lax.custom_linear_solve(
        damped, b_flat, solve, symmetric=True, has_aux=True
    )
    return Solution(unravel(x), num_iters, rnorm, converged)


def _check_operator(name: str, fn: Callable[[Any], Any], b: Any, probe: Any = None) -> None:
    out = jax.eval_shape(fn, b if probe is None else probe)
    try:
        check_same_structure(f"{name}(b)", out, b)
    except (TypeError, ValueError) as err:
        raise type(err)(f"b must have the structure of the operator's vectors; {err}") from None


def _cg_loop(op, precond, b, tol, max_iters):
    bnorm = jnp.linalg.norm(b)
    threshold = tol * bnorm
    x = jnp.zeros_like(b)
    r = b
    z = precond(r)
    p = z
    rz = jnp.vdot(r, z)

    def cond(state):
        _, r, _, _, i = state
        rnorm = jnp.linalg.norm(r)
        return (i < max_iters) & (rnorm > threshold)  # False once rnorm is NaN

    def body(state):
        x, r, p, rz, i = state
        ap = op(p)
        alpha = rz / jnp.vdot(p, ap)
        x = x + alpha * p
        r = r - alpha * ap
        z = precond(r)
        rz_new = jnp.vdot(r, z)
        p = z + (rz_new / rz) * p
        return x, r, p, rz_new, i + 1

    x, r, _, _, i = lax.while_loop(cond, body, (x, r, p, rz, jnp.int32(0)))
    rnorm = jnp.linalg.norm(r)
    converged = (rnorm <= threshold) & jnp.all(jnp.isfinite(x))
    return x, (i, rnorm, converged)
