"""Seed-paper optimizers and gradient transformations as optax ``GradientTransformation``s.

Each paper lives in its own private module and exports ``scale_by_<name>(...)`` (the
transformation), ``<name>(learning_rate, ...)`` (the alias chained with
``optax.scale_by_learning_rate``) and ``<Name>State`` (its state). Every transform is in the
contract suite ``tests/transforms/test_contract.py``.
"""

from gradlab.transforms._adabelief import AdaBeliefState as AdaBeliefState
from gradlab.transforms._adabelief import adabelief as adabelief
from gradlab.transforms._adabelief import scale_by_adabelief as scale_by_adabelief
from gradlab.transforms._adadagrad import AdAdaGradState as AdAdaGradState
from gradlab.transforms._adadagrad import adadagrad as adadagrad
from gradlab.transforms._adadagrad import batch_size_tests as batch_size_tests
from gradlab.transforms._adadagrad import scale_by_adadagrad as scale_by_adadagrad
from gradlab.transforms._adahessian import AdaHessianState as AdaHessianState
from gradlab.transforms._adahessian import adahessian as adahessian
from gradlab.transforms._adahessian import scale_by_adahessian as scale_by_adahessian
from gradlab.transforms._adaptive_batch import AdaptiveBatchRun as AdaptiveBatchRun
from gradlab.transforms._adaptive_batch import (
    adaptive_batch_training as adaptive_batch_training,
)
from gradlab.transforms._adaptive_memory import AdaptiveMemoryState as AdaptiveMemoryState
from gradlab.transforms._adaptive_memory import am_adamw as am_adamw
from gradlab.transforms._adaptive_memory import am_sgd as am_sgd
from gradlab.transforms._adaptive_memory import scale_by_adaptive_memory as scale_by_adaptive_memory
from gradlab.transforms._adaptive_projective import (
    AdaptiveProjectionState as AdaptiveProjectionState,
)
from gradlab.transforms._adaptive_projective import adaptive_projective_gd as adaptive_projective_gd
from gradlab.transforms._adaptive_projective import merging_coefficients as merging_coefficients
from gradlab.transforms._adaptive_projective import merging_gap_losses as merging_gap_losses
from gradlab.transforms._adaptive_projective import (
    scale_by_adaptive_projection as scale_by_adaptive_projection,
)
from gradlab.transforms._adaptive_projective import shared_subspace as shared_subspace
from gradlab.transforms._dct_lowrank import DCTLowRankState as DCTLowRankState
from gradlab.transforms._dct_lowrank import dct_basis as dct_basis
from gradlab.transforms._dct_lowrank import dct_lowrank as dct_lowrank
from gradlab.transforms._dct_lowrank import scale_by_dct_lowrank as scale_by_dct_lowrank
from gradlab.transforms._dicesgd import DiceSGDState as DiceSGDState
from gradlab.transforms._dicesgd import dicesgd as dicesgd
from gradlab.transforms._dicesgd import scale_by_dicesgd as scale_by_dicesgd
from gradlab.transforms._diffgrad import DiffGradState as DiffGradState
from gradlab.transforms._diffgrad import diffgrad as diffgrad
from gradlab.transforms._diffgrad import scale_by_diffgrad as scale_by_diffgrad
from gradlab.transforms._gradient_noise import AnnealedNoiseState as AnnealedNoiseState
from gradlab.transforms._gradient_noise import annealed_noise as annealed_noise
from gradlab.transforms._gradient_noise import scale_by_annealed_noise as scale_by_annealed_noise
from gradlab.transforms._grn import GRNSearch as GRNSearch
from gradlab.transforms._grn import GRNState as GRNState
from gradlab.transforms._grn import grn as grn
from gradlab.transforms._grn import grn_search as grn_search
from gradlab.transforms._grn import scale_by_grn as scale_by_grn
from gradlab.transforms._hessian_alignment import HessianAlignment as HessianAlignment
from gradlab.transforms._hessian_alignment import (
    hessian_alignment_penalty as hessian_alignment_penalty,
)
from gradlab.transforms._int4 import dequantize_int4 as dequantize_int4
from gradlab.transforms._int4 import quantize_int4 as quantize_int4
from gradlab.transforms._kfac import KFACState as KFACState
from gradlab.transforms._kfac import kfac as kfac
from gradlab.transforms._kfac import scale_by_kfac as scale_by_kfac
from gradlab.transforms._mfac import MFACState as MFACState
from gradlab.transforms._mfac import mfac as mfac
from gradlab.transforms._mfac import scale_by_mfac as scale_by_mfac
from gradlab.transforms._noise_adaptive_lr import LantonState as LantonState
from gradlab.transforms._noise_adaptive_lr import lanton as lanton
from gradlab.transforms._noise_adaptive_lr import scale_by_lanton as scale_by_lanton
from gradlab.transforms._normalized_gd import NormalizedGDState as NormalizedGDState
from gradlab.transforms._normalized_gd import normalized_gd as normalized_gd
from gradlab.transforms._normalized_gd import scale_by_normalized_gd as scale_by_normalized_gd
from gradlab.transforms._pcgrad import PCGradState as PCGradState
from gradlab.transforms._pcgrad import pcgrad as pcgrad
from gradlab.transforms._pcgrad import scale_by_pcgrad as scale_by_pcgrad
from gradlab.transforms._q_galore import QGaLoreState as QGaLoreState
from gradlab.transforms._q_galore import q_galore as q_galore
from gradlab.transforms._q_galore import scale_by_q_galore as scale_by_q_galore
from gradlab.transforms._softmax_radius import SoftmaxRadiusState as SoftmaxRadiusState
from gradlab.transforms._softmax_radius import scale_by_softmax_radius as scale_by_softmax_radius
from gradlab.transforms._softmax_radius import softmax_radius as softmax_radius
from gradlab.transforms._subspace import RandomSubspaceState as RandomSubspaceState
from gradlab.transforms._subspace import random_subspace as random_subspace
from gradlab.transforms._subspace import random_subspace_basis as random_subspace_basis
from gradlab.transforms._subspace import scale_by_random_subspace as scale_by_random_subspace
from gradlab.transforms._sven import SvenState as SvenState
from gradlab.transforms._sven import scale_by_sven as scale_by_sven
from gradlab.transforms._sven import sven as sven

