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
# paper treats in theory ("global linear rates in logistic regression and softmax problems
# with approximate Hessians") but not in its code.
#
# **How this setup differs:** LogSumExp is the authors' synthetic problem (uniform
# $A \in [-1,1]^{m \times n}$, $b \in [-1, 1]^m$, minimiser shifted to $0$, start
# $x_0 = \mathbf 1$, Newton regularised in the norm of $B = A^\top A$, the gradient method in
# the Euclidean norm, stop at $f - f^\star < 10^{-8}$) but with issue 4's sizes
# $m = 500$, $n = 100$, $\mu = 0.1$ (the notebook uses $m = n = 1000$, $\mu = 1$).
# Logistic regression uses scikit-learn's bundled breast-cancer set (569 x 30, standardised,
# intercept, $\ell_2 = 10^{-3}$) and stops at $\|\nabla f\| \le 10^{-6} \|\nabla f(x_0)\|$.
# The authors' code has no logistic problem; its only approximation for softmax-type
# objectives is the weighted Gauss-Newton, so we apply it to each example's loss written as a
# LogSumExp, $\log(e^0 + e^{-s_i z_i})$: the paper's approximation, our transcription
# (previously this reproduction used a Monte-Carlo Fisher, which is not in the paper; set
# `logistic_approx=fisher` to get it back). Every linear system is solved matrix-free by
# conjugate gradients on gradlab's curvature operators (the authors use dense Cholesky), in
# float64. On identical data the authors' code and this one count the same iterations (see
# below).
#
# **Acceptance (issue 14).** Part 1's checks "approximate iterations <= 2x exact" and
# "<= 1/10 of the gradient method's" were contradicted by the authors' own code (4-6x on the
# issue's setup, 2.69x in their own figure; see below) and are replaced by (1) *fidelity*: on
# the authors' notebook LogSumExp instance, rebuilt bit for bit ($m = n = 1000$, $\mu = 1$,
# `np.random.seed(3124)`), gradlab's iteration counts for exact Newton, approximate Newton and
# the gradient method are within 10% of those of their code (epfml/grad-norm-smooth at commit
# 9f4ca00029f0b17fb9d48eb393d77bc8af153edc), recorded in `configs/approx_hessian_newton.yaml`;
# and (2) the paper's *ordering* on both problems: exact Newton < approximate Newton <
# gradient method. The ratios are still measured and reported. `KNOWN_FAILING` is empty and
# `gradlab reproduce approx_hessian_newton` exits 0.

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
# *Logistic regression.* Each example's loss $\log(1 + e^{-s_i z_i})$ ($s_i = \pm 1$,
# $z_i = w^\top x_i + b$) is the LogSumExp of $0$ and $-s_i z_i$, so the weighted
# Gauss-Newton matrix is $\frac1N \sum_i \sigma(-s_i z_i) \tilde x_i \tilde x_i^\top$ (plus
# the penalty): each example weighted by the probability of its *wrong* label, where the
# Hessian has $\sigma(z_i)(1 - \sigma(z_i))$. It exceeds the Hessian by the factor
# $1/p(y_i \mid x_i)$ per example, which stays above 1 at the solution, so the approximate
# method converges linearly (the paper's "global linear rates") where exact Newton
# converges quadratically. (Writing the same matrix on the raw logits $(0, z)$ instead of
# the margins weights by $\sigma(z_i)$ whatever the label and depends on how the logits are
# parameterised; that variant, which we tried first, did not converge in 300 iterations.)
#
# ## Fidelity: the authors' code on their own instance
#
# `gradlab/experiments/_grn_reference.py` rebuilds the notebook's instance (cells 5-7 of
# `notebooks/examples.ipynb`): the same NumPy random stream, the same zero shift of the rows,
# $x_0 = \mathbf 1$, Newton in the norm of $B = A A^\top$ of the *unshifted* $A$, the gradient
# method with `B=None`. Their code, run unchanged on it, takes 35 (exact) and 94 (weighted
# Gauss-Newton) iterations to $f - f^\star < 10^{-8}$, as in their figure. Their gradient method
# has no stopping rule and the notebook stops it at 1,000 iterations, where
# $f - f^\star = 2.2 \cdot 10^{-3}$; continued to 20,000 iterations it is still at
# $1.5 \cdot 10^{-5}$ (sublinear: $10^{-1}$ at 173, $10^{-2}$ at 445, $10^{-3}$ at 1,597), so its
# count is taken at $f - f^\star < 10^{-2}$, the smallest power of ten it reaches within the
# notebook's own budget (chosen from their run alone): 445. gradlab counts 35 / 94 / 445 on the
# same instance. Smoke mode uses the same protocol at $m = 500$, $n = 100$, $\mu = 1$, where
# their gradient method reaches $10^{-8}$: 11 / 17 / 34 for both codes.
#
# ## Part 1's ratio checks: the authors' own code contradicts them
#
# We ran the authors' NumPy code (github.com/epfml/grad-norm-smooth at 9f4ca00:
# `grad_norm_smooth` with dense Cholesky, `approx_hess_fn_logsumexp`, `gradient_method`,
# their generator `np.random.seed(s); A = rand(n, m) * 2 - 1`, stop at
# $f - f^\star < 10^{-8}$). Iterations, exact / weighted Gauss-Newton / gradient method:
#
# | setup | exact | approx | gradient | approx / exact | approx / gradient |
# |---|---:|---:|---:|---:|---:|
# | issue: $m = 500$, $n = 100$, $\mu = 0.1$, seed 3124 | 36 | 146 | 2,455 | 4.06 | 0.059 |
# | same, seed 0 | 44 | 257 | 3,555 | 5.84 | 0.072 |
# | same, seed 1 | 43 | 230 | 3,876 | 5.35 | 0.059 |
# | their notebook: $m = n = 1000$, $\mu = 1$, seed 3124 | 35 | 94 | > 20,000 (445 to $10^{-2}$) | 2.69 | |
# | issue sizes with $\mu = 1$, seed 3124 | 11 | 17 | 34 | 1.55 | 0.50 |
#
# This module on the same three issue-setup matrices counts 37 / 148 / 2,455,
# 42 / 259 / 3,555 and 43 / 230 / 3,876 (CG instead of Cholesky moves a step or two), and on
# logistic regression the authors' `grad_norm_smooth` with the same weighted Gauss-Newton
# gives 9 / 34 / 324, exactly our numbers. So the implementation is faithful and the
# "<= 2x exact" check is contradicted by the method itself: 4-6x on the setup, and
# 2.69x even in the authors' own published figure. It passes only at $\mu = 1$ on the small
# problem, where the gradient method is no longer slow (ratio 0.50): the two thresholds pull
# in opposite directions in $\mu$. The "<= 1/10 of the gradient method" ratio on LogSumExp
# depends on the random instance: 0.059-0.072 on the authors' generator, and 0.141, 0.052,
# 0.085, 0.138, 0.073, 0.083 for this module's `seed` 0-5. The configured instance (seed 0)
# is at the unfavourable end; we did not switch instances after seeing this. On logistic
# regression the approximation's excess curvature on misfit examples costs 3.8x exact Newton
# and leaves it at 0.105 of the gradient method. Exact Newton itself is 50x (LogSumExp) and
# 36x (logistic) faster than the gradient method. Issue 14 therefore replaced those two
# checks by the fidelity and ordering checks above; the ratios stay reported values.

