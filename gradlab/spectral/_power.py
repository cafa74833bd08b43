"""Power iteration for the eigenvalue of largest magnitude, with a residual stop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from gradlab._src.errors import check_int, check_real
from gradlab._src.programs import compile_once
from gradlab.distributed._context import follow_operator_mesh
from gradlab.spectral._common import prepare
from gradlab.spectral._eigsh import Eigen

__all__ = ["power_iteration"]


@follow_operator_mesh
@compile_once
def power_iteration(
    matvec: Callable[[Any], Any],
    like: Any,
    *,
    key: jax.Array,
    num_iters: int = 100,
    tol: float = 1e-6,
    matvec_dtype: str | None = None,
) -> Eigen:
    r"""The eigenpair of largest magnitude by power iteration.

    Iterates :math:`v \leftarrow A v / \|A v\|` from a random Gaussian start, with the Rayleigh
    quotient :math:`\theta = v^\top A v` and residual :math:`\|A v - \theta v\|`, inside a
    ``lax.while_loop`` that stops once the residual is at most ``tol * |theta|`` (``tol`` is
    raised to ``100 eps`` of the dtype), after ``num_iters`` matvecs, or when a NaN appears.
    Convergence is linear with rate :math:`|\lambda_2 / \lambda_1|`; prefer :func:`eigsh`,
    which needs far fewer matvecs for the same accuracy. Kept as the simple baseline that
    PyHessian-style analyses use.

    Args:
        matvec: symmetric operator ``matvec(v) -> Av`` on pytrees shaped like ``like``.
        like: a pytree with the structure, shapes and dtypes of the vectors.
        key: PRNG key for the start vector.
        num_iters: maximum number of matvecs, ``>= 1``.
        tol: relative residual tolerance, ``> 0``.
        matvec_dtype: mixed precision. ``None`` (default): the operator gets vectors of
            ``like``'s dtype and everything runs in it. ``"bfloat16"``, ``"float16"``,
            ``"float32"`` or ``"float64"``: the vectors handed to ``matvec`` are cast to that
            dtype, its output is cast back, and the iteration and the Rayleigh quotients run in float32 (float64 when
            ``jax_enable_x64`` is on). See ``docs/spectral.md``, "Mixed precision".

    Returns:
        :class:`Eigen` with ``k = 1``: ``eigenvalues (1,)``, ``eigenvectors`` (pytree with
        leading axis 1), ``residuals (1,)``, ``converged (1,)`` and ``num_matvecs ()``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> a = jnp.diag(jnp.array([5.0, 1.0, -2.0]))
        >>> eig = gl.spectral.power_iteration(lambda v: a @ v, jnp.zeros(3), key=jax.random.key(0))
        >>> jnp.round(eig.eigenvalues, 4), bool(eig.converged[0])
        (Array([5.], dtype=float32), True)

    References:
        Golub & Van Loan, *Matrix Computations*, 4th ed., section 8.2.1.
    """
    mv, n, dtype, unravel = prepare(matvec, like, matvec_dtype=matvec_dtype)
    num_iters = check_int("num_iters", num_iters, 1, None)
    tol = check_real("tol", tol, 0.0, None, lo_open=True)
    tol_eff = jnp.maximum(jnp.asarray(tol, dtype), 100 * jnp.finfo(dtype).eps)

    v0 = jax.random.normal(key, (n,), dtype)
    v0 = v0 / jnp.linalg.norm(v0)
    w0 = mv(v0)

    def rayleigh(v, w):
        theta = jnp.vdot(v, w)
        return theta, jnp.linalg.norm(w - theta * v)

    def cond(state):
        v, w, i = state
        theta, res = rayleigh(v, w)
        return (i < num_iters) & (res > tol_eff * jnp.abs(theta))  # False on NaN

    def body(state):
        _, w, i = state
        v = w / jnp.linalg.norm(w)
        return v, mv(v), i + 1

    v, w, count = lax.while_loop(cond, body, (v0, w0, jnp.int32(1)))
    theta, res = rayleigh(v, w)
    converged = (res <= tol_eff * jnp.abs(theta)) & jnp.isfinite(theta)
    vec = jax.tree_util.tree_map(lambda x: x[None], unravel(v))
    return Eigen(theta[None], vec, res[None], converged[None], count)
