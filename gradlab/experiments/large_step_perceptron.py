r"""Tyurin (2412.08424): logistic regression with huge steps is the batch perceptron.

Full-batch gradient descent on the logistic loss :math:`f(\theta) = \frac1n \sum_i \log(1 +
e^{-m_i})`, margins :math:`m_i = y_i a_i^\top \theta`, from :math:`\theta_0 = 0`:

.. math::

    \theta_{t+1} = \theta_t + \frac{\gamma}{n} \sum_i y_i a_i \, \sigma(-m_i).

Since :math:`\theta_t` grows like :math:`\gamma`, :math:`\sigma(-m_i) \to \mathbf 1[m_i < 0]`
(:math:`\tfrac12` at :math:`m_i = 0`) as :math:`\gamma \to \infty`, and
:math:`\theta_t / \gamma` follows the **batch perceptron**
:math:`\theta_{t+1} = \theta_t + \frac1n \sum_{i: m_i < 0} y_i a_i` (with weight
:math:`\tfrac12` for :math:`m_i = 0`, the limit at the first step). Hence the paper's
observations, reproduced here:

- on separable data, larger steps separate in fewer iterations, down to the perceptron's
  count, which LR+GD matches for every :math:`\gamma \ge 100`, and its direction converges
  to the perceptron's (cosine at the perceptron's separating iteration);
- on non-separable data the final logistic loss *grows* with :math:`\gamma` (the iterates
  circle like the perceptron's with norm :math:`\propto \gamma`): the loss is a poor measure
  of progress.

The paper's remedy, Normalized LR+GD (:func:`gradlab.transforms.normalized_gd`,
:math:`\gamma \beta_t \nabla f` with :math:`\beta_t^{-1} = \frac1n \sum_i \sigma(-m_i)`),
tends to the *normalized* batch perceptron; its iteration counts are reported beside.
Datasets: digits 3 vs 8 (pixels / 16, separable), Wisconsin breast cancer (standardised,
not separable), and a synthetic separable set (Gaussian inputs labelled by a random
hyperplane, points within ``synthetic_margin`` of it dropped). Every input gets a constant
feature 1 (the intercept).
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from gradlab.experiments.schema import Check, Experiment, check

__all__ = ["EXPERIMENT", "Config", "checks", "datasets", "plot", "run"]

SEPARABLE = ("digits_3v8", "synthetic")


@dataclasses.dataclass(frozen=True)
class Config:
    """Every knob of the experiment (full-mode defaults) and its acceptance thresholds."""

    seed: int = 0
    gammas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8)
    num_steps: int = 20000
    synthetic_n: int = 400
    synthetic_dim: int = 20
    synthetic_margin: float = 0.05
    # acceptance thresholds (from the issue, set before the run)
    small_gamma: float = 0.1
    mid_gamma: float = 10.0
    max_speedup_ratio: float = 0.1
    large_gamma: float = 100.0
    max_perceptron_deviation: float = 0.3
    cosine_gamma: float = 1e4
    min_cosine: float = 0.999
    loss_gamma: float = 100.0


def datasets(config: Config) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The three problems as ``{name: (a (n, d+1) with a constant 1 column, y in {-1, 1})}``.

    Examples:
        >>> from gradlab.experiments.large_step_perceptron import Config, datasets
        >>> {k: a.shape for k, (a, y) in datasets(Config(synthetic_n=50)).items()}
        {'digits_3v8': (357, 65), 'synthetic': (50, 21), 'breast_cancer': (569, 31)}
    """
    import gradlab as gl

    x, y = gl.data.digits(None, standardize=False)
    x, y = np.asarray(x, np.float64), np.asarray(y)
    keep = (y == 3) | (y == 8)
    digits = (x[keep] / 16.0, np.where(y[keep] == 3, 1.0, -1.0))

    xb, yb = gl.data.breast_cancer()
    cancer = (np.asarray(xb, np.float64), np.asarray(yb, np.float64) * 2.0 - 1.0)

    rng = np.random.default_rng(config.seed)
    w = rng.normal(size=config.synthetic_dim)
    w /= np.linalg.norm(w)
    kept = np.zeros((0, config.synthetic_dim))
    while kept.shape[0] < config.synthetic_n:
        z = rng.normal(size=(4 * config.synthetic_n, config.synthetic_dim))
        kept = np.concatenate([kept, z[np.abs(z @ w) >= config.synthetic_margin]])
    kept = kept[: config.synthetic_n]
    synthetic = (kept, np.sign(kept @ w))

    def with_bias(a):
        return np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)

    return {
        name: (with_bias(a), lab)
        for name, (a, lab) in (
            ("digits_3v8", digits),
            ("synthetic", synthetic),
            ("breast_cancer", cancer),
        )
    }


