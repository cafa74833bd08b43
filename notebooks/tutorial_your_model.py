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
# # Tutorial: analyse your own model
#
# This notebook takes a model that gradlab knows nothing about (a flax `linen` MLP written
# here) and a data set loaded straight from scikit-learn (the 8x8 digits), trains it with an
# optax chain that contains a gradlab transformation, and then looks at it the way the
# reproductions do:
#
# 1. the top Hessian eigenvalues, with the residual of each Ritz pair (`gl.spectral.eigsh`);
# 2. the spectral density of the Hessian with its bootstrap band (`gl.spectral.slq` and
#    `gradlab.spectral.plot.plot_density`);
# 3. the Hessian trace with its standard error (`gl.spectral.trace`);
# 4. the empirical NTK on a few inputs (`gl.ntk.empirical_ntk`);
# 5. K-FAC, compared with the Hessian and the Gauss-Newton matrix along the sharpest
#    directions (`gl.curvature.kfac`, `gl.curvature.ggn`);
# 6. influence scores of the training examples on a test prediction (`gl.attribution.influence`).
#
# Everything is a pure function of `(params, data)`: swap in your own `apply_fn`, `loss_fn` and
# arrays and the cells run unchanged. With `GRADLAB_SMOKE=1` the notebook uses fewer steps and
# examples so that CI runs it in seconds; the pictures in the docs come from the default setting.

# %%
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from sklearn.datasets import load_digits

import gradlab as gl
from gradlab.spectral.plot import plot_density

SMOKE = os.environ.get("GRADLAB_SMOKE") == "1"
NUM_TRAIN = 256 if SMOKE else 1024  # training examples
NUM_STEPS = 60 if SMOKE else 400  # optimiser steps, mini-batches of 64
NUM_CURVATURE = 128 if SMOKE else 512  # examples the curvature is measured on
NUM_PROBES, NUM_MATVECS = (4, 30) if SMOKE else (8, 80)  # SLQ probes and Lanczos depth
plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (6, 3.5)})

# %% [markdown]
# ## Your data and your model
#
# The digits images, standardised, split into a training and a test set. The model is a plain
# flax module; gradlab only ever sees `apply_fn(params, inputs)` and the params pytree.

# %%
digits = load_digits()
features = (digits.data - digits.data.mean(0)) / (digits.data.std(0) + 1e-6)
order = np.random.default_rng(0).permutation(len(features))
x_train = jnp.asarray(features[order[:NUM_TRAIN]], jnp.float32)
y_train = jnp.asarray(digits.target[order[:NUM_TRAIN]])
x_test = jnp.asarray(features[order[-256:]], jnp.float32)
y_test = jnp.asarray(digits.target[order[-256:]])


class MLP(nn.Module):
    hidden: int = 32

    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(self.hidden)(x))
        x = nn.tanh(nn.Dense(self.hidden)(x))
        return nn.Dense(10)(x)


model = MLP()
params = model.init(jax.random.key(0), x_train[:1])
apply_fn = model.apply


def loss_fn(params, batch):
    inputs, labels = batch
    return gl.curvature.softmax_cross_entropy(apply_fn(params, inputs), labels)


num_params = sum(leaf.size for leaf in jax.tree.leaves(params))
print(f"{num_params} parameters, {NUM_TRAIN} training examples")

# %% [markdown]
# ## Training with an optax chain that contains a gradlab transform
#
# `gl.transforms.diffgrad` (Dubey et al.) is an optax `GradientTransformation`, so it chains
# with optax's own. The whole loop is one `lax.scan` under `jit`; the data enter as arguments
# of the jitted function rather than as closed-over constants (see `docs/faq.md`).

# %%
optimizer = optax.chain(optax.clip_by_global_norm(1.0), gl.transforms.diffgrad(learning_rate=3e-3))


@jax.jit
def train(params, x, y, key):
    def step(carry, key):
        params, state = carry
        idx = jax.random.choice(key, x.shape[0], (64,), replace=False)
        loss, grads = jax.value_and_grad(loss_fn)(params, (x[idx], y[idx]))
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    keys = jax.random.split(key, NUM_STEPS)
    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), keys)
    return params, losses


params, losses = train(params, x_train, y_train, jax.random.key(1))
accuracy = float(jnp.mean(jnp.argmax(apply_fn(params, x_test), -1) == y_test))
print(f"final mini-batch loss {float(losses[-1]):.3f}, test accuracy {accuracy:.3f}")

