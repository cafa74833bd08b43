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
# # C-1 outliers in the Hessian of a C-class network (Sagun et al.)
#
# **Paper:** L. Sagun, U. Evci, V. U. Güney, Y. Dauphin, L. Bottou, *Empirical Analysis of the
# Hessian of Over-Parametrized Neural Networks*,
# [arXiv:1706.04454](https://arxiv.org/abs/1706.04454).
#
# **Figure it stands for:** the spectrum plots showing a bulk of eigenvalues near zero and a
# handful of outliers whose number tracks the number of classes (their Gaussian-blob
# experiments, where the count is $C$ or $C-1$ depending on the setup, and the later work of
# Papyan that pins it to $C-1$ for softmax cross-entropy), and the observation that growing the
# width enlarges the bulk but keeps the outliers.
#
# **How this setup differs:** synthetic Gaussian blobs ($d=20$, 200 points per class, centres on
# the sphere of radius 2, unit noise) with $C \in \{2, 5, 10\}$, a small ReLU MLP
# $20$-$w$-$w$-$C$ with $w = 32$ (and a width sweep $32 \ldots 256$ at $C = 10$), trained by
# full-batch gradient descent (lr 0.05, 1,000 steps) in float32 on a CPU. The paper uses
# larger networks and SGD. The top $2C$ eigenvalues come from `gradlab.spectral.eigsh` on the
# matrix-free `gradlab.curvature.hessian`; the bulk from `gradlab.spectral.slq`.

# %%
import os

from gradlab.experiments import format_checks, run_experiment

SMOKE = os.environ.get("GRADLAB_SMOKE") == "1"
result = run_experiment("hessian_outliers", smoke=SMOKE, out=os.environ.get("GRADLAB_RUNS", "runs"))
print(format_checks(result.checks))
assert result.passed, "an acceptance check failed"

# %% [markdown]
# ## Why $C-1$ outliers
#
# For a mean loss the Hessian splits into the Gauss-Newton part and a residual,
# $$H = \frac1N \sum_i J_i^\top \bigl(\operatorname{diag}(p_i) - p_i p_i^\top\bigr) J_i
#   + \frac1N \sum_i \sum_c (p_{ic} - y_{ic}) \nabla^2 f_{ic},$$
# where $J_i$ is the Jacobian of the $C$ logits of example $i$ and $p_i$ its softmax output.
# The output Hessian $\operatorname{diag}(p) - p p^\top$ annihilates the all-ones vector
# (shifting every logit leaves the softmax unchanged), so it has rank at most $C-1$. The
# per-example Jacobians cluster by class: $J_i \approx \bar J_{y_i} + $ noise, and the class-mean
# part contributes a matrix of rank at most $C-1$ in the $(C-1)$-dimensional logit space of
# the class means (mean logit gradients summed with softmax weights), with eigenvalues of the
# order of the squared *between-class* gradient norm. The remaining, within-class fluctuations
# spread over many directions with much smaller weight: the bulk. The residual term shrinks as
# the fit improves ($p_i \to y_i$). So the top of the spectrum is $C-1$ outliers, then a gap,
# then the bulk; the last check below confirms that these outliers belong to the Gauss-Newton
# part (its top $C-1$ eigenvalues match the Hessian's).

# %%
from gradlab.experiments.hessian_outliers import EXPERIMENT

fig = EXPERIMENT.plot(result.config, result.results)
fig

# %%
for r in result.results["runs"]:
    top = ", ".join(f"{v:.3g}" for v in r["hessian_top"])
    print(
        f"C={r['num_classes']:2d} width={r['width']:3d} P={r['num_params']:6d} "
        f"loss={r['loss_final']:.3f} acc={r['train_accuracy']:.3f} "
        f"gap at i={r['gap_index']} (x{r['gap_ratio']:.2f}) | top 2C: {top}"
    )

# %% [markdown]
# ## Measured values (full mode, 2-core CPU)
#
# `gradlab reproduce hessian_outliers` (seed 0), all 14 checks passed:
#
# | run | largest gap at | $\lambda_{C-1}/\lambda_C$ |
# |---|---|---|
# | C=2, width 32 | i = 1 | 3.21 |
# | C=5, width 32 | i = 4 | 2.85 |
# | C=10, width 32 | i = 9 | 4.00 |
# | C=10, width 64 | i = 9 | 4.97 |
# | C=10, width 128 | i = 9 | 4.75 |
# | C=10, width 256 | i = 9 | 6.60 |
#
# Lanczos (`eigsh`) vs dense `eigvalsh` (P = 1,794 and 1,893): max relative error 1.2e-6.
# Top $C-1$ GGN vs Hessian eigenvalues: max relative error 8.3e-4. Wall time 388 s on the
# shared 2-core CPU under heavy load.
