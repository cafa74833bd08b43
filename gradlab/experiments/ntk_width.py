r"""Jacot et al. (1806.07572) with Yang (1902.04760): the NTK is deterministic and frozen at width.

In the NTK parameterisation (every dense layer :math:`z = \sigma_w W h / \sqrt{n_{in}} +
\beta b` with standard-normal :math:`W, b`) the empirical neural tangent kernel
:math:`\Theta(x, x') = \nabla_\theta f(x) \cdot \nabla_\theta f(x')` of a random MLP converges,
as every hidden width :math:`n \to \infty`, to a deterministic limit computed layer by layer
(:func:`gradlab.ntk.infinite_mlp`); and during gradient descent it stays where it started
(Jacot et al.; the at-initialisation limit holds for general architectures, Yang 2019).

For widths 64..2048 and several seeds this experiment measures, on the training inputs:

- the relative Frobenius error :math:`\|\Theta_0 - \Theta_\infty\|_F / \|\Theta_\infty\|_F` at
  initialisation, which falls like :math:`n^{-1/2}` (fluctuations of an average over
  :math:`n` neurons);
- the kernel drift :math:`\|\Theta_T - \Theta_0\|_F / \|\Theta_0\|_F` after ``num_steps`` of
  full-batch GD on :math:`f^*(x) = x_1 x_2`, which falls like :math:`n^{-1}` (the leading
  change of the NTK under training is of order :math:`1/n`; Dyer & Gur-Ari 2019, Huang & Yau
  2019);
- the distance between what each trained network computes and what kernel gradient descent
  with the *limiting* NTK predicts for it (the paper's claim, Jacot et al. Theorem 2: in the
  infinite-width limit the network follows kernel gradient descent with :math:`\Theta_\infty`).
  For every trained net, :func:`gradlab.ntk.gradient_descent_mse` on :math:`\Theta_\infty`
  predicts the outputs on ``num_test = 64`` held-out unit-circle inputs (midway between the
  ``num_train`` training angles' grid of 64) after the same ``num_steps`` steps, starting from
  *that network's own* initial function :math:`f_0` on the training and held-out inputs. The
  relative RMS distance :math:`\|f_T(x_{test}) - \hat f_T(x_{test})\| /
  \|\hat f_T(x_{test})\|`, averaged over the ``num_loss_seeds`` nets, falls with width with a
  log-log slope near :math:`-1/2`: with :math:`f_0` shared, what is left is the kernel's own
  error at initialisation (:math:`n^{-1/2}`) and its drift (:math:`n^{-1}`). The prediction is
  gradient *flow*; with :math:`\eta = 1` the discretisation error of 200 GD steps is far below
  the measured distances.
- the final training losses, compared across widths by the ratio of the largest to the
  smallest mean over seeds (reported, no longer a check; see below). The final loss depends on the function at initialisation, a
  Gaussian-process sample whose variance does not shrink with width, so it varies 3-8x from
  seed to seed; a mean over the 4 kernel seeds is too noisy for a 2x band. The losses are
  therefore averaged over ``num_loss_seeds = 24`` trained nets per width (the first
  ``num_seeds`` of them are also the nets whose kernels are measured; the others are only
  trained, which is cheaper than the two Jacobian contractions). 24 was fixed once, from a
  16-seed pilot: the per-seed coefficient of variation of the final loss was at most 0.88
  (width 128) among narrow nets and 0.39 (width 2048) among wide ones, and the ratio of two
  means has relative standard error ``sqrt((cv_1^2 + cv_2^2) / n)``, below 20% for
  ``n >= (0.88^2 + 0.39^2) / 0.2^2 = 23.2``. Each width's mean comes with its standard error,
  and the ratio with its delta-method relative standard error.

  Part 1 checked this ratio against 2; with the noise down it fails for a real reason, and
  issue 14 replaced that check by the function-space distance above (the paper's actual
  claim). The finding stays in the results and the notebook: the mean final loss falls with width (log-log slope -0.35), from 6.2e-4 +- 1.0e-4 at width
  64 to 2.0e-4 +- 0.15e-4 at width 2048, a ratio of 3.1 +- 17% (2.6 standard errors above
  2 on the log scale; the pilot's independent seeds gave 2.7). The narrow nets (64, 128),
  whose kernels move by 17-27% in training, train more slowly than the kernel limit; widths
  256-2048 agree within 1.5x.

The setup follows Jacot et al.'s Section 6 (Figure 1): a ReLU network of depth :math:`L = 4`,
bias scale :math:`\beta = 0.1`, :math:`\sigma_w = 1`, inputs on the unit circle, 200 steps of
gradient descent with learning rate 1 on the least-squares cost
:math:`\tfrac12 \|f - f^*\|^2_{p^{in}}` (half the mean squared error over the training
inputs). Jacot et al. (Section 2) number the layers "from 0 (input) to :math:`L` (output)",
so depth :math:`L = 4` is **three** hidden layers (``depth=3`` here, the number of hidden
layers of :func:`gradlab.ntk.infinite_mlp`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from gradlab.experiments._ntk_width_plot import plot
from gradlab.experiments._ntk_width_theory import (
    function_distance,
    held_out_inputs,
    kernel_stats,
    linearised_loss,
    target,
)
from gradlab.experiments.schema import Check, Experiment, check

__all__ = [
    "EXPERIMENT",
    "KNOWN_FAILING",
    "Config",
    "checks",
    "function_distance",
    "held_out_inputs",
    "kernel_stats",
    "linearised_loss",
    "plot",
    "run",
    "target",
]


#: Checks that fail after a faithful setup: findings, not bugs. None: the final-loss ratio
#: (a real width trend, narrow nets train more slowly) is now a reported value (issue 14).
KNOWN_FAILING: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Config:
    """Every knob of the experiment (full-mode defaults) and its acceptance thresholds."""

    seed: int = 0
    depth: int = 3
    widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    num_seeds: int = 4
    num_loss_seeds: int = 24
    num_train: int = 16
    num_test: int = 64
    weight_std: float = 1.0
    bias_std: float = 0.1
    learning_rate: float = 1.0
    num_steps: int = 200
    init_error_slope_range: tuple[float, float] = (-0.7, -0.3)
    drift_slope_range: tuple[float, float] = (-1.3, -0.7)
    max_drift_widest: float = 0.03
    function_distance_slope_range: tuple[float, float] = (-0.8, -0.3)
    max_function_distance_widest: float = 0.15


def _net(key, x, width: int, config: Config):
    """A fresh NTK-parameterised ReLU MLP, its apply function and the training loss."""
    from gradlab.models import init_ntk_mlp, mse

    sizes = (x.shape[1],) + (width,) * config.depth + (1,)
    params, apply_fn = init_ntk_mlp(
        key,
        sizes,
        activation="relu",
        weight_std=config.weight_std,
        bias_std=config.bias_std,
    )

    def loss_fn(p, batch):
        return mse(apply_fn(p, batch[0]), batch[1])

    return params, apply_fn, loss_fn


def _outputs(apply_fn, params, trained, x, x_test):
    """``(f_0(x), f_0(x_test), f_T(x_test))``: the net's function before and after training."""
    return apply_fn(params, x), apply_fn(params, x_test), apply_fn(trained, x_test)