fig, ax = plt.subplots()
ax.plot(np.asarray(losses), lw=1)
ax.set(xlabel="step", ylabel="mini-batch loss", yscale="log", title="training")
plt.show()

# %% [markdown]
# ## Top Hessian eigenvalues, with residuals
#
# `gl.curvature.hessian` turns the loss into a matrix-free Hessian-vector product on
# params-shaped pytrees; `gl.spectral.eigsh` runs thick-restarted Lanczos on it. Each Ritz
# value comes with its residual $\|Hy - \theta y\|$, which bounds its distance to a true
# eigenvalue, and a `converged` flag.

# %%
batch = (x_train[:NUM_CURVATURE], y_train[:NUM_CURVATURE])
hvp = gl.curvature.hessian(loss_fn, params, batch)
top = gl.spectral.eigsh(hvp, params, k=10, key=jax.random.key(2))
print("eigenvalues", np.round(np.asarray(top.eigenvalues), 4))
print("residuals  ", np.asarray(top.residuals))
print("all converged:", bool(top.converged.all()), "| Hessian-vector products:", int(top.num_matvecs))

fig, ax = plt.subplots()
index = np.arange(1, 11)
ax.errorbar(index, np.asarray(top.eigenvalues), yerr=np.asarray(top.residuals), fmt="o", capsize=3)
ax.set(xlabel="index i", ylabel=r"$\lambda_i$", yscale="log", title="top Hessian eigenvalues")
plt.show()

# %% [markdown]
# ## Spectral density
#
# Stochastic Lanczos quadrature estimates the whole eigenvalue distribution from a few random
# probes. The shaded band is a bootstrap over probes (Monte-Carlo error); the dashed lines are
# the Ritz values above, which the density's right tail should reach.

# %%
sd = gl.spectral.slq(
    hvp, params, key=jax.random.key(3), num_probes=NUM_PROBES, num_matvecs=NUM_MATVECS
)
ax = plot_density(sd, key=jax.random.key(4), log_scale=True, label="Hessian (SLQ)")
for value in np.asarray(top.eigenvalues):
    ax.axvline(value, color="k", lw=0.5, ls="--")
ax.set_title("Hessian spectral density")
plt.show()

# %% [markdown]
# ## Trace with error bars
#
# `gl.spectral.trace` returns an estimate and its standard error. Hutch++ spends a third of its
# budget on the dominant subspace, so its error falls quickly when a few outliers carry the
# trace; plain Hutchinson is the baseline. The SLQ density gives a third estimate for free,
# $n \sum_j w_j \theta_j$ averaged over probes.

# %%
budgets = (30,) if SMOKE else (30, 90, 270)
estimators = ("hutch++",) if SMOKE else ("hutchinson", "hutch++")
fig, ax = plt.subplots()
for shift, estimator in zip((0.05, -0.05), estimators, strict=False):  # 1 estimator in smoke
    values, sems = [], []
    for budget in budgets:
        est = gl.spectral.trace(
            hvp, params, key=jax.random.key(5), num_matvecs=budget, estimator=estimator
        )
        values.append(float(est.value))
        sems.append(float(est.sem))
        print(f"{estimator:10s} {budget:3d} matvecs: {values[-1]:.3f} +- {sems[-1]:.3f}")
    ax.errorbar(np.log2(budgets) + shift, values, yerr=sems, fmt="o", capsize=3, label=estimator)
slq_trace = num_params * float(jnp.mean(jnp.sum(sd.weights * sd.nodes, axis=1)))
ax.axhline(slq_trace, color="gray", lw=1, label="SLQ estimate")
ax.set_xticks(np.log2(budgets), [str(b) for b in budgets])
ax.set(xlabel="Hessian-vector products", ylabel="tr(H)", title="trace estimates")
ax.legend()
plt.show()

# %% [markdown]
# ## The NTK on a few inputs
#
# The empirical neural tangent kernel $\Theta(x, x') = J(x) J(x')^\top$ (averaged over the 10
# outputs) on 40 test images sorted by class: the block structure shows that the trained
# network's tangent features already separate the classes. No `vmap_axes` is needed: gradlab
# detects that the examples are independent and takes the per-example path.

