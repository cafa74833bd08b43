"""Small flax models and losses used by experiments, tests, benchmarks and notebooks.

The core subpackages never import this module; use it in your own scripts for quick setups.
"""

# The losses are gradlab.curvature's: they carry closed-form output Hessians, so ggn() on a
# model trained with them never differentiates twice through log_softmax.
from gradlab.curvature import mse, softmax_cross_entropy
from gradlab.models._lsa import LinearSelfAttention as LinearSelfAttention
from gradlab.models._lsa import init_lsa as init_lsa
from gradlab.models._mlp import MLP, TinyCNN, init_cnn, init_mlp
from gradlab.models._ntk_mlp import NTKMLP as NTKMLP
from gradlab.models._ntk_mlp import NTKDense as NTKDense
from gradlab.models._ntk_mlp import init_ntk_mlp as init_ntk_mlp

__all__ = [
    "MLP",
    "TinyCNN",
    "init_cnn",
    "init_mlp",
    "mse",
    "softmax_cross_entropy",
    "NTKDense",
    "NTKMLP",
    "init_ntk_mlp",
    "LinearSelfAttention",
    "init_lsa",
]
