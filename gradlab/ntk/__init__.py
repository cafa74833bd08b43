"""gradlab.ntk: empirical NTK, the NTK as an operator, infinite-width kernels, kernel predictions.

- :func:`empirical_ntk` (and :func:`jacobian_contraction`, :func:`ntk_vector_products`,
  :func:`structured`): the finite-width kernel with neural-tangents' shape contract.
- :func:`ntk_operator`: ``v -> Theta v`` without forming the kernel, for
  :mod:`gradlab.spectral`; :func:`max_learning_rate`, :func:`condition_number`,
  :func:`effective_rank` built on it.
- :func:`infinite_mlp`: closed-form NNGP/NTK of infinitely wide ReLU/erf MLPs.
- :func:`gradient_descent_mse`, :func:`gp_inference`, :func:`linearize`: kernel-regime
  predictions.
"""

from gradlab.ntk._empirical import empirical_ntk
from gradlab.ntk._implementations import jacobian_contraction, ntk_vector_products
from gradlab.ntk._infinite import Kernel, infinite_mlp
from gradlab.ntk._operator import ntk_operator
from gradlab.ntk._predict import Gaussian, gp_inference, gradient_descent_mse, linearize
from gradlab.ntk._structured import structured
from gradlab.ntk._summaries import (
    ConditionNumber,
    EffectiveRank,
    MaxLearningRate,
    condition_number,
    effective_rank,
    max_learning_rate,
)

__all__ = [
    "ConditionNumber",
    "EffectiveRank",
    "Gaussian",
    "Kernel",
    "MaxLearningRate",
    "condition_number",
    "effective_rank",
    "empirical_ntk",
    "gp_inference",
    "gradient_descent_mse",
    "infinite_mlp",
    "jacobian_contraction",
    "linearize",
    "max_learning_rate",
    "ntk_operator",
    "ntk_vector_products",
    "structured",
]
