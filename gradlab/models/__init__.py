"""Small flax models and losses used by experiments, tests, benchmarks and notebooks.

The core subpackages never import this module; use it in your own scripts for quick setups.
"""

# The losses are gradlab.curvature's: they carry closed-form output Hessians, so ggn() on a
# model trained with them never differentiates twice through log_softmax.
from gradlab.curvature import mse, softmax_cross_entropy
from gradlab.models._mlp import MLP, TinyCNN, init_cnn, init_mlp

# --- ntk helper block ---
from gradlab.models._ntk_mlp import NTKMLP as NTKMLP
from gradlab.models._ntk_mlp import NTKDense as NTKDense
from gradlab.models._ntk_mlp import init_ntk_mlp as init_ntk_mlp

_NTK_NAMES: list[str] = ["NTKDense", "NTKMLP", "init_ntk_mlp"]
# --- end ntk helper block ---

# --- lsa block ---
from gradlab.models._lsa import LinearSelfAttention as LinearSelfAttention  # noqa: E402
from gradlab.models._lsa import init_lsa as init_lsa  # noqa: E402

_LSA_NAMES: list[str] = ["LinearSelfAttention", "init_lsa"]
# --- end lsa block ---

__all__ = [
    "MLP",
    "TinyCNN",
    "init_cnn",
    "init_mlp",
    "mse",
    "softmax_cross_entropy",
    *_NTK_NAMES,
    *_LSA_NAMES,
]
