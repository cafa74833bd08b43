"""Seed-paper optimizers and gradient transformations as optax ``GradientTransformation``s.

Each paper lives in its own private module and exports ``scale_by_<name>(...)`` (the
transformation), ``<name>(learning_rate, ...)`` (the alias chained with
``optax.scale_by_learning_rate``) and ``<Name>State`` (its state). Every transform is in the
contract suite ``tests/transforms/test_contract.py``.
"""

# Two helpers edit this file at the same time: each edits ONLY its own block below.

# --- transforms-A ---
from gradlab.transforms._adabelief import AdaBeliefState, adabelief, scale_by_adabelief
from gradlab.transforms._diffgrad import DiffGradState, diffgrad, scale_by_diffgrad

_A_NAMES: list[str] = [
    "AdaBeliefState",
    "adabelief",
    "scale_by_adabelief",
    "DiffGradState",
    "diffgrad",
    "scale_by_diffgrad",
]
# --- end transforms-A ---

# --- transforms-B ---
_B_NAMES: list[str] = []
# --- end transforms-B ---

__all__ = [*_A_NAMES, *_B_NAMES]
