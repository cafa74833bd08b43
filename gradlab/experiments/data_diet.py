r"""Paul, Ganguli & Dziugaite (2107.07075): early-training error norms find the examples that matter.

EL2N scores an example by the norm of its prediction error,
:math:`\mathbb E_\theta \lVert \mathrm{softmax}(f_\theta(x)) - e_y \rVert_2`, averaged over a few
networks trained for only a few epochs (:func:`gradlab.attribution.el2n`); GraNd by the norm
of its loss gradient (:func:`gradlab.attribution.grand`). The paper's claims, on a digits
analogue (MLP 64-256-256-10 ReLU, scores averaged over 5 initialisations):

- **noisy labels**: with 10% of the training labels flipped (symmetric noise: each flipped
  label replaced by a uniformly drawn *other* class), the top 10% EL2N examples after
  ``score_epochs`` epochs are mostly the flipped ones;
- **pruning**: training from scratch on the hardest half (highest EL2N) loses little against
  the full data and beats a random half; the easiest half is much worse than a random half.
  Every subset is trained for the same number of steps as the full data.

and, as the known negative result of Kirsch (2303.14753), GraNd *at initialisation* mostly
measures the input norm: its Spearman correlation with :math:`\lVert x \rVert` is high (at
initialisation the first-layer gradient of an example is :math:`\delta x^\top`, whose norm is
:math:`\lVert\delta\rVert \lVert x\rVert`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gradlab.experiments._common import stratified_split
from gradlab.experiments.schema import Check, Experiment, check

__all__ = ["EXPERIMENT", "Config", "checks", "flip_labels", "plot", "run", "spearman"]


@dataclasses.dataclass(frozen=True)
class Config:
    """Every knob of the experiment (full-mode defaults) and its acceptance thresholds."""

    seed: int = 0
    hidden: tuple[int, ...] = (256, 256)
    test_fraction: float = 0.2
    batch_size: int = 64
    learning_rate: float = 1e-3
    num_score_models: int = 5
    score_epochs: int = 3
    noise_fraction: float = 0.1
    keep_fraction: float = 0.5
    num_train_steps: int = 1500
    num_train_seeds: int = 5
    # acceptance thresholds (from the issue, set before the run)
    top_fraction: float = 0.1
    min_noise_precision: float = 0.85
    max_hard_drop: float = 0.01
    min_hard_over_random: float = 0.01
    max_easy_minus_random: float = -0.03
    min_grand_norm_spearman: float = 0.8


def flip_labels(y: np.ndarray, fraction: float, num_classes: int, rng: np.random.Generator):
    """Symmetric label noise: ``round(fraction * n)`` labels moved to a uniform *other* class.

    Returns the noisy labels and the boolean mask of flipped examples.

    Examples:
        >>> import numpy as np
        >>> from gradlab.experiments.data_diet import flip_labels
        >>> y = np.arange(10) % 3
        >>> noisy, flipped = flip_labels(y, 0.3, 3, np.random.default_rng(0))
        >>> int(flipped.sum()), bool(np.all(noisy[flipped] != y[flipped]))
        (3, True)
    """
    n = y.shape[0]
    idx = rng.choice(n, round(fraction * n), replace=False)
    shift = rng.integers(1, num_classes, idx.size)  # never 0: always a different class
    noisy = y.copy()
    noisy[idx] = (y[idx] + shift) % num_classes
    flipped = np.zeros(n, bool)
    flipped[idx] = True
    return noisy, flipped


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank."""
    order = np.argsort(v, kind="stable")
    ranks = np.empty(v.size)
    ranks[order] = np.arange(v.size)
    values, inverse = np.unique(v, return_inverse=True)
    if values.size < v.size:  # average the ranks of tied values
        sums = np.bincount(inverse, weights=ranks)
        ranks = (sums / np.bincount(inverse))[inverse]
    return ranks


def spearman(a, b) -> float:
    """Spearman rank correlation (Pearson correlation of the ranks, ties averaged).

    Examples:
        >>> from gradlab.experiments.data_diet import spearman
        >>> spearman([1, 2, 3, 4], [10, 20, 30, 400]), spearman([1, 2, 3], [3, 2, 1])
        (1.0, -1.0)
    """
    ra = _ranks(np.asarray(a, np.float64))
    rb = _ranks(np.asarray(b, np.float64))
    return float(np.corrcoef(ra, rb)[0, 1])


