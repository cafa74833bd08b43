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
import math

import jax
import jax.numpy as jnp
import numpy as np

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


def _edges(ratio: float) -> tuple[float, float]:
    s = math.sqrt(ratio)
    return (1.0 - s) ** 2, (1.0 + s) ** 2


def marchenko_pastur_density(x, ratio: float) -> np.ndarray:
    r"""Density of the continuous part of the Marchenko-Pastur law (unit variance).

    .. math:: \rho(x) = \frac{\sqrt{(b - x)(x - a)}}{2 \pi \lambda x}, \quad
        a, b = (1 \mp \sqrt{\lambda})^2,

    the limiting eigenvalue density of :math:`X^\top X / P` for :math:`X \in \mathbb{R}^{P
    \times N}` with i.i.d. unit-variance entries and :math:`N / P \to \lambda`. For
    :math:`\lambda > 1` it integrates to :math:`1 / \lambda`; the rest is an atom at zero.

    Examples:
        >>> import numpy as np
        >>> from gradlab.experiments.mp_overtraining import marchenko_pastur_density
        >>> x = np.linspace(0.0, 4.0, 200001)
        >>> round(float(np.trapezoid(marchenko_pastur_density(x, 0.25), x)), 4)
        1.0
    """
    a, b = _edges(ratio)
    x = np.asarray(x, dtype=np.float64)
    inside = (x > a) & (x < b) & (x > 0)
    safe = np.where(inside, x, 0.5 * (a + b))
    rho = np.sqrt(np.maximum((b - safe) * (safe - a), 0.0)) / (2.0 * np.pi * ratio * safe)
    return np.where(inside, rho, 0.0)


def marchenko_pastur_cdf(x, ratio: float) -> np.ndarray:
    r"""Exact CDF of the Marchenko-Pastur law with ratio :math:`\lambda = N/P` (unit variance).

    With :math:`x = m - r\cos\theta`, :math:`m = 1 + \lambda`, :math:`r = 2\sqrt\lambda`,
    :math:`\theta \in [0, \pi]`, integrating the density in closed form gives

    .. math:: F(x) = (1 - 1/\lambda)_+ \mathbb{1}[x \ge 0] + \frac{1}{2\pi\lambda}\Big[
        r \sin\theta + m\theta - 2|1 - \lambda| \arctan\Big(\frac{1 + \sqrt\lambda}
        {|1 - \sqrt\lambda|}\tan\frac\theta2\Big)\Big],

    the atom at zero existing for :math:`\lambda > 1` only (at :math:`\lambda = 1` the arctan
    term vanishes). Computed in float64.

    Args:
        x: points, any shape.
        ratio: :math:`\lambda = N / P > 0`.

    Returns:
        ``F(x)``, float64 array of the shape of ``x``.

    Examples:
        >>> from gradlab.experiments.mp_overtraining import marchenko_pastur_cdf
        >>> [round(float(v), 6) for v in marchenko_pastur_cdf([-1.0, 0.0, 9.0], 2.0)]
        [0.0, 0.5, 1.0]

    References:
        Marchenko & Pastur, "Distribution of eigenvalues for some sets of random matrices",
        Math. USSR-Sbornik 1967.
    """
    if not ratio > 0:
        raise ValueError(f"ratio={ratio!r} is out of range: expected ratio > 0")
    x = np.asarray(x, dtype=np.float64)
    a, b = _edges(ratio)
    m, r = 1.0 + ratio, 2.0 * math.sqrt(ratio)
    cos_theta = np.clip((m - np.clip(x, a, b)) / r, -1.0, 1.0)
    theta = np.arccos(cos_theta)
    cont = r * np.sin(theta) + m * theta
    if ratio != 1.0:
        k = (1.0 + math.sqrt(ratio)) / abs(1.0 - math.sqrt(ratio))
        half = np.where(theta >= np.pi, np.inf, np.tan(np.minimum(theta, np.pi) / 2.0))
        cont = cont - 2.0 * abs(1.0 - ratio) * np.arctan(k * half)
    cont = cont / (2.0 * np.pi * ratio)
    cont = np.where(x <= a, 0.0, np.where(x >= b, min(1.0, 1.0 / ratio), cont))
    atom = max(0.0, 1.0 - 1.0 / ratio) * (x >= 0.0)
    return atom + cont


# ----------------------------------------------------------------------------- SLQ CDF, KS


def slq_cdf(nodes, weights, x, *, zero_tol: float = 0.0) -> np.ndarray:
    r"""The SLQ estimate of the spectral CDF: :math:`\hat F(x) = \frac1{n_v} \sum_{p, j}
    w_{pj} \mathbb{1}[\theta_{pj} \le x]`.

    Nodes with :math:`|\theta| \le` ``zero_tol`` are treated as exact zeros (Lanczos returns the
    null space of a singular matrix as a node at zero up to rounding).

    Examples:
        >>> import numpy as np
        >>> from gradlab.experiments.mp_overtraining import slq_cdf
        >>> slq_cdf(np.array([[0.0, 2.0]]), np.array([[0.25, 0.75]]), [1.0, 2.0]).tolist()
        [0.25, 1.0]
    """
    nodes = np.asarray(nodes, np.float64)
    weights = np.asarray(weights, np.float64)
    nodes = np.where(np.abs(nodes) <= zero_tol, 0.0, nodes).ravel()
    weights = weights.ravel() / weights.sum()
    order = np.argsort(nodes)
    nodes, cum = nodes[order], np.cumsum(weights[order])
    idx = np.searchsorted(nodes, np.asarray(x, np.float64), side="right")
    return np.where(idx > 0, cum[np.maximum(idx - 1, 0)], 0.0)


def ks_distance(nodes, weights, ratio: float, *, zero_tol: float = 0.0) -> float:
    r"""Kolmogorov-Smirnov distance :math:`\sup_x |\hat F(x) - F_{MP}(x)|` between the SLQ CDF
    and the exact Marchenko-Pastur CDF.

    :math:`\hat F` is a step function and :math:`F_{MP}` is continuous and non-decreasing
    except for its atom at zero, so the supremum is attained at a node (from the left or the
    right) or at zero: evaluating both one-sided limits there gives the exact supremum.

    Examples:
        >>> import numpy as np
        >>> from gradlab.experiments.mp_overtraining import ks_distance
        >>> # one node at the median of the law: the CDFs differ by 1/2 on either side of it
        >>> round(ks_distance(np.array([[1.0]]), np.array([[1.0]]), 1e-12), 3)
        0.5
    """
    nodes = np.asarray(nodes, np.float64)
    snapped = np.where(np.abs(nodes) <= zero_tol, 0.0, nodes)
    pts = np.unique(np.concatenate([snapped.ravel(), [0.0]]))
    right = slq_cdf(nodes, weights, pts, zero_tol=zero_tol)
    left = slq_cdf(nodes, weights, np.nextafter(pts, -np.inf), zero_tol=zero_tol)
    f_right = marchenko_pastur_cdf(pts, ratio)
    f_left = np.where(pts == 0.0, 0.0, f_right)  # the MP law is continuous except at zero
    return float(max(np.max(np.abs(right - f_right)), np.max(np.abs(left - f_left))))


# ----------------------------------------------------------------------------- training


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