def _train(params, loss_fn, x, config: Config):
    """GD from ``params``: trained params and the losses before each step and at the end."""
    from gradlab.experiments._common import gd_train

    y = target(x)
    trained, losses = gd_train(
        loss_fn,
        params,
        (x, y),
        learning_rate=config.learning_rate,
        num_steps=config.num_steps,
    )
    return trained, jnp.concatenate([losses, loss_fn(trained, (x, y))[None]])


@functools.partial(jax.jit, static_argnames=("width", "config"))
def _width_run(keys, x, x_test, *, width: int, config: Config):
    """Init, NTK, GD training and NTK again, one seed after another, for one width.

    Returns ``(theta0, theta_t, losses, outputs)`` with ``outputs = (f_0(x), f_0(x_test),
    f_T(x_test))``, each with a leading seed axis.
    """
    from gradlab.ntk import empirical_ntk

    def one(key):
        params, apply_fn, loss_fn = _net(key, x, width, config)
        # the MLP treats examples independently: vmap_axes=0 says so, so that only the
        # per-example kernel is compiled (the default probe compiles the whole-batch one too)
        theta0 = empirical_ntk(apply_fn, params, x, vmap_axes=0)
        trained, losses = _train(params, loss_fn, x, config)
        outputs = _outputs(apply_fn, params, trained, x, x_test)
        return theta0, empirical_ntk(apply_fn, trained, x, vmap_axes=0), losses, outputs

    return jax.lax.map(one, keys)  # sequential: one wide net in memory at a time


