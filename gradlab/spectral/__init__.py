"""Krylov and randomized spectral algorithms on any matrix-free operator, all inside ``jit``.

Every algorithm takes a plain function ``matvec(v) -> Av`` on params-shaped pytrees (such as
:func:`gradlab.curvature.hessian`), flattens once at its boundary and runs in ``lax`` loops:

- :func:`lanczos`: tridiagonalisation with full reorthogonalisation and a breakdown guard.
- :func:`eigsh`: extreme eigenpairs by thick-restart Lanczos; :func:`power_iteration`.
- :func:`cg`: conjugate gradients with status fields, differentiable.

Plotting lives in :mod:`gradlab.spectral.plot` (imports matplotlib lazily).
"""

from gradlab.spectral._cg import Solution, cg
from gradlab.spectral._eigsh import Eigen, eigsh
from gradlab.spectral._lanczos import LanczosResult, lanczos
from gradlab.spectral._power import power_iteration

__all__ = [
    "Eigen",
    "LanczosResult",
    "Solution",
    "cg",
    "eigsh",
    "lanczos",
    "power_iteration",
]
