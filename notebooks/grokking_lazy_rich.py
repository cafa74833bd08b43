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
# # Grokking as the transition from lazy to rich training
#
# **Paper:** T. Kumar, B. Bordelon, S. J. Gershman, C. Pehlevan, *Grokking as the Transition
# from Lazy to Rich Training Dynamics*, ICLR 2024,
# [arXiv:2310.06110](https://arxiv.org/abs/2310.06110).
#
# **Figures it stands for:** Figure 1(b)-(c) (a two-layer network on polynomial regression,
# vanilla gradient descent, no regularisation: the train loss falls first, the test loss
# much later, while the features align with the task) and Figure 3(a) (the output scale
# $\alpha$ sets the delay: lazier networks grok later; small $\alpha$ removes grokking), with
# Figure 7(d)'s relative weight change.
#
# **Setup:** the paper's Section 5 model, $f = \frac{\alpha}{N}\sum_i \phi(w_i^\top x)$,
# $\phi(h) = h + \frac{\epsilon}{2}h^2$, readouts fixed to 1, target
# $y = \frac12(\beta^\top x)^2$ with $\lVert\beta\rVert^2 = D$, $x \sim N(0, I/D)$, $w_i \sim
# N(0, I)$; the centred predictor $f(W, x) - f(W_0, x)$ (their Appendix 8.1), loss
# $\frac1{2P}\sum_\mu(\tilde f_\mu - y_\mu)^2$, full-batch gradient descent with learning
# rate $\eta_0 N/\alpha^2$. $D = 100$, $P = 550$ training and 1,000 test points, $N = 100$,
# $\epsilon = 0.2$, $\alpha \in \{0.5, 1, 2, 4, 8\}$, $\eta_0 = 10$, 10,000 steps; one data
# set and one initialisation shared by all $\alpha$ (seed 0).
#
# **How this setup differs:** the paper's text does not give Figure 1's numbers ($N$,
# $\epsilon$, $\alpha$, learning rate, horizon; they are in the plots only, which we could not
# read), so they were calibrated here once, before the checks were computed, from what the
# text does say: $D \ll P \ll D^2/(2\epsilon^2)$ (the kernel cannot learn the quadratic
# target, a feature-learning network can: $\epsilon = 0.2$ puts $D^2/(2\epsilon^2)$ at
# 125,000), small $\epsilon$ for a poorly aligned initial kernel (their Fig. 3(b)), $\alpha$
# around 1 (their Fig. 3(a) and Fig. 12 use 0.5-1.4), $\eta = \eta_0/\alpha^2$ (their
# App. 8.1) with $\eta_0 = 10$, well below the stability limit ($\approx 90$; the top
# eigenvalue of $K_0/P$ is $\approx 0.02$), and a horizon at which the laziest network's test
# loss has fallen. $N = 100$ is small (cost grows with $N$). The NTK alignment is the centred
# kernel alignment of `gl.ntk.empirical_ntk` on 256 test inputs at 32 log-spaced steps and at
# the step where the train loss becomes low (the descent replayed to it); it is not on the
# scale of the paper's Figure 1(c) alignment curve. The smoke run (CI) uses the two laziest
# networks, $\alpha \in \{4, 8\}$, with the full horizon (the alignment share depends on
# it), logging every 32 steps after step 256 and 16 NTK checkpoints.
#
# **Margins:** the effect shows within budget but milder than the paper's Figure 1: at
# $\alpha = 8$ the lag is 7.4 (threshold 5) and only 51% of the alignment rise comes after
# the train loss is low (threshold 50%); the centred alignment stays small (0.036 to
# 0.039-0.110) because the unchanging linear part $x^\top x'$ of the NTK dominates it.
#
# **Definitions fixed before the run:** a loss "drops" at the first logged step where it is at
# most half its step-0 value; the train loss is "low" at the first step where it is at most
# 10% of it; the lag is test-drop step / train-drop step; the weight movement is
# $\lVert W_t - W_0\rVert_F/\lVert W_0\rVert_F$ at step 100.

# %%
import os

from gradlab.experiments import format_checks, run_experiment
from gradlab.experiments.grokking_lazy_rich import KNOWN_FAILING

SMOKE = os.environ.get("GRADLAB_SMOKE") == "1"
result = run_experiment(
    "grokking_lazy_rich", smoke=SMOKE, out=os.environ.get("GRADLAB_RUNS", "runs")
)
print(format_checks(result.checks))
unexpected = [c.name for c in result.checks if not c.passed and c.name not in KNOWN_FAILING]
assert not unexpected, f"acceptance checks failed: {unexpected}"

# %% [markdown]
# ## Why a lazy network groks
#
# With the learning rate $\eta_0 N/\alpha^2$ the function moves at the start as kernel
# gradient descent with the initial NTK, $\Delta\tilde f = -\frac{\eta_0}{P}K_0(\tilde f - y)$,
# for every $\alpha$, while each weight moves by $O(1/\alpha)$. The initial kernel
# $x^\top x' + \epsilon^2(x^\top x')^2$ can interpolate the 550 training points (it has
# $D + D(D+1)/2 = 5{,}150$ features) but gives the quadratic target's directions eigenvalue
# $2\epsilon^2/D^2$, far too small to learn them from $P \ll D^2/(2\epsilon^2)$ examples: the
# lazy fit memorises. Generalising needs $M = \frac1N\sum_i w_iw_i^\top$ to move by
# $\beta\beta^\top/(\alpha\epsilon)$, which takes longer the larger $\alpha$ is. So the train
# loss falls on the kernel's time scale for every $\alpha$, and the test loss follows only
# once the features have moved: later for lazier networks.

# %%
from gradlab.experiments.grokking_lazy_rich import EXPERIMENT

fig = EXPERIMENT.plot(result.config, result.results)
fig

# %%
for alpha, row in zip(result.config.alphas, result.results["per_alpha"], strict=True):
    print(
        f"alpha {alpha:4g}: train drop {row['train_drop_step']:6.0f}, test drop "
        f"{row['test_drop_step']:6.0f}, lag {row['lag']:6.2f}, train low "
        f"{row['train_low_step']:6.0f}, final test loss {row['final_test_loss']:.4f}, "
        f"movement at step {result.config.movement_step} {row['movement_at_step']:.4f}, "
        f"NTK alignment {row['alignment_initial']:.4f} -> {row['alignment_final']:.4f} "
        f"({row['alignment_rise_after_low']:.2f} of the rise after the train loss is low)"
    )

# %% [markdown]
# ## Measured values (full mode)
#
# See docs/reproductions.md for the values of the full run (`gradlab reproduce
# grokking_lazy_rich`, seed 0) and the smoke run.
