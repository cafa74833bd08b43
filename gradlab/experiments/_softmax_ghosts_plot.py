"""Figure of the ``softmax_ghosts`` reproduction: accuracy through the learning-rate spike,
retention against the normalised step, 2/lambda_max against the softmax radius."""

from __future__ import annotations

from typing import Any

import numpy as np


def plot(config: Any, results: dict):
    """Accuracy through the spike; retention against r; 2/lambda_max against rho_a."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    steps = np.arange(1, config.num_steps + 1)
    for i, lr in enumerate(config.base_lrs):
        ax.plot(
            steps,
            results["plain"]["accuracy_trace_median"][i],
            "--",
            color=f"C{i}",
            label=f"Adam lr {lr:g}",
        )
        ax.plot(
            steps,
            results["controller"]["accuracy_trace_median"][i],
            "-",
            color=f"C{i}",
            label=f"Adam + radius, lr {lr:g}",
        )
    ax.axvline(config.spike_step, color="k", lw=1, ls=":")
    ax.set(
        xlabel="step",
        ylabel="test accuracy (median over seeds)",
        ylim=(0, 1.02),
        title=f"lr x{config.spike_factor:g} from step {config.spike_step}",
    )
    ax.legend(fontsize=7)

    ax = axes[1]
    r = np.asarray(results["r"])
    ret = np.asarray(results["single_step"]["retention"]).reshape(-1, r.size)
    for row in ret:
        ax.semilogx(r, row, color="0.7", lw=0.8)
    ax.semilogx(r, np.median(ret, axis=0), "o-", color="C3", label="median")
    ax.axvline(1.0, color="k", ls="--", lw=1, label="r = 1")
    ax.axhline(config.min_safe_retention, color="k", ls=":", lw=1)
    ax.set(
        xlabel="normalised step r = tau / rho_a",
        ylabel="train accuracy retained",
        title="one step along -g/|g|",
    )
    ax.legend(fontsize=8)

    ax = axes[2]
    s = results["single_step"]
    ax.loglog(s["rho"], s["hessian_step"], "o", color="C2", label="checkpoints (along -g)")
    lo = min(min(s["rho"]), min(s["hessian_step"])) / 2
    hi = max(max(s["rho"]), max(s["hessian_step"])) * 2
    ax.loglog([lo, hi], [lo, hi], "k--", lw=1, label="2/lambda_max = rho_a")
    ax.set(
        xlabel="softmax radius rho_a along -g/|g|",
        ylabel="2 / lambda_max(H)",
        title=f"2/lambda_max within {min(s['hessian_radius_factor']):.1f}-"
        f"{max(s['hessian_radius_factor']):.1f}x of rho_a;\n2/(u'Hu) is "
        f"{np.median(s['directional_factor']):.0f}x rho_a(u)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
