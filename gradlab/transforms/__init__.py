"""Seed-paper optimizers and gradient transformations as optax ``GradientTransformation``s.

Each paper lives in its own private module and exports ``scale_by_<name>(...)`` (the
transformation), ``<name>(learning_rate, ...)`` (the alias chained with
``optax.scale_by_learning_rate``) and ``<Name>State`` (its state). Every transform is in the
contract suite ``tests/transforms/test_contract.py``.
"""

# Two helpers edit this file at the same time: each edits ONLY its own block below.

# --- transforms-A ---
from gradlab.transforms._adabelief import AdaBeliefState, adabelief, scale_by_adabelief
from gradlab.transforms._adaptive_memory import AdaptiveMemoryState, am_adamw, am_sgd, scale_by_adaptive_memory
from gradlab.transforms._diffgrad import DiffGradState, diffgrad, scale_by_diffgrad
from gradlab.transforms._gradient_noise import AnnealedNoiseState, annealed_noise, scale_by_annealed_noise

_A_NAMES: list[str] = [
    "AnnealedNoiseState",
    "annealed_noise",
    "scale_by_annealed_noise",
    "AdaBeliefState",
    "adabelief",
    "scale_by_adabelief",
    "AdaptiveMemoryState",
    "am_adamw",
    "am_sgd",
    "scale_by_adaptive_memory",
    "DiffGradState",
    "diffgrad",
    "scale_by_diffgrad",
]
# --- end transforms-A ---

# --- transforms-B ---
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

__all__ = [*_A_NAMES, *_B_NAMES]
