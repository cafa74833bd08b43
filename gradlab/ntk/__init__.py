"""gradlab.ntk: empirical NTK, the NTK as an operator, infinite-width kernels, kernel predictions."""

from gradlab.ntk._empirical import (
    empirical_ntk,
    jacobian_contraction,
    ntk_vector_products,
    structured,
)
from gradlab.ntk._infinite import Kernel, infinite_mlp

__all__ = [
    "Kernel",
    "empirical_ntk",
    "infinite_mlp",
    "jacobian_contraction",
    "ntk_vector_products",
    "structured",
]