def _data(config: Config):
    import gradlab as gl

    x, y = gl.data.digits(None)
    x, y = np.asarray(x), np.asarray(y)
    rng = np.random.default_rng(config.seed)
    train, test = stratified_split(y, config.test_fraction, rng)
    return (x[train], y[train]), (x[test], y[test]), rng


def run(config: Config, progress) -> dict:
    """Score with EL2N / GraNd, find flipped labels, retrain on pruned halves."""
    import optax

    import gradlab as gl

    (x_np, y_np), (xt_np, yt_np), rng = _data(config)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    x_te, y_te = jnp.asarray(xt_np), jnp.asarray(yt_np)
    n = x.shape[0]
    sizes = (x.shape[1], *config.hidden, 10)
    _, apply_fn = gl.models.init_mlp(jax.random.key(0), sizes, activation="relu")

    def init(k):
        return gl.models.init_mlp(k, sizes, activation="relu")[0]

    def loss_fn(p, batch):
        xb, yb = batch
        return optax.softmax_cross_entropy_with_integer_labels(apply_fn(p, xb), yb).mean()

    def train(p, labels, pool, key, num_steps):
        """Adam on batches drawn (without replacement within a batch) from ``pool``."""
        tx = optax.adam(config.learning_rate)

        def step(carry, k):
            p, s = carry
            idx = pool[jax.random.choice(k, pool.shape[0], (config.batch_size,), replace=False)]
            g = jax.grad(loss_fn)(p, (x[idx], labels[idx]))
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(step, (p, tx.init(p)), jax.random.split(key, num_steps))
        return p

    def accuracy(p):
        return jnp.mean(jnp.argmax(apply_fn(p, x_te), -1) == y_te)

    key = jax.random.key(config.seed)
    k_score, k_batch, k_train, k_train_batch = jax.random.split(key, 4)
    score_steps = round(config.score_epochs * n / config.batch_size)
    noisy_np, flipped = flip_labels(y_np, config.noise_fraction, 10, rng)
    noisy = jnp.asarray(noisy_np)
    everyone = jnp.arange(n)
    out: dict = {"num_train": int(n), "num_test": int(x_te.shape[0]), "score_steps": score_steps}

    with progress(total=3, desc="data_diet") as bar:
        params0 = jax.vmap(init)(jax.random.split(k_score, config.num_score_models))
        batch_keys = jax.random.split(k_batch, config.num_score_models)
        score_train = jax.jit(
            jax.vmap(lambda p, lab, k: train(p, lab, everyone, k, score_steps), (0, None, 0))
        )
        early_clean = score_train(params0, y, batch_keys)
        early_noisy = score_train(params0, noisy, batch_keys)
        el2n_clean = np.asarray(gl.attribution.el2n(apply_fn, early_clean, (x, y), stacked=True))
        el2n_noisy = np.asarray(
            gl.attribution.el2n(apply_fn, early_noisy, (x, noisy), stacked=True)
        )
        grand_init = np.asarray(gl.attribution.grand(loss_fn, params0, (x, y), stacked=True))
        bar.update()

        top = np.argsort(-el2n_noisy)[: round(config.top_fraction * n)]
        precision = float(flipped[top].mean())
        x_norm = np.linalg.norm(x_np, axis=1)
        out["noise"] = {
            "num_flipped": int(flipped.sum()),
            "top_count": int(top.size),
            "precision": precision,
            "mean_el2n_flipped": float(el2n_noisy[flipped].mean()),
            "mean_el2n_clean": float(el2n_noisy[~flipped].mean()),
        }
        out["grand_init_vs_input_norm"] = spearman(grand_init, x_norm)
        out["el2n_vs_input_norm"] = spearman(el2n_clean, x_norm)
        out["grand_init_vs_el2n"] = spearman(grand_init, el2n_clean)

        # pruned halves: hardest / easiest by clean EL2N, and one random half per seed
        keep = round(config.keep_fraction * n)
        order = np.argsort(-el2n_clean)
        seeds = config.num_train_seeds
        pools = [np.tile(order[:keep], (seeds, 1)), np.tile(order[-keep:], (seeds, 1))]
        pools.append(np.stack([rng.choice(n, keep, replace=False) for _ in range(seeds)]))
        pools = jnp.asarray(np.concatenate(pools))  # (3 * seeds, keep)
        inits = jax.vmap(init)(jax.random.split(k_train, seeds))
        tkeys = jax.random.split(k_train_batch, seeds)

        def fit(p, pool, k):
            return accuracy(train(p, y, pool, k, config.num_train_steps))

        full = jax.jit(jax.vmap(lambda p, k: fit(p, everyone, k)))(inits, tkeys)
        bar.update()
        tile = jax.tree.map(lambda a: jnp.concatenate([a] * 3), inits)
        pruned = jax.jit(jax.vmap(fit))(tile, pools, jnp.concatenate([tkeys] * 3))
        pruned = np.asarray(pruned, np.float64).reshape(3, seeds)
        bar.update()

    acc = {
        "full": np.asarray(full, np.float64),
        "hardest": pruned[0],
        "easiest": pruned[1],
        "random": pruned[2],
    }
    out["accuracy"] = {k: v.tolist() for k, v in acc.items()}
    out["mean_accuracy"] = {k: float(v.mean()) for k, v in acc.items()}
    out["sem_accuracy"] = {k: float(v.std(ddof=1) / np.sqrt(v.size)) for k, v in acc.items()}
    out["scores"] = {  # for the figure
        "el2n_noisy": el2n_noisy.tolist(),
        "flipped": flipped.tolist(),
        "grand_init": grand_init.tolist(),
        "input_norm": x_norm.tolist(),
    }
    return out


def checks(config: Config, results: dict) -> list[Check]:
    """Noisy-label precision, pruning to the hardest / easiest half, GraNd at init vs |x|."""
    m = results["mean_accuracy"]
    return [
        check(
            f"precision of the top {config.top_fraction:.0%} EL2N at flipped labels",
            results["noise"]["precision"],
            ">=",
            config.min_noise_precision,
        ),
        check(
            "full-data accuracy - hardest-half accuracy",
            m["full"] - m["hardest"],
            "<=",
            config.max_hard_drop,
        ),
        check(
            "hardest-half accuracy - random-half accuracy",
            m["hardest"] - m["random"],
            ">=",
            config.min_hard_over_random,
        ),
        check(
            "easiest-half accuracy - random-half accuracy",
            m["easiest"] - m["random"],
            "<=",
            config.max_easy_minus_random,
        ),
        check(
            "Spearman(GraNd at init, input norm) (Kirsch)",
            results["grand_init_vs_input_norm"],
            ">=",
            config.min_grand_norm_spearman,
        ),
    ]


def plot(config: Config, results: dict):
    """EL2N of flipped vs clean examples; accuracy of the pruned halves; GraNd at init vs |x|."""
    import matplotlib.pyplot as plt

    s = results["scores"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    el2n = np.asarray(s["el2n_noisy"])
    flipped = np.asarray(s["flipped"], bool)
    bins = np.linspace(0, el2n.max(), 40)
    ax.hist(el2n[~flipped], bins=bins, alpha=0.6, label="clean label")
    ax.hist(el2n[flipped], bins=bins, alpha=0.6, label="flipped label")
    cut = np.sort(el2n)[-results["noise"]["top_count"]]
    ax.axvline(cut, color="k", ls="--", lw=1, label=f"top {config.top_fraction:.0%}")
    ax.set(
        xlabel=f"EL2N after {config.score_epochs} epochs",
        ylabel="examples",
        title=f"precision {results['noise']['precision']:.2f}",
    )
    ax.legend(fontsize=8)

    ax = axes[1]
    names = ["full", "hardest", "random", "easiest"]
    means = [results["mean_accuracy"][k] for k in names]
    sems = [results["sem_accuracy"][k] for k in names]
    ax.bar(names, means, yerr=sems, color=["0.5", "C3", "C0", "C2"], capsize=4)
    for i, k in enumerate(names):
        ax.plot([i] * len(results["accuracy"][k]), results["accuracy"][k], "k.", ms=4)
    ax.set(
        ylim=(min(means) - 0.05, 1.0),
        ylabel="test accuracy",
        title=f"train on {config.keep_fraction:.0%} of the data, by EL2N",
    )

    ax = axes[2]
    ax.loglog(s["input_norm"], s["grand_init"], ".", ms=3)
    ax.set(
        xlabel="input norm |x|",
        ylabel="GraNd at initialisation",
        title=f"Spearman {results['grand_init_vs_input_norm']:.3f} (Kirsch)",
    )
    fig.tight_layout()
    return fig


EXPERIMENT = Experiment(
    name="data_diet",
    title="Deep Learning on a Data Diet: Finding Important Examples Early in Training",
    arxiv="2107.07075",
    cpu_time="~2 min",
    config_cls=Config,
    run=run,
    checks=checks,
    plot=plot,
    description="early EL2N finds flipped labels and the examples worth keeping; GraNd at "
    "initialisation tracks the input norm (Kirsch)",
)
