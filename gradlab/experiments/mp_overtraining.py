r"""Advani & Saxe (1710.03667): overtraining peaks where the data covariance is singular.

A linear student :math:`f(x) = x^\top u` learns a noisy linear teacher
:math:`y = x^\top u^* + \varepsilon` (inputs :math:`x \sim N(0, I_N)`, :math:`\|u^*\|^2 \approx
1`, label noise :math:`\varepsilon \sim N(0, \sigma^2)`) from :math:`P = \alpha N` examples by
full-batch gradient descent from zero on :math:`L(u) = \frac{1}{2P}\|y - Xu\|^2`. The Hessian of
:math:`L` is the sample covariance :math:`C = X^\top X / P`, whose spectrum follows the
Marchenko-Pastur law with ratio :math:`\lambda = N / P = 1/\alpha`. Each eigen-direction of
:math:`C` with eigenvalue :math:`s` learns signal and noise at rate :math:`s`; the noise it
absorbs at convergence is :math:`\sigma^2 / s` per direction. Near :math:`\alpha = 1` the law
piles eigenvalues up near zero, so late training fits noise through tiny eigenvalues and the
test error climbs far above its early-stopping minimum: the overtraining gap
:math:`E_g(T) - \min_t E_g(t)` peaks at :math:`\alpha = 1`.

The experiment measures that gap (seed-averaged test-error curves) for every
:math:`\alpha`, and compares the SLQ estimate of the spectral CDF of :math:`C` with the exact
Marchenko-Pastur CDF (closed form, :func:`marchenko_pastur_cdf`) by the Kolmogorov-Smirnov
distance.

GD runs on the sufficient statistics :math:`C` and :math:`b = X^\top y / P`: the update
:math:`u \leftarrow u - \eta (C u - b)` is exactly full-batch GD on :math:`L`, and keeps every
:math:`\alpha` at the same ``(N, N)`` shape so one compiled ``lax.scan`` (vmapped over seeds)
serves the whole sweep.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from gradlab.experiments._mp_law import (
    _edges,
    ks_distance,
    marchenko_pastur_cdf,
    marchenko_pastur_density,
    slq_cdf,
)
from gradlab.experiments.schema import Check, Experiment, check

__all__ = [
    "EXPERIMENT",
    "Config",
    "checks",
    "ks_distance",
    "marchenko_pastur_cdf",
    "marchenko_pastur_density",
    "plot",
    "run",
    "slq_cdf",
]


@dataclasses.dataclass(frozen=True)
class Config:
    """Every knob of the experiment (full-mode defaults) and its acceptance thresholds."""

    seed: int = 0
    dim: int = 400
    alphas: tuple[float, ...] = (0.5, 0.8, 1.0, 1.25, 2.0)
    noise_std: float = 0.5
    num_seeds: int = 8
    num_steps: int = 8000
    learning_rate: float = 0.15
    num_probes: int = 32
    num_matvecs: int = 100
    zero_tol: float = 1e-4
    peak_alpha_range: tuple[float, float] = (0.8, 1.25)
    min_peak_ratio: float = 3.0
    max_ks: float = 0.05


# ----------------------------------------------------------------------------- analytic law


@functools.partial(jax.jit, static_argnames=("max_examples", "dim", "noise_std"))
def _problems(keys, num_examples, *, max_examples: int, dim: int, noise_std: float):
    """Sufficient statistics ``(C, b, u*, mean y^2)`` of one problem per key.

    Each key draws ``max_examples`` examples of its teacher; the first ``num_examples`` (a
    traced int, so one compilation serves every alpha) form the training set.
    """
    from gradlab.data import linear_teacher

    def one(key):
        x, y, w_star = linear_teacher(key, num_examples=max_examples, dim=dim, noise_std=noise_std)
        mask = (jnp.arange(max_examples) < num_examples).astype(x.dtype)
        xm = x * mask[:, None]
        p = num_examples.astype(x.dtype)
        return xm.T @ xm / p, xm.T @ y / p, w_star / jnp.sqrt(dim), jnp.sum(mask * y**2) / p

    return jax.vmap(one)(keys)


@jax.jit
def _gd_curves(cov, rhs, u_star, y2, learning_rate, steps_marker):
    """Full-batch GD from zero, vmapped over problems; returns test and train error curves.

    ``steps_marker`` is a ``(num_steps,)`` dummy array fixing the scan length.
    Test error is :math:`\\|u - u^*\\|^2` (excess over the noise floor); train loss is
    :math:`L(u) = \\tfrac12 u^\\top C u - b^\\top u + \\tfrac12 \\overline{y^2}`.
    """

    def errors(u):
        test = jnp.sum((u - u_star) ** 2, axis=-1)
        train = 0.5 * jnp.einsum("si,sij,sj->s", u, cov, u) - jnp.sum(rhs * u, -1) + 0.5 * y2
        return test, train

    def step(u, _):
        u = u - learning_rate * (jnp.einsum("sij,sj->si", cov, u) - rhs)
        return u, errors(u)

    u0 = jnp.zeros_like(rhs)
    _, (test, train) = jax.lax.scan(step, u0, steps_marker)
    test0, train0 = errors(u0)
    return (jnp.concatenate([test0[None], test]), jnp.concatenate([train0[None], train]))


@functools.partial(jax.jit, static_argnames=("num_probes", "num_matvecs"))
def _spectrum(cov, key, num_probes: int, num_matvecs: int):
    """SLQ nodes and weights of ``v -> cov v`` (compiled once for all alphas)."""
    from gradlab.spectral import slq

    sd = slq(
        lambda v: cov @ v,
        jnp.zeros(cov.shape[:1], cov.dtype),
        key=key,
        num_probes=num_probes,
        num_matvecs=num_matvecs,
    )
    return sd.nodes, sd.weights


def _log_indices(num_steps: int, count: int = 160) -> np.ndarray:
    idx = np.unique(np.round(np.geomspace(1, num_steps, count)).astype(int))
    return np.concatenate([[0], idx])


def run(config: Config, progress) -> dict:
    """Train the linear student for every alpha and seed; estimate the spectra by SLQ."""
    n = config.dim
    key = jax.random.key(config.seed)
    marker = jnp.zeros((config.num_steps,))
    kept = _log_indices(config.num_steps)
    max_examples = max(round(a * n) for a in config.alphas)
    seed_keys = jax.random.split(jax.random.fold_in(key, 0), config.num_seeds)
    per_alpha = {}
    with progress(total=len(config.alphas), desc="alphas") as bar:
        for i, alpha in enumerate(config.alphas):
            p = round(alpha * n)
            k_slq = jax.random.fold_in(key, i + 1)
            cov, rhs, u_star, y2 = _problems(
                seed_keys,
                jnp.int32(p),
                max_examples=max_examples,
                dim=n,
                noise_std=config.noise_std,
            )
            test, train = _gd_curves(cov, rhs, u_star, y2, config.learning_rate, marker)
            test, train = np.asarray(test, np.float64), np.asarray(train, np.float64)
            mean_test = test.mean(axis=1)
            gap = float(mean_test[-1] - mean_test.min())
            seed_gaps = test[-1] - test.min(axis=0)

            c0 = cov[0]
            nodes, weights = _spectrum(c0, k_slq, config.num_probes, config.num_matvecs)
            ratio = n / p
            nodes, weights = np.asarray(nodes), np.asarray(weights)
            zero_tol = config.zero_tol * _edges(ratio)[1]
            ks = ks_distance(nodes, weights, ratio, zero_tol=zero_tol)
            eig = np.linalg.eigvalsh(np.asarray(c0, np.float64))
            ks_exact = _ks_samples(eig, ratio, zero_tol)
            per_alpha[str(alpha)] = {
                "alpha": float(alpha),
                "num_examples": p,
                "ratio": ratio,
                "gap": gap,
                "gap_seed_mean": float(seed_gaps.mean()),
                "gap_seed_std": float(seed_gaps.std()),
                "test_final": float(mean_test[-1]),
                "test_min": float(mean_test.min()),
                "best_step": int(mean_test.argmin()),
                "train_final": float(train.mean(axis=1)[-1]),
                "steps": kept.tolist(),
                "test_curve": mean_test[kept].tolist(),
                "train_curve": train.mean(axis=1)[kept].tolist(),
                "ks": ks,
                "ks_eigvalsh": ks_exact,
                "slq_nodes": nodes.tolist(),
                "slq_weights": weights.tolist(),
                "eigenvalues": eig.tolist(),
            }
            bar.update()
    gaps = {a: per_alpha[str(a)]["gap"] for a in config.alphas}
    peak_alpha = max(gaps, key=gaps.get)
    lo, hi = min(config.alphas), max(config.alphas)
    ends = max(gaps[lo], gaps[hi])
    return {
        "per_alpha": per_alpha,
        "peak_alpha": float(peak_alpha),
        "peak_gap": float(gaps[peak_alpha]),
        "peak_ratio": float(gaps[peak_alpha] / ends) if ends > 0 else float("inf"),
        "max_ks": float(max(v["ks"] for v in per_alpha.values())),
    }


def _ks_samples(eigenvalues: np.ndarray, ratio: float, zero_tol: float) -> float:
    """KS distance of the exact empirical spectrum (equal weights) from the MP law."""
    e = eigenvalues[None, :]
    return ks_distance(e, np.full_like(e, 1.0 / e.size), ratio, zero_tol=zero_tol)


def checks(config: Config, results: dict) -> list[Check]:
    """Gap peaks inside ``peak_alpha_range`` and beats the end points; SLQ matches MP."""
    lo, hi = min(config.alphas), max(config.alphas)
    return [
        check(
            "overtraining gap peaks at alpha",
            results["peak_alpha"],
            "in",
            tuple(config.peak_alpha_range),
        ),
        check(
            f"peak gap / max(gap at alpha={lo:g}, {hi:g})",
            results["peak_ratio"],
            ">=",
            config.min_peak_ratio,
        ),
        check("max KS(SLQ CDF, Marchenko-Pastur CDF)", results["max_ks"], "<=", config.max_ks),
    ]


def plot(config: Config, results: dict):
    """Test-error curves, the gap versus alpha, and SLQ versus Marchenko-Pastur CDFs."""
    import matplotlib.pyplot as plt

    per_alpha = results["per_alpha"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(per_alpha)))
    for color, item in zip(colors, per_alpha.values(), strict=True):
        t = np.asarray(item["steps"]) * config.learning_rate
        axes[0].plot(
            np.maximum(t, config.learning_rate / 2),
            item["test_curve"],
            color=color,
            label=f"alpha={item['alpha']:g}",
        )
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="time eta * step",
        ylabel="test error ||u - u*||^2",
        title="Generalisation during GD",
    )
    axes[0].legend(fontsize=8)

    alphas = [v["alpha"] for v in per_alpha.values()]
    axes[1].errorbar(
        alphas,
        [v["gap"] for v in per_alpha.values()],
        yerr=[v["gap_seed_std"] for v in per_alpha.values()],
        marker="o",
        capsize=3,
    )
    axes[1].set(
        xlabel="alpha = P / N",
        ylabel="E_g(T) - min_t E_g(t)",
        title=f"Overtraining gap (peak at alpha={results['peak_alpha']:g})",
    )

    for color, item in zip(colors, per_alpha.values(), strict=True):
        ratio = item["ratio"]
        zero_tol = config.zero_tol * _edges(ratio)[1]
        grid = np.linspace(-0.05, _edges(ratio)[1] * 1.05, 600)
        axes[2].plot(grid, marchenko_pastur_cdf(grid, ratio), color=color, lw=1)
        axes[2].plot(
            grid,
            slq_cdf(item["slq_nodes"], item["slq_weights"], grid, zero_tol=zero_tol),
            color=color,
            ls="--",
            lw=1,
            label=f"alpha={item['alpha']:g}: KS={item['ks']:.3f}",
        )
    axes[2].set(
        xlabel="eigenvalue of X^T X / P", ylabel="CDF", title="SLQ (dashed) vs Marchenko-Pastur"
    )
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


EXPERIMENT = Experiment(
    name="mp_overtraining",
    title="High-dimensional dynamics of generalization error in neural networks",
    arxiv="1710.03667",
    cpu_time="~1 min",
    config_cls=Config,
    run=run,
    checks=checks,
    plot=plot,
    description="overtraining of a linear student peaks at alpha = P/N = 1, where the "
    "Marchenko-Pastur spectrum of the data covariance reaches zero",
)
