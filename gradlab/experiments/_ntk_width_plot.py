"""Figure of the ``ntk_width`` reproduction: kernel error and drift vs width, a kernel row,
loss curves and final loss vs width."""

from __future__ import annotations

from typing import Any

import numpy as np


def plot(config: Any, results: dict):
    """Kernel error and drift vs width, a kernel row, loss curves, final loss vs width."""
    import matplotlib.pyplot as plt

    per_width = results["per_width"]
    widths = np.array([w["width"] for w in per_width], float)
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    ax = axes[0]
    for name, label, slope in (
        ("init_error", "||Theta_0 - Theta_inf|| / ||Theta_inf||", results["init_error_slope"]),
        ("drift", "||Theta_T - Theta_0|| / ||Theta_0||", results["drift_slope"]),
        (
            "function_distance",
            "||f_T - f_T^NTK|| / ||f_T^NTK|| (held out)",
            results["function_distance_slope"],
        ),
    ):
        vals = np.array([w[name] for w in per_width])
        ax.plot(np.repeat(widths, vals.shape[1]), vals.ravel(), ".", alpha=0.35)
        ax.plot(widths, vals.mean(1), "o-", label=f"{label} (slope {slope:.2f})")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="width",
        ylabel="relative distance (Frobenius / RMS)",
        title="NTK error at init, drift, distance to kernel GD",
    )
    ax.legend(fontsize=8)

    angles = np.arange(config.num_train) * 2 * np.pi / config.num_train
    ax = axes[1]
    ax.plot(angles, results["theta_inf_row"], "k-", lw=2, label="infinite width")
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(per_width)))
    for color, w in zip(colors, per_width, strict=True):
        ax.plot(angles, w["theta0_row"], "--", color=color, lw=1, label=f"n={w['width']} init")
        ax.plot(angles, w["theta_t_row"], ":", color=color, lw=1)
    ax.set(
        xlabel="angle of x (x0 at angle 0)",
        ylabel="Theta(x0, x)",
        title="Kernel row: init (dashed), after training (dotted)",
    )
    ax.legend(fontsize=7)

    ax = axes[2]
    for color, w in zip(colors, per_width, strict=True):
        steps = np.arange(len(w["loss_curve_mean"])) * max(1, config.num_steps // 100)
        ax.plot(steps, w["loss_curve_mean"], color=color, label=f"n={w['width']}")
    ax.set(
        yscale="log",
        xlabel="GD step",
        ylabel=f"training loss (mean of {config.num_loss_seeds} seeds)",
        title="Training on x1*x2",
    )
    ax.legend(fontsize=8)

    ax = axes[3]
    finals = np.array([w["final_loss"] for w in per_width])
    jitter = np.exp(np.linspace(-0.08, 0.08, finals.shape[1]))
    ax.plot((widths[:, None] * jitter).ravel(), finals.ravel(), ".", color="0.6", alpha=0.5)
    means = np.array([w["final_loss_mean"] for w in per_width])
    sems = np.array([w["final_loss_sem"] for w in per_width])
    ax.errorbar(widths, means, yerr=sems, fmt="o-", capsize=3, label="mean +- s.e.m.")
    ax.axhline(
        results["final_loss_kernel_limit"],
        color="C3",
        ls="--",
        lw=1,
        label="infinite-width linearised net",
    )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="width",
        ylabel="final training loss",
        title=f"Final loss: max/min of means {results['final_loss_ratio']:.2f} "
        f"(+- {100 * results['final_loss_ratio_rel_se']:.0f}%)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
