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
# # The neural tangent kernel converges with width and freezes during training
#
# **Paper:** A. Jacot, F. Gabriel, C. Hongler, *Neural Tangent Kernel: Convergence and
# Generalization in Neural Networks*, [arXiv:1806.07572](https://arxiv.org/abs/1806.07572),
# with G. Yang, *Scaling Limits of Wide Neural Networks with Weight Sharing*,
# [arXiv:1902.04760](https://arxiv.org/abs/1902.04760), for the at-initialisation limit.
#
# **Figure it stands for:** Jacot et al.'s Figure 1 (the NTK of a ReLU network of depth
# $L = 4$ with $\beta = 0.1$ on the unit circle, at two widths, at initialisation and after
# 200 steps of gradient descent with learning rate 1 on $f^*(x) = x_1 x_2$), turned into
# scaling laws over widths. Jacot et al. number the layers from 0 (input) to $L$ (output), so
# depth $L = 4$ means three hidden layers (`depth: 3` in `configs/ntk_width.yaml`).
#
# **How this setup differs:** widths 64 to 2,048 (the paper shows 500 and 10,000), 4 seeds,
# 16 evenly spaced training inputs on the unit circle, full-batch GD on half the mean
# squared error (the paper's least-squares cost), float32 on a CPU. The kernels are compared
# on the training inputs with the analytic infinite-width NTK (`gradlab.ntk.infinite_mlp`) by
# relative Frobenius norms; the paper shows kernel rows instead.
#
# **Known failing check:** "max / min final loss across widths" ($\le 2$) fails in full
# mode (2.88) and in smoke mode (2.16); see "Why the final-loss check fails" below. It is
# listed in `gradlab.experiments.ntk_width.KNOWN_FAILING`, and this notebook asserts that
# every *other* check passes. `gradlab reproduce ntk_width` still exits non-zero.

# %%
import os

from gradlab.experiments import format_checks, run_experiment
from gradlab.experiments.ntk_width import KNOWN_FAILING

SMOKE = os.environ.get("GRADLAB_SMOKE") == "1"
result = run_experiment("ntk_width", smoke=SMOKE, out=os.environ.get("GRADLAB_RUNS", "runs"))
print(format_checks(result.checks))
unexpected = [c.name for c in result.checks if not c.passed and c.name not in KNOWN_FAILING]
assert not unexpected, f"acceptance checks failed: {unexpected}"

# %% [markdown]
# ## Why $n^{-1/2}$ at initialisation and $n^{-1}$ during training
#
# In the NTK parameterisation each entry of the empirical kernel is an average over the $n$
# neurons of every hidden layer of products of activations and back-propagated signals. At
# initialisation those terms are weakly dependent, so the average deviates from its limit by
# $O(n^{-1/2})$ (law of large numbers; Yang shows the limit holds for general architectures).
# During training every weight moves by $O(n^{-1/2})$ in the NTK parameterisation, and the
# kernel's leading change comes from products of two such moves or from the $O(n^{-1/2})$
# second derivative of the network times an $O(n^{-1/2})$ move: $O(n^{-1})$ (Dyer & Gur-Ari
# 2019; Huang & Yau 2019). Wide networks therefore train as their linearisation around the
# initialisation, with the kernel that `infinite_mlp` computes.

# %%
from gradlab.experiments.ntk_width import EXPERIMENT

fig = EXPERIMENT.plot(result.config, result.results)
fig

# %%
for w in result.results["per_width"]:
    losses = ", ".join(f"{v:.1e}" for v in w["final_loss"])
    print(
        f"width {w['width']:>5}: init error {w['init_error_mean']:.3f}, "
        f"drift {w['drift_mean']:.4f}, final loss {w['final_loss_mean']:.2e} "
        f"+- {w['final_loss_sem']:.1e} (seeds: {losses})"
    )

# %% [markdown]
# ## Why the final-loss check fails
#
# The issue asks the mean (over seeds) final training loss to agree within 2x across widths.
# In the kernel regime the residual after $t$ steps is $e^{-\eta \Theta t}(f_0 - f^*)$ on the
# training inputs: it depends on the network's function at initialisation $f_0$, which is a
# sample of a Gaussian process whose variance does **not** shrink with width. So the final
# loss varies from seed to seed by a factor 3-8 at *every* width (the per-seed values above),
# and with 4 seeds the mean over seeds carries a standard error of 20-50%. The spread across
# widths (2.9x in full mode, driven by the widest net's lower mean) is of the same size as
# this seed-to-seed noise; it is not a width trend (widths 64-1024 agree within 1.7x). We
# keep the statistic and threshold and report the check as failing rather than
# change the aggregation to make it pass.

# %% [markdown]
# ## Measured values (full mode, 2-core CPU)
#
# Full mode took 241 s on the shared 2-core machine (load average ~16; 53 s of CPU time).
#
# | width | init error | drift | final loss (mean of 4 seeds) |
# |------:|------:|------:|------:|
# | 64   | 0.351 | 0.272  | 4.26e-4 |
# | 128  | 0.331 | 0.166  | 3.67e-4 |
# | 256  | 0.172 | 0.0715 | 2.71e-4 |
# | 512  | 0.113 | 0.0445 | 2.61e-4 |
# | 1024 | 0.110 | 0.0252 | 3.08e-4 |
# | 2048 | 0.060 | 0.0162 | 1.48e-4 |
#
# Checks: init-error slope -0.517 (in [-0.7, -0.3], PASS); drift slope -0.834 (in [-1.3,
# -0.7], PASS); drift at width 2048 0.0162 (<= 0.03, PASS); max/min final loss 2.88 (<= 2,
# **FAIL**, known: seed-to-seed spread of the initial function, see above). Per-seed final
# losses at width 512: 5.4e-5, 2.5e-4, 3.3e-4, 4.1e-4; at width 2048: 8.1e-5, 2.7e-4,
# 1.3e-4, 1.0e-4.
