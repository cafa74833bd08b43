"""Seed-paper optimizers and gradient transformations as optax ``GradientTransformation``s.

Each paper lives in its own private module and exports ``scale_by_<name>(...)`` (the
transformation), ``<name>(learning_rate, ...)`` (the alias chained with
``optax.scale_by_learning_rate``) and ``<Name>State`` (its state). Every transform is in the
contract suite ``tests/transforms/test_contract.py``.
"""

# Two helpers edit this file at the same time: each edits ONLY its own block below.

# --- transforms-A ---
from gradlab.transforms._adabelief import AdaBeliefState as AdaBeliefState
from gradlab.transforms._adabelief import adabelief as adabelief
from gradlab.transforms._adabelief import scale_by_adabelief as scale_by_adabelief
from gradlab.transforms._adaptive_memory import AdaptiveMemoryState as AdaptiveMemoryState
from gradlab.transforms._adaptive_memory import am_adamw as am_adamw
from gradlab.transforms._adaptive_memory import am_sgd as am_sgd
from gradlab.transforms._adaptive_memory import scale_by_adaptive_memory as scale_by_adaptive_memory
from gradlab.transforms._diffgrad import DiffGradState as DiffGradState
from gradlab.transforms._diffgrad import diffgrad as diffgrad
from gradlab.transforms._diffgrad import scale_by_diffgrad as scale_by_diffgrad
from gradlab.transforms._gradient_noise import AnnealedNoiseState as AnnealedNoiseState
from gradlab.transforms._gradient_noise import annealed_noise as annealed_noise
from gradlab.transforms._gradient_noise import scale_by_annealed_noise as scale_by_annealed_noise
from gradlab.transforms._noise_adaptive_lr import LantonState as LantonState
from gradlab.transforms._noise_adaptive_lr import lanton as lanton
from gradlab.transforms._noise_adaptive_lr import scale_by_lanton as scale_by_lanton

_A_NAMES: list[str] = [
    "AdaBeliefState",
    "AdaptiveMemoryState",
    "AnnealedNoiseState",
    "DiffGradState",
    "LantonState",
    "adabelief",
    "am_adamw",
    "am_sgd",
    "annealed_noise",
    "diffgrad",
    "lanton",
    "scale_by_adabelief",
    "scale_by_adaptive_memory",
    "scale_by_annealed_noise",
    "scale_by_diffgrad",
    "scale_by_lanton",
]
# --- end transforms-A ---

# --- transforms-B ---
from gradlab.transforms._adadagrad import AdAdaGradState as AdAdaGradState  # noqa: E402
from gradlab.transforms._adadagrad import adadagrad as adadagrad  # noqa: E402
from gradlab.transforms._adadagrad import batch_size_tests as batch_size_tests  # noqa: E402
from gradlab.transforms._adadagrad import scale_by_adadagrad as scale_by_adadagrad  # noqa: E402
from gradlab.transforms._adaptive_batch import AdaptiveBatchRun as AdaptiveBatchRun  # noqa: E402
from gradlab.transforms._adaptive_batch import (  # noqa: E402
    adaptive_batch_training as adaptive_batch_training,
)
from gradlab.transforms._adaptive_projective import (  # noqa: E402
    AdaptiveProjectionState as AdaptiveProjectionState,
)
from gradlab.transforms._adaptive_projective import adaptive_projective_gd as adaptive_projective_gd  # noqa: E402
from gradlab.transforms._adaptive_projective import merging_coefficients as merging_coefficients  # noqa: E402
from gradlab.transforms._adaptive_projective import merging_gap_losses as merging_gap_losses  # noqa: E402
from gradlab.transforms._adaptive_projective import (  # noqa: E402
    scale_by_adaptive_projection as scale_by_adaptive_projection,
)
from gradlab.transforms._adaptive_projective import shared_subspace as shared_subspace  # noqa: E402
from gradlab.transforms._dicesgd import DiceSGDState as DiceSGDState  # noqa: E402
from gradlab.transforms._dicesgd import dicesgd as dicesgd  # noqa: E402
from gradlab.transforms._dicesgd import scale_by_dicesgd as scale_by_dicesgd  # noqa: E402
from gradlab.transforms._normalized_gd import NormalizedGDState as NormalizedGDState  # noqa: E402
from gradlab.transforms._normalized_gd import normalized_gd as normalized_gd  # noqa: E402
from gradlab.transforms._normalized_gd import scale_by_normalized_gd as scale_by_normalized_gd  # noqa: E402
from gradlab.transforms._pcgrad import PCGradState as PCGradState  # noqa: E402
from gradlab.transforms._pcgrad import pcgrad as pcgrad  # noqa: E402
from gradlab.transforms._pcgrad import scale_by_pcgrad as scale_by_pcgrad  # noqa: E402
from gradlab.transforms._subspace import RandomSubspaceState as RandomSubspaceState  # noqa: E402
from gradlab.transforms._subspace import random_subspace as random_subspace  # noqa: E402
from gradlab.transforms._subspace import random_subspace_basis as random_subspace_basis  # noqa: E402
from gradlab.transforms._subspace import scale_by_random_subspace as scale_by_random_subspace  # noqa: E402

_B_NAMES: list[str] = [
    "AdaptiveProjectionState",
    "adaptive_projective_gd",
    "merging_coefficients",
    "merging_gap_losses",
    "scale_by_adaptive_projection",
    "shared_subspace",
    "AdAdaGradState",
    "AdaptiveBatchRun",
    "adadagrad",
    "adaptive_batch_training",
    "batch_size_tests",
    "scale_by_adadagrad",
    "DiceSGDState",
    "NormalizedGDState",
    "PCGradState",
    "dicesgd",
    "normalized_gd",
    "pcgrad",
    "scale_by_dicesgd",
    "scale_by_normalized_gd",
    "scale_by_pcgrad",
    "RandomSubspaceState",
    "random_subspace",
    "random_subspace_basis",
    "scale_by_random_subspace",
]
# --- end transforms-B ---

# --- kfac ---
from gradlab.transforms._kfac import KFACState as KFACState  # noqa: E402
from gradlab.transforms._kfac import kfac as kfac  # noqa: E402
from gradlab.transforms._kfac import scale_by_kfac as scale_by_kfac  # noqa: E402

_KFAC_NAMES: list[str] = ["KFACState", "kfac", "scale_by_kfac"]
# --- end kfac ---

__all__ = [*_A_NAMES, *_B_NAMES, *_KFAC_NAMES]