@functools.partial(jax.jit, static_argnames=("width", "config"))
def _loss_run(keys, x, x_test, *, width: int, config: Config):
    """Init and GD training only (no kernels), one seed after another: ``(losses, outputs)``."""

    def one(key):
        params, apply_fn, loss_fn = _net(key, x, width, config)
        trained, losses = _train(params, loss_fn, x, config)
        return losses, _outputs(apply_fn, params, trained, x, x_test)

    return jax.lax.map(one, keys)


def run(config: Config, progress) -> dict:
    """Sweep the widths: kernel error at init, kernel drift and losses over training."""
    from gradlab.data import unit_circle
    from gradlab.experiments._common import loglog_slope
    from gradlab.ntk import infinite_mlp

    if not 1 <= config.num_seeds <= config.num_loss_seeds:
        raise ValueError(
            f"need 1 <= num_seeds <= num_loss_seeds, got {config.num_seeds} and "
            f"{config.num_loss_seeds}"
        )
    x = unit_circle(config.num_train)
    x_test = held_out_inputs(config.num_test)
    kernel_fn = infinite_mlp(
        config.depth, activation="relu", weight_std=config.weight_std, bias_std=config.bias_std
    )
    limit = kernel_fn(x)
    theta_inf = limit.ntk
    theta_inf_test = kernel_fn(x_test, x).ntk
    distance = jax.jit(
        jax.vmap(
            lambda f0, f0_test, ft_test: function_distance(
                f0,
                f0_test,
                ft_test,
                theta_inf,
                theta_inf_test,
                target(x),
                learning_rate=config.learning_rate,
                num_steps=config.num_steps,
            )
        )
    )
    key = jax.random.key(config.seed)
    per_width = []
    with progress(total=len(config.widths), desc="widths") as bar:
        for i, width in enumerate(config.widths):
            # nets 0..num_seeds-1 give the kernels and losses; the rest only losses
            keys = jax.random.split(jax.random.fold_in(key, i), config.num_loss_seeds)
            theta0, theta_t, losses, outputs = _width_run(
                keys[: config.num_seeds], x, x_test, width=width, config=config
            )
            if config.num_loss_seeds > config.num_seeds:
                more, more_out = _loss_run(
                    keys[config.num_seeds :], x, x_test, width=width, config=config
                )
                losses = jnp.concatenate([losses, more])
                outputs = jax.tree_util.tree_map(
                    lambda a, b: jnp.concatenate([a, b]), outputs, more_out
                )
            dists = np.asarray(distance(*outputs), np.float64)
            errs, drifts = jax.vmap(kernel_stats, in_axes=(0, 0, None))(theta0, theta_t, theta_inf)
            losses = np.asarray(losses, np.float64)
            final = losses[:, -1]
            per_width.append(
                {
                    "width": width,
                    "init_error": np.asarray(errs).tolist(),
                    "drift": np.asarray(drifts).tolist(),
                    "init_error_mean": float(np.mean(errs)),
                    "drift_mean": float(np.mean(drifts)),
                    "function_distance": dists.tolist(),
                    "function_distance_mean": float(dists.mean()),
                    "function_distance_sem": _sem(dists),
                    "final_loss": final.tolist(),
                    "final_loss_mean": float(final.mean()),
                    "final_loss_sem": _sem(final),
                    "final_loss_median": float(np.median(final)),
                    "final_loss_cv": float(final.std(ddof=1) / final.mean())
                    if len(final) > 1
                    else float("nan"),
                    "initial_loss_mean": float(losses[:, 0].mean()),
                    "loss_curve_mean": losses.mean(axis=0)[
                        :: max(1, config.num_steps // 100)
                    ].tolist(),
                    "theta0_row": np.asarray(theta0[0, 0]).tolist(),
                    "theta_t_row": np.asarray(theta_t[0, 0]).tolist(),
                }
            )
            bar.update()
    widths = [w["width"] for w in per_width]
    finals = np.array([w["final_loss_mean"] for w in per_width])
    sems = np.array([w["final_loss_sem"] for w in per_width])
    hi, lo = int(np.argmax(finals)), int(np.argmin(finals))
    return {
        "per_width": per_width,
        "theta_inf_row": np.asarray(theta_inf[0]).tolist(),
        "init_error_slope": loglog_slope(widths, [w["init_error_mean"] for w in per_width]),
        "drift_slope": loglog_slope(widths, [w["drift_mean"] for w in per_width]),
        "drift_widest": per_width[-1]["drift_mean"],
        "function_distance_slope": loglog_slope(
            widths, [w["function_distance_mean"] for w in per_width]
        ),
        "function_distance_widest": per_width[-1]["function_distance_mean"],
        "final_loss_ratio": float(finals[hi] / finals[lo]),
        # delta method: relative standard error of a ratio of two independent means
        "final_loss_ratio_rel_se": float(np.hypot(sems[hi] / finals[hi], sems[lo] / finals[lo])),
        "final_loss_ratio_widths": [widths[hi], widths[lo]],
        "final_loss_log_slope": loglog_slope(widths, finals.tolist()),
        # reference, not a check: the mean final loss of the infinite-width linearised net
        "final_loss_kernel_limit": linearised_loss(
            theta_inf,
            limit.nngp,
            target(x),
            learning_rate=config.learning_rate,
            num_steps=config.num_steps,
        ),
    }


def _sem(values: np.ndarray) -> float:
    """Standard error of the mean (``nan`` for a single value)."""
    if len(values) < 2:
        return float("nan")
    return float(values.std(ddof=1) / np.sqrt(len(values)))


def checks(config: Config, results: dict) -> list[Check]:
    """Slopes of the init error and drift, drift at the widest net, distance to the NTK prediction."""
    return [
        check(
            "log-log slope of ||Theta_0 - Theta_inf|| / ||Theta_inf|| vs width",
            results["init_error_slope"],
            "in",
            tuple(config.init_error_slope_range),
        ),
        check(
            "log-log slope of kernel drift ||Theta_T - Theta_0|| / ||Theta_0|| vs width",
            results["drift_slope"],
            "in",
            tuple(config.drift_slope_range),
        ),
        check(
            f"kernel drift at width {max(config.widths)}",
            results["drift_widest"],
            "<=",
            config.max_drift_widest,
        ),
        check(
            "log-log slope of the distance to the limiting-NTK prediction vs width",
            results["function_distance_slope"],
            "in",
            tuple(config.function_distance_slope_range),
        ),
        check(
            f"relative RMS distance to the limiting-NTK prediction at width {max(config.widths)}",
            results["function_distance_widest"],
            "<=",
            config.max_function_distance_widest,
        ),
    ]


EXPERIMENT = Experiment(
    name="ntk_width",
    title="Neural Tangent Kernel: Convergence and Generalization in Neural Networks",
    arxiv="1806.07572",
    cpu_time="~3.5 min",
    config_cls=Config,
    run=run,
    checks=checks,
    plot=plot,
    description="the empirical NTK converges to the infinite-width kernel like width^-1/2 and "
    "moves during training like width^-1",
)
