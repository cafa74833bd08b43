"""Sagun et al. (1706.04454): the Hessian of a C-class softmax network has C-1 outliers.

Gaussian blobs with C classes, an MLP ``d-w-w-C`` with ReLU, mean softmax cross-entropy and
full-batch gradient descent. At the end of training the top ``2C`` Hessian eigenvalues
(``gradlab.spectral.eigsh`` on ``gradlab.curvature.hessian``) show a gap after the ``C-1``-th:
the outliers come from the Gauss-Newton part ``J^T H_out J`` whose output Hessian
``diag(p) - p p^T`` has rank ``C-1`` per example and is dominated by class-mean directions.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradlab.experiments._common import gd_train, tree_size
from gradlab.experiments.schema import Check, Experiment, check

__all__ = ["EXPERIMENT", "Config", "checks", "outlier_gap", "plot", "run", "runs_of"]


@dataclasses.dataclass(frozen=True)
class Config:
    """Setup of the reproduction (full-mode defaults) and its acceptance thresholds."""

    seed: int = 0
    class_counts: tuple[int, ...] = (2, 5, 10)
    widths: tuple[int, ...] = (32, 64, 128, 256)
    dim: int = 20
    num_per_class: int = 200
    center_norm: float = 2.0
    noise: float = 1.0
    learning_rate: float = 0.05
    num_steps: int = 1000
    eig_extra_matvecs: int = 20
    eig_tol: float = 1e-5
    dense_max_params: int = 2000
    slq_num_probes: int = 8
    slq_num_matvecs: int = 80
    slq_grid_size: int = 400
    min_outlier_ratio: float = 2.0
    max_dense_rel_error: float = 1e-3
    max_ggn_rel_error: float = 0.1


def runs_of(config: Config) -> list[tuple[int, int]]:
    """The ``(C, width)`` runs: every C at ``widths[0]``, then every width at ``max(C)``.

    Examples:
        >>> from gradlab.experiments.hessian_outliers import Config, runs_of
        >>> runs_of(Config(class_counts=(2, 10), widths=(32, 64)))
        [(2, 32), (10, 32), (10, 64)]
    """
    base = config.widths[0]
    runs = [(c, base) for c in config.class_counts]
    runs += [(max(config.class_counts), w) for w in config.widths[1:]]
    return runs


def outlier_gap(eigenvalues: Any) -> tuple[int, float]:
    """Position ``i`` (1-based) and size of the largest ratio ``lambda_i / lambda_{i+1}``.

    The eigenvalues are sorted in decreasing order first; a non-positive ``lambda_{i+1}`` gives
    an infinite ratio.

    Examples:
        >>> from gradlab.experiments.hessian_outliers import outlier_gap
        >>> outlier_gap([9.0, 8.0, 1.0, 0.9])
        (2, 8.0)
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(lam[1:] > 0, lam[:-1] / lam[1:], np.inf)
    i = int(np.argmax(ratios))
    return i + 1, float(ratios[i])


def _problem(config: Config, num_classes: int, width: int, key: jax.Array):
    import gradlab as gl

    k_data, k_init = jax.random.split(key)
    x, y = gl.data.gaussian_blobs(
        k_data,
        num_classes=num_classes,
        num_per_class=config.num_per_class,
        dim=config.dim,
        center_norm=config.center_norm,
        noise=config.noise,
    )
    params, apply_fn = gl.models.init_mlp(
        k_init, (config.dim, width, width, num_classes), activation="relu"
    )
    return params, apply_fn, (x, y)


def _measure(config: Config, num_classes: int, width: int, key: jax.Array, bar) -> dict:
    import gradlab as gl

    t0 = time.perf_counter()
    k_problem, k_hess, k_ggn, k_slq = jax.random.split(key, 4)
    params, apply_fn, batch = _problem(config, num_classes, width, k_problem)
    k = 2 * num_classes
    depth = 2 * k + config.eig_extra_matvecs

    def loss_fn(p, b):
        return gl.curvature.softmax_cross_entropy(apply_fn(p, b[0]), b[1])

    @jax.jit
    def train_and_probe(params, batch, k_hess, k_ggn):
        p, losses = gd_train(
            loss_fn, params, batch, learning_rate=config.learning_rate, num_steps=config.num_steps
        )
        hvp = gl.curvature.hessian(loss_fn, p, batch)
        gvp = gl.curvature.ggn(apply_fn, gl.curvature.softmax_cross_entropy, p, batch)
        hess = gl.spectral.eigsh(hvp, p, k=k, key=k_hess, num_matvecs=depth, tol=config.eig_tol)
        gn = gl.spectral.eigsh(gvp, p, k=k, key=k_ggn, num_matvecs=depth, tol=config.eig_tol)
        accuracy = jnp.mean(jnp.argmax(apply_fn(p, batch[0]), axis=-1) == batch[1])
        return p, losses, hess, gn, accuracy

    p, losses, hess, gn, accuracy = train_and_probe(params, batch, k_hess, k_ggn)
    lam = np.asarray(hess.eigenvalues, dtype=np.float64)
    gap_at, gap = outlier_gap(lam)
    top = max(num_classes - 1, 1)
    g = np.asarray(gn.eigenvalues, dtype=np.float64)
    out = {
        "num_classes": num_classes,
        "width": width,
        "num_params": tree_size(params),
        "loss_initial": float(losses[0]),
        "loss_final": float(losses[-1]),
        "train_accuracy": float(accuracy),
        "hessian_top": lam.tolist(),
        "hessian_residuals": np.asarray(hess.residuals).tolist(),
        "hessian_converged": int(np.sum(hess.converged)),
        "ggn_top": g.tolist(),
        "gap_index": gap_at,
        "gap_ratio": gap,
        "ggn_rel_error": float(np.max(np.abs(g[:top] - lam[:top]) / np.abs(lam[:top]))),
    }
    bar.set_postfix_str(f"C={num_classes} w={width} gap@{gap_at} x{gap:.2f}")
    if out["num_params"] <= config.dense_max_params:
        dense = jax.jit(lambda p, b: gl.curvature.dense(gl.curvature.hessian(loss_fn, p, b), p))
        exact = np.linalg.eigvalsh(np.asarray(dense(p, batch), dtype=np.float64))[::-1][:k]
        out["dense_top"] = exact.tolist()
        out["dense_rel_error"] = float(np.max(np.abs(lam - exact) / np.abs(exact)))
    if num_classes == max(config.class_counts) and width == config.widths[0]:
        slq = jax.jit(
            lambda p, b, key: gl.spectral.slq(
                gl.curvature.hessian(loss_fn, p, b),
                p,
                key=key,
                num_probes=config.slq_num_probes,
                num_matvecs=config.slq_num_matvecs,
            )
        )(p, batch, k_slq)
        span = 1.1 * float(lam[0])
        grid = jnp.linspace(-0.1 * span, span, config.slq_grid_size)
        sigma = span / 200
        out["slq"] = {
            "grid": np.asarray(grid).tolist(),
            "density": np.asarray(gl.spectral.density(slq, grid, sigma=sigma)).tolist(),
            "nodes": np.asarray(slq.nodes).ravel().tolist(),
            "weights": np.asarray(slq.weights).ravel().tolist(),
            "sigma": sigma,
        }
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def run(config: Config, progress) -> dict:
    """Train every ``(C, width)`` run and measure its Hessian/GGN spectra (see module doc)."""
    key = jax.random.key(config.seed)
    runs = runs_of(config)
    results = []
    with progress(total=len(runs), desc="hessian_outliers") as bar:
        for i, (num_classes, width) in enumerate(runs):
            results.append(_measure(config, num_classes, width, jax.random.fold_in(key, i), bar))
            bar.update()
    return {"runs": results}


