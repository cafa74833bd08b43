"""Plotting helpers for spectral densities (matplotlib is imported only when a plot is drawn)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from gradlab.spectral._slq import SpectralDensity, density_band, density_grid

__all__ = ["plot_density"]


def plot_density(
    spectral_density: SpectralDensity,
    *,
    key: jax.Array | None = None,
    ax: Any = None,
    grid: Any = None,
    sigma: float | None = None,
    level: float = 0.9,
    num_bootstrap: int = 200,
    log_scale: bool = False,
    label: str | None = None,
    color: str | None = None,
) -> Any:
    """Draw a smoothed SLQ density, with its bootstrap band when ``key`` is given.

    The grid and kernel width default to :func:`gradlab.spectral.density_grid`'s rule. With
    ``key``, the shaded band is :func:`gradlab.spectral.density_band` at ``level``.
    ``log_scale=True`` puts the density on a log axis (clipped at ``1e-8``), the usual view of
    Hessian spectra whose bulk is many orders above the outliers.

    Args:
        spectral_density: the output of :func:`gradlab.spectral.slq`.
        key: PRNG key for the bootstrap band; no band if None.
        ax: a matplotlib ``Axes`` (a new figure is made if None).
        grid: evaluation points; default from :func:`gradlab.spectral.density_grid`.
        sigma: kernel width; default from :func:`gradlab.spectral.density_grid`.
        level: band coverage.
        num_bootstrap: bootstrap resamples for the band.
        log_scale: logarithmic density axis.
        label: legend label of the curve.
        color: matplotlib colour of curve and band.

    Returns:
        The matplotlib ``Axes``.

    Examples:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> from gradlab.spectral.plot import plot_density
        >>> a = jnp.diag(jnp.linspace(0.0, 1.0, 50))
        >>> sd = gl.spectral.slq(lambda v: a @ v, jnp.zeros(50), key=jax.random.key(0),
        ...                      num_probes=4, num_matvecs=10)
        >>> ax = plot_density(sd, key=jax.random.key(1), label="diag")
        >>> len(ax.lines)
        1
    """
    import matplotlib.pyplot as plt  # lazily: importing gradlab must stay light

    if grid is None or sigma is None:
        auto_grid, auto_sigma = density_grid(spectral_density)
        grid = auto_grid if grid is None else grid
        sigma = float(auto_sigma) if sigma is None else sigma
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    band = density_band(
        spectral_density,
        grid,
        sigma=sigma,
        key=jax.random.key(0) if key is None else key,
        num_bootstrap=num_bootstrap,
        level=level,
    )
    x = np.asarray(grid)
    floor = 1e-8 if log_scale else 0.0
    (line,) = ax.plot(x, np.maximum(np.asarray(band.density), floor), label=label, color=color)
    if key is not None:
        ax.fill_between(
            x,
            np.maximum(np.asarray(band.lower), floor),
            np.maximum(np.asarray(band.upper), floor),
            color=line.get_color(),
            alpha=0.25,
            linewidth=0,
            label=f"{round(100 * level)}% bootstrap band",
        )
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    if label is not None:
        ax.legend()
    return ax
