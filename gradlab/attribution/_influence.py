"""Influence functions: -g_test^T (C + damping I)^{-1} g_train by CG, dense, Arnoldi or EK-FAC."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal, NamedTuple

import jax

import gradlab.curvature as curv
from gradlab._src.errors import (
    check_choice,
    check_int,
    check_real,
    missing_argument_message,
)
from gradlab._src.tree import flat_matvec, ravel, tree_size
from gradlab._src.typing import Batch, Params
from gradlab.attribution import _influence_solvers as solvers
from gradlab.attribution._common import (
    check_callable,
    check_scalar_loss,
    gradient_chunk_size,
    map_examples,
    num_examples,
    split_supervised_batch,
    static_fn,
)
from gradlab.attribution._per_example import example_grad_fn

__all__ = ["InfluenceResult", "influence"]

_OUTPUT_CURVATURES = ("ggn", "kfac", "ekfac")


def _available() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The curvatures and solvers this installation supports (K-FAC ones need gl.curvature.ekfac)."""
    if hasattr(curv, "kfac") and hasattr(curv, "ekfac"):
        return ("ggn", "hessian", "kfac", "ekfac"), ("cg", "dense", "arnoldi", "factored")
    return ("ggn", "hessian"), ("cg", "dense", "arnoldi")


class InfluenceResult(NamedTuple):
    r"""The output of :func:`influence`.

    Attributes:
        scores: ``(N_test, N_train)``,
            :math:`-\nabla\ell_{\mathrm{test}}^\top (C + \lambda I)^{-1} \nabla\ell_{\mathrm{train}}`.
        converged: ``(N_test,)`` bool per query: CG's convergence flag; for ``"arnoldi"`` all
            top-``k`` eigenpairs converged; for ``"dense"``/``"factored"`` a finite solution.
        residual_norm: ``(N_test,)`` :math:`\|(C + \lambda I) x_j - g_j\|` of the solved test
            vector :math:`x_j` against the exact curvature ``C`` (Hessian or GGN; for CG the
            recursive residual). For ``"arnoldi"`` and ``"factored"`` it measures how far the
            approximation is from the exact solve.
        num_matvecs: ``(N_test,)`` int32 curvature products spent per query: CG iterations,
            ``P`` for ``"dense"`` (shared), the eigensolver's count for ``"arnoldi"`` (shared),
            0 for ``"factored"``.

    Examples:
        >>> import jax.numpy as jnp, gradlab as gl
        >>> loss_fn = lambda w, b: 0.5 * jnp.mean((b[0] @ w - b[1]) ** 2)
        >>> batch = (jnp.eye(2), jnp.ones(2))
        >>> res = gl.attribution.influence(loss_fn, jnp.zeros(2), batch, batch, damping=0.5)
        >>> res.scores.shape, res.converged.shape
        ((2, 2), (2,))
    """

    scores: jax.Array
    converged: jax.Array
    residual_norm: jax.Array
    num_matvecs: jax.Array


