r"""The Marchenko-Pastur law and the Kolmogorov-Smirnov distance of an SLQ spectrum to it.

Used by :mod:`gradlab.experiments.mp_overtraining` (re-exported there): the closed-form density
and CDF of the MP law with ratio :math:`\lambda` (and its atom at zero when
:math:`\lambda > 1`), the CDF of an SLQ quadrature, and the KS distance between the two.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ks_distance", "marchenko_pastur_cdf", "marchenko_pastur_density", "slq_cdf"]


def _edges(ratio: float) -> tuple[float, float]:
    s = math.sqrt(ratio)
    return (1.0 - s) ** 2, (1.0 + s) ** 2


def marchenko_pastur_density(x, ratio: float) -> np.ndarray:
    r"""Density of the continuous part of the Marchenko-Pastur law (unit variance).

    .. math:: \rho(x) = \frac{\sqrt{(b - x)(x - a)}}{2 \pi \lambda x}, \quad
        a, b = (1 \mp \sqrt{\lambda})^2,

    the limiting eigenvalue density of :math:`X^\top X / P` for :math:`X \in \mathbb{R}^{P
    \times N}` with i.i.d. unit-variance entries and :math:`N / P \to \lambda`. For
    :math:`\lambda > 1` it integrates to :math:`1 / \lambda`; the rest is an atom at zero.

    Examples:
        >>> import numpy as np
        >>> from gradlab.experiments.mp_overtraining import marchenko_pastur_density
        >>> x = np.linspace(0.0, 4.0, 200001)
        >>> round(float(np.trapezoid(marchenko_pastur_density(x, 0.25), x)), 4)
        1.0
    """
    a, b = _edges(ratio)
    x = np.asarray(x, dtype=np.float64)
    inside = (x > a) & (x < b) & (x > 0)
    safe = np.where(inside, x, 0.5 * (a + b))
    rho = np.sqrt(np.maximum((b - safe) * (safe - a), 0.0)) / (2.0 * np.pi * ratio * safe)
    return np.where(inside, rho, 0.0)


def marchenko_pastur_cdf(x, ratio: float) -> np.ndarray:
    r"""Exact CDF of the Marchenko-Pastur law with ratio :math:`\lambda = N/P` (unit variance).

    With :math:`x = m - r\cos\theta`, :math:`m = 1 + \lambda`, :math:`r = 2\sqrt\lambda`,
    :math:`\theta \in [0, \pi]`, integrating the density in closed form gives

    .. math:: F(x) = (1 - 1/\lambda)_+ \mathbb{1}[x \ge 0] + \frac{1}{2\pi\lambda}\Big[
        r \sin\theta + m\theta - 2|1 - \lambda| \arctan\Big(\frac{1 + \sqrt\lambda}
        {|1 - \sqrt\lambda|}\tan\frac\theta2\Big)\Big],

    the atom at zero existing for :math:`\lambda > 1` only (at :math:`\lambda = 1` the arctan
    term vanishes). Computed in float64.

    Args:
        x: points, any shape.
        ratio: :math:`\lambda = N / P > 0`.

    Returns:
        ``F(x)``, float64 array of the shape of ``x``.

    Examples:
        >>> from gradlab.experiments.mp_overtraining import marchenko_pastur_cdf
        >>> [round(float(v), 6) for v in marchenko_pastur_cdf([-1.0, 0.0, 9.0], 2.0)]
        [0.0, 0.5, 1.0]

    References:
        Marchenko & Pastur, "Distribution of eigenvalues for some sets of random matrices",
        Math. USSR-Sbornik 1967.
    """
    if not ratio > 0:
        raise ValueError(f"ratio={ratio!r} is out of range: expected ratio > 0")
    x = np.asarray(x, dtype=np.float64)
    a, b = _edges(ratio)
    m, r = 1.0 + ratio, 2.0 * math.sqrt(ratio)
    cos_theta = np.clip((m - np.clip(x, a, b)) / r, -1.0, 1.0)
    theta = np.arccos(cos_theta)
    cont = r * np.sin(theta) + m * theta
    if ratio != 1.0:
        k = (1.0 + math.sqrt(ratio)) / abs(1.0 - math.sqrt(ratio))
        half = np.where(theta >= np.pi, np.inf, np.tan(np.minimum(theta, np.pi) / 2.0))
        cont = cont - 2.0 * abs(1.0 - ratio) * np.arctan(k * half)
    cont = cont / (2.0 * np.pi * ratio)
    cont = np.where(x <= a, 0.0, np.where(x >= b, min(1.0, 1.0 / ratio), cont))
    atom = max(0.0, 1.0 - 1.0 / ratio) * (x >= 0.0)
    return atom + cont


# ----------------------------------------------------------------------------- SLQ CDF, KS


def slq_cdf(nodes, weights, x, *, zero_tol: float = 0.0) -> np.ndarray:
    r"""The SLQ estimate of the spectral CDF: :math:`\hat F(x) = \frac1{n_v} \sum_{p, j}
    w_{pj} \mathbb{1}[\theta_{pj} \le x]`.

    Nodes with :math:`|\theta| \le` ``zero_tol`` are treated as exact zeros (Lanczos returns the
    null space of a singular matrix as a node at zero up to rounding).

    Examples:
        >>> import numpy as np
        >>> from gradlab.experiments.mp_overtraining import slq_cdf
        >>> slq_cdf(np.array([[0.0, 2.0]]), np.array([[0.25, 0.75]]), [1.0, 2.0]).tolist()
        [0.25, 1.0]
    """
    nodes = np.asarray(nodes, np.float64)
    weights = np.asarray(weights, np.float64)
    nodes = np.where(np.abs(nodes) <= zero_tol, 0.0, nodes).ravel()
    weights = weights.ravel() / weights.sum()
    order = np.argsort(nodes)
    nodes, cum = nodes[order], np.cumsum(weights[order])
    idx = np.searchsorted(nodes, np.asarray(x, np.float64), side="right")
    return np.where(idx > 0, cum[np.maximum(idx - 1, 0)], 0.0)


def ks_distance(nodes, weights, ratio: float, *, zero_tol: float = 0.0) -> float:
    r"""Kolmogorov-Smirnov distance :math:`\sup_x |\hat F(x) - F_{MP}(x)|` between the SLQ CDF
    and the exact Marchenko-Pastur CDF.

    :math:`\hat F` is a step function and :math:`F_{MP}` is continuous and non-decreasing
    except for its atom at zero, so the supremum is attained at a node (from the left or the
    right) or at zero: evaluating both one-sided limits there gives the exact supremum.

    Examples:
        >>> import numpy as np
        >>> from gradlab.experiments.mp_overtraining import ks_distance
        >>> # one node at the median of the law: the CDFs differ by 1/2 on either side of it
        >>> round(ks_distance(np.array([[1.0]]), np.array([[1.0]]), 1e-12), 3)
        0.5
    """
    nodes = np.asarray(nodes, np.float64)
    snapped = np.where(np.abs(nodes) <= zero_tol, 0.0, nodes)
    pts = np.unique(np.concatenate([snapped.ravel(), [0.0]]))
    right = slq_cdf(nodes, weights, pts, zero_tol=zero_tol)
    left = slq_cdf(nodes, weights, np.nextafter(pts, -np.inf), zero_tol=zero_tol)
    f_right = marchenko_pastur_cdf(pts, ratio)
    f_left = np.where(pts == 0.0, 0.0, f_right)  # the MP law is continuous except at zero
    return float(max(np.max(np.abs(right - f_right)), np.max(np.abs(left - f_left))))


# ----------------------------------------------------------------------------- training