def _first_true(flags: jax.Array) -> jax.Array:
    """Index of the first True along the last axis, -1 if none."""
    idx = jnp.argmax(flags, axis=-1)
    return jnp.where(jnp.any(flags, axis=-1), idx, -1)


def _solve(a, y, gammas, num_steps: int):
    """LR+GD and Normalized LR+GD for every gamma, and the batch perceptron, in scans."""
    import optax

    import gradlab as gl

    n = a.shape[0]

    def margins(theta):
        return y * (a @ theta)

    def loss_fn(theta):
        return jnp.mean(jnp.logaddexp(0.0, -margins(theta)))

    def perceptron():
        def step(theta, _):
            m = margins(theta)
            h = jnp.where(m < 0, 1.0, jnp.where(m == 0, 0.5, 0.0))
            return theta + a.T @ (y * h) / n, (theta, jnp.all(m > 0))

        _, (path, sep) = jax.lax.scan(step, jnp.zeros(a.shape[1], a.dtype), None, num_steps)
        return path, sep

    def descend(gamma, normalized, path_p, t_p):
        tx = gl.transforms.normalized_gd(gamma) if normalized else optax.sgd(gamma)

        def step(carry, t):
            theta, state, at_tp = carry
            at_tp = jnp.where(t == t_p, theta, at_tp)
            m = margins(theta)
            g = jax.grad(loss_fn)(theta)
            u, state = tx.update(g, state, theta, margins=m)
            return (optax.apply_updates(theta, u), state, at_tp), jnp.all(m > 0)

        theta0 = jnp.zeros(a.shape[1], a.dtype)
        carry = (theta0, tx.init(theta0), theta0)
        (theta, _, at_tp), sep = jax.lax.scan(step, carry, jnp.arange(num_steps))
        ref = jnp.where(t_p >= 0, path_p[jnp.maximum(t_p, 0)], path_p[-1])
        mine = jnp.where(t_p >= 0, at_tp, theta)
        cosine = mine @ ref / (jnp.linalg.norm(mine) * jnp.linalg.norm(ref))
        return _first_true(sep), loss_fn(theta), cosine

    path_p, sep_p = perceptron()
    t_p = _first_true(sep_p)
    lr_gd = jax.vmap(lambda g: descend(g, False, path_p, t_p))(gammas)
    normalized = jax.vmap(lambda g: descend(g, True, path_p, t_p))(gammas)
    return t_p, loss_fn(path_p[-1]), lr_gd, normalized


def run(config: Config, progress) -> dict:
    """Iterations to separate, final losses and cosines to the perceptron, per dataset and gamma."""
    gammas = jnp.asarray(config.gammas, jnp.float32)
    solve = jax.jit(_solve, static_argnames="num_steps")
    out: dict = {"gammas": list(config.gammas)}
    data = datasets(config)
    with progress(total=len(data), desc="large_step_perceptron") as bar:
        for name, (a, y) in data.items():
            t_p, _, (it, loss, cos), (it_n, loss_n, _) = solve(
                jnp.asarray(a, jnp.float32),
                jnp.asarray(y, jnp.float32),
                gammas,
                num_steps=config.num_steps,
            )
            out[name] = {
                "num_examples": int(a.shape[0]),
                "dim": int(a.shape[1]),
                "perceptron_iterations": int(t_p),
                "iterations": np.asarray(it).tolist(),
                "final_loss": np.asarray(loss, np.float64).tolist(),
                "cosine_to_perceptron": np.asarray(cos, np.float64).tolist(),
                "normalized_iterations": np.asarray(it_n).tolist(),
                "normalized_final_loss": np.asarray(loss_n, np.float64).tolist(),
            }
            bar.update()
    return out


def _at(gammas, values, gamma):
    for g, v in zip(gammas, values, strict=True):
        if np.isclose(g, gamma, rtol=1e-6):
            return v
    return None


def _iters(v) -> float:
    return float(v) if v is not None and v >= 0 else float("nan")