def influence(
    loss_fn: Callable[[Params, Batch], jax.Array],
    params: Params,
    train_batch: Batch,
    test_batch: Batch,
    *,
    damping: float,
    curvature: Literal["ggn", "hessian", "kfac", "ekfac"] = "hessian",
    solver: Literal["cg", "dense", "arnoldi", "factored"] = "cg",
    model_fn: Callable[[Params, Any], Any] | None = None,
    output_loss: Callable[[Any, Any], jax.Array] | str | None = None,
    curvature_batch: Batch | None = None,
    tol: float = 1e-6,
    max_iters: int = 100,
    k: int | None = None,
    key: jax.Array | None = None,
    num_matvecs: int | None = None,
    chunk_size: int | None = None,
) -> InfluenceResult:
    r"""Influence of every training example on every test example's loss.

    .. math::
        \mathcal{I}(z_{\mathrm{test}}, z_{\mathrm{train}})
        = -\nabla_\theta \ell(z_{\mathrm{test}})^\top (C + \lambda I)^{-1}
          \nabla_\theta \ell(z_{\mathrm{train}})

    with :math:`\ell` the loss of one example (``loss_fn`` on a batch of one), :math:`C` the
    curvature of the *mean* loss on ``curvature_batch`` (default: ``train_batch``) and
    :math:`\lambda` = ``damping``. It is the first-order change of the test loss when the
    training objective :math:`\frac1N\sum_i \ell_i` gains :math:`\varepsilon\,\ell_j`
    (divided by :math:`\varepsilon`): removing example ``j`` changes the test loss by about
    ``-scores[:, j] / N``. Negative scores mark helpful (loss-reducing) training examples. If
    the model was trained with an L2 penalty :math:`\frac{\lambda}{2}\|\theta\|^2`, that
    :math:`\lambda` is the principled damping.

    **Curvature.** ``"hessian"`` is the Hessian of ``loss_fn`` (exact, may be indefinite away
    from a minimum: CG then needs enough damping). ``"ggn"`` (positive semi-definite, the usual
    choice for networks) and ``"kfac"``/``"ekfac"`` need the loss split into a model and an
    output loss, as :func:`gradlab.curvature.ggn` takes them: pass ``model_fn(params, inputs)
    -> outputs`` and ``output_loss(outputs, targets) -> scalar`` (a callable or
    ``"softmax_cross_entropy"``/``"mse"``), with batches ``(inputs, targets)``; ``loss_fn``
    must equal ``output_loss(model_fn(params, inputs), targets)``, it still gives the gradients.

    **Which solver when** (``P`` parameters, ``T`` test queries):

    - ``"dense"``: forms :math:`C` (``P`` products) and solves once; exact. For ``P`` up to a
      few thousand (``P x P`` memory); the reference for the others.
    - ``"cg"``: one conjugate-gradient solve per query (vmapped, ``chunk_size`` at a time), up
      to ``max_iters`` products each; exact to ``tol`` for any ``P``, needs
      :math:`C + \lambda I` positive definite. Best for few queries or when exactness matters.
    - ``"arnoldi"`` (Schioppa et al.): the top-``k`` eigenpairs (by magnitude) of :math:`C`,
      once, by :func:`gradlab.spectral.eigsh`; every query is then a projection,
      :math:`x = U (\Lambda + \lambda)^{-1} U^\top g`, so the cost no longer grows with ``T``.
      Directions outside the top-``k`` subspace are dropped; exact at ``k = P``. Best for many
      queries when the spectrum decays fast.
    - ``"factored"`` (with ``curvature="kfac"``/``"ekfac"``, Grosse et al.): the K-FAC /
      EK-FAC inverse from :func:`gradlab.curvature.ekfac`, no iterations; approximate (exact
      for a deep linear network with MSE and K-FAC's per-layer assumptions). For large models
      and many queries.

    The train gradients are streamed: each chunk of ``chunk_size`` per-example gradients is
    contracted with the ``(T, P)`` solved test vectors and dropped, so ``(N_train, P)`` is
    never stored. The function is jit-compatible (options are static Python values).

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss over a batch.
        params: the (trained) parameters.
        train_batch: training examples, a pytree with leading axis ``N_train``.
        test_batch: test examples, leading axis ``N_test``.
        damping: :math:`\lambda \ge 0`.
        curvature: ``"hessian"``, ``"ggn"``, ``"kfac"`` or ``"ekfac"``.
        solver: ``"cg"``, ``"dense"``, ``"arnoldi"`` or ``"factored"`` (K-FAC curvatures only).
        model_fn: ``model_fn(params, inputs) -> outputs``; required for ``"ggn"``/``"kfac"``/
            ``"ekfac"``.
        output_loss: ``output_loss(outputs, targets) -> scalar`` or a loss name; required with
            ``model_fn``.
        curvature_batch: examples on which :math:`C` is taken; default ``train_batch``.
        tol: CG's relative residual tolerance and the eigensolver's tolerance, ``> 0``.
        max_iters: CG's iteration limit, ``>= 1``.
        k: number of eigenpairs for ``"arnoldi"``, ``1 <= k <= P``.
        key: PRNG key for ``"arnoldi"``'s start vector.
        num_matvecs: Krylov depth per eigensolver cycle for ``"arnoldi"`` (default as
            :func:`gradlab.spectral.eigsh`).
        chunk_size: examples (and CG queries) vmapped together, chunks run in a ``lax.map``;
            ``None`` takes as many as keep one chunk of gradients within 2^24 entries (as every
            gradient-based attribution function does).

    Returns:
        :class:`InfluenceResult` with ``scores (N_test, N_train)`` and per-query status.

    Raises:
        ValueError: negative ``damping``, unknown ``curvature``/``solver``, a solver that does
            not fit the curvature, a missing ``model_fn``/``output_loss``/``k``/``key``,
            ``tol``/``max_iters``/``chunk_size``/``k`` out of range, batch leaves with
            different leading sizes, or ``loss_fn`` not returning a scalar.
        TypeError: ``loss_fn``/``model_fn`` not callable, or a ggn batch not a pair.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> model_fn = lambda w, x: x @ w
        >>> loss_fn = lambda w, b: gl.curvature.mse(model_fn(w, b[0]), b[1])
        >>> x = jnp.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]); y = jnp.ones((3, 1))
        >>> w = jnp.zeros((2, 1))
        >>> res = gl.attribution.influence(loss_fn, w, (x, y), (x[:1], y[:1]), damping=0.1,
        ...                                curvature="ggn", model_fn=model_fn, output_loss="mse")
        >>> dense = gl.attribution.influence(loss_fn, w, (x, y), (x[:1], y[:1]), damping=0.1,
        ...                                  solver="dense")
        >>> bool(jnp.allclose(res.scores, dense.scores, atol=1e-5)), res.scores.shape
        (True, (1, 3))

    References:
        Koh & Liang, "Understanding black-box predictions via influence functions", ICML 2017,
        https://arxiv.org/abs/1703.04730. Schioppa et al., "Scaling up influence functions",
        AAAI 2022, https://arxiv.org/abs/2112.03052. Grosse et al., "Studying large language
        model generalization with influence functions", 2023, https://arxiv.org/abs/2308.03296.
    """
    curvatures, solver_names = _available()
    check_callable("loss_fn", loss_fn)
    damping = check_real("damping", damping, 0.0, None)
    check_choice("curvature", curvature, curvatures)
    check_choice("solver", solver, solver_names)
    _check_combination(curvature, solver)
    tol = check_real("tol", tol, 0.0, None, lo_open=True)
    max_iters = check_int("max_iters", max_iters, 1, None)
    chunk_size = gradient_chunk_size(chunk_size, tree_size(params))
    num_examples("train_batch", train_batch)
    num_examples("test_batch", test_batch)
    check_scalar_loss("loss_fn", loss_fn, params, train_batch)
    if curvature_batch is None:
        curvature_batch = train_batch
    num_examples("curvature_batch", curvature_batch)
    if solver == "arnoldi":
        if k is None:
            raise ValueError(missing_argument_message("k", "solver='arnoldi'", "the eigenpairs"))
        if key is None:
            raise ValueError(missing_argument_message("key", "solver='arnoldi'", "a PRNG key"))

    if curvature in _OUTPUT_CURVATURES:
        _check_split_loss(curvature, model_fn, output_loss, curvature_batch)

    config = _Config(  # functions hashed by identity: the compiled program is cached on them
        static_fn(loss_fn),
        None if model_fn is None else static_fn(model_fn),
        output_loss
        if output_loss is None or isinstance(output_loss, str)
        else static_fn(output_loss),
        curvature,
        solver,
        tol,
        max_iters,
        k,
        num_matvecs,
        chunk_size,
    )
    return _compute(params, train_batch, test_batch, curvature_batch, damping, key, config=config)


