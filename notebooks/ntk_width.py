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
# **How this setup differs:** widths 64 to 2,048 (the paper shows 500 and 10,000), 16 evenly
# spaced training inputs on the unit circle, full-batch GD on half the mean squared error
# (the paper's least-squares cost), float32 on a CPU. The kernels are compared on the
# training inputs with the analytic infinite-width NTK (`gradlab.ntk.infinite_mlp`) by
# relative Frobenius norms, on 4 nets per width; the paper shows kernel rows instead. The
# final losses are averaged over **24 nets per width** (`num_loss_seeds: 24`; the 4 kernel
# nets plus 20 that are only trained): the final loss varies 3-8x from seed to seed, and 24
# was fixed once from a 16-seed pilot so that the ratio of two widths' mean losses has a
# relative standard error of at most about 20% (see "The final-loss check" below).
#
# **The paper's claim, checked (issue 14).** The network follows kernel gradient descent with
# the *limiting* NTK as the width grows. For every trained net (24 per width),
# `gl.ntk.gradient_descent_mse` on the infinite-width NTK predicts its outputs on 64 held-out
# unit-circle inputs after the same 200 steps, starting from *that network's own* initial
# function; the relative RMS distance between the trained net's outputs and this prediction,
# averaged over the nets, must fall with width with a log-log slope in $[-0.8, -0.3]$ (theory
# $-1/2$: the kernel's own error at initialisation) and be at most 0.15 at width 2048. Part 1's
# check "max / min final loss across widths $\le 2$" was replaced by it: it fails for a real
# reason (narrow nets train more slowly, see "The final losses" below) and stays a reported
# finding. `KNOWN_FAILING` is empty and `gradlab reproduce ntk_width` exits 0.

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
#
# ## Kernel gradient descent with the limiting kernel, on held-out inputs
#
# In the kernel regime the outputs on any input follow
# $\dot f_t(x) = -\frac{\eta}{N} \Theta_\infty(x, X) (f_t(X) - y)$, whose solution from the
# network's own $f_0$ is what `gl.ntk.gradient_descent_mse(theta_inf, y)` returns at $t = 200$
# (with `fx_train_0`, `fx_test_0` the net's initial outputs and `k_test_train` =
# $\Theta_\infty(x_{test}, X)$). Sharing $f_0$ removes the Gaussian-process randomness of the
# initial function, which does not shrink with width; what is left is the kernel's own error
# at initialisation, $O(n^{-1/2})$, and its drift, $O(n^{-1})$, so the distance should fall
# like $n^{-1/2}$. The held-out inputs sit half a grid step between the 64-point grid's angles,
# never on a training input. The prediction is gradient *flow*; with $\eta = 1$ on this kernel
# the discretisation error of 200 GD steps is far below the measured distances.

# %%
from gradlab.experiments.ntk_width import EXPERIMENT

fig = EXPERIMENT.plot(result.config, result.results)
fig

# %%
res = result.results
for w in res["per_width"]:
    print(
        f"width {w['width']:>5}: init error {w['init_error_mean']:.3f}, "
        f"drift {w['drift_mean']:.4f}, distance to kernel GD "
        f"{w['function_distance_mean']:.4f} +- {w['function_distance_sem']:.4f}, "
        f"final loss {w['final_loss_mean']:.2e} "
        f"+- {w['final_loss_sem']:.1e} (median {w['final_loss_median']:.2e}, "
        f"per-seed CV {w['final_loss_cv']:.2f}, {len(w['final_loss'])} seeds)"
    )
print(
    f"max/min of the means: {res['final_loss_ratio']:.2f} +- "
    f"{100 * res['final_loss_ratio_rel_se']:.0f}% (widths {res['final_loss_ratio_widths']}); "
    f"log-log slope of the mean vs width {res['final_loss_log_slope']:.2f}; "
    f"infinite-width linearised net: {res['final_loss_kernel_limit']:.2e}"
)

