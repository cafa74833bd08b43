"""gradlab: a JAX functional research toolkit.

Curvature operators (:mod:`gradlab.curvature`), Krylov and randomized spectral algorithms
(:mod:`gradlab.spectral`), neural tangent kernels (:mod:`gradlab.ntk`), optax gradient
transformations from recent papers (:mod:`gradlab.transforms`) and attribution scores
(:mod:`gradlab.attribution`), all pure functions that compose with ``jax.jit`` and ``vmap``.

Importing :mod:`gradlab` is light: it loads the core subpackages only. ``gradlab.models``,
``gradlab.data`` and ``gradlab.experiments`` (which pull in flax models, scikit-learn and
matplotlib) are imported on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

from gradlab import attribution, curvature, distributed, landscape, ntk, spectral, transforms
from gradlab._version import __version__

_LAZY = ("models", "data", "experiments")

__all__ = [
    "__version__",
    "attribution",
    "curvature",
    "data",
    "distributed",
    "experiments",
    "landscape",
    "models",
    "ntk",
    "spectral",
    "transforms",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"gradlab.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'gradlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
