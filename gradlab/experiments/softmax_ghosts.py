r"""Sao (2603.13552): the complex zeros of softmax cap the safe step of cross-entropy training.

Along a step :math:`\theta + \tau v` with linearised logits :math:`z + \tau a`,
:math:`a = J_z v`, the cross-entropy of an example is :math:`\log \sum_c e^{z_c + \tau a_c} -
z_y - \tau a_y`. The partition function has complex zeros ("ghosts of softmax") whose distance
from the real axis bounds the Taylor radius of the loss in :math:`\tau` from below by
:math:`\rho_a = \pi / \Delta_a`, :math:`\Delta_a = \max_b (\max_c a_{bc} - \min_c a_{bc})`.
The paper's claims, reproduced on its own scikit-learn digits setting:

- **controller**: Adam followed by :func:`gradlab.transforms.scale_by_softmax_radius` (every
  step capped at :math:`r = \tau/\rho_a \le 1`, one JVP per step) survives a 1000x learning-rate
  spike from step 50; plain Adam collapses at base rates :math:`10^{-3}` and :math:`10^{-2}`
  (after the spike: 1 and 10).
- **single-step phase transition**: from a trained network (plain Adam at step 50, just before
  the spike), one step of length :math:`\tau = r \rho_a` along the normalised negative
  full-batch gradient keeps the training accuracy for every :math:`r \le 1` and loses it for
  some :math:`r \le 10`.
- **not Hessian curvature**: the classical step bound :math:`2/\lambda_{\max}(H)` (top
  Hessian eigenvalue by :func:`gradlab.spectral.eigsh` on :func:`gradlab.curvature.hessian`)
  is several times larger than :math:`\rho_a`: the radius, not the curvature, is what binds.

The single-step test measures :math:`\rho_a`, the gradient and the accuracy on the same set
(the training split), the set the Taylor argument is about.

The issue's curvature check compares :math:`2/\lambda_{\max}(H)` (global top eigenvalue) with
:math:`\rho_a` along the gradient; the paper's code (``experiments/phasetransition`` of
github.com/piyush314/ghosts-of-softmax) compares :math:`2/(u^\top H u)` with
:math:`\rho_a(u)` along the *same* random unit direction :math:`u`. Both are measured. The
first fails (:data:`KNOWN_FAILING`): in full mode its median is 1.57 (0.65-0.83 at the five
:math:`10^{-3}` checkpoints, 2.3-2.7 at the :math:`10^{-2}` ones; :math:`2/\lambda_{\max}`
= 0.46-0.71 against :math:`\rho_a` = 0.19-1.05), while the paper's directional ratio has
median 142 (50-337). The top eigenvalue is a worst case over directions: the gradient is
nearly aligned with the top eigenvectors, random directions are not, so the paper's
statement "the radius binds long before the curvature" holds for random directions and not
for the gradient with :math:`\lambda_{\max}`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from gradlab.experiments._common import stratified_split, tree_size
from gradlab.experiments._softmax_ghosts_plot import plot
from gradlab.experiments.schema import Check, Experiment, check

__all__ = ["EXPERIMENT", "KNOWN_FAILING", "Config", "checks", "plot", "r_grid", "run"]

#: Checks that fail (smoke and full mode) after a faithful setup: findings, not bugs. The
#: paper's curvature comparison is directional (see the module docstring for the evidence).
KNOWN_FAILING = ("median (2 / lambda_max) / rho_a along -g",)


@dataclasses.dataclass(frozen=True)
class Config:
    """Every knob of the experiment (full-mode defaults) and its acceptance thresholds."""

    seed: int = 0
    num_seeds: int = 5
    hidden: int = 128
    test_fraction: float = 0.2
    batch_size: int = 64
    num_steps: int = 200
    spike_step: int = 50
    spike_factor: float = 1000.0
    base_lrs: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    ratio: float = 1.0
    r_min: float = 0.05
    r_max: float = 100.0
    num_r: int = 25
    analysis_lrs: tuple[float, ...] = (1e-3, 1e-2)
    eig_num_matvecs: int = 40
    num_random_dirs: int = 8
    # acceptance thresholds (from the issue, set before the run)
    min_controller_accuracy: float = 0.90
    plain_check_lrs: tuple[float, ...] = (1e-3, 1e-2)
    max_plain_median_accuracy: float = 0.30
    safe_r: float = 1.0
    min_safe_retention: float = 0.90
    unsafe_r: float = 10.0
    max_unsafe_retention: float = 0.90
    min_hessian_radius_factor: float = 5.0


def r_grid(r_min: float, r_max: float, num: int) -> np.ndarray:
    """Log-spaced normalised step sizes ``r`` from ``r_min`` to ``r_max`` with 1 on the grid.

    The grid is geometric on each side of 1 so that the boundary ``r = 1`` is measured exactly.

    Examples:
        >>> from gradlab.experiments.softmax_ghosts import r_grid
        >>> r_grid(0.01, 100.0, 5).tolist()
        [0.01, 0.1, 1.0, 10.0, 100.0]
    """
    grid = np.geomspace(r_min, r_max, num)
    grid[np.argmin(np.abs(np.log(grid)))] = 1.0
    return grid


def _data(config: Config):
    """Digits scaled to [0, 1] (pixels / 16, as the authors), stratified train/test split."""
    import gradlab as gl

    x, y = gl.data.digits(None, standardize=False)
    x = np.asarray(x) / 16.0
    y = np.asarray(y)
    rng = np.random.default_rng(config.seed)
    train, test = stratified_split(y, config.test_fraction, rng)
    return (jnp.asarray(x[train]), jnp.asarray(y[train])), (jnp.asarray(x[test]), y[test])


def _member(value: float, values) -> bool:
    return any(math.isclose(value, v, rel_tol=1e-6) for v in values)


def _accuracy(logits, y):
    ok = (jnp.argmax(logits, axis=-1) == y) & jnp.all(jnp.isfinite(logits), axis=-1)
    return jnp.mean(ok.astype(jnp.float32))


def run(config: Config, progress) -> dict:
    """Train plain and guarded Adam through the spike; single-step sweep and Hessian at step 50."""
    import optax

    import gradlab as gl

    (x_tr, y_tr), (x_te, y_te) = _data(config)
    sizes = (x_tr.shape[1], config.hidden, 10)
    _, apply_fn = gl.models.init_mlp(jax.random.key(0), sizes, activation="relu")
    n_train = x_tr.shape[0]
    spike, factor = config.spike_step, config.spike_factor

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(apply_fn(p, x), y).mean()

    def train(params, lr, key, guarded):
        def schedule(count):
            return -lr * jnp.where(count >= spike, factor, 1.0)

        parts = [optax.scale_by_adam(), optax.scale_by_schedule(schedule)]
        if guarded:
            parts.append(gl.transforms.scale_by_softmax_radius(ratio=config.ratio))
        tx = optax.chain(*parts)

        def step(carry, k):
            p, s = carry
            idx = jax.random.choice(k, n_train, (config.batch_size,), replace=False)
            xb, yb = x_tr[idx], y_tr[idx]
            g = jax.grad(loss_fn)(p, xb, yb)
            u, s = tx.update(g, s, p, logits_fn=lambda q: apply_fn(q, x_tr))
            p = optax.apply_updates(p, u)
            return (p, s), _accuracy(apply_fn(p, x_te), y_te)

        keys = jax.random.split(key, config.num_steps)
        carry, acc_a = jax.lax.scan(step, (params, tx.init(params)), keys[:spike])
        at_spike = carry[0]
        carry, acc_b = jax.lax.scan(step, carry, keys[spike:])
        return jnp.concatenate([acc_a, acc_b]), at_spike

    key = jax.random.key(config.seed)
    k_init, k_batch, k_eig = jax.random.split(key, 3)
    init_keys = jax.random.split(k_init, config.num_seeds)
    batch_keys = jax.random.split(k_batch, config.num_seeds)
    params0 = jax.vmap(lambda k: gl.models.init_mlp(k, sizes, activation="relu")[0])(init_keys)
    lrs = jnp.asarray(config.base_lrs, jnp.float32)
    r = r_grid(config.r_min, config.r_max, config.num_r)

    def spread_radius(p, v):
        _, a = jax.jvp(lambda q: apply_fn(q, x_tr), (p,), (v,))
        return math.pi / jnp.max(jnp.max(a, axis=-1) - jnp.min(a, axis=-1))

    def analyse(p, k):
        """rho_a along -g/|g|, one step of r rho_a, 2 / lambda_max(H), random-direction 2/kappa."""
        g = jax.grad(loss_fn)(p, x_tr, y_tr)
        gnorm = optax.tree.norm(g)
        v = jax.tree.map(lambda a: -a / gnorm, g)
        rho = spread_radius(p, v)
        acc0 = _accuracy(apply_fn(p, x_tr), y_tr)
        loss0 = loss_fn(p, x_tr, y_tr)

        def after(ri):
            q = jax.tree.map(lambda a, b: a + ri * rho * b, p, v)
            return _accuracy(apply_fn(q, x_tr), y_tr), loss_fn(q, x_tr, y_tr)

        acc, loss = jax.lax.map(after, jnp.asarray(r, jnp.float32))
        hvp = gl.curvature.hessian(lambda q, b: loss_fn(q, *b), p, (x_tr, y_tr))
        k_eig, k_dirs = jax.random.split(k)
        eig = gl.spectral.eigsh(hvp, p, k=1, key=k_eig, num_matvecs=config.eig_num_matvecs)

        def random_direction(kd):  # the authors' variant: 2 / (u^T H u) vs rho_a(u)
            leaves, treedef = jax.tree.flatten(p)
            keys = jax.random.split(kd, len(leaves))
            u = [
                jax.random.normal(kk, x.shape, x.dtype) for kk, x in zip(keys, leaves, strict=True)
            ]
            u = jax.tree.unflatten(treedef, u)
            u = jax.tree.map(lambda a: a / optax.tree.norm(u), u)
            kappa = optax.tree.vdot(u, hvp(u))
            return 2.0 / kappa / spread_radius(p, u)

        directional = jax.lax.map(
            random_direction, jax.random.split(k_dirs, config.num_random_dirs)
        )
        return {
            "rho": rho,
            "acc0": acc0,
            "retention": acc / acc0,
            "loss_ratio": loss / loss0,
            "lambda_max": eig.eigenvalues[0],
            "lambda_converged": eig.converged[0],
            "directional_factor": jnp.median(directional),
        }

    out: dict = {"num_params": tree_size(jax.tree.map(lambda a: a[0], params0)), "r": r.tolist()}
    with progress(total=3, desc="softmax_ghosts") as bar:
        for name, guarded in (("plain", False), ("controller", True)):
            sweep = jax.jit(
                jax.vmap(  # over base lrs
                    jax.vmap(  # over seeds
                        lambda p, lr, k, guarded=guarded: train(p, lr, k, guarded),
                        in_axes=(0, None, 0),
                    ),
                    in_axes=(None, 0, None),
                )
            )
            acc, at_spike = sweep(params0, lrs, batch_keys)
            acc = np.asarray(acc, np.float64)  # (lrs, seeds, steps)
            out[name] = {
                "accuracy_trace_median": np.median(acc, axis=1).tolist(),
                "final_accuracy": acc[:, :, -1].tolist(),
                "median_final_accuracy": np.median(acc[:, :, -1], axis=1).tolist(),
            }
            if not guarded:
                rows = [
                    i for i, lr in enumerate(config.base_lrs) if _member(lr, config.analysis_lrs)
                ]
                checkpoints = jax.tree.map(
                    lambda a, rows=rows: a[np.asarray(rows)].reshape((-1, *a.shape[2:])), at_spike
                )  # (analysed lrs * seeds, ...)
            bar.update()
        num = len(rows) * config.num_seeds
        measured = jax.jit(jax.vmap(analyse))(checkpoints, jax.random.split(k_eig, num))
        m = {k: np.asarray(v, np.float64) for k, v in measured.items()}
        bar.update()
    hess_step = 2.0 / m["lambda_max"]
    out["single_step"] = {
        "rho": m["rho"].tolist(),
        "accuracy_at_spike": m["acc0"].tolist(),
        "retention": m["retention"].tolist(),  # (checkpoints, r)
        "loss_ratio": m["loss_ratio"].tolist(),
        "median_retention": np.median(m["retention"], axis=0).tolist(),
        "lambda_max": m["lambda_max"].tolist(),
        "lambda_converged": m["lambda_converged"].astype(bool).tolist(),
        "hessian_step": hess_step.tolist(),
        "hessian_radius_factor": (hess_step / m["rho"]).tolist(),
        "directional_factor": m["directional_factor"].tolist(),
    }
    return out


def checks(config: Config, results: dict) -> list[Check]:
    """Controller survives the spike, plain Adam collapses, r <= 1 is safe, 2/lambda >> rho."""
    nan = float("nan")
    lrs = list(config.base_lrs)
    ctrl = np.asarray(results["controller"]["final_accuracy"], np.float64)
    out = [
        check(
            "controller: min final test accuracy (all lrs, seeds)",
            float(np.min(ctrl)),
            ">=",
            config.min_controller_accuracy,
        )
    ]
    for lr in config.plain_check_lrs:
        value = nan
        for i, base in enumerate(lrs):
            if _member(base, (lr,)):
                value = results["plain"]["median_final_accuracy"][i]
        out.append(
            check(
                f"plain Adam: median final test accuracy at lr {lr:g}",
                value,
                "<=",
                config.max_plain_median_accuracy,
            )
        )
    s = results["single_step"]
    r = np.asarray(results["r"], np.float64)
    ret = np.asarray(s["retention"], np.float64).reshape(-1, r.size)
    safe = r <= config.safe_r * (1 + 1e-9)
    unsafe = r <= config.unsafe_r * (1 + 1e-9)
    out.append(
        check(
            f"single step: min retention over r <= {config.safe_r:g} (every checkpoint)",
            float(np.min(ret[:, safe])) if safe.any() else nan,
            ">=",
            config.min_safe_retention,
        )
    )
    median = np.median(ret, axis=0)
    out.append(
        check(
            f"single step: min median retention over r <= {config.unsafe_r:g}",
            float(np.min(median[unsafe])) if unsafe.any() else nan,
            "<",
            config.max_unsafe_retention,
        )
    )
    out.append(
        check(
            "median (2 / lambda_max) / rho_a along -g",
            float(np.median(s["hessian_radius_factor"])),
            ">",
            config.min_hessian_radius_factor,
        )
    )
    out.append(
        check(
            "median (2 / u^T H u) / rho_a(u), random unit u",
            float(np.median(s["directional_factor"])),
            ">",
            config.min_hessian_radius_factor,
        )
    )
    return out


EXPERIMENT = Experiment(
    name="softmax_ghosts",
    title="Ghosts of Softmax: Complex Singularities That Limit Safe Step Sizes in Cross-Entropy",
    arxiv="2603.13552",
    cpu_time="~2 min",
    config_cls=Config,
    run=run,
    checks=checks,
    plot=plot,
    description="steps beyond the softmax radius pi/Delta_a collapse training; a controller "
    "that caps r = tau/rho_a <= 1 survives 1000x learning-rate spikes",
)
