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
# # Mini-batch Hessians and the max learning rate vs batch size (Granziol et al.)
#
# **Paper:** D. Granziol, S. Zohren, S. Roberts, *Learning Rates as a Function of Batch Size:
# A Random Matrix Theory Approach to Neural Network Training*,
# [arXiv:2006.09092](https://arxiv.org/abs/2006.09092).
#
# **Figure it stands for:** the plots of the top eigenvalue of the mini-batch Hessian against
# the batch size $B$ (extremal eigenvalue grows as $B$ shrinks, as random-matrix theory
# predicts for $H_B = H + E_B$), and the learning-rate scaling rules they derive from it:
# linear in $B$ for SGD, square root of $B$ for Adam.
#
# **How this setup differs:** scikit-learn's bundled digits (all 1,797 images, standardised)
# and a small tanh MLP 64-128-128-10 instead of CIFAR/ImageNet networks, trained by full-batch
# GD (300 steps, lr 0.1) to a checkpoint. $\lambda_{\max}(H_B)$ is measured with
# `gradlab.spectral.eigsh` on `gradlab.curvature.hessian` for 10 random batches (without
# replacement) of each $B \in \{8, \ldots, 1024\}$. The "max stable learning rate" is measured
# directly: from the checkpoint, 150 steps of SGD or Adam with batch size $B$ for every
# learning rate of a $\sqrt2$-spaced grid and 2 seeds; a learning rate is stable if every seed
# ends with a full-batch loss below $\ln 10$ (chance level), and the max stable learning rate is
# the last one before the first unstable one. The paper instead trains from scratch to a
# validation target; the slopes are measured over $B \in [8, 128]$.

# %%
import os

from gradlab.experiments import format_checks, run_experiment

SMOKE = os.environ.get("GRADLAB_SMOKE") == "1"
result = run_experiment(
    "batch_size_spectrum", smoke=SMOKE, out=os.environ.get("GRADLAB_RUNS", "runs")
)
print(format_checks(result.checks))
assert result.passed, "an acceptance check failed"

# %% [markdown]
# ## Why $1/B$, $B$ and $\sqrt B$
#
# A mini-batch of $B$ examples drawn without replacement from $N$ gives
# $H_B = H + E_B$, where the fluctuation $E_B$ has entries of variance proportional to
# $1/B - 1/N$. Random-matrix theory (a spiked Wigner/Marchenko-Pastur model) shifts the top
# eigenvalue by an amount proportional to that variance, so
# $\lambda_{\max}(H_B) - \lambda_{\max}(H) \approx c\,(1/B - 1/N)$: the left panel fits this
# one-parameter law. For small $B$ the excess dominates, so the SGD stability limit
# $\eta \lesssim 2/\lambda_{\max}(H_B) \approx 2B/c$ grows linearly in $B$ (the linear scaling
# rule). Adam divides the step by $\sqrt{v}$, the root of the gradient second moment, whose
# noise part falls like $1/\sqrt B$; the preconditioned curvature then scales like
# $(c/B)/(1/\sqrt B) = c/\sqrt B$, and the max learning rate like $\sqrt B$.

# %%
from gradlab.experiments.batch_size_spectrum import EXPERIMENT

fig = EXPERIMENT.plot(result.config, result.results)
fig

# %%
res = result.results
print(f"lambda_max(H) full batch = {res['lambda_max_full']:.3f}, c = {res['excess_c']:.1f}")
for b, v in res["lambda_max_mean"].items():
    print(f"B={int(b):5d}  mean lambda_max(H_B) = {v:.3f}")
for name in ("sgd", "adam"):
    print(name, [(r["batch_size"], round(r["max_lr"], 4)) for r in res["sweeps"][name]["rows"]])

# %% [markdown]
# ## Measured values (full mode, 2-core CPU)
#
# `gradlab reproduce batch_size_spectrum` (seed 0), all 4 checks passed:
#
# - excess $\lambda_{\max}$ fit $c(1/B - 1/N)$: $R^2 = 0.986$ ($c = 61.1$,
#   $\lambda_{\max}(H) = 0.892$; mean $\lambda_{\max}(H_B)$ from 8.46 at $B=8$ to 0.92 at
#   $B=1024$);
# - SGD max stable learning rate 1.0, 2.0, 4.0, 8.0, 11.3 for $B$ = 8 ... 128: log-log slope
#   0.90;
# - Adam 0.088, 0.125, 0.177, 0.25, 0.5: log-log slope 0.60;
# - no max learning rate at the top of its grid.
