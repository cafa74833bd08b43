"""Gradient-regularised Newton with the adaptive search of Semenov, Jaggi & Doikov (2506.13710)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradlab._src.errors import check_choice, check_int, check_real, missing_argument_message
from gradlab._src.tree import tree_norm
from gradlab.transforms._common import at_least_float32, require_extra_arg
from gradlab.transforms._dicesgd import canonical_key, check_learning_rate

__all__ = ["GRNSearch", "GRNState", "grn", "grn_search", "scale_by_grn"]

CURVATURES = ("hessian", "ggn", "fisher")


class GRNSearch(NamedTuple):
    r"""The outcome of one adaptive search of :func:`grn_search`.

    Attributes:
        params: the trial point :math:`x + d` taken (the accepted one, or the last trial).
        step: its step :math:`d = -(\tilde H + \lambda I)^{-1} g` (pytree like the params).
        value: ``()`` objective at ``params``.
        grads: gradient at ``params`` (pytree like the params).
        grad_norm: ``()`` its Euclidean norm.
        gamma: ``()`` the step-size parameter for the next iteration (doubled after an accepted
            trial, halved after each rejected one).
        accepted: ``()`` bool, whether the last trial passed the acceptance test.
        num_trials: ``()`` int32, trials (CG solves) run, ``1 <= num_trials <= max_search``.
        cg_iters: ``()`` int32, CG iterations summed over the trials.
        cg_converged: ``()`` bool, whether the last trial's CG solve converged.

    Examples:
        >>> from gradlab.transforms import GRNSearch
        >>> GRNSearch._fields[:3]
        ('params', 'step', 'value')
    """

    params: Any
    step: Any
    value: jax.Array
    grads: Any
    grad_norm: jax.Array
    gamma: jax.Array
    accepted: jax.Array
    num_trials: jax.Array
    cg_iters: jax.Array
    cg_converged: jax.Array


def grn_search(
    value_and_grad_fn: Callable[[Any], tuple[jax.Array, Any]],
    matvec: Callable[[Any], Any],
    params: Any,
    value: jax.Array,
    grads: Any,
    grad_norm: jax.Array,
    gamma: jax.Array,
    *,
    max_search: int,
    cg_tol: float | jax.Array,
    cg_max_iters: int,
    require_converged: bool = False,
) -> GRNSearch:
    r"""One iteration of Algorithm 1 of the paper: solve, test, adapt :math:`\gamma`, repeat.

    A trial with parameter :math:`\gamma` solves :math:`(\tilde H + \lambda I) d = -g` with
    :math:`\lambda = \|g\|/\gamma` by :func:`gradlab.spectral.cg` and is accepted when

    .. math:: f(x) - f(x + d) \ge \frac{\|\nabla f(x + d)\|^2}{8 \lambda}

    (and :math:`f(x + d)` is finite, and with ``require_converged`` the CG solve converged);
    then :math:`\gamma \leftarrow 2\gamma`. Otherwise
    :math:`\gamma \leftarrow \gamma / 2` and the solve is repeated, at most ``max_search``
    trials; the last trial is returned either way (as in the authors' code). One
    ``lax.while_loop``. This is the single implementation behind :func:`scale_by_grn` and the
    ``approx_hessian_newton`` reproduction.

    Args:
        value_and_grad_fn: ``x -> (f(x), grad f(x))``.
        matvec: the curvature :math:`\tilde H` at ``params`` (SPD or PSD), on params pytrees.
        params: :math:`x`.
        value: :math:`f(x)`.
        grads: :math:`\nabla f(x)`.
        grad_norm: :math:`\|\nabla f(x)\|`.
        gamma: ``()`` the current :math:`\gamma > 0`.
        max_search: largest number of trials, ``>= 1``.
        cg_tol: passed to :func:`gradlab.spectral.cg`.
        cg_max_iters: passed to :func:`gradlab.spectral.cg`.
        require_converged: also reject a trial whose CG solve did not converge (the larger
            :math:`\lambda` of the next trial makes the system better conditioned). False
            reproduces the authors' code, which takes inexact solves.

    Returns:
        :class:`GRNSearch`.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.transforms import grn_search
        >>> f = lambda x: 0.5 * jnp.sum(jnp.array([1.0, 4.0]) * x**2)
        >>> x = jnp.array([1.0, 1.0]); v, g = jax.value_and_grad(f)(x)
        >>> r = grn_search(jax.value_and_grad(f), lambda u: jnp.array([1.0, 4.0]) * u, x, v, g,
        ...                jnp.linalg.norm(g), jnp.asarray(1.0), max_search=10, cg_tol=1e-6,
        ...                cg_max_iters=10)
        >>> bool(r.accepted), float(r.gamma), bool(r.value < v)
        (True, 2.0, True)

    References:
        Semenov, Jaggi & Doikov, "Gradient-Normalized Smoothness for Optimization with
        Approximate Hessians", 2025. https://arxiv.org/abs/2506.13710
    """
    from gradlab.spectral import cg

    neg_g = jax.tree_util.tree_map(lambda a: -a, grads)

    def attempt(gamma):
        lam = grad_norm / gamma
        sol = cg(matvec, neg_g, damping=lam, tol=cg_tol, max_iters=cg_max_iters)
        x_new = jax.tree_util.tree_map(lambda u, v: 1.0 * u + v, sol.x, params)
        f_new, g_new = value_and_grad_fn(x_new)
        gn_new = tree_norm(g_new)
        ok = (value - f_new >= gn_new**2 / (8.0 * lam)) & jnp.isfinite(f_new)
        if require_converged:
            ok = ok & sol.converged
        return x_new, f_new, g_new, gn_new, ok, sol.num_iters, sol.converged, sol.x

    def cond(t):
        return (~t[5]) & (t[0] < max_search)

    def body(t):
        i, gamma, _, _, _, _, _, work, _, _ = t
        x_new, f_new, g_new, gn_new, ok, its, conv, d = attempt(gamma)
        gamma = jnp.where(ok, 2.0 * gamma, 0.5 * gamma)
        return i + 1, gamma, x_new, f_new, g_new, ok, gn_new, work + its, conv, d

    init = (
        jnp.int32(0),
        gamma,
        params,
        value,
        grads,
        jnp.array(False),
        grad_norm,
        jnp.int32(0),
        jnp.array(False),
        jax.tree_util.tree_map(jnp.zeros_like, params),
    )
    i, gamma, x, f, g, ok, gn, work, conv, d = jax.lax.while_loop(cond, body, init)
    return GRNSearch(x, d, f, g, gn, gamma, ok, i, work, conv)


class GRNState(NamedTuple):
    r"""State of :func:`scale_by_grn`.

    Attributes:
        count: int32 scalar, number of updates so far.
        gamma: float32 scalar, the adaptive :math:`\gamma_k` (regularisation
            :math:`\lambda_k = \|g_k\|/\gamma_k`).
        num_skipped: int32 scalar, updates skipped (zero step, ``gamma`` halved once) because
            no trial had a converged CG solve with a finite step and objective.
        num_trials: int32 scalar, trials (CG solves) in the last update.
        key: PRNG key (used by ``curvature="fisher"`` only; split at every update).

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.transforms import scale_by_grn
        >>> scale_by_grn().init(jnp.zeros(2)).gamma
        Array(1., dtype=float32)
    """

    count: jax.Array
    gamma: jax.Array
    num_skipped: jax.Array
    num_trials: jax.Array
    key: jax.Array


def _curvature_matvec(curvature, params, obj_fn, logits_fn, key, num_samples):
    """``v -> H~ v`` at ``params`` for the chosen curvature (built on gradlab.curvature)."""
    from gradlab import curvature as curv

    if curvature == "hessian":
        return curv.hessian(lambda p, _: obj_fn(p), params, (jnp.zeros((1,)),))
    logits_shape = jax.eval_shape(logits_fn, params).shape
    model_fn = lambda p, _: logits_fn(p)  # noqa: E731
    inputs = jnp.zeros(logits_shape[:1])
    if curvature == "ggn":  # softmax cross-entropy: its output Hessian does not use the labels
        labels = jnp.zeros(logits_shape[:-1], jnp.int32)
        return curv.ggn(model_fn, "softmax_cross_entropy", params, (inputs, labels))
    return curv.fisher(model_fn, params, (inputs, None), key=key, num_samples=num_samples)


def scale_by_grn(
    *,
    curvature: Literal["hessian", "ggn", "fisher"] = "hessian",
    gamma0: float | jax.Array = 1.0,
    max_search: int = 20,
    cg_tol: float | jax.Array = 1e-4,
    cg_max_iters: int = 100,
    num_samples: int = 1,
    key: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Gradient-regularised Newton direction :math:`(\tilde H + \lambda I)^{-1} g` with adaptive :math:`\lambda`.

    Algorithm 1 of Semenov, Jaggi & Doikov:

    .. math::

        x_{k+1} = x_k - (\tilde H_k + \lambda_k I)^{-1} \nabla f(x_k), \qquad
        \lambda_k = \|\nabla f(x_k)\| / \gamma_k,

    where :math:`\gamma_k` comes from the search of :func:`grn_search` (accept when
    :math:`f(x_k) - f(x_{k+1}) \ge \|\nabla f(x_{k+1})\|^2 / (8 \lambda_k)` and double
    :math:`\gamma`, else halve it and re-solve). The paper's gradient-normalised smoothness
    shows that an approximation :math:`\tilde H` good relative to the gradient keeps the global
    rates of the exact Hessian. :math:`\tilde H` (``curvature``):

    - ``"hessian"``: Hessian-vector products of ``obj_fn``;
    - ``"ggn"``: Gauss-Newton :math:`J^\top H_{CE} J` of the *mean softmax cross-entropy* on
      ``logits_fn`` (:func:`gradlab.curvature.ggn`; its output Hessian needs no labels);
    - ``"fisher"``: Monte-Carlo Fisher of ``logits_fn``, ``num_samples`` labels per example
      drawn from the model with a fresh key every update (:func:`gradlab.curvature.fisher`).

    The solves use :func:`gradlab.spectral.cg`, matrix-free. The update returned is
    :math:`-d = (\tilde H + \lambda I)^{-1} g` (to be scaled by ``-learning_rate``; with
    learning rate 1 this is the paper's method). Everything runs in at least float32 and the
    update is cast back to the params' dtypes. **Failures**: a trial whose CG solve did not
    converge is rejected like one that fails the test (so :math:`\lambda` grows, which also
    rescues an indefinite Hessian). When the last trial still has an unconverged solve or a
    non-finite step or objective, the update is zero, ``gamma`` is halved once (not
    :math:`2^{-\text{max\_search}}`) and ``num_skipped`` is incremented.

    Cost per update: one objective evaluation, and per trial one CG solve (``<= cg_max_iters``
    curvature products) and one objective-and-gradient evaluation. State: scalars and a key.

    Args:
        curvature: ``"hessian"``, ``"ggn"`` or ``"fisher"``.
        gamma0: initial :math:`\gamma > 0` (a float or an array).
        max_search: largest number of trials per update, ``>= 1``.
        cg_tol: relative CG residual tolerance, ``> 0``.
        cg_max_iters: CG iterations per trial, ``>= 1``.
        num_samples: labels per example for ``"fisher"``, ``>= 1``.
        key: PRNG key, required for ``"fisher"`` (ignored otherwise).

    Returns:
        A ``GradientTransformationExtraArgs``; ``update(updates, state, params, *, obj_fn,
        logits_fn=None)``: ``obj_fn(params) -> scalar`` is the loss on the current batch
        (always needed: the search evaluates it), ``logits_fn(params) -> (B, C)`` its logits
        (needed for ``"ggn"`` and ``"fisher"``). ``updates`` must be ``grad obj_fn(params)``.

    Raises:
        ValueError: unknown ``curvature``, ``gamma0 <= 0``, ``cg_tol <= 0``, ``max_search``,
            ``cg_max_iters`` or ``num_samples`` below 1, missing ``key`` for ``"fisher"`` (at
            construction); missing ``obj_fn``, ``logits_fn`` or ``params`` (in ``update``).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.transforms import scale_by_grn
        >>> a = jnp.array([1.0, 10.0]); f = lambda x: 0.5 * jnp.sum(a * x**2)
        >>> tx = scale_by_grn(); x = jnp.array([1.0, 1.0]); state = tx.init(x)
        >>> u, state = tx.update(jax.grad(f)(x), state, x, obj_fn=f)
        >>> bool(f(x - u) < 0.5 * f(x)), float(state.gamma)
        (True, 2.0)

    References:
        Semenov, Jaggi & Doikov, "Gradient-Normalized Smoothness for Optimization with
        Approximate Hessians", 2025. https://arxiv.org/abs/2506.13710
    """
    check_choice("curvature", curvature, CURVATURES)
    check_real("gamma0", gamma0, 0.0, None, lo_open=True)
    check_real("cg_tol", cg_tol, 0.0, None, lo_open=True)
    max_search = check_int("max_search", max_search, 1)
    cg_max_iters = check_int("cg_max_iters", cg_max_iters, 1)
    num_samples = check_int("num_samples", num_samples, 1)
    where = "scale_by_grn(...).update"
    if curvature == "fisher":
        if key is None:
            raise ValueError(
                missing_argument_message(
                    "key", "scale_by_grn(curvature='fisher')", "pass key=jax.random.key(0)"
                )
            )
        key = canonical_key(key, "scale_by_grn")
    else:
        key = jax.random.key(0) if key is None else canonical_key(key, "scale_by_grn")

    def init_fn(params):
        del params
        zero = jnp.zeros((), jnp.int32)
        return GRNState(zero, jnp.asarray(gamma0, jnp.float32), zero, zero, key)

    def update_fn(updates, state, params=None, *, obj_fn=None, logits_fn=None, **extra):
        del extra
        require_extra_arg(obj_fn, "obj_fn", where, "pass obj_fn(params) -> scalar batch loss")
        if curvature != "hessian":
            hint = f"curvature={curvature!r} needs logits_fn(params) -> (B, C) logits"
            require_extra_arg(logits_fn, "logits_fn", where, hint)
        require_extra_arg(params, "params", where, "call update(updates, state, params, ...)")
        key, sub = jax.random.split(state.key)
        x = at_least_float32(params)
        g = jax.tree.map(lambda u, p: jnp.asarray(u).astype(p.dtype), updates, x)
        f = obj_fn(x)
        dtype = jnp.result_type(f, *jax.tree.leaves(g))
        gamma = state.gamma.astype(dtype)
        matvec = _curvature_matvec(curvature, x, obj_fn, logits_fn, sub, num_samples)
        r = grn_search(
            jax.value_and_grad(obj_fn),
            matvec,
            x,
            f,
            g,
            tree_norm(g),
            gamma,
            max_search=max_search,
            cg_tol=cg_tol,
            cg_max_iters=cg_max_iters,
            require_converged=True,
        )
        direction = jax.tree.map(jnp.negative, r.step)  # -d = (H + lam I)^{-1} g
        finite = jnp.isfinite(r.value) & jnp.all(
            jnp.asarray([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(direction)])
        )
        ok = finite & r.cg_converged
        out = jax.tree.map(
            lambda v, u: jnp.where(ok, v, 0.0).astype(jnp.result_type(u)), direction, updates
        )
        new_state = GRNState(
            count=optax.safe_increment(state.count),
            gamma=jnp.where(ok, r.gamma, 0.5 * gamma).astype(jnp.float32),
            num_skipped=state.num_skipped + (~ok).astype(jnp.int32),
            num_trials=r.num_trials.astype(jnp.int32),
            key=key,
        )
        return out, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def grn(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    *,
    curvature: Literal["hessian", "ggn", "fisher"] = "hessian",
    gamma0: float | jax.Array = 1.0,
    max_search: int = 20,
    cg_tol: float | jax.Array = 1e-4,
    cg_max_iters: int = 100,
    num_samples: int = 1,
    key: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Gradient-regularised Newton: :math:`x_{k+1} = x_k - \eta (\tilde H_k + \lambda_k I)^{-1} g_k`.

    :func:`scale_by_grn` chained with ``optax.scale_by_learning_rate``; ``learning_rate=1``
    (the default) is the paper's method. ``update`` needs ``obj_fn`` (and ``logits_fn`` for
    ``curvature="ggn"`` or ``"fisher"``).

    Args:
        learning_rate: :math:`\eta`, a float or an optax schedule (default 1).
        curvature: as :func:`scale_by_grn`.
        gamma0: as :func:`scale_by_grn`.
        max_search: as :func:`scale_by_grn`.
        cg_tol: as :func:`scale_by_grn`.
        cg_max_iters: as :func:`scale_by_grn`.
        num_samples: as :func:`scale_by_grn`.
        key: as :func:`scale_by_grn`.

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> from gradlab.transforms import grn
        >>> f = lambda x: jnp.sum(jnp.logaddexp(0.0, 3.0 * x) - x) + 0.05 * jnp.sum(x**2)
        >>> opt = grn(); x = jnp.array([2.0, -1.0]); state = opt.init(x)
        >>> @jax.jit
        ... def step(x, state):
        ...     u, state = opt.update(jax.grad(f)(x), state, x, obj_fn=f)
        ...     return optax.apply_updates(x, u), state
        >>> for _ in range(8):
        ...     x, state = step(x, state)
        >>> bool(jnp.linalg.norm(jax.grad(f)(x)) < 1e-4)
        True

    References:
        Semenov, Jaggi & Doikov, 2025. https://arxiv.org/abs/2506.13710
    """
    check_learning_rate(learning_rate)
    return optax.chain(
        scale_by_grn(
            curvature=curvature,
            gamma0=gamma0,
            max_search=max_search,
            cg_tol=cg_tol,
            cg_max_iters=cg_max_iters,
            num_samples=num_samples,
            key=key,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )
