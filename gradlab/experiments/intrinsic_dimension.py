r"""Li, Farkhoor, Liu & Yosinski (1804.08838): the intrinsic dimension of an objective landscape.

Train only :math:`z \in \mathbb{R}^d` in :math:`\theta = \theta_0 + P z` (a fixed random
:math:`D \times d` projection with unit columns, :func:`gradlab.transforms.random_subspace`) and
raise ``d`` until the subspace-trained network reaches 90% of the *baseline*, the test accuracy
of the same network trained directly in all ``D`` parameters: that ``d`` is
:math:`d_{\mathrm{int}90}`. The paper's claim, on MNIST fully connected networks of widths 50-400
and depths 1-5 (``D`` = 40k to 960k): :math:`d_{\mathrm{int}90} \approx 750` whatever the width
and depth, i.e. the intrinsic dimension is a property of the dataset, not of the parameter
count.

Digits analogue: ReLU MLPs 64-``h``-10 with ``D`` = 4.8k to 85k, ``d`` on a :math:`\sqrt 2`
grid, Adam on ``z``. All ``d`` of one network share one compiled program: the transform is
built once with ``max(dims)`` columns and an inner mask freezes the coordinates ``>= d``
(:func:`subspace_optimizer`), so every ``d`` and seed runs in one ``vmap``.
:math:`d_{\mathrm{int}90}` is read off the seed-averaged accuracy curve:
the first grid ``d`` at or above the threshold (the authors' rule), refined by linear
interpolation in :math:`\log d` against the grid point before it (:func:`d_int90`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gradlab.experiments._common import stratified_split, tree_size
from gradlab.experiments.schema import Check, Experiment, check

__all__ = [
    "EXPERIMENT",
    "Config",
    "checks",
    "d_int90",
    "plot",
    "run",
    "subspace_optimizer",
    "train",
]


@dataclasses.dataclass(frozen=True)
class Config:
    """Every knob of the experiment (full-mode defaults) and its acceptance thresholds."""

    seed: int = 0
    test_fraction: float = 0.2
    hidden_sizes: tuple[tuple[int, ...], ...] = (
        (64,),
        (128,),
        (256,),
        (64, 64),
        (128, 128),
        (256, 256),
    )
    dims: tuple[int, ...] = (64, 91, 128, 181, 256, 362, 512, 724, 1024)
    projection: str = "fastfood"
    num_seeds: int = 2
    batch_size: int = 128
    learning_rate: float = 1e-2
    num_steps: int = 1100  # ~100 epochs of the 1,438 training digits, as the paper's 100
    fraction: float = 0.9
    # acceptance thresholds (from the issue, set before the run)
    max_dint_ratio: float = 2.0
    min_param_ratio: float = 10.0
    max_dint_over_min_params: float = 0.1


def d_int90(dims, accuracy, baseline: float, fraction: float = 0.9) -> tuple[float, float]:
    r"""Smallest ``d`` whose accuracy reaches ``fraction * baseline``: ``(interpolated, grid)``.

    ``grid`` is the first ``dims[i]`` (increasing) with ``accuracy[i] >= fraction * baseline``,
    the authors' rule. ``interpolated`` refines it on the segment from ``dims[i-1]`` to
    ``dims[i]``, linear in :math:`\log d`: :math:`\log d^\ast = \log d_{i-1} + (t - a_{i-1})
    (\log d_i - \log d_{i-1}) / (a_i - a_{i-1})` with ``t`` the threshold; it equals ``grid``
    when ``i = 0``. Both are NaN when no ``d`` reaches the threshold.

    Examples:
        >>> from gradlab.experiments.intrinsic_dimension import d_int90
        >>> d_int90([10, 100, 1000], [0.5, 0.85, 0.95], baseline=1.0)  # halfway in log d
        (316.22776601683825, 1000.0)
        >>> d_int90([10, 100], [0.5, 0.6], baseline=1.0)
        (nan, nan)
    """
    dims = np.asarray(dims, np.float64)
    acc = np.asarray(accuracy, np.float64)
    target = fraction * baseline
    hit = np.flatnonzero(acc >= target)
    if hit.size == 0:
        return float("nan"), float("nan")
    i = int(hit[0])
    if i == 0:
        return float(dims[0]), float(dims[0])
    lo, hi = np.log(dims[i - 1]), np.log(dims[i])
    t = (target - acc[i - 1]) / (acc[i] - acc[i - 1])
    return float(np.exp(lo + t * (hi - lo))), float(dims[i])


def train(loss_fn, params, tx, batches):
    """Run ``tx`` (an optax transform) on ``loss_fn(params, batch)`` over stacked ``batches``.

    One ``lax.scan``; returns the final params. Call it inside ``jax.jit``.

    Examples:
        >>> import jax.numpy as jnp, optax
        >>> from gradlab.experiments.intrinsic_dimension import train
        >>> p = train(lambda w, b: jnp.sum((w - b) ** 2), jnp.zeros(2), optax.sgd(0.25),
        ...           jnp.ones((20, 2)))
        >>> bool(jnp.allclose(p, 1.0, atol=1e-5))
        True
    """
    import optax

    def step(carry, batch):
        p, s = carry
        g = jax.grad(loss_fn)(p, batch)
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), batches)
    return params


def subspace_optimizer(learning_rate, dim, max_dim: int, *, key, projection="fastfood"):
    r"""Adam on the first ``dim`` of ``max_dim`` subspace coordinates (``dim`` may be traced).

    :func:`gradlab.transforms.random_subspace` with ``max_dim`` columns and an inner transform
    that zeroes the gradient of the coordinates ``>= dim`` before Adam: those stay at 0 (Adam's
    step is 0 for a zero gradient history), so the params move in the span of the first
    ``dim`` columns of ``P``, i.e. :math:`\theta = \theta_0 + P_{:, :d} z`. For the dense
    projection those columns are exactly a ``D x d`` unit-column Gaussian matrix; for Fastfood,
    a Fastfood matrix whose blocks are padded to ``L >= max_dim``, as Fastfood pads any
    ``d``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.experiments.intrinsic_dimension import subspace_optimizer
        >>> tx = subspace_optimizer(0.1, 2, 4, key=jax.random.key(0), projection="dense")
        >>> u, state = tx.update(jnp.arange(6.0), tx.init(jnp.zeros(6)))
        >>> state[0].z.tolist()[2:]
        [0.0, 0.0]
    """
    import optax

    import gradlab as gl

    keep = jnp.arange(max_dim) < dim

    def mask(updates, state, params=None):
        return jnp.where(keep, updates, 0.0), state

    inner = optax.chain(
        optax.GradientTransformation(lambda _: optax.EmptyState(), mask),
        optax.scale_by_adam(),
    )
    return gl.transforms.random_subspace(
        learning_rate, max_dim, key=key, projection=projection, inner=inner
    )


def _data(config: Config):
    import gradlab as gl

    x, y = gl.data.digits(None)
    x, y = np.asarray(x), np.asarray(y)
    train_idx, test_idx = stratified_split(y, config.test_fraction, np.random.default_rng(0))
    return tuple(jnp.asarray(a) for a in (x[train_idx], y[train_idx], x[test_idx], y[test_idx]))


def _model(hidden: tuple[int, ...], data):
    """``(init, loss_fn, accuracy)`` of the ReLU MLP 64-hidden-10 on ``data``."""
    import optax

    import gradlab as gl

    x, y, x_te, y_te = data
    sizes = (x.shape[1], *hidden, 10)
    _, apply_fn = gl.models.init_mlp(jax.random.key(0), sizes, activation="relu")

    def init(k):
        return gl.models.init_mlp(k, sizes, activation="relu")[0]

    def loss_fn(p, idx):
        return optax.softmax_cross_entropy_with_integer_labels(apply_fn(p, x[idx]), y[idx]).mean()

    def accuracy(p):
        return jnp.mean(jnp.argmax(apply_fn(p, x_te), -1) == y_te)

    return init, loss_fn, accuracy


def run(config: Config, progress) -> dict:
    """Baseline and subspace accuracies for every model and ``d``, and the d_int90 of each."""
    import optax

    data = _data(config)
    n = data[0].shape[0]
    seeds = jax.random.split(jax.random.key(config.seed), config.num_seeds)
    out: dict = {"num_train": int(n), "num_test": int(data[2].shape[0]), "models": []}
    with progress(total=len(config.hidden_sizes) * (1 + len(config.dims)), desc="id") as bar:
        for hidden in config.hidden_sizes:
            init, loss_fn, accuracy = _model(hidden, data)
            num_params = tree_size(init(jax.random.key(0)))

            def fit(dim, key, direct, init=init, loss_fn=loss_fn, accuracy=accuracy):
                # the same theta0 and batches for every d (and the baseline) of one seed
                k_init, k_proj, k_batch = jax.random.split(key, 3)
                batches = jax.random.randint(k_batch, (config.num_steps, config.batch_size), 0, n)
                if direct:
                    tx = optax.adam(config.learning_rate)
                else:
                    tx = subspace_optimizer(
                        config.learning_rate,
                        dim,
                        max(config.dims),
                        key=k_proj,
                        projection=config.projection,
                    )
                return accuracy(train(loss_fn, init(k_init), tx, batches))

            base = np.asarray(jax.jit(jax.vmap(lambda k, f=fit: f(0, k, True)))(seeds))
            bar.update()
            dims = jnp.repeat(jnp.asarray(config.dims), config.num_seeds)
            keys = jnp.tile(seeds, len(config.dims))
            sub = np.asarray(jax.jit(jax.vmap(lambda d, k, f=fit: f(d, k, False)))(dims, keys))
            bar.update(len(config.dims))  # after the results arrived (no async dispatch)
            sub = sub.reshape(len(config.dims), config.num_seeds)
            accs = np.concatenate([base[None], sub]).astype(np.float64)
            baseline = float(accs[0].mean())
            mean = accs[1:].mean(axis=1)
            interp, grid = d_int90(config.dims, mean, baseline, config.fraction)
            glob, glob_grid = d_int90(config.dims, mean, 1.0, config.fraction)
            out["models"].append(
                {
                    "hidden": list(hidden),
                    "num_params": int(num_params),
                    "baseline": baseline,
                    "baseline_per_seed": accs[0].tolist(),
                    "threshold": config.fraction * baseline,
                    "accuracy": mean.tolist(),
                    "accuracy_per_seed": accs[1:].tolist(),
                    "d_int90": interp,
                    "d_int90_grid": grid,
                    "d_int90_global": glob,
                    "d_int90_global_grid": glob_grid,
                }
            )
    models = out["models"]
    dint = np.array([m["d_int90"] for m in models])
    params = np.array([m["num_params"] for m in models], np.float64)
    out["dint_ratio"] = float(dint.max() / dint.min())
    out["param_ratio"] = float(params.max() / params.min())
    out["max_dint_over_min_params"] = float(dint.max() / params.min())
    return out


def checks(config: Config, results: dict) -> list[Check]:
    """d_int90 nearly constant across models while D varies >= 10x; d_int90 << smallest D."""
    return [
        check(
            "max / min d_int90 across models",
            results["dint_ratio"],
            "<=",
            config.max_dint_ratio,
        ),
        check(
            "max / min number of parameters D",
            results["param_ratio"],
            ">=",
            config.min_param_ratio,
        ),
        check(
            "max d_int90 / smallest D",
            results["max_dint_over_min_params"],
            "<=",
            config.max_dint_over_min_params,
        ),
    ]


def plot(config: Config, results: dict):
    """Accuracy vs subspace dimension per model; d_int90 vs the number of parameters D."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3), dpi=90)
    ax = axes[0]
    for i, m in enumerate(results["models"]):
        label = f"64-{'-'.join(map(str, m['hidden']))}-10 (D={m['num_params']:,})"
        ax.semilogx(config.dims, m["accuracy"], "o-", ms=3, color=f"C{i}", label=label)
        ax.axhline(m["threshold"], color=f"C{i}", ls=":", lw=0.8)
        ax.plot([m["d_int90"]], [m["threshold"]], "x", color=f"C{i}", ms=8)
    ax.set(
        xlabel="subspace dimension d",
        ylabel="test accuracy (mean over seeds)",
        title=f"dotted: {config.fraction:.0%} of each directly trained baseline",
        ylim=(0.0, 1.0),
    )
    ax.legend(fontsize=7, loc="lower right")

    ax = axes[1]
    params = [m["num_params"] for m in results["models"]]
    dint = [m["d_int90"] for m in results["models"]]
    for i, (p, d) in enumerate(zip(params, dint, strict=True)):
        ax.loglog([p], [d], "o", color=f"C{i}", ms=7)
    lo = min(dint)
    ax.fill_between(
        [min(params) / 1.5, max(params) * 1.5],
        lo,
        config.max_dint_ratio * lo,
        color="0.85",
        label=f"within {config.max_dint_ratio:g}x of the smallest",
    )
    ax.axhline(
        config.max_dint_over_min_params * min(params),
        color="k",
        ls="--",
        lw=1,
        label=f"{config.max_dint_over_min_params:.0%} of the smallest D",
    )
    ax.set(
        xlabel="number of parameters D",
        ylabel="d_int90",
        title=f"d_int90 varies {results['dint_ratio']:.2f}x while D varies "
        f"{results['param_ratio']:.1f}x",
    )
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


EXPERIMENT = Experiment(
    name="intrinsic_dimension",
    title="Measuring the Intrinsic Dimension of Objective Landscapes",
    arxiv="1804.08838",
    cpu_time="~5 min",
    config_cls=Config,
    run=run,
    checks=checks,
    plot=plot,
    description="training only z in theta0 + P z: d_int90 is about the same for MLPs whose "
    "parameter counts differ 18x",
)
