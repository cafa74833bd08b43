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
# # Logistic regression with huge steps is the batch perceptron (Tyurin)
#
# **Paper:** A. Tyurin, *From Logistic Regression to the Perceptron Algorithm: Exploring
# Gradient Descent with Large Step Sizes*, AAAI 2025,
# [arXiv:2412.08424](https://arxiv.org/abs/2412.08424).
#
# **Figures it stands for:** the paper's experiments with full-batch logistic-regression GD
# (LR+GD) over step sizes $\gamma$ from 0.1 to $10^8$: the number of iterations to separate
# the data falls with $\gamma$ and settles at the batch perceptron's count, while the
# logistic loss after a fixed number of iterations *rises* with $\gamma$ on data that are not
# separable; plus the paper's Normalized LR+GD.
#
# **How this setup differs:** the paper uses LIBSVM sets and synthetic data; here three
# small problems that ship with scikit-learn or are generated: digits 3 vs 8 (357 images,
# pixels / 16, separable), Wisconsin breast cancer (569, standardised, not linearly separable)
# and a synthetic separable set (400 Gaussian points in $\mathbb R^{20}$ labelled by a random
# hyperplane, points within 0.05 of it dropped). Each input gets a constant feature 1. All
# methods start at $\theta_0 = 0$ and run 20,000 iterations in float32; "iterations to
# separate" is the first $t$ with every margin $y_i a_i^\top \theta_t > 0$. The batch
# perceptron is $\theta_{t+1} = \theta_t + \frac1n \sum_{i: m_i < 0} y_i a_i$ with weight
# $\tfrac12$ for zero margins (the $\gamma \to \infty$ limit of LR+GD at $\theta_0 = 0$);
# Normalized LR+GD is `gradlab.transforms.normalized_gd`, LR+GD is `optax.sgd`. The cosine to
# the perceptron is taken at the perceptron's separating iteration (at the last iteration on
# breast cancer, which it never separates).

# %%
import os

from gradlab.experiments import format_checks, run_experiment

SMOKE = os.environ.get("GRADLAB_SMOKE") == "1"
result = run_experiment(
    "large_step_perceptron", smoke=SMOKE, out=os.environ.get("GRADLAB_RUNS", "runs")
)
print(format_checks(result.checks))
assert result.passed, "an acceptance check failed"

# %% [markdown]
# ## Why the perceptron
#
# LR+GD from $\theta_0 = 0$ reads
# $\theta_{t+1} = \theta_t + \frac{\gamma}{n} \sum_i y_i a_i\, \sigma(-y_i a_i^\top \theta_t)$.
# Every iterate is $\gamma$ times a vector that does not depend on $\gamma$ in the limit, so the
# margins are of order $\gamma$ and $\sigma(-m_i)$ becomes the indicator of a misclassified
# example: $\theta_t / \gamma$ is the batch perceptron. Iteration counts and directions
# therefore match the perceptron's for large $\gamma$ (left and right panels). On data that
# cannot be separated the perceptron never stops: its iterates wander with norm of order
# one, LR+GD's with norm of order $\gamma$, and the loss, which grows like the margin
# violations, grows with $\gamma$ (middle panel): a high loss is not a sign of a bad classifier.

# %%
from gradlab.experiments.large_step_perceptron import EXPERIMENT

fig = EXPERIMENT.plot(result.config, result.results)
fig

# %%
res = result.results
for name in ("digits_3v8", "synthetic", "breast_cancer"):
    r = res[name]
    print(
        f"{name}: n={r['num_examples']}, d={r['dim']}, batch perceptron separates at "
        f"{r['perceptron_iterations']} (-1: never)"
    )
    for g, it, it_n, loss, cos in zip(
        res["gammas"],
        r["iterations"],
        r["normalized_iterations"],
        r["final_loss"],
        r["cosine_to_perceptron"],
        strict=True,
    ):
        print(
            f"  gamma={g:8.0e}  LR+GD {it:6d}  Normalized {it_n:6d}  loss {loss:10.3e}"
            f"  cos {cos:.6f}"
        )

# %% [markdown]
# ## Measured values
#
# See docs/reproductions.md (full and smoke mode).
