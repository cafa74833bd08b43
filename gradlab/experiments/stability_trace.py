"""Wu & Su (2305.17490): SGD's dynamical stability bounds the Hessian *trace*, GD's only its top.

A tanh student (``d-m-1``) fits ``n`` points labelled by a small random tanh teacher with the
half mean squared error. At a global minimum the Hessian is the Gauss-Newton matrix
``H = (1/n) sum_i grad f_i grad f_i^T``. Gradient descent is linearly stable there iff
``lambda_max(H) eta / 2 <= 1``; SGD with batch size 1 multiplies by ``I - eta grad f_i grad f_i^T``
with a random ``i``, and its second moment is stable only if (about) ``Tr(H) eta / 2 <= 1``.
So every minimum SGD(B=1) converges to satisfies the trace bound, while GD happily converges to
minima whose trace is several times ``2 / eta``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gradlab.experiments._common import tree_size
from gradlab.experiments.schema import Check, Experiment, check

__all__ = ["EXPERIMENT", "Config", "checks", "eta_grid", "plot", "run"]


@dataclasses.dataclass(frozen=True)
class Config:
    """Setup of the reproduction (full-mode defaults) and its acceptance thresholds."""

    seed: int = 0
    num_examples: int = 40
    dim: int = 10
    width: int = 100
    teacher_width: int = 4
    num_steps: int = 20000
    sgd_log2_eta: tuple[float, float] = (-7.0, -3.0)
    gd_log2_eta: tuple[float, float] = (-6.0, 0.0)
    log2_eta_step_sgd: float = 0.25
    log2_eta_step_gd: float = 0.5
    converged_loss: float = 1e-5
    trace_num_matvecs: int = 150
    eig_num_matvecs: int = 40
    max_sgd_trace_ratio: float = 1.02
    min_sgd_edge_trace_ratio: float = 0.6
    max_gd_lambda_ratio: float = 1.02
    min_gd_max_trace_ratio: float = 2.0
    max_trace_rel_error: float = 0.01
    min_converged_runs: int = 3


def eta_grid(log2_range: tuple[float, float], step: float) -> np.ndarray:
    """Geometric grid ``2^lo, 2^(lo+step), ..., 2^hi``.

    Examples:
        >>> from gradlab.experiments.stability_trace import eta_grid
        >>> eta_grid((-2.0, 0.0), 1.0).tolist()
        [0.25, 0.5, 1.0]
    """
    lo, hi = log2_range
    return 2.0 ** np.arange(lo, hi + step / 2, step)


def _problem(config: Config, key: jax.Array):
    import gradlab as gl

    k_teacher, k_x, k_student = jax.random.split(key, 3)
    teacher, teacher_apply = gl.models.init_mlp(
        k_teacher, (config.dim, config.teacher_width, 1), activation="tanh"
    )
    x = jax.random.normal(k_x, (config.num_examples, config.dim))
    y = teacher_apply(teacher, x)
    params, apply_fn = gl.models.init_mlp(
        k_student, (config.dim, config.width, 1), activation="tanh"
    )
    return params, apply_fn, (x, y)


def run(config: Config, progress) -> dict:
    """Train SGD(B=1) and GD over their eta grids from one init; measure Tr(H), lambda_max."""
    import gradlab as gl

    key = jax.random.key(config.seed)
    k_problem, k_sgd, k_probe = jax.random.split(key, 3)
    params, apply_fn, (x, y) = _problem(config, k_problem)
    n = config.num_examples

    def loss_fn(p, b):
        return gl.models.mse(apply_fn(p, b[0]), b[1])

    def train(p, eta, x, y, key, stochastic):
        def step(p, k):
            if stochastic:  # batch size 1, example drawn uniformly with replacement
                i = jax.random.randint(k, (1,), 0, n)
                batch = (x[i], y[i])
            else:
                batch = (x, y)
            g = jax.grad(loss_fn)(p, batch)
            return jax.tree_util.tree_map(lambda a, b: a - eta * b, p, g), None

        p, _ = jax.lax.scan(step, p, jax.random.split(key, config.num_steps))
        return p

    def measure(p, x, y, key):
        hvp = gl.curvature.hessian(loss_fn, p, (x, y))
        tr = gl.spectral.trace(hvp, p, key=key, num_matvecs=config.trace_num_matvecs)
        eig = gl.spectral.eigsh(hvp, p, k=1, key=key, num_matvecs=config.eig_num_matvecs)
        exact = jnp.trace(gl.curvature.dense(hvp, p))
        return {
            "loss": loss_fn(p, (x, y)),
            "trace": tr.value,
            "trace_sem": tr.sem,
            "trace_exact": exact,
            "lambda_max": eig.eigenvalues[0],
            "lambda_converged": eig.converged[0],
        }

    out = {"num_params": tree_size(params), "initial_loss": float(loss_fn(params, (x, y)))}
    grids = {
        "sgd": eta_grid(config.sgd_log2_eta, config.log2_eta_step_sgd),
        "gd": eta_grid(config.gd_log2_eta, config.log2_eta_step_gd),
    }
    with progress(total=3, desc="stability_trace") as bar:
        finals = []
        for name, stochastic in (("sgd", True), ("gd", False)):
            sweep = jax.jit(
                jax.vmap(
                    lambda p, eta, x, y, k, stochastic=stochastic: train(
                        p, eta, x, y, k, stochastic
                    ),
                    in_axes=(None, 0, None, None, None),
                )
            )
            finals.append(sweep(params, jnp.asarray(grids[name], jnp.float32), x, y, k_sgd))
            bar.set_postfix_str(f"trained {name}")
            bar.update()
        # one compiled measurement for all runs of both optimisers
        stacked = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), *finals)
        probe = jax.jit(jax.vmap(measure, in_axes=(0, None, None, None)))
        measured = {
            k: np.asarray(v, dtype=np.float64) for k, v in probe(stacked, x, y, k_probe).items()
        }
        bar.update()
    split = grids["sgd"].size
    for name, sl in (("sgd", slice(0, split)), ("gd", slice(split, None))):
        etas = grids[name]
        m = {k: v[sl] for k, v in measured.items()}
        converged = np.isfinite(m["loss"]) & (m["loss"] <= config.converged_loss)
        finite = np.isfinite(m["trace"])
        out[name] = {
            "etas": etas.tolist(),
            "converged": converged.tolist(),
            "loss": [float(v) if np.isfinite(v) else None for v in m["loss"]],
            **{
                k: [float(v) if f else None for v, f in zip(m[k], finite, strict=True)]
                for k in ("trace", "trace_sem", "trace_exact", "lambda_max")
            },
            "trace_ratio": [
                float(t * e / 2) if f else None
                for t, e, f in zip(m["trace"], etas, finite, strict=True)
            ],
            "lambda_ratio": [
                float(v * e / 2) if f else None
                for v, e, f in zip(m["lambda_max"], etas, finite, strict=True)
            ],
        }
    return out


def _converged(results: dict, name: str, field: str) -> list[tuple[float, float]]:
    r = results[name]
    return [
        (eta, v)
        for eta, v, c in zip(r["etas"], r[field], r["converged"], strict=True)
        if c and v is not None
    ]


def checks(config: Config, results: dict) -> list[Check]:
    """The trace bound for SGD(B=1), its tightness, the lambda_max bound for GD, trace vs exact."""
    nan = float("nan")
    sgd_tr = _converged(results, "sgd", "trace_ratio")
    gd_lam = _converged(results, "gd", "lambda_ratio")
    gd_tr = _converged(results, "gd", "trace_ratio")
    rel = []
    for name in ("sgd", "gd"):
        est = _converged(results, name, "trace")
        exact = dict(_converged(results, name, "trace_exact"))
        rel += [abs(v - exact[eta]) / abs(exact[eta]) for eta, v in est]
    return [
        check("converged SGD(B=1) runs", len(sgd_tr), ">=", config.min_converged_runs),
        check("converged GD runs", len(gd_lam), ">=", config.min_converged_runs),
        check(
            "max Tr(H) eta/2 over converged SGD(B=1) runs",
            max((v for _, v in sgd_tr), default=nan),
            "<=",
            config.max_sgd_trace_ratio,
        ),
        check(
            "Tr(H) eta/2 at the largest converged SGD eta",
            max(sgd_tr)[1] if sgd_tr else nan,
            ">=",
            config.min_sgd_edge_trace_ratio,
        ),
        check(
            "max lambda_max eta/2 over converged GD runs",
            max((v for _, v in gd_lam), default=nan),
            "<=",
            config.max_gd_lambda_ratio,
        ),
        check(
            "max Tr(H) eta/2 over converged GD runs",
            max((v for _, v in gd_tr), default=nan),
            ">",
            config.min_gd_max_trace_ratio,
        ),
        check(
            "Hutch++ trace vs exact dense trace, max rel. error",
            max(rel, default=nan),
            "<=",
            config.max_trace_rel_error,
        ),
    ]


def plot(config: Config, results: dict):
    """Tr(H) eta/2 and lambda_max eta/2 at the reached minima against eta, for SGD and GD."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, field, label in (
        (axes[0], "trace_ratio", "Tr(H) eta / 2"),
        (axes[1], "lambda_ratio", "lambda_max(H) eta / 2"),
    ):
        for name, color in (("sgd", "C0"), ("gd", "C1")):
            pts = _converged(results, name, field)
            if pts:
                e, v = zip(*pts, strict=True)
                ax.loglog(e, v, "o-", color=color, label=f"{name.upper()} (converged)")
        ax.axhline(1.0, color="k", ls="--", lw=1, label="stability bound = 1")
        ax.set(xlabel="learning rate eta", ylabel=label)
        ax.legend(fontsize=8)
    axes[0].set_title("SGD(B=1) minima obey Tr(H) <= 2/eta; GD's do not")
    axes[1].set_title("GD minima obey lambda_max(H) <= 2/eta")
    fig.tight_layout()
    return fig


EXPERIMENT = Experiment(
    name="stability_trace",
    title="The Implicit Regularization of Dynamical Stability in Stochastic Gradient Descent",
    arxiv="2305.17490",
    cpu_time="~2 min",
    config_cls=Config,
    run=run,
    checks=checks,
    plot=plot,
    description="minima reached by SGD(B=1) satisfy Tr(H) <= 2/eta; GD's only lambda_max <= 2/eta",
)