# One literal list, so static tools (mkdocstrings/griffe, IDEs) see every public name.
__all__ = [
    "AdAdaGradState",
    "AdaBeliefState",
    "AdaHessianState",
    "AdaptiveBatchRun",
    "AdaptiveMemoryState",
    "AdaptiveProjectionState",
    "AnnealedNoiseState",
    "DCTLowRankState",
    "DiceSGDState",
    "DiffGradState",
    "GRNSearch",
    "GRNState",
    "HessianAlignment",
    "KFACState",
    "LantonState",
    "MFACState",
    "NormalizedGDState",
    "PCGradState",
    "QGaLoreState",
    "RandomSubspaceState",
    "SoftmaxRadiusState",
    "SvenState",
    "adabelief",
    "adadagrad",
    "adahessian",
    "adaptive_batch_training",
    "adaptive_projective_gd",
    "am_adamw",
    "am_sgd",
    "annealed_noise",
    "batch_size_tests",
    "dct_basis",
    "dct_lowrank",
    "dequantize_int4",
    "dicesgd",
    "diffgrad",
    "grn",
    "grn_search",
    "hessian_alignment_penalty",
    "kfac",
    "lanton",
    "merging_coefficients",
    "merging_gap_losses",
    "mfac",
    "normalized_gd",
    "pcgrad",
    "q_galore",
    "quantize_int4",
    "random_subspace",
    "random_subspace_basis",
    "scale_by_adabelief",
    "scale_by_adadagrad",
    "scale_by_adahessian",
    "scale_by_adaptive_memory",
    "scale_by_adaptive_projection",
    "scale_by_annealed_noise",
    "scale_by_dct_lowrank",
    "scale_by_dicesgd",
    "scale_by_diffgrad",
    "scale_by_grn",
    "scale_by_kfac",
    "scale_by_lanton",
    "scale_by_mfac",
    "scale_by_normalized_gd",
    "scale_by_pcgrad",
    "scale_by_q_galore",
    "scale_by_random_subspace",
    "scale_by_softmax_radius",
    "scale_by_sven",
    "shared_subspace",
    "softmax_radius",
    "sven",
]
