r"""Gradient-regularised Newton (Algorithm 1 of Semenov, Jaggi & Doikov, 2506.13710) and the
gradient method with an adaptive Lipschitz estimate, as used by the ``approx_hessian_newton``
reproduction.

Both follow the authors' reference implementation (``grad_norm_smooth`` and
``gradient_method`` in ``src/methods.py`` of github.com/epfml/grad-norm-smooth): the Newton
step solves :math:`(H_k + \lambda_k I) d = -g_k` with :math:`\lambda_k = \|g_k\| / \gamma_k`
(here matrix-free, by :func:`gradlab.spectral.cg`), the step is accepted when
:math:`f(x_k) - f(x_k + d) \ge \|g(x_k + d)\|^2 / (8 \lambda_k)` (then :math:`\gamma` doubles),
else :math:`\gamma` halves and the step is recomputed, at most ``max_search`` times (the
last trial is taken, as in the reference code). A run stops when :math:`f(x_k) - f^\star \le`
``f_tol`` (the reference notebook's criterion, used when ``f_tol`` is given and the problem
knows :math:`f^\star`) or else when :math:`\|g_k\| \le` ``grad_tol`` :math:`\|g_0\|`.
One Newton iteration (solve, test, adapt :math:`\gamma`) is :func:`gradlab.transforms.grn_search`,
the same code as the optax transform :func:`gradlab.transforms.grn`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Problem", "Trace", "gradient_method", "regularized_newton"]


class Trace(NamedTuple):
    """A solver run: iterations to tolerance and the per-iteration history.

    Attributes:
        x: final iterate.
        num_iters: ``()`` iterations performed (stops at tolerance or the cap).
        converged: ``()`` whether the stopping rule was met (``f - f_star <= f_tol``, or
            ``||g|| <= grad_tol * ||g0||``).
        values: ``(max_iters + 1,)`` objective at each iterate (NaN after the stop).
        grad_norms: ``(max_iters + 1,)`` gradient norm at each iterate (NaN after the stop).
        inner: ``()`` total inner work: CG iterations (Newton) or line-search trials (gradient).
        evaluations: ``()`` objective-and-gradient evaluations.
    """

    x: Any
    num_iters: jax.Array
    converged: jax.Array
    values: jax.Array
    grad_norms: jax.Array
    inner: jax.Array
    evaluations: jax.Array


class Problem(NamedTuple):
    """An objective ``loss_fn(x, batch)``, its data, a start point and the two curvatures.

    ``curvature(x, batch, key, which)`` returns ``matvec(v)`` for ``which`` in ``{"exact",
    "approx"}``. Functions take the data as an argument so solvers can be jitted with the
    data passed in, not baked in as constants.
    """

    loss_fn: Callable[[Any, Any], jax.Array]
    batch: Any
    x0: Any
    curvature: Callable[[Any, Any, Any, str], Callable[[Any], Any]]
    f_star: float | None


def _norm(tree) -> jax.Array:
    from gradlab._src.tree import tree_norm

    return tree_norm(tree)


def _stop_rule(problem: Problem, grad_tol: float, f_tol: float | None, gn0):
    """``done(f, gn)``: functional residual when ``f_tol`` and ``f_star`` are known, else the
    relative gradient norm."""
    if f_tol is not None and problem.f_star is not None:
        return lambda f, gn: f - problem.f_star <= f_tol
    return lambda f, gn: gn <= grad_tol * gn0


def _axpy(a, x, y):
    return jax.tree_util.tree_map(lambda u, v: a * u + v, x, y)


def _select_curvature(problem: Problem, x, key, which):
    """The curvature ``which``: a string, or a traced bool (True: exact) so that one
    compilation serves both curvatures (``lax.cond`` runs only the selected one)."""
    if isinstance(which, str):
        return problem.curvature(x, problem.batch, key, which)
    exact = problem.curvature(x, problem.batch, key, "exact")
    approx = problem.curvature(x, problem.batch, key, "approx")
    return lambda v: jax.lax.cond(which, exact, approx, v)


def regularized_newton(
    problem: Problem,
    *,
    which,
    key,
    grad_tol: float,
    max_iters: int,
    f_tol: float | None = None,
    gamma0: float = 1.0,
    max_search: int = 40,
    cg_tol: float = 1e-10,
    cg_max_iters: int = 300,
) -> Trace:
    r"""Algorithm 1 of the paper (gradient-regularised Newton with adaptive search).

    Each iteration builds the curvature ``which`` (``"exact"`` or ``"approx"``, or a traced
    bool, True meaning exact, so one compilation serves both) at
    :math:`x_k` and solves :math:`(H_k + \lambda_k I) d = -g_k` with
    :func:`gradlab.spectral.cg` (damping :math:`\lambda_k = \|g_k\|/\gamma_k`); the step is
    accepted when :math:`f(x_k) - f(x_k + d) \ge \|g(x_k + d)\|^2/(8\lambda_k)` (then
    :math:`\gamma \leftarrow 2\gamma`), otherwise :math:`\gamma \leftarrow \gamma/2` and the
    solve is repeated (at most ``max_search`` times). One ``lax.while_loop``; jit it with
    the problem closed over.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.experiments.approx_hessian_newton import (
        ...     logsumexp_problem, regularized_newton)
        >>> with jax.enable_x64(True):
        ...     prob = logsumexp_problem(jax.random.key(0), num_rows=30, dim=5, mu=0.5)
        ...     tr = regularized_newton(prob, which="exact", key=jax.random.key(1),
        ...                             grad_tol=1e-8, max_iters=50)
        ...     print(bool(tr.converged), float(jnp.abs(tr.x).max()) < 1e-6)
        True True
    """
    from gradlab.transforms import grn_search

    loss_and_grad = jax.value_and_grad(problem.loss_fn)
    batch = problem.batch

    def step(k, x, f, g, gn, gamma):
        matvec = _select_curvature(problem, x, jax.random.fold_in(key, k), which)
        r = grn_search(
            lambda p: loss_and_grad(p, batch),
            matvec,
            x,
            f,
            g,
            gn,
            gamma,
            max_search=max_search,
            cg_tol=cg_tol,
            cg_max_iters=cg_max_iters,
        )
        return r.params, r.value, r.grads, r.grad_norm, r.gamma, r.cg_iters, r.num_trials

    return _descend(problem, step, gamma0, grad_tol=grad_tol, f_tol=f_tol, max_iters=max_iters)


def gradient_method(
    problem: Problem,
    *,
    grad_tol: float,
    max_iters: int,
    f_tol: float | None = None,
    lipschitz0: float = 1.0,
    max_search: int = 40,
) -> Trace:
    r"""The gradient method with the paper's adaptive estimate of the Lipschitz constant.

    :math:`x_{k+1} = x_k - g_k / L`, accepted when :math:`f(x_{k+1}) \le f(x_k) - \|g_k\|^2 /
    (2L)` (then :math:`L \leftarrow L/2` for the next iteration), else :math:`L \leftarrow 2L`
    and retry.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.experiments.approx_hessian_newton import (
        ...     gradient_method, logsumexp_problem)
        >>> with jax.enable_x64(True):
        ...     prob = logsumexp_problem(jax.random.key(0), num_rows=30, dim=5, mu=0.5)
        ...     tr = gradient_method(prob, grad_tol=1e-6, max_iters=20000)
        ...     print(bool(tr.converged), int(tr.num_iters) > 10)
        True True
    """
    loss_and_grad = jax.value_and_grad(problem.loss_fn)
    batch = problem.batch

    def step(k, x, f, g, gn, lip):
        def search_cond(t):
            return (~t[3]) & (t[0] < max_search)

        def search_body(t):
            i, lip, _, _ = t
            x_new = _axpy(-1.0 / lip, g, x)
            f_new = problem.loss_fn(x_new, batch)
            ok = (f_new <= f - gn**2 / (2.0 * lip)) & jnp.isfinite(f_new)
            return i + 1, jnp.where(ok, 0.5 * lip, 2.0 * lip), x_new, ok

        i, lip, x, _ = jax.lax.while_loop(
            search_cond, search_body, (jnp.int32(0), lip, x, jnp.array(False))
        )
        f, g = loss_and_grad(x, batch)
        return x, f, g, _norm(g), lip, i, i

    return _descend(problem, step, lipschitz0, grad_tol=grad_tol, f_tol=f_tol, max_iters=max_iters)


def _descend(problem: Problem, step, param0, *, grad_tol, f_tol, max_iters) -> Trace:
    """The outer loop both methods share: iterate ``step`` until the stop rule or ``max_iters``.

    ``step(k, x, f, g, gn, param) -> (x, f, g, gn, param, inner_work, evals)`` is one
    accepted iteration, including its backtracking search on the adaptive constant ``param``.
    """
    f0, g0 = jax.value_and_grad(problem.loss_fn)(problem.x0, problem.batch)
    gn0 = _norm(g0)
    dtype = gn0.dtype
    hist = jnp.full((max_iters + 1,), jnp.nan, dtype)
    done = _stop_rule(problem, grad_tol, f_tol, gn0)

    def outer_cond(s):
        k, f, gn = s[0], s[2], s[4]
        return (k < max_iters) & ~done(f, gn)

    def outer_body(s):
        k, x, f, g, gn, param, fs, gs, inner, evals = s
        x, f, g, gn, param, work, tries = step(k, x, f, g, gn, param)
        k = k + 1
        return (
            k,
            x,
            f,
            g,
            gn,
            param,
            fs.at[k].set(f),
            gs.at[k].set(gn),
            inner + work,
            evals + tries,
        )

    init = (
        jnp.int32(0),
        problem.x0,
        f0,
        g0,
        gn0,
        jnp.asarray(param0, dtype),
        hist.at[0].set(f0),
        hist.at[0].set(gn0),
        jnp.int32(0),
        jnp.int32(1),
    )
    k, x, f, _, gn, _, fs, gs, inner, evals = jax.lax.while_loop(outer_cond, outer_body, init)
    return Trace(x, k, done(f, gn), fs, gs, inner, evals)


def _history(values: np.ndarray, num_iters: int, count: int = 400) -> tuple[list, list]:
    """Iterations and values kept for the figure: all of them, or ``count`` log-spaced."""
    n = num_iters + 1
    if n <= count:
        idx = np.arange(n)
    else:
        idx = np.unique(np.concatenate([[0], np.geomspace(1, n - 1, count).astype(int)]))
    return idx.tolist(), values[idx].tolist()
