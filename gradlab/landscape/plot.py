"""Plotting helpers for loss-landscape slices (matplotlib is imported only when a plot is drawn)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["plot_line", "plot_plane"]


def plot_line(
    alphas: Any,
    losses: Any,
    *,
    ax: Any = None,
    log_scale: bool = False,
    label: str | None = None,
    color: str | None = None,
) -> Any:
    """Draw a 1-D loss slice from :func:`gradlab.landscape.line`.

    Args:
        alphas: ``(n,)`` step sizes.
        losses: ``(n,)`` losses at those steps.
        ax: a matplotlib ``Axes`` (a new figure is made if None).
        log_scale: logarithmic loss axis.
        label: legend label of the curve.
        color: matplotlib colour of the curve.

    Returns:
        The matplotlib ``Axes``.

    Examples:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import jax.numpy as jnp
        >>> from gradlab.landscape.plot import plot_line
        >>> a = jnp.linspace(-1.0, 1.0, 5)
        >>> ax = plot_line(a, a**2, label="quadratic")
        >>> len(ax.lines)
        1
    """
    import matplotlib.pyplot as plt  # lazily: importing gradlab must stay light

    x, y = np.asarray(alphas), np.asarray(losses)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"alphas has shape {x.shape} and losses {y.shape}: expected two 1-D arrays of the "
            "same length"
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(x, y, label=label, color=color)
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel(r"$\alpha$")
    ax.set_ylabel("loss")
    if label is not None:
        ax.legend()
    return ax


def plot_plane(
    alphas: Any,
    betas: Any,
    losses: Any,
    *,
    ax: Any = None,
    levels: int = 20,
    filled: bool = False,
    log_scale: bool = False,
    cmap: str = "viridis",
) -> Any:
    """Draw a 2-D loss slice from :func:`gradlab.landscape.plane` as contours.

    ``losses[i, j]`` is the loss at ``(alphas[i], betas[j])``: ``alphas`` run along the
    horizontal axis, ``betas`` along the vertical one. The centre ``(0, 0)`` is marked when it
    lies inside the grid.

    Args:
        alphas: ``(n,)`` steps along the first direction.
        betas: ``(m,)`` steps along the second direction.
        losses: ``(n, m)`` losses.
        ax: a matplotlib ``Axes`` (a new figure is made if None).
        levels: number of contour levels.
        filled: filled contours (``contourf``) instead of lines.
        log_scale: contour ``log10`` of the losses (they must be positive).
        cmap: matplotlib colormap name.

    Returns:
        The matplotlib ``Axes``.

    Examples:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import jax.numpy as jnp
        >>> from gradlab.landscape.plot import plot_plane
        >>> a, b = jnp.linspace(-1.0, 1.0, 5), jnp.linspace(-1.0, 1.0, 4)
        >>> ax = plot_plane(a, b, a[:, None] ** 2 + 2 * b[None, :] ** 2, filled=True)
        >>> tuple(float(v) for v in ax.get_xlim())
        (-1.0, 1.0)
    """
    import matplotlib.pyplot as plt  # lazily: importing gradlab must stay light

    x, y, z = np.asarray(alphas), np.asarray(betas), np.asarray(losses)
    if x.ndim != 1 or y.ndim != 1 or z.shape != (x.shape[0], y.shape[0]):
        raise ValueError(
            f"losses has shape {z.shape}: expected (len(alphas), len(betas)) = "
            f"({x.shape[0] if x.ndim == 1 else x.shape}, {y.shape[0] if y.ndim == 1 else y.shape})"
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4))
    if log_scale:
        z = np.log10(z)
    draw = ax.contourf if filled else ax.contour
    contours = draw(x, y, z.T, levels=levels, cmap=cmap)
    if not filled:
        ax.clabel(contours, inline=True, fontsize=7)
    if x.min() <= 0 <= x.max() and y.min() <= 0 <= y.max():
        ax.plot([0.0], [0.0], marker="*", color="k", markersize=8)
    ax.set_xlabel(r"$\alpha$")
    ax.set_ylabel(r"$\beta$")
    return ax