# %% [markdown]
# ## The final losses (part 1's check, now a reported finding)
#
# Part 1 asked the mean (over seeds) final training loss to agree within 2x across widths.
# In the kernel regime the residual after $t$ steps is $(I - \eta\Theta/N)^t (f_0 - f^*)$ on
# the training inputs: it depends on the network's function at initialisation $f_0$, a sample
# of a Gaussian process (covariance: the NNGP kernel) whose variance does **not** shrink with
# width, and its high-frequency part sits in the kernel's small eigenvalues, which decay
# slowly in 200 steps. So the final loss varies from seed to seed by a factor 3-8 at *every*
# width. With the 4 kernel seeds the ratio of means was 2.88 in full mode and 2.16 in smoke
# mode, each with a standard error of 20-50%, too noisy to decide a 2x band.
#
# **Number of seeds, fixed once.** A 16-seed pilot (training only, other keys) measured the
# per-seed coefficient of variation (CV) of the final loss: 0.72 and 0.88 at widths 64 and
# 128, 0.31-0.39 at widths 256-2048. The ratio of two independent means of $n$ seeds has
# relative standard error $\sqrt{(\mathrm{cv}_1^2 + \mathrm{cv}_2^2)/n}$; with the largest
# narrow-net CV (0.88) and the wide-net CV (0.39), $n \ge (0.88^2 + 0.39^2)/0.2^2 = 23.2$
# keeps it at or below 20%, so every width trains 24 nets. Only the first 4 also get their
# kernels measured (two Jacobians of up to 12.6M parameters each); the training is what the
# extra seeds cost (about 5.5 s per net at width 2048 on this CPU). The statistic (max/min
# of the means) and the threshold are the issue's, unchanged.
#
# **Outcome: a real width trend.** With 24 seeds the ratio is 3.12 +- 17% (widths
# 64 and 2048), 2.6 standard errors above 2 on a log scale, and the mean falls steadily
# with width (log-log slope -0.35). The reference line in the last panel is the
# expected final loss of the infinite-width linearised network,
# $\tfrac{1}{2N}\big(y^\top A^2 y + \operatorname{tr}(A K A)\big)$ with
# $A = (I - \eta\Theta_\infty/N)^{200}$ and $K$ the NNGP kernel (1.64e-4): the wide nets
# approach it from above, while the narrow nets (64, 128), whose kernels move by 17-27%
# during training, end 3-4x above it. The claim "final losses within 2x across widths" holds
# for widths 256-2048 (within 1.5x), not down to width 64; issue 14 replaced that check by the
# function-space comparison above, which is the paper's actual claim.

# %% [markdown]
# ## Measured values
#
# Full mode (`gradlab reproduce ntk_width`) took 191 s wall and 205 s CPU (two cores) on the
# shared 2-core machine at load average ~2-3 in part 1 (width 2048 about 140 s of it). The
# issue-14 run (which adds only forward passes on the held-out inputs) took 1,921 s wall and
# 372 s CPU at load average 12-19 (the machine shared by ~8 jobs); every kernel and loss
# number below is identical to part 1's run (same keys). Smoke mode: 131 s wall under the same
# load (13 s when idle).
#
# | width | init error | drift | distance to kernel GD (held out), mean +- s.e.m. | final loss, mean +- s.e.m. (24 seeds) | per-seed CV |
# |------:|------:|------:|------:|------:|------:|
# | 64   | 0.351 | 0.272  | 0.0922 +- 0.0054 | 6.20e-4 +- 0.98e-4 | 0.77 |
# | 128  | 0.331 | 0.166  | 0.0699 +- 0.0037 | 5.08e-4 +- 0.69e-4 | 0.66 |
# | 256  | 0.172 | 0.0715 | 0.0486 +- 0.0018 | 2.84e-4 +- 0.32e-4 | 0.54 |
# | 512  | 0.113 | 0.0442 | 0.0341 +- 0.0014 | 2.75e-4 +- 0.24e-4 | 0.42 |
# | 1024 | 0.110 | 0.0252 | 0.0260 +- 0.0011 | 2.06e-4 +- 0.23e-4 | 0.54 |
# | 2048 | 0.060 | 0.0162 | 0.0212 +- 0.0010 | 1.98e-4 +- 0.14e-4 | 0.36 |
#
# Infinite-width linearised net: expected final loss 1.64e-4.
#
# Checks (full): init-error slope -0.517 (in [-0.7, -0.3], PASS); drift slope -0.834 (in
# [-1.3, -0.7], PASS); drift at width 2048 0.0162 (<= 0.03, PASS); slope of the distance to
# the limiting-NTK prediction -0.439 (in [-0.8, -0.3], PASS); that distance at width 2048
# 0.0212 (<= 0.15, PASS). Reported: max/min final loss 3.12 +- 17%, widths 64/2048 (part 1's
# bound was 2), log-log slope of the mean final loss -0.35.
#
# Checks (smoke: widths 64-256, 2 kernel seeds, 24 loss seeds): slopes -0.529 and -1.057
# (PASS), drift at width 256 0.0698 (<= 0.24, PASS), distance slope -0.462 (PASS), distance at
# width 256 0.0486 (<= 0.42 = 0.15 sqrt(2048 / 256), PASS). Reported: max/min final loss 2.18.
