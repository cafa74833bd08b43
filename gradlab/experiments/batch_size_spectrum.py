"""Granziol et al. (2006.09092): mini-batch Hessian spectra and the max learning rate vs batch size.

A digits MLP (64-128-128-10, tanh) is trained to a checkpoint. The mini-batch Hessian
``H_B = H + E_B`` is the full Hessian plus a random-matrix perturbation whose size falls like
``1/B - 1/N`` (sampling without replacement), so the top eigenvalue of ``H_B`` exceeds that of
``H`` by about ``c (1/B - 1/N)``. SGD is stable up to ``eta ~ 2 / lambda_max(H_B)``, which grows
linearly with ``B`` while the perturbation dominates; Adam divides by the root of the gradient
second moment (``~ 1/sqrt(B)``), so its max learning rate grows like ``sqrt(B)``.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from gradlab.experiments._common import gd_train, loglog_slope, tree_size
from gradlab.experiments.schema import Check, Experiment, check

__all__ = [
    "EXPERIMENT",
    "Config",
    "checks",
    "excess_fit",
    "max_stable",
    "plot",
    "run",
]


@dataclasses.dataclass(frozen=True)
class Config:
    """Setup of the reproduction (full-mode defaults) and its acceptance thresholds."""

    seed: int = 0
    num_examples: int = 1797
    sizes: tuple[int, ...] = (64, 128, 128, 10)
    checkpoint_steps: int = 300
    checkpoint_learning_rate: float = 0.1
    batch_sizes: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512, 1024)
    num_batches: int = 10
    eig_num_matvecs: int = 30
    eig_tol: float = 1e-4
    lr_batch_sizes: tuple[int, ...] = (8, 16, 32, 64, 128)
    sgd_log2_lr: tuple[float, float] = (-3.0, 6.0)
    adam_log2_lr: tuple[float, float] = (-8.0, 1.0)
    log2_lr_step: float = 0.5
    lr_steps: int = 150
    lr_seeds: int = 2
    max_stable_loss: float = 2.302585
    min_r2: float = 0.9
    sgd_slope: tuple[float, float] = (0.75, 1.25)
    adam_slope: tuple[float, float] = (0.3, 0.7)
    slope_batch_range: tuple[int, int] = (8, 128)


def excess_fit(batch_sizes, excess, num_examples: int) -> tuple[float, float]:
    """Least-squares fit ``excess ~ c (1/B - 1/N)`` through the origin; returns ``(c, R^2)``.

    ``R^2 = 1 - SS_res / SS_tot`` with ``SS_tot`` around the mean of ``excess``.

    Examples:
        >>> from gradlab.experiments.batch_size_spectrum import excess_fit
        >>> c, r2 = excess_fit([10, 100], [3 * (1 / 10 - 1 / 1000), 3 * (1 / 100 - 1 / 1000)], 1000)
        >>> round(c, 6), round(r2, 6)
        (3.0, 1.0)
    """
    u = 1.0 / np.asarray(batch_sizes, float) - 1.0 / num_examples
    e = np.asarray(excess, float)
    c = float(u @ e / (u @ u))
    ss_tot = float(np.sum((e - e.mean()) ** 2))
    r2 = 1.0 - float(np.sum((e - c * u) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    return c, r2


def max_stable(learning_rates, final_losses, max_loss: float) -> tuple[float, int]:
    """The largest learning rate below the first unstable one, and its grid index.

    ``final_losses`` has shape ``(num_seeds, num_lrs)`` (or ``(num_lrs,)``); a learning rate is
    stable when every seed ends with a finite loss ``< max_loss``. Returns ``(nan, -1)`` when the
    smallest learning rate is already unstable.

    Examples:
        >>> from gradlab.experiments.batch_size_spectrum import max_stable
        >>> max_stable([0.1, 0.2, 0.4, 0.8], [[0.1, 0.2, 5.0, 0.1]], 2.3)
        (0.2, 1)
    """
    losses = np.atleast_2d(np.asarray(final_losses, float))
    stable = np.all(np.isfinite(losses) & (losses < max_loss), axis=0)
    if not stable[0]:
        return float("nan"), -1
    first_bad = int(np.argmin(stable)) if not stable.all() else stable.size
    return float(learning_rates[first_bad - 1]), first_bad - 1


class _Timer:
    def __init__(self):
        self.t = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str, value) -> None:
        jax.block_until_ready(value)
        now = time.perf_counter()
        self.laps[name] = round(now - self.t, 2)
        self.t = now


def _grid(lo_hi: tuple[float, float], step: float) -> np.ndarray:
    lo, hi = lo_hi
    return 2.0 ** np.arange(lo, hi + step / 2, step)


def run(config: Config, progress) -> dict:
    """Checkpoint, mini-batch ``lambda_max`` for every ``B``, and the SGD/Adam LR sweeps."""
    import optax

    import gradlab as gl

    x, y = gl.data.digits(config.num_examples)
    n = int(x.shape[0])
    key = jax.random.key(config.seed)
    k_init, k_full, k_lam, k_lr = jax.random.split(key, 4)
    params, apply_fn = gl.models.init_mlp(k_init, config.sizes, activation="tanh")

    def loss_fn(p, b):
        return gl.models.softmax_cross_entropy(apply_fn(p, b[0]), b[1])

    def weighted_loss(p, b):  # sum_i w_i l_i: the mini-batch mean when w = mask / B
        xb, yb, wb = b
        return jnp.sum(wb * optax.softmax_cross_entropy_with_integer_labels(apply_fn(p, xb), yb))

    stages = 1 + len(config.batch_sizes) + 2
    timer = _Timer()
    with progress(total=stages, desc="batch_size_spectrum") as bar:
        train = jax.jit(
            lambda p, b: gd_train(
                loss_fn,
                p,
                b,
                learning_rate=config.checkpoint_learning_rate,
                num_steps=config.checkpoint_steps,
            )
        )
        ckpt, losses = train(params, (x, y))
        timer.lap("checkpoint", losses)
        bar.update()

        buffer = max(config.batch_sizes)
        if buffer > n:
            raise ValueError(f"batch_sizes has B={buffer} > num_examples={n}")

        @jax.jit
        def lam_max(p, xs, ys, ws, key):
            hvp = gl.curvature.hessian(weighted_loss, p, (xs, ys, ws))
            eig = gl.spectral.eigsh(
                hvp, p, k=1, key=key, num_matvecs=config.eig_num_matvecs, tol=config.eig_tol
            )
            return eig.eigenvalues[0], eig.converged[0]

        batched = jax.jit(jax.vmap(lam_max, in_axes=(None, 0, 0, 0, 0)))
        ones = jnp.full((n,), 1.0 / n)
        lam_full, conv_full = lam_max(ckpt, x, y, ones, k_full)
        per_batch = {}
        converged = int(conv_full)
        for i, b in enumerate(config.batch_sizes):
            keys = jax.random.split(jax.random.fold_in(k_lam, i), config.num_batches)
            idx = jax.vmap(lambda k: jax.random.permutation(k, n)[:buffer])(keys)
            ws = jnp.broadcast_to((jnp.arange(buffer) < b) / b, idx.shape)
            lams, conv = batched(ckpt, x[idx], y[idx], ws, keys)
            per_batch[b] = np.asarray(lams, dtype=np.float64)
            converged += int(np.sum(conv))
            timer.lap(f"lambda_max B={b}", lams)
            bar.set_postfix_str(f"B={b} lambda_max={per_batch[b].mean():.3g}")
            bar.update()

        lr_buffer = max(config.lr_batch_sizes)

        def final_loss(p, b, key, lr, make_opt):
            opt = make_opt(lr)
            mask = (jnp.arange(lr_buffer) < b) / b

            def step(carry, k):
                p, state = carry
                idx = jax.random.choice(k, n, (lr_buffer,), replace=False)
                g = jax.grad(weighted_loss)(p, (x[idx], y[idx], mask))
                updates, state = opt.update(g, state, p)
                return (optax.apply_updates(p, updates), state), None

            (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), jax.random.split(key, config.lr_steps))
            return loss_fn(p, (x, y))

        sweeps = {}
        b_arr = jnp.asarray(config.lr_batch_sizes, jnp.float32)
        seed_keys = jax.random.split(k_lr, config.lr_seeds)
        for name, make_opt, lo_hi in (
            ("sgd", optax.sgd, config.sgd_log2_lr),
            ("adam", optax.adam, config.adam_log2_lr),
        ):
            lrs = _grid(lo_hi, config.log2_lr_step)
            f = jax.vmap(  # over batch sizes, seeds, learning rates
                jax.vmap(
                    jax.vmap(
                        lambda p, b, k, lr: final_loss(p, b, k, lr, make_opt),
                        in_axes=(None, None, None, 0),
                    ),
                    in_axes=(None, None, 0, None),
                ),
                in_axes=(None, 0, None, None),
            )
            out = np.asarray(jax.jit(f)(ckpt, b_arr, seed_keys, jnp.asarray(lrs, jnp.float32)))
            rows = []
            for j, b in enumerate(config.lr_batch_sizes):
                lr_max, index = max_stable(lrs, out[j], config.max_stable_loss)
                rows.append(
                    {
                        "batch_size": b,
                        "max_lr": lr_max,
                        "index": index,
                        "at_cap": index == lrs.size - 1,
                        "final_losses": out[j].tolist(),
                    }
                )
            sweeps[name] = {"learning_rates": lrs.tolist(), "rows": rows}
            timer.lap(f"{name} sweep", out)
            bar.set_postfix_str(f"{name} max lr {[r['max_lr'] for r in rows]}")
            bar.update()

    lam_full = float(lam_full)
    mean = {b: float(v.mean()) for b, v in per_batch.items()}
    excess = [mean[b] - lam_full for b in config.batch_sizes]
    c, r2 = excess_fit(config.batch_sizes, excess, n)
    lo, hi = config.slope_batch_range
    slopes = {}
    for name, sweep in sweeps.items():
        sel = [r for r in sweep["rows"] if lo <= r["batch_size"] <= hi]
        bs = [r["batch_size"] for r in sel]
        lr = [r["max_lr"] for r in sel]
        ok = all(math.isfinite(v) for v in lr) and len(sel) >= 2
        slopes[name] = loglog_slope(bs, lr) if ok else float("nan")
    return {
        "num_examples": n,
        "num_params": tree_size(params),
        "checkpoint_loss": float(losses[-1]),
        "lambda_max_full": lam_full,
        "lambda_max_batches": {str(b): v.tolist() for b, v in per_batch.items()},
        "lambda_max_mean": {str(b): v for b, v in mean.items()},
        "eigsh_converged": converged,
        "eigsh_total": 1 + len(config.batch_sizes) * config.num_batches,
        "excess": excess,
        "excess_c": c,
        "excess_r2": r2,
        "sweeps": sweeps,
        "sgd_slope": slopes["sgd"],
        "adam_slope": slopes["adam"],
        "seconds": timer.laps,
    }


def checks(config: Config, results: dict) -> list[Check]:
    """Excess ``lambda_max`` fit, SGD and Adam max-LR slopes, and an uncapped LR grid."""
    rows = results["sweeps"]["sgd"]["rows"] + results["sweeps"]["adam"]["rows"]
    lo, hi = config.slope_batch_range
    return [
        check("excess lambda_max ~ c(1/B - 1/N): R^2", results["excess_r2"], ">=", config.min_r2),
        check(
            f"SGD max-LR log-log slope, B in [{lo}, {hi}]",
            results["sgd_slope"],
            "in",
            config.sgd_slope,
        ),
        check(
            f"Adam max-LR log-log slope, B in [{lo}, {hi}]",
            results["adam_slope"],
            "in",
            config.adam_slope,
        ),
        check("max LR at the top of the grid (count)", sum(r["at_cap"] for r in rows), "<=", 0),
    ]


def plot(config: Config, results: dict):
    """Mean ``lambda_max(H_B)`` vs ``B`` with the fit, and max stable LR vs ``B``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    bs = np.asarray(config.batch_sizes, float)
    lam = np.asarray([results["lambda_max_mean"][str(b)] for b in config.batch_sizes])
    for b in config.batch_sizes:
        vals = results["lambda_max_batches"][str(b)]
        axes[0].scatter([b] * len(vals), vals, s=8, color="0.6")
    fit = results["lambda_max_full"] + results["excess_c"] * (1 / bs - 1 / results["num_examples"])
    axes[0].loglog(bs, lam, "o", label="mean over batches")
    axes[0].loglog(bs, fit, "-", label=f"lambda(H) + c(1/B - 1/N), R^2={results['excess_r2']:.3f}")
    axes[0].axhline(results["lambda_max_full"], color="k", ls=":", lw=1, label="full batch")
    axes[0].set(xlabel="batch size B", ylabel="lambda_max(H_B)", title="Mini-batch Hessian")
    axes[0].legend(fontsize=8)
    for name in ("sgd", "adam"):
        rows = results["sweeps"][name]["rows"]
        b = [r["batch_size"] for r in rows]
        axes[1].loglog(
            b,
            [r["max_lr"] for r in rows],
            "o-",
            label=f"{name.upper()} (slope {results[name + '_slope']:.2f})",
        )
    axes[1].set(xlabel="batch size B", ylabel="max stable learning rate", title="Max stable LR")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


EXPERIMENT = Experiment(
    name="batch_size_spectrum",
    title="Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach",
    arxiv="2006.09092",
    cpu_time="~3 min",
    config_cls=Config,
    run=run,
    checks=checks,
    plot=plot,
    description="lambda_max(H_B) - lambda_max(H) ~ 1/B; max LR ~ B for SGD, ~ sqrt(B) for Adam",
)
