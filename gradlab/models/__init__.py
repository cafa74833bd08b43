"""Small flax models and losses used by experiments, tests, benchmarks and notebooks.

The core subpackages never import this module; use it in your own scripts for quick setups.
"""

from gradlab.models._losses import mse, softmax_cross_entropy
from gradlab.models._mlp import MLP, TinyCNN, init_cnn, init_mlp

# --- ntk helper block ---
_NTK_NAMES: list[str] = []
# --- end ntk helper block ---

__all__ = ["MLP", "TinyCNN", "init_cnn", "init_mlp", "mse", "softmax_cross_entropy", *_NTK_NAMES]
