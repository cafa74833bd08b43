"""gradlab.attribution: per-example gradients and the scores built from them.

Per-example gradients (:func:`per_example_grads`, :func:`per_example_grad_norms`), data-importance
scores (:func:`el2n`, :func:`grand`), training-data attribution (:func:`tracin`, TRAK's
:func:`trak_features` / :func:`trak_scores`) and input attributions (:func:`saliency`,
:func:`gradient_x_input`, :func:`integrated_gradients`). Every per-example quantity treats one
example as a batch of size one of the same loss function, so users write one loss.
"""

# --- attr-a: per-example gradients, scores, TracIn, TRAK, input attributions -----------------
from gradlab.attribution._per_example import per_example_grad_norms, per_example_grads
from gradlab.attribution._saliency import (
    IntegratedGradients,
    gradient_x_input,
    integrated_gradients,
    saliency,
)
from gradlab.attribution._scores import el2n, grand
from gradlab.attribution._tracin import tracin
from gradlab.attribution._trak import trak_features, trak_scores

# --- attr-b: influence functions, LDS (imports added here by the attr-b branch) --------------

__all__ = [
    # attr-a
    "IntegratedGradients",
    "el2n",
    "gradient_x_input",
    "grand",
    "integrated_gradients",
    "per_example_grad_norms",
    "per_example_grads",
    "saliency",
    "tracin",
    "trak_features",
    "trak_scores",
    # attr-b (influence, InfluenceResult, lds, retrain_on_subsets, ...)
]
