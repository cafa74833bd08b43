"""Stochastic Lanczos quadrature: spectral densities, their smoothing and a bootstrap band."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradlab._src.errors import check_int, check_real
from gradlab._src.programs import compile_once
from gradlab._src.random import rademacher
from gradlab.distributed._context import follow_operator_mesh
from gradlab.spectral._common import eigh_high_precision, map_rows, prepare
from gradlab.spectral._lanczos import run_lanczos

__all__ = ["DensityBand", "SpectralDensity", "density", "density_band", "density_grid", "slq"]


class SpectralDensity(NamedTuple):
    r"""Gauss quadrature rules, one per probe, for the spectral measure of an operator.

    Probe ``p`` gives :math:`\frac1n \operatorname{tr} f(A) \approx \sum_j w_{pj} f(\theta_{pj})`,
    and the estimate of the spectral density is the average of the ``num_probes`` rules.

    Attributes:
        nodes: ``(num_probes, num_matvecs)`` Ritz values of each probe's tridiagonal.
        weights: ``(num_probes, num_matvecs)`` squared first components of its eigenvectors;
            each row sums to 1.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> sd = gl.spectral.SpectralDensity(jnp.array([[0.0, 1.0]]), jnp.array([[0.5, 0.5]]))
        >>> float(jnp.sum(sd.weights * sd.nodes))  # estimated tr(A) / n
        0.5
    """

    nodes: jax.Array
    weights: jax.Array


class DensityBand(NamedTuple):
    """A smoothed spectral density with a bootstrap confidence band (all ``(len(grid),)``).

    Attributes:
        density: the density of all probes (as :func:`density`).
        lower: lower ``(1 - level) / 2`` bootstrap quantile at each grid point.
        upper: upper ``(1 + level) / 2`` bootstrap quantile.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> sd = gl.spectral.SpectralDensity(jnp.array([[0.0], [1.0]]), jnp.ones((2, 1)))
        >>> band = gl.spectral.density_band(sd, jnp.linspace(-1, 2, 7), sigma=0.5,
        ...                                 key=jax.random.key(0))
        >>> band.density.shape, bool(jnp.all(band.lower <= band.upper))
        ((7,), True)
    """

    density: jax.Array
    lower: jax.Array
    upper: jax.Array


@follow_operator_mesh
@compile_once
def slq(
    matvec: Callable[[Any], Any],
    like: Any,
    *,
    key: jax.Array,
    num_probes: int,
    num_matvecs: int,
    chunk_size: int = 1,
    matvec_dtype: str | None = None,
) -> SpectralDensity:
    r"""Stochastic Lanczos quadrature (SLQ) estimate of the spectral density of ``matvec``.

    For each probe ``p`` a Rademacher vector :math:`z_p` is drawn, Lanczos (full
    reorthogonalisation) runs ``m = num_matvecs`` steps from :math:`q = z_p / \|z_p\|`, and the
    tridiagonal :math:`T_p = S \Theta S^\top` gives the Gauss quadrature rule with nodes
    :math:`\theta_{pj}` and weights :math:`w_{pj} = S_{1j}^2`:

    .. math:: q^\top f(A)\, q \approx \sum_j w_{pj} f(\theta_{pj}),

    exact for polynomials of degree ``< 2m``. Since :math:`\mathbb E[q q^\top] = I / n`, the
    average over probes estimates :math:`\frac1n \operatorname{tr} f(A) = \int f\, d\mu` for the
    spectral measure :math:`\mu = \frac1n\sum_i \delta_{\lambda_i}`. The tridiagonals are
    diagonalised in float64 when x64 is enabled. Probe ``p`` is the Rademacher vector drawn
    from ``jax.random.split(key, num_probes)[p]`` on the raveled vector (one random bit per
    entry, ``gradlab._src.random.rademacher``), so results are reproducible.

    Cost: ``num_probes * num_matvecs`` matvecs; memory ``O(chunk_size * m * n)``.

    Args:
        matvec: symmetric operator on pytrees shaped like ``like``.
        like: a pytree with the structure, shapes and dtypes of the vectors.
        key: PRNG key for the probes.
        num_probes: number of probe vectors, ``>= 1``.
        num_matvecs: Lanczos depth per probe, ``1 <= m <= n``.
        chunk_size: probes run at once (vmapped); the rest are scanned. Under ``vmap`` the
            breakdown guard's branch is evaluated every step, so ``chunk_size > 1`` only pays
            off where the operator gains a lot from batching (accelerators).
        matvec_dtype: mixed precision. ``None`` (default): the operator gets vectors of
            ``like``'s dtype and everything runs in it. ``"bfloat16"``, ``"float16"``,
            ``"float32"`` or ``"float64"``: the vectors handed to ``matvec`` are cast to that
            dtype, its output is cast back, and the Lanczos recurrences and the tridiagonal eigensolves run in float32 (float64 when
            ``jax_enable_x64`` is on). See ``docs/spectral.md``, "Mixed precision".

    Returns:
        :class:`SpectralDensity` with ``nodes`` and ``weights`` of shape
        ``(num_probes, num_matvecs)``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> a = jnp.diag(jnp.linspace(0.0, 1.0, 50))
        >>> sd = gl.spectral.slq(lambda v: a @ v, jnp.zeros(50), key=jax.random.key(0),
        ...                      num_probes=4, num_matvecs=10)
        >>> sd.nodes.shape, jnp.allclose(sd.weights.sum(axis=1), 1.0)
        ((4, 10), Array(True, dtype=bool))
        >>> float(jnp.round(jnp.mean(jnp.sum(sd.weights * sd.nodes, axis=1)), 2))  # tr(A)/n
        0.5

    References:
        Ubaru, Chen & Saad, "Fast estimation of tr(f(A)) via stochastic Lanczos quadrature",
        SIAM J. Matrix Anal. Appl. 2017. Ghorbani, Krishnan & Xiao, "An investigation into
        neural net optimization via Hessian eigenvalue density", ICML 2019,
        https://arxiv.org/abs/1901.10159.
    """
    mv, n, dtype, _ = prepare(matvec, like, matvec_dtype=matvec_dtype)
    num_probes = check_int("num_probes", num_probes, 1, None)
    m = check_int("num_matvecs", num_matvecs, 1, n)
    chunk_size = check_int("chunk_size", chunk_size, 1, None)
    keys = jax.random.split(key, num_probes)

    def one(k):
        z = rademacher(k, (n,), dtype)
        res = run_lanczos(mv, z, m)
        t = jnp.diag(res.alphas) + jnp.diag(res.betas, 1) + jnp.diag(res.betas, -1)
        vals, vecs = eigh_high_precision(t)
        return vals, vecs[0] ** 2

    nodes, weights = map_rows(one, keys, chunk_size)
    return SpectralDensity(nodes, weights)


def _gaussian_mixture(nodes, weights, grid, sigma):
    """Per-probe smoothed densities, shape ``(num_probes, len(grid))``."""
    z = (grid[None, None, :] - nodes[:, :, None]) / sigma
    kern = jnp.exp(-0.5 * z * z) / (sigma * jnp.sqrt(2.0 * jnp.pi))
    return jnp.einsum("pj,pjg->pg", weights, kern)


def _check_density(spectral_density: Any) -> None:
    if not isinstance(spectral_density, SpectralDensity):
        raise TypeError(
            f"spectral_density must be a SpectralDensity (the output of slq), got "
            f"{type(spectral_density).__name__}"
        )


def density(spectral_density: SpectralDensity, grid: jax.Array, *, sigma: float) -> jax.Array:
    r"""Gaussian-smoothed spectral density on ``grid``.

    .. math:: \hat\phi(x) = \frac1P \sum_{p=1}^P \sum_j w_{pj}\,
        \frac{1}{\sigma\sqrt{2\pi}} e^{-(x - \theta_{pj})^2 / (2\sigma^2)},

    a probability density: it integrates to 1 over the real line (to ~1 on a grid that extends
    a few ``sigma`` past the extreme nodes; see :func:`density_grid`).

    Args:
        spectral_density: the output of :func:`slq`.
        grid: ``(G,)`` points at which to evaluate the density.
        sigma: Gaussian kernel width, ``> 0``.

    Returns:
        ``(G,)`` density values.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> a = jnp.diag(jnp.linspace(-1.0, 1.0, 40))
        >>> sd = gl.spectral.slq(lambda v: a @ v, jnp.zeros(40), key=jax.random.key(0),
        ...                      num_probes=3, num_matvecs=8)
        >>> grid, sigma = gl.spectral.density_grid(sd)
        >>> phi = gl.spectral.density(sd, grid, sigma=sigma)
        >>> float(jnp.round(jnp.sum(phi) * (grid[1] - grid[0]), 3))
        1.0
    """
    _check_density(spectral_density)
    sigma = check_real("sigma", sigma, 0.0, None, lo_open=True)
    grid = jnp.asarray(grid, spectral_density.nodes.dtype)
    if grid.ndim != 1:
        raise ValueError(f"grid must be one-dimensional, got shape {grid.shape}")
    per_probe = _gaussian_mixture(spectral_density.nodes, spectral_density.weights, grid, sigma)
    return jnp.mean(per_probe, axis=0)


def density_band(
    spectral_density: SpectralDensity,
    grid: jax.Array,
    *,
    sigma: float,
    key: jax.Array,
    num_bootstrap: int = 200,
    level: float = 0.9,
) -> DensityBand:
    r"""Smoothed density with a pointwise bootstrap confidence band over probes.

    The ``P`` probes are resampled with replacement ``num_bootstrap`` times; each resample's
    smoothed density is the mean of its probes' densities, and the band is the pointwise
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled densities (percentile
    bootstrap). It reflects the probe-to-probe (Monte-Carlo) variability only, not the
    quadrature bias of a short Lanczos depth; with one probe the band is degenerate.

    Args:
        spectral_density: the output of :func:`slq`.
        grid: ``(G,)`` evaluation points.
        sigma: Gaussian kernel width, ``> 0``.
        key: PRNG key for the resampling.
        num_bootstrap: number of bootstrap resamples, ``>= 2``.
        level: coverage of the band, in ``(0, 1)``.

    Returns:
        :class:`DensityBand` with ``density``, ``lower``, ``upper``, each ``(G,)``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> a = jnp.diag(jnp.linspace(0.0, 1.0, 60))
        >>> sd = gl.spectral.slq(lambda v: a @ v, jnp.zeros(60), key=jax.random.key(0),
        ...                      num_probes=8, num_matvecs=10)
        >>> grid, sigma = gl.spectral.density_grid(sd, num_points=64)
        >>> band = gl.spectral.density_band(sd, grid, sigma=sigma, key=jax.random.key(1))
        >>> bool(jnp.all(band.lower <= band.upper))
        True

    References:
        Efron & Tibshirani, *An Introduction to the Bootstrap*, Chapman & Hall 1993.
    """
    _check_density(spectral_density)
    sigma = check_real("sigma", sigma, 0.0, None, lo_open=True)
    num_bootstrap = check_int("num_bootstrap", num_bootstrap, 2, None)
    level = check_real("level", level, 0.0, 1.0, lo_open=True, hi_open=True)
    grid = jnp.asarray(grid, spectral_density.nodes.dtype)
    per_probe = _gaussian_mixture(spectral_density.nodes, spectral_density.weights, grid, sigma)
    num_probes = per_probe.shape[0]
    idx = jax.random.randint(key, (num_bootstrap, num_probes), 0, num_probes)
    counts = jax.vmap(lambda i: jnp.bincount(i, length=num_probes))(idx)
    resampled = counts.astype(per_probe.dtype) @ per_probe / num_probes
    lower = jnp.quantile(resampled, (1.0 - level) / 2.0, axis=0)
    upper = jnp.quantile(resampled, (1.0 + level) / 2.0, axis=0)
    return DensityBand(jnp.mean(per_probe, axis=0), lower, upper)


def density_grid(
    spectral_density: SpectralDensity,
    *,
    num_points: int = 512,
    resolution: float = 0.01,
    pad: float = 5.0,
) -> tuple[jax.Array, jax.Array]:
    r"""Choose an evaluation grid and a kernel width from the range of the nodes.

    Rule: with :math:`[\theta_{\min}, \theta_{\max}]` the range of all nodes and width
    :math:`w = \theta_{\max} - \theta_{\min}` (or :math:`\max(|\theta_{\max}|, 1)` if the range
    is a single point), ``sigma = resolution * w`` and the grid is ``num_points`` evenly spaced
    points on :math:`[\theta_{\min} - \text{pad}\,\sigma,\ \theta_{\max} + \text{pad}\,\sigma]`,
    so that the smoothed density integrates to 1 up to ~``1e-6`` (``pad=5``). With the default
    resolution of 1 %, features narrower than 1 % of the spectral range are blurred; Hessian
    spectra with huge outliers may need a log-scale view of the bulk instead.

    Args:
        spectral_density: the output of :func:`slq`.
        num_points: number of grid points, ``>= 2``.
        resolution: ``sigma`` as a fraction of the node range, ``> 0``.
        pad: how many ``sigma`` the grid extends beyond the extreme nodes, ``>= 0``.

    Returns:
        ``(grid, sigma)``: ``(num_points,)`` array and a scalar array.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> sd = gl.spectral.SpectralDensity(jnp.array([[0.0, 2.0]]), jnp.array([[0.5, 0.5]]))
        >>> grid, sigma = gl.spectral.density_grid(sd, num_points=5)
        >>> [round(float(g), 3) for g in grid], round(float(sigma), 3)
        ([-0.1, 0.45, 1.0, 1.55, 2.1], 0.02)
    """
    _check_density(spectral_density)
    num_points = check_int("num_points", num_points, 2, None)
    resolution = check_real("resolution", resolution, 0.0, None, lo_open=True)
    pad = check_real("pad", pad, 0.0, None)
    nodes = spectral_density.nodes
    lo, hi = jnp.min(nodes), jnp.max(nodes)
    width = hi - lo
    width = jnp.where(width > 0, width, jnp.maximum(jnp.abs(hi), 1.0))
    sigma = resolution * width
    grid = jnp.linspace(lo - pad * sigma, hi + pad * sigma, num_points)
    return grid, sigma
