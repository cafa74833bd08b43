"""The two test problems of :mod:`gradlab.experiments.approx_hessian_newton`, with their Hessians.

Each builds a :class:`gradlab.experiments._grn.Problem`: the objective, its exact Hessian
operator and the approximation the experiment compares it with (weighted Gauss-Newton for
LogSumExp and, per example, for logistic regression; Monte-Carlo Fisher on request).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradlab.experiments._grn import Problem

__all__ = ["logistic_problem", "logsumexp_problem"]


def _lse_loss(mu: float):
    def loss_fn(x, batch):
        a, b = batch
        return mu * jax.nn.logsumexp((a @ x - b) / mu)

    return loss_fn


def _frozen_lse(mu: float):
    """``mu * sum_i exp((z_i - b_i)/mu - c)`` with ``c = logsumexp((z - b)/mu)`` held fixed.

    Value and gradient at the point match the log-sum-exp; its Hessian in ``z`` is
    ``diag(softmax((z - b)/mu)) / mu``, the log-sum-exp Hessian without its rank-one part.
    """

    def loss(z, b):
        s = (z - b) / mu
        return mu * jnp.sum(jnp.exp(s - jax.lax.stop_gradient(jax.nn.logsumexp(s))))

    return loss


def _lse_curvature(loss_fn, mu: float):
    """The ``Problem.curvature`` of a log-sum-exp loss: its Hessian, or the GGN of the frozen
    normaliser (:func:`_frozen_lse`) for every ``which`` other than ``"exact"``."""
    from gradlab.curvature import ggn, hessian

    frozen = _frozen_lse(mu)

    def curvature(x, batch, key, which):
        del key
        if which == "exact":
            return hessian(loss_fn, x, batch)
        return ggn(lambda x, a: a @ x, frozen, x, batch)

    return curvature


def logsumexp_problem(key, *, num_rows: int, dim: int, mu: float, whiten: bool = True) -> Problem:
    r"""The paper's synthetic LogSumExp problem, shifted so that the minimiser is ``0``.

    Examples:
        >>> import jax
        >>> from gradlab.experiments.approx_hessian_newton import logsumexp_problem
        >>> with jax.enable_x64(True):
        ...     prob = logsumexp_problem(jax.random.key(0), num_rows=20, dim=5, mu=0.1)
        ...     g = jax.grad(prob.loss_fn)(0.0 * prob.x0, prob.batch)
        ...     print(float(abs(g).max()) < 1e-12)
        True
    """
    ka, kb = jax.random.split(key)
    a = jax.random.uniform(ka, (num_rows, dim), minval=-1.0, maxval=1.0)
    b = jax.random.uniform(kb, (num_rows,), minval=-1.0, maxval=1.0)
    loss_fn = _lse_loss(mu)
    g0 = jax.grad(loss_fn)(jnp.zeros(dim, a.dtype), (a, b))
    a = a - g0[None, :]  # now grad f(0) = A^T pi - g0 sum(pi) = 0
    x0 = jnp.ones(dim, a.dtype)
    if whiten:
        # The paper measures steps in the norm of B = A^T A. With A = QR, x = R^{-1} y turns
        # that norm into the Euclidean one: the same method, run on data Q, from y0 = R x0.
        a, r = jnp.linalg.qr(a)
        x0 = r @ x0
    batch = (a, b)
    curvature = _lse_curvature(loss_fn, mu)

    f_star = float(loss_fn(jnp.zeros(dim, a.dtype), batch))
    return Problem(loss_fn, batch, x0, curvature, f_star)


def _logits(params, x):
    z = x @ params["w"] + params["b"]
    return jnp.stack([jnp.zeros_like(z), z], axis=-1)  # p(y=1) = sigmoid(z)


def _frozen_softmax_ce(logits, labels):
    """Softmax cross-entropy as the LogSumExp of the logit margins, normaliser held fixed.

    Per example the cross-entropy is ``log sum_c exp(z_c - z_y)``: a LogSumExp (``mu = 1``) of
    functions that are affine in the logits, as in the paper's LogSumExp oracle. Holding its
    normaliser fixed (as for :func:`_frozen_lse`) gives the mean of
    ``sum_c exp(d_c - logsumexp(d))``, ``d = z - z_y``, with the same value and gradient at
    the point and Hessian ``diag(softmax(z))`` in ``d``: the weighted Gauss-Newton of each
    example's LogSumExp. Written in the margins ``d`` it does not depend on how the logits
    are parameterised (adding the same constant to every logit changes nothing).
    """
    picked = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    d = logits - picked
    c = jax.lax.stop_gradient(jax.nn.logsumexp(d, axis=-1, keepdims=True))
    return jnp.mean(jnp.sum(jnp.exp(d - c), axis=-1))


def logistic_problem(
    x, y, *, l2: float, approx: str = "weighted_gauss_newton", num_samples: int = 1
) -> Problem:
    r"""L2-regularised logistic regression ``mean CE + l2/2 ||w||^2`` with an intercept.

    The model is the two-class softmax with logits :math:`(0, w^\top x + b)`. The exact
    curvature is :func:`gradlab.curvature.hessian` of the objective. The approximation
    ``approx`` (plus ``l2`` on ``w``) is

    - ``"weighted_gauss_newton"``: the paper's LogSumExp approximation applied to each
      example's loss written as a LogSumExp of affine functions,
      :math:`\log(1 + e^{-s_i z_i}) = \log(e^0 + e^{-s_i z_i})` (:math:`s_i = \pm 1` the
      label, :math:`z_i = w^\top x_i + b`): :math:`\frac1N \sum_i \sigma(-s_i z_i)
      \tilde x_i \tilde x_i^\top` (:math:`\tilde x = (x, 1)`), i.e. each example weighted
      by the probability of its *wrong* label, where the Hessian has
      :math:`\sigma(z_i)(1 - \sigma(z_i))`. Deterministic, above the Hessian (by the
      factor :math:`1/p(y_i \mid x_i)` per example), and its error does not vanish at the
      solution;
    - ``"fisher"``: the Monte-Carlo :func:`gradlab.curvature.fisher` (``num_samples`` labels
      per example drawn from the model, new for every ``key``).

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> from gradlab.experiments.approx_hessian_newton import logistic_problem
        >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]); y = jnp.array([0, 1, 1])
        >>> prob = logistic_problem(x, y, l2=0.1)
        >>> round(float(prob.loss_fn(prob.x0, prob.batch)), 4)  # log 2 at zero
        0.6931
    """
    from gradlab.curvature import fisher, ggn, hessian, softmax_cross_entropy

    if approx not in ("weighted_gauss_newton", "fisher"):
        raise ValueError(f"approx must be 'weighted_gauss_newton' or 'fisher', got {approx!r}")

    def loss_fn(params, batch):
        inputs, labels = batch
        ce = softmax_cross_entropy(_logits(params, inputs), labels)
        return ce + 0.5 * l2 * jnp.sum(params["w"] ** 2)

    batch = (x, y)

    def curvature(params, batch, key, which):
        if which == "exact":
            return hessian(loss_fn, params, batch)
        if approx == "fisher":
            fv = fisher(
                _logits, params, batch, key=key, likelihood="categorical", num_samples=num_samples
            )
        else:
            fv = ggn(_logits, _frozen_softmax_ce, params, batch)

        def matvec(v):
            out = fv(v)
            return {"w": out["w"] + l2 * v["w"], "b": out["b"]}

        return matvec

    x0 = {"w": jnp.zeros(x.shape[1], x.dtype), "b": jnp.zeros((), x.dtype)}
    return Problem(loss_fn, batch, x0, curvature, None)


# ----------------------------------------------------------------------------- solvers


# ----------------------------------------------------------------------------- experiment
