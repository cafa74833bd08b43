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
# # Ghosts of softmax: the complex zeros of the partition function cap the safe step
#
# **Paper:** P. Sao, *Ghosts of Softmax: Complex Singularities That Limit Safe Step Sizes in
# Cross-Entropy*, [arXiv:2603.13552](https://arxiv.org/abs/2603.13552).
#
# **Figures it stands for:** the learning-rate spike test (plain Adam vs Adam with the
# $\rho_a$ controller, base rates $10^{-4}, 10^{-3}, 10^{-2}$ multiplied by 1000 from step 50,
# 5 seeds: the paper's multi-seed version of its Figure 4) and the single-step phase
# transition (what a step of normalised length $r = \tau/\rho_a$ does, with the Hessian step
# $2/\kappa$ for comparison).
#
# **How this setup differs:** the spike test is the authors' own digits setting (MLP
# 64-128-10 ReLU, pixels / 16, stratified 80/20 split, Adam, batch 64, 200 steps, the radius
# measured on the whole training split, as in their `experiments/lrspike`), but with flax's
# default initialisation (LeCun normal, zero biases) instead of PyTorch's, one split for all
# seeds (the seed draws the initialisation and the batches), batches drawn without replacement
# within a step rather than by epochs, and the controller is
# `gradlab.transforms.scale_by_softmax_radius` chained after `optax.scale_by_adam` (it caps the
# final step at $r \le 1$, as their code does). The single-step sweep starts from the plain-Adam
# networks at step 50 (just before the spike) for base rates $10^{-3}$ and $10^{-2}$ rather
# than from the authors' separate GELU + LayerNorm networks, follows the normalised negative
# full-batch gradient, and records the **accuracy** retained (the measure) besides
# the loss ratio (the paper's).
#
# **Known failing check:** "median (2 / lambda_max) / rho_a along -g" ($> 5$): with the
# global top Hessian eigenvalue, $2/\lambda_{\max}$ is within a small factor of $\rho_a$ along
# the gradient. The paper's own comparison (its code, `experiments/phasetransition`) uses the
# curvature $u^\top H u$ along the same random direction $u$ as $\rho_a(u)$; that ratio, reported
# as a separate check, is far above 5. The first one is listed in
# `gradlab.experiments.softmax_ghosts.KNOWN_FAILING`; this notebook asserts every other check.
# `gradlab reproduce softmax_ghosts` therefore exits non-zero.

# %%
import os

from gradlab.experiments import format_checks, run_experiment
from gradlab.experiments.softmax_ghosts import KNOWN_FAILING

SMOKE = os.environ.get("GRADLAB_SMOKE") == "1"
result = run_experiment("softmax_ghosts", smoke=SMOKE, out=os.environ.get("GRADLAB_RUNS", "runs"))
print(format_checks(result.checks))
unexpected = [c.name for c in result.checks if not c.passed and c.name not in KNOWN_FAILING]
assert not unexpected, f"acceptance checks failed: {unexpected}"

# %% [markdown]
# ## The radius
#
# Along a step $\theta + \tau v$ with the logits linearised, $z_b(\tau) = z_b + \tau a_b$ with
# $a_b = J_{z_b} v$, the loss of example $b$ is $\log \sum_c e^{z_{bc} + \tau a_{bc}} - z_{by} -
# \tau a_{by}$. Its Taylor series in $\tau$ converges up to the nearest complex zero of the
# partition function $\sum_c e^{z_{bc} + \tau a_{bc}}$. Two terms can only cancel when their
# phases differ by $\pi$, which needs $|\operatorname{Im}\tau|\,(a_{bc} - a_{bc'}) \ge \pi$, so
# no zero lies closer than $\rho_a = \pi / \Delta_a$,
# $\Delta_a = \max_b (\max_c a_{bc} - \min_c a_{bc})$. Beyond $\rho_a$ a local (linear or
# quadratic) model of the loss need not track it, whatever the real-line curvature says.
# `scale_by_softmax_radius` measures $\Delta_a$ with one JVP of the logits along the proposed
# step and shrinks the step to $r = \tau/\rho_a \le 1$.

# %%
from gradlab.experiments.softmax_ghosts import EXPERIMENT

fig = EXPERIMENT.plot(result.config, result.results)
fig

# %%
res = result.results
for name in ("plain", "controller"):
    for lr, accs in zip(result.config.base_lrs, res[name]["final_accuracy"], strict=True):
        print(f"{name:10s} lr {lr:g}: final test accuracy per seed", [round(a, 3) for a in accs])
s = res["single_step"]
print("rho_a along -g:", [round(v, 4) for v in s["rho"]])
print("2 / lambda_max:", [round(v, 4) for v in s["hessian_step"]])
print(
    "median 2/(u^T H u) / rho_a(u) per checkpoint:", [round(v, 1) for v in s["directional_factor"]]
)
for r, m in zip(res["r"], s["median_retention"], strict=True):
    print(f"r = {r:8.3f}: median accuracy retained {m:.3f}")

# %% [markdown]
# ## Measured values (full mode)
#
# See docs/reproductions.md for the values of the full run (`gradlab reproduce
# softmax_ghosts`, seed 0) and the smoke run.
