"""gradlab.ntk: empirical NTK, the NTK as an operator, infinite-width kernels, kernel predictions."""

from gradlab.ntk._infinite import Kernel, infinite_mlp

__all__ = ["Kernel", "infinite_mlp"]
