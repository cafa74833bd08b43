"""gradlab.landscape: the loss on lines and planes through the params (loss-landscape slices).

- :func:`line` and :func:`plane`: the loss at ``params + alpha d`` or ``params + alpha d1 +
  beta d2`` over a grid, vmapped in chunks so memory stays bounded.
- :func:`random_direction`: Gaussian directions with Li et al.'s filter-wise normalisation
  (or layer-wise, or none); :func:`normalize_direction` applies the same rescaling to any
  direction; :func:`eigen_direction` takes an eigenvector from :func:`gradlab.spectral.eigsh`.

Plotting lives in :mod:`gradlab.landscape.plot` (imports matplotlib lazily).
"""

from gradlab.landscape._directions import eigen_direction, normalize_direction, random_direction
from gradlab.landscape._grid import line, plane

__all__ = [
    "eigen_direction",
    "line",
    "normalize_direction",
    "plane",
    "random_direction",
]
