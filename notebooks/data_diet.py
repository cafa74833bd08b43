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
# # A data diet: early error norms find flipped labels and the examples worth keeping
#
# **Paper:** M. Paul, S. Ganguli, G. K. Dziugaite, *Deep Learning on a Data Diet: Finding
# Important Examples Early in Training*, NeurIPS 2021,
# [arXiv:2107.07075](https://arxiv.org/abs/2107.07075); with A. Kirsch, *Does "Deep Learning on
# a Data Diet" Reproduce? Overall Yes, but GraNd at Initialization Does Not*,
# [arXiv:2303.14753](https://arxiv.org/abs/2303.14753), for the negative result.
#
# **Figures it stands for:** the paper's pruning curves (test accuracy after training on the
# highest-EL2N examples, against random pruning and against keeping the easiest ones), its
# noisy-label experiment (EL2N ranks the corrupted examples first), and Kirsch's observation
# that GraNd at initialisation is mostly the input norm.
#
# **How this setup differs:** scikit-learn digits instead of CIFAR-10/100 and ResNets: all
# 1,797 images standardised, a stratified 80/20 split (1,438 train / 359 test), an MLP
# 64-256-256-10 (ReLU) trained with Adam (lr $10^{-3}$, batch 64). EL2N
# (`gradlab.attribution.el2n`) after 3 epochs (67 steps) and GraNd at initialisation
# (`gradlab.attribution.grand`), both averaged over 5 initialisations. One pruning level
# (keep 50%) instead of a curve; every pruned subset and the full data are trained from
# scratch for the same 1,500 steps (about 67 epochs of the full data), 5 times, and the mean
# test accuracies are compared. Noisy labels: 10% symmetric noise (each flipped label moved to
# a uniformly drawn other class). The smoke run (CI) uses 2 scoring models, 500 steps and 3
# training seeds.

# %%
import os

from gradlab.experiments import format_checks, run_experiment

SMOKE = os.environ.get("GRADLAB_SMOKE") == "1"
result = run_experiment("data_diet", smoke=SMOKE, out=os.environ.get("GRADLAB_RUNS", "runs"))
print(format_checks(result.checks))
assert result.passed, "an acceptance check failed"

# %% [markdown]
# ## What the scores see
#
# After a few epochs the network fits the bulk of each class; an example it still gets wrong
# (large $\lVert p - e_y \rVert$) is either atypical or mislabelled. With 10% of the labels
# flipped, the flipped examples dominate the top of the EL2N ranking (left panel). On clean
# data the high-EL2N half carries the information: training on it alone matches the full
# data, a random half loses about a point, and the easy half (prototypical digits the network
# learns first) loses much more (middle panel). GraNd at initialisation, by contrast, is
# nearly a function of $\lVert x \rVert$ (right panel): at initialisation the first-layer
# gradient of an example is $\delta x^\top$ with norm $\lVert \delta \rVert \lVert x \rVert$,
# and $\delta$ varies little across examples, Kirsch's explanation of why GraNd at
# initialisation does not reproduce.

# %%
from gradlab.experiments.data_diet import EXPERIMENT

fig = EXPERIMENT.plot(result.config, result.results)
fig

# %%
res = result.results
print("noisy labels:", res["noise"])
for name, acc in res["mean_accuracy"].items():
    print(f"{name:8s} mean test accuracy {acc:.4f} +- {res['sem_accuracy'][name]:.4f}")
print("Spearman(GraNd at init, |x|) =", round(res["grand_init_vs_input_norm"], 4))
print("Spearman(EL2N, |x|) =", round(res["el2n_vs_input_norm"], 4))

# %% [markdown]
# ## Measured values
#
# See docs/reproductions.md (full and smoke mode).
