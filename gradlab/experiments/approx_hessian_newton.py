r"""Semenov, Jaggi & Doikov (2506.13710): Newton with an approximate Hessian keeps Newton's pace.

The gradient-regularised Newton method (Algorithm 1 of the paper) steps

.. math:: x_{k+1} = x_k - (H_k + \lambda_k I)^{-1} \nabla f(x_k), \qquad
    \lambda_k = \|\nabla f(x_k)\| / \gamma_k,

where :math:`H_k` is the exact Hessian *or an approximation of it*, and the step-size
parameter :math:`\gamma_k` comes from an adaptive search: a step is accepted when
:math:`f(x_k) - f(x_{k+1}) \ge \|\nabla f(x_{k+1})\|^2 / (8 \lambda_k)` (then
:math:`\gamma_{k+1} = 2\gamma_k`), otherwise :math:`\gamma_k` is halved and the step recomputed.
The paper's gradient-normalised smoothness shows that an approximation that is good *relative
to the gradient* keeps the fast global rates of the exact method.

Two problems, each solved three ways (exact Hessian, approximate Hessian, and the gradient
method with the adaptive line search of the authors' code), counting iterations to tolerance.
The solvers live in :mod:`gradlab.experiments._grn`.

- **LogSumExp** :math:`f(x) = \mu \log \sum_i \exp((a_i^\top x - b_i)/\mu)` with random
  :math:`A \in [-1, 1]^{m \times n}`, :math:`b \in [-1, 1]^m`, shifted so that
  :math:`x^* = 0`, from :math:`x_0 = \mathbf 1`. Its Hessian is
  :math:`\frac1\mu (A^\top \mathrm{diag}(\pi) A - A^\top\pi\pi^\top A)`, :math:`\pi =
  \mathrm{softmax}((Ax - b)/\mu)`; the approximation is the paper's *weighted Gauss-Newton*
  matrix :math:`\frac1\mu A^\top \mathrm{diag}(\pi) A`, written here as
  :func:`gradlab.curvature.ggn` of the log-sum-exp with its normaliser held fixed.
  Setup as in the authors' reference notebook (``notebooks/examples.ipynb`` of
  github.com/epfml/grad-norm-smooth, section "LogSumExp"): ``create_log_sum_exp_zero_oracle``
  (optimum at zero), ``x_0 = np.ones(n)``, the Newton methods regularised in the norm of
  ``B = A^T A`` ("The matrix for the Euclidean metric"), the gradient method run with
  ``B=None`` (their "Gradient Method"; with ``B`` the same method is the curve they label
  "Gauss-Newton"), and every run stopped at the functional residual
  :math:`f(x_k) - f^\star <` ``eps = 1e-8`` ("Functional residual tolerance"). Sizes follow
  issue 4 (:math:`m = 500, n = 100, \mu = 0.1`; the notebook uses :math:`m = n = 1000,
  \mu = 1`).
- **Logistic regression** on scikit-learn's bundled breast-cancer set (569 x 30,
  standardised, intercept, :math:`\ell_2` penalty ``logreg_l2``), from zero, stopped at
  :math:`\|\nabla f(x_k)\| \le` ``grad_tol`` :math:`\|\nabla f(x_0)\|` (:math:`f^\star` is
  unknown). The authors' code has no logistic-regression experiment; the abstract pairs it
  with softmax problems ("global linear rates in logistic regression and softmax problems
  with approximate Hessians"), and the code's only approximation for softmax-type objectives
  is the weighted Gauss-Newton (``approx_hess_fn_logsumexp``). So the approximation
  (``logistic_approx = "weighted_gauss_newton"``) is that matrix applied to each example's
  loss written as a LogSumExp of affine functions, :math:`\log(e^0 + e^{-s_i z_i})`
  (:math:`s_i = \pm 1`, :math:`z_i = w^\top x_i + b`): :math:`\frac1N \sum_i
  \sigma(-s_i z_i) \tilde x_i \tilde x_i^\top` plus the exact penalty, each example weighted
  by the probability of its wrong label where the Hessian has :math:`\sigma(1 - \sigma)`.
  It is deterministic, never below the Hessian, and its error does not vanish at the
  solution (hence linear, not superlinear, local rates). Built on the margins
  :math:`z_c - z_y` it does not depend on how the two logits are parameterised; built on the
  raw logits :math:`(0, z)` it would weight by :math:`\sigma(z_i)` whatever the label (we
  first wrote that variant: 300 iterations without converging). ``"fisher"`` gives the
  Monte-Carlo Fisher (:func:`gradlab.curvature.fisher`, ``fisher_num_samples`` labels per
  example sampled from the model, fresh every iteration), this project's earlier choice:
  9 / 50 / 324 iterations, ratios 5.56 and 0.154.

Every linear system is solved matrix-free by :func:`gradlab.spectral.cg` on the curvature
operator with damping :math:`\lambda_k`. Runs in float64 (``jax.enable_x64``) so that the
stopping tolerance is far above rounding.

Acceptance (issue 14). Part 1 checked "approx <= 2x exact" and "approx <= 1/10 of the
gradient method"; the authors' own code contradicts both (below), so they are now reported
values, and the checks are (1) fidelity to the authors' code: on their notebook's LogSumExp
instance, rebuilt bit for bit by :mod:`gradlab.experiments._grn_reference`, each method's
iteration count is within ``max_ref_rel_diff`` (10%) of the counts their code gives
(``ref_iters_*`` in the config, with provenance; full mode 35 / 94 / 445, the gradient method
counted to :math:`f - f^\star < 10^{-2}` because it does not reach :math:`10^{-8}` in 20,000
iterations; gradlab: 35 / 94 / 445), and (2) the paper's ordering, exact < approximate <
gradient method in iterations, on LogSumExp and logistic regression. Full mode: 32 / 227 /
1,613 (LogSumExp) and 9 / 34 / 324 (logistic), so approx/exact = 7.09 and 3.78 and
approx/gradient = 0.141 and 0.105 (reported). Evidence that ``<= 2x`` is contradicted by the
method itself, from the authors' own code (``grad_norm_smooth`` with dense Cholesky,
``approx_hess_fn_logsumexp``, ``gradient_method``; github.com/epfml/grad-norm-smooth at
9f4ca00, their data generator ``np.random.seed(s); A = rand(n, m) * 2 - 1``, stop at
:math:`f - f^\star < 10^{-8}`), exact / weighted Gauss-Newton / gradient method:

- issue setup (:math:`m = 500, n = 100, \mu = 0.1`), seeds 3124, 0, 1: 36 / 146 / 2,455,
  44 / 257 / 3,555, 43 / 230 / 3,876, approx/exact 4.06, 5.84, 5.35, approx/gradient 0.059,
  0.072, 0.059. This module on the same matrices: 37 / 148 / 2,455, 42 / 259 / 3,555,
  43 / 230 / 3,876 (the same method; CG instead of Cholesky moves a step or two).
- the authors' notebook setup (:math:`m = n = 1000, \mu = 1`, seed 3124): 35 / 94 / not
  converged in 1,000 (gap :math:`2.2 \cdot 10^{-3}`; 445 to :math:`10^{-2}`): approx/exact
  2.69 in the authors' own figure, above 2 too.
- issue sizes with :math:`\mu = 1` (seed 3124): 11 / 17 / 34: approx/exact 1.55 passes but
  approx/gradient 0.50 fails; the two thresholds pull in opposite directions in :math:`\mu`.
- this module's generator, ``seed`` 0-5: approx/exact 7.09, 4.95, 5.00, 6.35, 4.93, 5.79;
  approx/gradient 0.141, 0.052, 0.085, 0.138, 0.073, 0.083: the gradient ratio depends on
  the instance (seed 0, the configured one, is at the unfavourable end); the setup was not
  changed to another instance.

On logistic regression the authors' ``grad_norm_smooth`` with the same weighted Gauss-Newton
(a NumPy oracle) gives 9 / 34 / 324, the numbers of this module.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradlab.experiments._grn import (
    Problem,
    Trace,
    _history,
    gradient_method,
    regularized_newton,
)
from gradlab.experiments._grn_problems import logistic_problem, logsumexp_problem
from gradlab.experiments.schema import Check, Experiment, check

__all__ = [
    "EXPERIMENT",
    "KNOWN_FAILING",
    "KNOWN_FAILING_FULL",
    "Config",
    "Problem",
    "Trace",
    "checks",
    "gradient_method",
    "logistic_problem",
    "logsumexp_problem",
    "plot",
    "regularized_newton",
    "run",
]

METHODS = ("exact", "approx", "gradient")

#: Checks that fail in smoke mode (what CI runs) after a faithful setup: findings, not bugs.
#: None since issue 14 replaced part 1's ratio checks ("approx <= 2x exact", "<= 1/10 of the
#: gradient method", contradicted by the authors' own code) by fidelity to that code and the
#: paper's ordering; the ratios are still measured and reported.
KNOWN_FAILING: tuple[str, ...] = ()
#: Checks that fail in full mode: none.
KNOWN_FAILING_FULL: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Config:
    """Every knob of the experiment (full-mode defaults) and its acceptance thresholds."""

    seed: int = 0
    lse_num_rows: int = 500
    lse_dim: int = 100
    lse_mu: float = 0.1
    lse_whiten: bool = True
    lse_gradient_whiten: bool = False
    lse_f_tol: float = 1e-8
    logreg_l2: float = 1e-3
    logistic_approx: str = "weighted_gauss_newton"
    fisher_num_samples: int = 1
    grad_tol: float = 1e-6
    gamma0: float = 1.0
    max_search: int = 40
    cg_tol: float = 1e-10
    cg_max_iters: int = 300
    max_newton_iters: int = 300
    max_gradient_iters: int = 100_000
    # the authors' notebook LogSumExp instance (fidelity check, issue 14), see configs/
    ref_seed: int = 3124
    ref_num_rows: int = 1000
    ref_dim: int = 1000
    ref_mu: float = 1.0
    # measured with epfml/grad-norm-smooth at commit 9f4ca00 (provenance in the shipped config)
    ref_iters_exact: int = 35
    ref_iters_approx: int = 94
    ref_iters_gradient: int = 445
    ref_gradient_f_tol: float = 1e-2
    max_ref_rel_diff: float = 0.1


# ----------------------------------------------------------------------------- problems


def _problems(config: Config) -> dict[str, dict[str, Problem]]:
    """Each problem as the Newton methods and the gradient method see it.

    LogSumExp: the Newton methods run in the norm of :math:`B = A^\top A` (whitened
    coordinates) and the gradient method in the Euclidean norm of :math:`x` unless
    ``lse_gradient_whiten`` (the reference notebook's "Gradient Method" has ``B=None``; with
    ``B`` it is the curve it labels "Gauss-Newton"). Logistic regression: one problem.
    """
    from gradlab.data import breast_cancer

    key = jax.random.key(config.seed)
    x, y = breast_cancer(dtype=jnp.float64)

    def lse(whiten):
        return logsumexp_problem(
            key, num_rows=config.lse_num_rows, dim=config.lse_dim, mu=config.lse_mu, whiten=whiten
        )

    logistic = logistic_problem(
        x,
        y,
        l2=config.logreg_l2,
        approx=config.logistic_approx,
        num_samples=config.fisher_num_samples,
    )
    from gradlab.experiments._grn_reference import reference_lse_problem

    def ref(whiten):
        return reference_lse_problem(
            config.ref_seed,
            num_rows=config.ref_num_rows,
            dim=config.ref_dim,
            mu=config.ref_mu,
            whiten=whiten,
        )

    return {
        "logsumexp": {
            "newton": lse(config.lse_whiten),
            "gradient": lse(config.lse_gradient_whiten),
        },
        "logistic": {"newton": logistic, "gradient": logistic},
        "reference": {"newton": ref(True), "gradient": ref(False)},
    }


def _solver(config: Config, problem: Problem, method: str, key, f_tol):
    """A jitted ``solve(batch, x0, exact)``; both Newton variants share one compilation."""
    common = dict(grad_tol=config.grad_tol, f_tol=f_tol)
    if method == "gradient":
        fn = functools.partial(gradient_method, max_iters=config.max_gradient_iters, **common)
    else:
        fn = functools.partial(
            regularized_newton,
            key=key,
            max_iters=config.max_newton_iters,
            gamma0=config.gamma0,
            max_search=config.max_search,
            cg_tol=config.cg_tol,
            cg_max_iters=config.cg_max_iters,
            **common,
        )

    def solve(batch, x0, exact):
        prob = problem._replace(batch=batch, x0=x0)
        return fn(prob) if method == "gradient" else fn(prob, which=exact)

    return jax.jit(solve)


def run(config: Config, progress) -> dict:
    """Solve both problems with the three methods; count iterations to tolerance."""
    out: dict[str, Any] = {}
    with jax.enable_x64(True):
        problems = _problems(config)
        key = jax.random.key(config.seed + 1)
        with progress(total=len(problems) * len(METHODS), desc="solver runs") as bar:
            for name, variants in problems.items():
                runs = {}
                f_tol = config.lse_f_tol if name in ("logsumexp", "reference") else None
                for method in METHODS:
                    kind = "gradient" if method == "gradient" else "newton"
                    problem = variants[kind]
                    if method != "approx":  # "approx" reuses the exact run's compilation
                        tol = f_tol
                        if name == "reference" and method == "gradient":
                            tol = config.ref_gradient_f_tol
                        solve = _solver(config, problem, kind, key, tol)
                    tr = solve(problem.batch, problem.x0, jnp.asarray(method == "exact"))
                    n = int(tr.num_iters)
                    steps, gnorms = _history(np.asarray(tr.grad_norms), n)
                    _, values = _history(np.asarray(tr.values), n)
                    runs[method] = {
                        "iterations": n,
                        "converged": bool(tr.converged),
                        "inner": int(tr.inner),
                        "evaluations": int(tr.evaluations),
                        "final_value": float(np.asarray(tr.values)[n]),
                        "final_grad_norm": float(np.asarray(tr.grad_norms)[n]),
                        "history_iters": steps,
                        "history_grad_norm": gnorms,
                        "history_value": values,
                    }
                    bar.update()
                f_star = variants["newton"].f_star
                if f_star is None:
                    f_star = min(r["final_value"] for r in runs.values())
                exact, approx, grad = (runs[m]["iterations"] for m in METHODS)
                out[name] = {
                    "runs": runs,
                    "f_star": float(f_star),
                    "approx_over_exact": approx / max(exact, 1),
                    "approx_over_gradient": approx / max(grad, 1),
                    "stopping_rule": (
                        f"f - f* <= {f_tol:g}"
                        if f_tol is not None
                        else f"||grad|| <= {config.grad_tol:g} ||grad_0||"
                    ),
                    "all_converged": all(runs[m]["converged"] for m in ("exact", "approx")),
                    "gradient_capped": not runs["gradient"]["converged"],
                }
    return out


def checks(config: Config, results: dict) -> list[Check]:
    """Fidelity to the authors' code on their instance; the paper's ordering on both problems.

    (1) On the notebook's LogSumExp instance each method's iteration count is within
    ``max_ref_rel_diff`` of the authors' code's (``ref_iters_*``, recorded in the config).
    (2) On both problems: exact Newton < approximate Newton < gradient method, in iterations
    (a ratio ``< 1`` for each pair), with both Newton runs converged.
    """
    out = []
    ref = results["reference"]["runs"]
    for method in METHODS:
        theirs = getattr(config, f"ref_iters_{method}")
        ours = ref[method]["iterations"] if ref[method]["converged"] else float("nan")
        out.append(
            check(
                f"authors' instance: |{method} iterations - authors' code's ({theirs})| / {theirs}",
                abs(ours - theirs) / max(theirs, 1),
                "<=",
                config.max_ref_rel_diff,
            )
        )
    for name in ("logsumexp", "logistic"):
        r = results[name]
        runs = r["runs"]
        exact, approx, grad = (runs[m]["iterations"] for m in METHODS)
        out += [
            check(f"{name}: Newton runs converged (exact and approx)", float(r["all_converged"]),
                  ">=", 1.0),
            check(f"{name}: exact / approx iterations (exact Newton faster)", exact / approx,
                  "<", 1.0),
            check(f"{name}: approx / gradient-method iterations (approx faster)", approx / grad,
                  "<", 1.0),
        ]  # fmt: skip
    return out


def plot(config: Config, results: dict):
    r"""Functional residual :math:`f(x_k) - f^\star` versus iteration (the paper's axes) for the
    three methods on both problems (logistic: :math:`f^\star` is the best value reached)."""
    import matplotlib.pyplot as plt

    labels = {
        "exact": "Newton, exact Hessian",
        "approx": "Newton, approximate Hessian",
        "gradient": "gradient method",
    }
    approx_names = {
        "logsumexp": "weighted Gauss-Newton",
        "logistic": {"fisher": "Monte-Carlo Fisher"}.get(
            config.logistic_approx, "weighted Gauss-Newton"
        ),
    }
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, name in zip(axes, ("logsumexp", "logistic"), strict=True):
        res = results[name]
        for method in METHODS:
            r = res["runs"][method]
            label = labels[method] + (f" ({approx_names[name]})" if method == "approx" else "")
            gap = np.maximum(np.asarray(r["history_value"]) - res["f_star"], 1e-16)
            ax.plot(np.asarray(r["history_iters"]) + 1, gap, label=f"{label}: {r['iterations']} it")
        if name == "logsumexp":
            ax.axhline(config.lse_f_tol, color="gray", ls=":", lw=1)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="iteration + 1",
            ylabel="f(x_k) - f*",
            title=f"{name} (stop: {res.get('stopping_rule', '')})",
        )
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


EXPERIMENT = Experiment(
    name="approx_hessian_newton",
    title="Gradient-Normalized Smoothness for Optimization with Approximate Hessians",
    arxiv="2506.13710",
    cpu_time="~1 min",
    config_cls=Config,
    run=run,
    checks=checks,
    plot=plot,
    description="gradient-regularised Newton with a Gauss-Newton/Fisher Hessian needs about as "
    "few iterations as with the exact Hessian, and far fewer than the gradient method",
)
