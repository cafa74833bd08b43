"""Krylov and randomized spectral algorithms on any matrix-free operator, all inside ``jit``.

Every algorithm takes a plain function ``matvec(v) -> Av`` on params-shaped pytrees (such as
:func:`gradlab.curvature.hessian`), flattens once at its boundary and runs in ``lax`` loops:

- :func:`lanczos`: tridiagonalisation with full reorthogonalisation and a breakdown guard.
- :func:`eigsh`: extreme eigenpairs by thick-restart Lanczos; :func:`power_iteration`.
- :func:`slq`: stochastic Lanczos quadrature; :func:`density`, :func:`density_band` (bootstrap
  confidence band) and :func:`density_grid` turn it into a smoothed density.
- :func:`trace` (Hutchinson, Hutch++, XTrace, leaf-stratified Hutchinson) and :func:`diagonal`
  (Hutchinson, XDiag): randomized estimates with standard errors.
- :func:`cg`: conjugate gradients with status fields, differentiable.

Plotting lives in :mod:`gradlab.spectral.plot` (imports matplotlib lazily).
"""

from gradlab.spectral._cg import Solution, cg
from gradlab.spectral._diagonal import diagonal
from gradlab.spectral._eigsh import Eigen, eigsh
from gradlab.spectral._lanczos import LanczosResult, lanczos
from gradlab.spectral._power import power_iteration
from gradlab.spectral._slq import (
    DensityBand,
    SpectralDensity,
    density,
    density_band,
    density_grid,
    slq,
)
from gradlab.spectral._trace import Estimate, trace

__all__ = [
    "DensityBand",
    "Eigen",
    "Estimate",
    "LanczosResult",
    "Solution",
    "SpectralDensity",
    "cg",
    "density",
    "density_band",
    "density_grid",
    "diagonal",
    "eigsh",
    "lanczos",
    "power_iteration",
    "slq",
    "trace",
]
