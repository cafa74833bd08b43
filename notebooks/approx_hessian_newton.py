# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Newton with approximate Hessians (Semenov, Jaggi & Doikov)
#
# **Paper:** A. Semenov, M. Jaggi, N. Doikov, *Gradient-Normalized Smoothness for Optimization
# with Approximate Hessians*, [arXiv:2506.13710](https://arxiv.org/abs/2506.13710); reference
# code [epfml/grad-norm-smooth](https://github.com/epfml/grad-norm-smooth).
#
# **Figure it stands for:** the LogSumExp comparison of the authors' notebook
# (`notebooks/examples.ipynb`): the gradient-regularised Newton method (their Algorithm 1)
# with the exact Hessian, with the *weighted Gauss-Newton* approximation, and the gradient
# method, plotted as $f(x_k) - f^\star$ against iterations; plus logistic regression, which the
# paper treats in theory ("global linear rates in logistic regression ... with approximate
# Hessians") but not in its code.
#
# **How this setup differs:** LogSumExp is the authors' synthetic problem (uniform
# $A \in [-1,1]^{m \times n}$, $b \in [-1, 1]^m$, minimiser shifted to $0$, start
# $x_0 = \mathbf 1$, Newton regularised in the norm of $B = A^\top A$, the gradient method in
# the Euclidean norm, stop at $f - f^\star < 10^{-8}$) but with issue 4's sizes
# $m = 500$, $n = 100$, $\mu = 0.1$ (the notebook uses $m = n = 1000$, $\mu = 1$).
# Logistic regression uses scikit-learn's bundled breast-cancer set (569 x 30, standardised,
# intercept, $\ell_2 = 10^{-3}$), stops at $\|\nabla f\| \le 10^{-6} \|\nabla f(x_0)\|$, and
# its approximate Hessian is our choice, the Monte-Carlo Fisher (one label per example
# sampled from the model, fresh every iteration), because the exact Fisher of a linear model
# *is* its Hessian. Every linear system is solved matrix-free by conjugate gradients on
# gradlab's curvature operators (the authors use dense Cholesky), in float64.
#
# **Known failing checks:** the "approximate iterations <= 2x exact" fails on both
# problems and "approximate iterations <= 1/10 of the gradient method's" fails on logistic
# regression (and, in full mode only, on LogSumExp: 0.141). They are listed in
# `KNOWN_FAILING` (smoke) and `KNOWN_FAILING_FULL` of
# `gradlab.experiments.approx_hessian_newton`; this notebook asserts that every other check
# passes, and explains the failures below. `gradlab reproduce approx_hessian_newton` still
# exits non-zero.

# %%
import os

from gradlab.experiments import format_checks, run_experiment
from gradlab.experiments.approx_hessian_newton import KNOWN_FAILING, KNOWN_FAILING_FULL

SMOKE = os.environ.get("GRADLAB_SMOKE") == "1"
result = run_experiment(
    "approx_hessian_newton", smoke=SMOKE, out=os.environ.get("GRADLAB_RUNS", "runs")
)
print(format_checks(result.checks))
known = KNOWN_FAILING if SMOKE else KNOWN_FAILING_FULL
unexpected = [c.name for c in result.checks if not c.passed and c.name not in known]
assert not unexpected, f"acceptance checks failed: {unexpected}"

# %% [markdown]
# ## The method and the two approximations
#
# Algorithm 1 steps $x_{k+1} = x_k - (H_k + \lambda_k B)^{-1} \nabla f(x_k)$ with
# $\lambda_k = \|\nabla f(x_k)\|_* / \gamma_k$; the step is accepted when
# $f(x_k) - f(x_{k+1}) \ge \|\nabla f(x_{k+1})\|_*^2 / (8 \lambda_k)$ (then $\gamma$ doubles),
# otherwise $\gamma$ is halved and the step recomputed. The regulariser scales with the
# gradient norm, so far from the solution the method behaves like a gradient step of length
# $\gamma_k$ and near it like Newton's method.
#
# *LogSumExp.* With $\pi = \mathrm{softmax}((Ax - b)/\mu)$ the Hessian is
# $\frac1\mu(A^\top \mathrm{diag}(\pi) A - A^\top \pi \pi^\top A)$ and $A^\top \pi = \nabla f$,
# so the weighted Gauss-Newton matrix $\frac1\mu A^\top \mathrm{diag}(\pi) A$ differs from
# it by exactly $\nabla f \nabla f^\top / \mu$. Near the solution the two coincide. Far from
# it, where $\pi$ is nearly one-hot, the approximation believes the function is curved like
# $\|\nabla f\|^2/\mu$ along the gradient while it is in fact almost linear (a maximum of
# affine functions smoothed at scale $\mu$): each step then lowers $f$ by about $\mu$. In the
# figure the approximate run indeed sits on a plateau for about $(f(x_0) - f^\star)/\mu
# \approx 200$ iterations before converging in a few steps.
#
# *Logistic regression.* The expected Fisher equals the Hessian of the cross-entropy, so the
# Monte-Carlo Fisher is an unbiased estimate; its sampling error does not vanish at the
# solution, so the approximate method converges linearly (the paper's "global linear rates")
# where exact Newton converges quadratically.
#
# ## Why the checks fail
#
# The thresholds (approximate within 2x of exact, and 10x faster than the gradient
# method) ask for more than the paper claims for these approximations: a global linear rate
# for logistic regression, and for LogSumExp with $\mu = 0.1$ a phase of about
# $(f(x_0) - f^\star)/\mu$ short steps. Both Newton variants converge, and exact Newton is
# 30-50x faster than the gradient method; the approximate method is 5-7x slower than exact
# and 6.5-7x faster than the gradient method in full mode. We keep the thresholds and
# report the checks as failing rather than change the setup to make them pass.

# %%
from gradlab.experiments.approx_hessian_newton import EXPERIMENT

fig = EXPERIMENT.plot(result.config, result.results)
fig

# %%
for name in ("logsumexp", "logistic"):
    for method, r in result.results[name]["runs"].items():
        print(
            f"{name:>9} {method:>8}: {r['iterations']:>6} iterations "
            f"(converged={r['converged']}, inner work {r['inner']}, "
            f"{r['evaluations']} evaluations)"
        )

# %% [markdown]
# ## Measured values (full mode, 2-core CPU)
#
# Full mode took 28 s on the shared 2-core machine (13 s of CPU time). Iterations to
# $f - f^\star \le 10^{-8}$ (LogSumExp) and to $\|\nabla f\| \le 10^{-6} \|\nabla f(x_0)\|$
# (logistic regression):
#
# | problem | exact Newton | approximate Newton | gradient method |
# |---|---:|---:|---:|
# | LogSumExp (weighted Gauss-Newton) | 32 | 227 | 1,613 |
# | logistic regression (Monte-Carlo Fisher) | 9 | 50 | 324 |
#
# Checks: approx/exact 7.09 (LogSumExp) and 5.56 (logistic), required <= 2: **FAIL**
# (known); approx/gradient 0.141 and 0.154, required <= 0.1: **FAIL** (known); both Newton
# variants converged on both problems: PASS. Smoke mode ($m = 200$, $n = 40$): LogSumExp
# 24 / 104 / 2,488 iterations (approx/exact 4.33 FAIL, approx/gradient 0.042 PASS);
# logistic as in full mode.
