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
# # SGD's stability bounds the trace of the Hessian (Wu & Su)
#
# **Paper:** L. Wu, W. J. Su, *The Implicit Regularization of Dynamical Stability in Stochastic
# Gradient Descent*, [arXiv:2305.17490](https://arxiv.org/abs/2305.17490).
#
# **Figure it stands for:** the teacher-student experiments showing that the minima SGD
# converges to satisfy $\operatorname{Tr}(H) \le 2/\eta$ (a bound that is nearly attained at
# the largest learning rates), while the minima of GD only satisfy
# $\lambda_{\max}(H) \le 2/\eta$ and can have a much larger trace.
#
# **How this setup differs:** a synthetic teacher-student problem on a CPU: $n = 40$ Gaussian
# inputs in $d = 10$, labels from a random tanh teacher 10-4-1, a tanh student 10-100-1
# (1,201 parameters, so it interpolates), half mean squared error, 20,000 steps of SGD with
# batch size 1 (examples drawn with replacement) or of GD from one initialisation, over
# geometric learning-rate grids. A run has converged if its final loss is below $10^{-5}$.
# $\operatorname{Tr}(H)$ is estimated with `gradlab.spectral.trace` (Hutch++, 150 matvecs) on
# `gradlab.curvature.hessian` and cross-checked against the trace of the dense Hessian;
# $\lambda_{\max}$ comes from `gradlab.spectral.eigsh`.

# %%
import os

from gradlab.experiments import format_checks, run_experiment

SMOKE = os.environ.get("GRADLAB_SMOKE") == "1"
result = run_experiment("stability_trace", smoke=SMOKE, out=os.environ.get("GRADLAB_RUNS", "runs"))
print(format_checks(result.checks))
assert result.passed, "an acceptance check failed"

# %% [markdown]
# ## Why the trace
#
# At an interpolating minimum of the half-MSE the Hessian is
# $H = \frac1n \sum_i g_i g_i^\top$ with $g_i = \nabla f(x_i)$. Linearised around it, GD
# multiplies the error by $I - \eta H$: it is stable iff $\lambda_{\max}(H)\,\eta/2 \le 1$.
# SGD with batch size 1 multiplies by the random matrix $I - \eta\, g_i g_i^\top$. Its mean is
# the GD map, but stability in mean square needs
# $\mathbb E\,[(I - \eta g_i g_i^\top)^2] = I - 2\eta H + \eta^2 \frac1n \sum_i \|g_i\|^2 g_i g_i^\top$
# to contract. Taking the trace against the top directions and using
# $\frac1n\sum_i \|g_i\|^2 = \operatorname{Tr}(H)$, Wu & Su show this requires (roughly)
# $\operatorname{Tr}(H)\,\eta/2 \le 1$: a minimum whose trace exceeds $2/\eta$ is unstable for
# SGD even if its top eigenvalue is small. So SGD can only settle at flat minima *in the trace
# sense*, and as $\eta$ grows it drives the trace down (left panel, blue), while GD converges
# to minima with $\operatorname{Tr}(H)\,\eta/2$ far above 1 as long as
# $\lambda_{\max}(H)\,\eta/2 \le 1$ (right panel).

# %%
from gradlab.experiments.stability_trace import EXPERIMENT

fig = EXPERIMENT.plot(result.config, result.results)
fig

# %%
for name in ("sgd", "gd"):
    r = result.results[name]
    for i, eta in enumerate(r["etas"]):
        if r["converged"][i]:
            print(
                f"{name:3s} eta={eta:.4f}  Tr(H)={r['trace'][i]:.3f} (exact {r['trace_exact'][i]:.3f})"
                f"  Tr eta/2={r['trace_ratio'][i]:.3f}  lambda_max eta/2={r['lambda_ratio'][i]:.3f}"
            )
        else:
            print(f"{name:3s} eta={eta:.4f}  did not converge")

# %% [markdown]
# ## Measured values (full mode, 2-core CPU)
#
# `gradlab reproduce stability_trace` (seed 0), all 7 checks passed:
#
# - SGD(B=1): 11 of 17 learning rates converged ($\eta$ = 0.0093 ... 0.0526); the largest
#   $\operatorname{Tr}(H)\,\eta/2$ is 0.879, at the largest converged $\eta = 0.0526$, where SGD
#   also lowered the trace from 42.6 (small $\eta$) to 33.5. The next grid point, 0.0625, diverged.
# - GD: 10 of 13 converged ($\eta$ = 0.0156 ... 0.354); max $\lambda_{\max}\eta/2 = 0.987$, while
#   $\operatorname{Tr}(H)\,\eta/2$ reaches 5.46 (at $\eta = 0.354$).
# - Hutch++ trace vs the trace of the dense Hessian: max relative error 4.6e-5.