class _Config(NamedTuple):
    """The static options of one :func:`influence` computation (hashable: the jit cache key)."""

    loss_fn: Any
    model_fn: Any
    output_loss: Any
    curvature: str
    solver: str
    tol: float
    max_iters: int
    k: int | None
    num_matvecs: int | None
    chunk_size: int | None


@partial(jax.jit, static_argnames=("config",))
def _compute(params, train_batch, test_batch, curvature_batch, damping, key, *, config):
    c = config
    flat_params, _ = ravel(params)
    if c.curvature == "hessian":
        op = curv.hessian(c.loss_fn, params, curvature_batch)
    else:
        op = curv.ggn(c.model_fn, c.output_loss, params, curvature_batch)
    mv, _, dtype, _ = flat_matvec(op, params)
    grad_one = example_grad_fn(c.loss_fn, params)

    def flat_grad(example: Any) -> jax.Array:
        return ravel(grad_one(example))[0].astype(dtype)

    g_test = map_examples(flat_grad, test_batch, c.chunk_size)  # (T, P)
    if c.solver == "dense":
        solved = solvers.solve_dense(mv, damping, g_test)
    elif c.solver == "cg":
        solved = solvers.solve_cg(
            mv, damping, g_test, tol=c.tol, max_iters=c.max_iters, chunk_size=c.chunk_size
        )
    elif c.solver == "arnoldi":
        solved = solvers.solve_arnoldi(
            mv, flat_params, damping, g_test, k=c.k, key=key, num_matvecs=c.num_matvecs, tol=c.tol
        )
    else:
        build = curv.kfac if c.curvature == "kfac" else curv.ekfac
        inverse = build(c.model_fn, c.output_loss, params, curvature_batch).inverse(damping)
        inv_flat, _, _, _ = flat_matvec(inverse, params)
        solved = solvers.solve_factored(inv_flat, mv, damping, g_test, c.chunk_size)

    def train_column(example: Any) -> jax.Array:
        return -(solved.x @ flat_grad(example))  # (T,)

    scores = map_examples(train_column, train_batch, c.chunk_size).T
    return InfluenceResult(scores, solved.converged, solved.residual_norm, solved.num_matvecs)


def _check_combination(curvature: str, solver: str) -> None:
    factored_curvature = curvature in ("kfac", "ekfac")
    if (solver == "factored") != factored_curvature:
        raise ValueError(
            f"solver={solver!r} does not fit curvature={curvature!r}: solver='factored' needs "
            "curvature='kfac' or 'ekfac', and those curvatures need solver='factored'"
        )


def _check_split_loss(curvature, model_fn, output_loss, batch) -> None:
    where = f"curvature={curvature!r}"
    if model_fn is None:
        raise ValueError(
            missing_argument_message("model_fn", where, "model_fn(params, inputs) -> outputs")
        )
    if output_loss is None:
        raise ValueError(
            missing_argument_message(
                "output_loss", where, "output_loss(outputs, targets) -> scalar, or a loss name"
            )
        )
    check_callable("model_fn", model_fn)
    split_supervised_batch("curvature_batch", batch)