def checks(config: Config, results: dict) -> list[Check]:
    """Gap at ``i = C-1`` with ratio >= threshold per run; Lanczos vs dense; GGN vs Hessian."""
    out = []
    for r in results["runs"]:
        c, w = r["num_classes"], r["width"]
        tag = f"C={c}, width={w}"
        out.append(
            check(f"position of largest gap = C-1 [{tag}]", r["gap_index"], "in", (c - 1, c - 1))
        )
        out.append(
            check(f"lambda_(C-1)/lambda_C [{tag}]", r["gap_ratio"], ">=", config.min_outlier_ratio)
        )
    dense = [r for r in results["runs"] if "dense_rel_error" in r]
    out.append(
        check(
            f"Lanczos vs dense eigvalsh, max rel. error ({len(dense)} runs)",
            max((r["dense_rel_error"] for r in dense), default=float("nan")),
            "<=",
            config.max_dense_rel_error,
        )
    )
    out.append(
        check(
            "top C-1 GGN vs Hessian eigenvalues, max rel. error",
            max(r["ggn_rel_error"] for r in results["runs"]),
            "<=",
            config.max_ggn_rel_error,
        )
    )
    return out


def plot(config: Config, results: dict):
    """Three panels: top-2C spectra per C, gap ratio vs width, SLQ density of the Hessian."""
    import matplotlib.pyplot as plt

    runs = results["runs"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    base = config.widths[0]
    for r in runs:
        if r["width"] != base:
            continue
        c = r["num_classes"]
        lam = np.asarray(r["hessian_top"])
        line = axes[0].semilogy(np.arange(1, lam.size + 1), lam, "o-", label=f"C={c}")[0]
        axes[0].axvline(c - 0.5, color=line.get_color(), ls=":", lw=1)
    axes[0].set(
        xlabel="index i", ylabel="Hessian eigenvalue", title=f"Top 2C eigenvalues (width {base})"
    )
    axes[0].legend()
    c_max = max(config.class_counts)
    sweep = [r for r in runs if r["num_classes"] == c_max]
    axes[1].plot([r["width"] for r in sweep], [r["gap_ratio"] for r in sweep], "o-")
    axes[1].axhline(config.min_outlier_ratio, color="k", ls="--", lw=1, label="threshold")
    axes[1].set(
        xscale="log",
        xlabel="width",
        ylabel="lambda_(C-1) / lambda_C",
        title=f"Outlier gap vs width (C={c_max})",
    )
    axes[1].legend()
    slq_runs = [r for r in runs if "slq" in r]
    if slq_runs:
        r = slq_runs[0]
        grid, dens = np.asarray(r["slq"]["grid"]), np.asarray(r["slq"]["density"])
        axes[2].semilogy(grid, np.maximum(dens, 1e-8))
        for lam in r["hessian_top"][: r["num_classes"] - 1]:
            axes[2].axvline(lam, color="C3", lw=0.6, alpha=0.6)
        axes[2].set_ylim(1e-6, None)
        axes[2].set(
            xlabel="eigenvalue",
            ylabel="density (SLQ)",
            title=f"Hessian spectrum, C={r['num_classes']} width {r['width']} (red: top C-1)",
        )
    fig.tight_layout()
    return fig


EXPERIMENT = Experiment(
    name="hessian_outliers",
    title="Empirical Analysis of the Hessian of Over-Parametrized Neural Networks",
    arxiv="1706.04454",
    cpu_time="~3 min",
    config_cls=Config,
    run=run,
    checks=checks,
    plot=plot,
    description="a C-class softmax network's Hessian has C-1 outlier eigenvalues above a bulk",
)