# %%
sorted_idx = np.argsort(np.asarray(y_test[:40]), kind="stable")
x_few = x_test[:40][sorted_idx]
theta = gl.ntk.empirical_ntk(apply_fn, params, x_few)
eigs = np.linalg.eigvalsh(np.asarray(theta))[::-1]

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.5))
image = ax0.imshow(np.asarray(theta), cmap="viridis")
fig.colorbar(image, ax=ax0)
ax0.set_title("empirical NTK, inputs sorted by class")
ax1.semilogy(np.arange(1, len(eigs) + 1), eigs, "o", ms=3)
ax1.set(xlabel="index", ylabel="eigenvalue", title="NTK spectrum")
plt.show()

# %% [markdown]
# ## K-FAC
#
# `gl.curvature.kfac` approximates the Gauss-Newton matrix block-diagonally, one Kronecker
# product per `nn.Dense` layer, found through flax's method interception (no model changes).
# A simple test of any curvature approximation: the curvature it assigns to the sharpest
# directions of the Hessian, the Rayleigh quotients $v_i^\top C v_i$ along the top eigenvectors.

# %%
def tree_dot(a, b):
    return sum(jnp.vdot(u, w) for u, w in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@jax.jit
def curvature_along(params, batch, vectors):
    hvp = gl.curvature.hessian(loss_fn, params, batch)
    gvp = gl.curvature.ggn(apply_fn, "softmax_cross_entropy", params, batch)
    kf = gl.curvature.kfac(apply_fn, "softmax_cross_entropy", params, batch)
    forms = jax.vmap(lambda v: jnp.stack([tree_dot(v, m(v)) for m in (hvp, gvp, kf.matvec)]))
    return kf, forms(vectors)


kf, forms = curvature_along(params, batch, top.eigenvectors)
print({name: (a.shape, g.shape) for name, (a, g) in kf.factors.items()})

fig, ax = plt.subplots()
for column, (label, marker) in enumerate((("Hessian", "o"), ("GGN", "s"), ("K-FAC", "^"))):
    ax.plot(index, np.asarray(forms[:, column]), marker, label=label, alpha=0.8)
ax.set(xlabel="top Hessian eigenvector i", ylabel=r"$v_i^\top C v_i$", yscale="log")
ax.set_title("curvature along the sharpest directions")
ax.legend()
plt.show()

# %% [markdown]
# ## Influence of training examples on a test prediction
#
# `gl.attribution.influence` scores every training example by the first-order change of a test
# loss when that example is up-weighted, $-\nabla \ell_{\text{test}}^\top (C + \lambda I)^{-1}
# \nabla \ell_{\text{train}}$. With `curvature="ekfac", solver="factored"` the inverse comes from
# the EK-FAC factors (Grosse et al.), no iterations. Negative scores are helpful examples.

# %%
test_example = (x_test[:1], y_test[:1])
result = gl.attribution.influence(
    loss_fn,
    params,
    (x_train, y_train),
    test_example,
    damping=1e-2,
    curvature="ekfac",
    solver="factored",
    model_fn=apply_fn,
    output_loss="softmax_cross_entropy",
)
scores = np.asarray(result.scores[0])
helpful, harmful = np.argsort(scores)[:4], np.argsort(scores)[-4:][::-1]

fig, axes = plt.subplots(1, 9, figsize=(10, 1.8))
axes[0].imshow(np.asarray(x_test[0]).reshape(8, 8), cmap="gray_r")
axes[0].set_title(f"test: {int(y_test[0])}", fontsize=9)
for ax, i, kind in zip(
    axes[1:], [*helpful, *harmful], ["helpful"] * 4 + ["harmful"] * 4, strict=True
):
    ax.imshow(np.asarray(x_train[i]).reshape(8, 8), cmap="gray_r")
    ax.set_title(f"{kind}: {int(y_train[i])}", fontsize=9)
for ax in axes:
    ax.axis("off")
plt.show()
print("most helpful scores", np.round(scores[helpful], 4))
print("most harmful scores", np.round(scores[harmful], 4))

# %% [markdown]
# ## Where to go next
#
# - The guides in `docs/`: curvature, spectral, NTK, attribution and transforms.
# - What new users trip on (`docs/faq.md`): jit arguments, `vmap_axes`, float32 vs float64,
#   vmapping an analysis over seeds.
# - For float64 estimates run `jax.config.update("jax_enable_x64", True)` before creating arrays.