def checks(config: Config, results: dict) -> list[Check]:
    """Speed-up with gamma, perceptron iteration counts and direction, loss growing with gamma."""
    nan = float("nan")
    gammas = results["gammas"]
    out = []
    for name in SEPARABLE:
        r = results[name]
        small = _iters(_at(gammas, r["iterations"], config.small_gamma))
        mid = _iters(_at(gammas, r["iterations"], config.mid_gamma))
        out.append(
            check(
                f"{name}: iterations at gamma={config.mid_gamma:g} / at {config.small_gamma:g}",
                mid / small,
                "<=",
                config.max_speedup_ratio,
            )
        )
        tp = _iters(r["perceptron_iterations"])
        large = [_iters(v) for g, v in zip(gammas, r["iterations"], strict=True)]
        large = [v for g, v in zip(gammas, large, strict=True) if g >= config.large_gamma]
        # np.max propagates NaN: a gamma that never separated fails the check
        dev = float(np.max(np.abs(np.asarray(large) / tp - 1.0))) if large else nan
        out.append(
            check(
                f"{name}: max |iterations / perceptron's - 1|, gamma >= {config.large_gamma:g}",
                dev if not np.isnan(tp) else nan,
                "<=",
                config.max_perceptron_deviation,
            )
        )
        cos = [
            nan if c is None else c
            for g, c in zip(gammas, r["cosine_to_perceptron"], strict=True)
            if g >= config.cosine_gamma
        ]
        out.append(
            check(
                f"{name}: min cosine to the perceptron, gamma >= {config.cosine_gamma:g}",
                float(np.min(cos)) if cos else nan,
                ">=",
                config.min_cosine,
            )
        )
    r = results["breast_cancer"]
    losses = [
        nan if v is None else v
        for g, v in zip(gammas, r["final_loss"], strict=True)
        if g >= config.loss_gamma
    ]
    steps = [b / a for a, b in itertools.pairwise(losses)]
    out.append(
        check(
            f"breast_cancer: min ratio of consecutive final losses, gamma >= {config.loss_gamma:g}",
            float(np.min(steps)) if steps else nan,
            ">",
            1.0,
        )
    )
    return out


def plot(config: Config, results: dict):
    """Iterations to separate vs gamma; final loss vs gamma; 1 - cosine to the perceptron."""
    import matplotlib.pyplot as plt

    g = np.asarray(results["gammas"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for i, name in enumerate(SEPARABLE):
        r = results[name]
        it = np.asarray(r["iterations"], float)
        it_n = np.asarray(r["normalized_iterations"], float)
        ax.loglog(g, np.where(it >= 0, it, np.nan), "o-", color=f"C{i}", label=f"{name} LR+GD")
        ax.loglog(
            g,
            np.where(it_n >= 0, it_n, np.nan),
            "s:",
            color=f"C{i}",
            label=f"{name} Normalized LR+GD",
        )
        ax.axhline(
            r["perceptron_iterations"],
            color=f"C{i}",
            ls="--",
            lw=1,
            label=f"{name} batch perceptron",
        )
    ax.set(
        xlabel="step size gamma",
        ylabel="iterations to separate",
        title="larger steps separate faster, down to the perceptron",
    )
    ax.legend(fontsize=7)

    ax = axes[1]
    for i, name in enumerate((*SEPARABLE, "breast_cancer")):
        loss = np.asarray([np.nan if v is None else v for v in results[name]["final_loss"]])
        ax.loglog(g, np.maximum(loss, 1e-30), "o-", color=f"C{i}", label=name)
    ax.axvline(config.loss_gamma, color="k", ls=":", lw=1)
    ax.set(
        xlabel="step size gamma",
        ylabel=f"logistic loss after {config.num_steps} steps (0 at 1e-30)",
        title="non-separable: the loss grows with gamma",
    )
    ax.legend(fontsize=8)

    ax = axes[2]
    for i, name in enumerate((*SEPARABLE, "breast_cancer")):
        cos = np.asarray(
            [np.nan if v is None else v for v in results[name]["cosine_to_perceptron"]]
        )
        ax.loglog(g, np.maximum(1.0 - cos, 1e-8), "o-", color=f"C{i}", label=name)
    ax.axhline(1.0 - config.min_cosine, color="k", ls="--", lw=1, label="1 - 0.999")
    ax.set(
        xlabel="step size gamma",
        ylabel="1 - cos(theta_LR, theta_perceptron)",
        title="the direction becomes the perceptron's",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


EXPERIMENT = Experiment(
    name="large_step_perceptron",
    title="From Logistic Regression to the Perceptron Algorithm: Exploring Gradient Descent "
    "with Large Step Sizes",
    arxiv="2412.08424",
    cpu_time="~1 min",
    config_cls=Config,
    run=run,
    checks=checks,
    plot=plot,
    description="logistic-regression GD with step gamma -> infinity becomes the batch "
    "perceptron: faster separation, perceptron iteration counts and direction, higher loss",
)
