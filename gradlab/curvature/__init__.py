"""Matrix-free curvature operators on any params pytree.

Every constructor returns a plain function ``matvec(v) -> Av`` on pytrees shaped like the
params: the Hessian (:func:`hessian`), the generalised Gauss-Newton matrix (:func:`ggn`), the
Monte-Carlo Fisher (:func:`fisher`) and the empirical Fisher (:func:`empirical_fisher`).
:func:`kfac` and :func:`ekfac` approximate them block-diagonally with Kronecker factors that
can be inverted cheaply. :func:`dense` materialises a small operator.
"""

from gradlab.curvature._accumulate import over_batches, stream
from gradlab.curvature._blocks import Block, param_paths, restrict
from gradlab.curvature._dense import dense
from gradlab.curvature._ekfac import ekfac
from gradlab.curvature._fisher import empirical_fisher, fisher
from gradlab.curvature._ggn import ggn
from gradlab.curvature._hessian import hessian
from gradlab.curvature._kfac import KFAC, Factors, kfac
from gradlab.curvature._kfac_eigen import EKFAC, EigenFactors
from gradlab.curvature._losses import mse, softmax_cross_entropy

__all__ = [
    "Block",
    "EKFAC",
    "EigenFactors",
    "Factors",
    "KFAC",
    "dense",
    "ekfac",
    "empirical_fisher",
    "fisher",
    "ggn",
    "hessian",
    "kfac",
    "mse",
    "over_batches",
    "param_paths",
    "restrict",
    "softmax_cross_entropy",
    "stream",
]