# %%
from gradlab.experiments.approx_hessian_newton import EXPERIMENT

fig = EXPERIMENT.plot(result.config, result.results)
fig

# %%
for name in ("reference", "logsumexp", "logistic"):
    for method, r in result.results[name]["runs"].items():
        print(
            f"{name:>9} {method:>8}: {r['iterations']:>6} iterations "
            f"(converged={r['converged']}, inner work {r['inner']}, "
            f"{r['evaluations']} evaluations)"
        )

# %% [markdown]
# ## Measured values (full mode, 2-core CPU)
#
# Full mode took 287 s wall and 31 s of CPU time, measured with load average 19 on the shared
# 2-core machine (the 1000 x 1000 reference instance is most of it); smoke mode 134 s wall,
# 18 s CPU, under the same load. Iterations to $f - f^\star \le 10^{-8}$ (LogSumExp; the
# gradient method on the reference instance: $10^{-2}$) and to
# $\|\nabla f\| \le 10^{-6} \|\nabla f(x_0)\|$ (logistic regression):
#
# | problem | exact Newton | approximate Newton | gradient method |
# |---|---:|---:|---:|
# | authors' notebook instance: gradlab / their code | 35 / 35 | 94 / 94 | 445 / 445 |
# | LogSumExp, issue size (weighted Gauss-Newton) | 32 | 227 | 1,613 |
# | logistic regression (weighted Gauss-Newton) | 9 | 34 | 324 |
#
# Checks (full): fidelity, relative differences 0, 0, 0 (<= 0.1, PASS); ordering exact /
# approx 0.141 and 0.265, approx / gradient 0.141 and 0.105 (< 1, PASS); Newton runs converged
# (PASS). Reported ratios: approx / exact 7.09 (LogSumExp) and 3.78 (logistic), approx /
# gradient 0.141 and 0.105. Smoke mode (LogSumExp $m = 200$, $n = 40$; reference instance
# $m = 500$, $n = 100$, $\mu = 1$): LogSumExp 24 / 104 / 2,488, reference 11 / 17 / 34
# (theirs 11 / 17 / 34), logistic as in full mode; 9/9 checks pass. With the Monte-Carlo
# Fisher (`logistic_approx=fisher`) logistic regression took 9 / 50 / 324 (5.56 and 0.154).
