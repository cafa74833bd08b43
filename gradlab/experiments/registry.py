"""The list of reproductions and lazy lookup of their :class:`~gradlab.experiments.Experiment`."""

from __future__ import annotations

import importlib

from gradlab.experiments.schema import Experiment

__all__ = ["NAMES", "get"]

NAMES: tuple[str, ...] = (
    "hessian_outliers",
    "batch_size_spectrum",
    "ntk_width",
    "stability_trace",
    "mp_overtraining",
    "approx_hessian_newton",
    "softmax_ghosts",
    "large_step_perceptron",
    "data_diet",
    "icl_one_step_gd",
    "grokking_lazy_rich",
    "intrinsic_dimension",
)


def get(name: str) -> Experiment:
    """Return the :class:`~gradlab.experiments.Experiment` called ``name``.

    The module ``gradlab.experiments.<name>`` is imported on first use, so listing or running one
    reproduction never imports the others.

    Args:
        name: one of :data:`NAMES`.

    Returns:
        The module's ``EXPERIMENT``.

    Raises:
        ValueError: for an unknown name; the message lists the valid names.

    Examples:
        >>> from gradlab.experiments.registry import NAMES, get
        >>> "hessian_outliers" in NAMES
        True
        >>> get("hessian_outlier")
        Traceback (most recent call last):
        ...
        ValueError: unknown experiment 'hessian_outlier': expected one of hessian_outliers, ...
    """
    if name not in NAMES:
        raise ValueError(f"unknown experiment {name!r}: expected one of {', '.join(NAMES)}")
    module = importlib.import_module(f"gradlab.experiments.{name}")
    experiment = module.EXPERIMENT
    if experiment.name != name:
        raise RuntimeError(f"gradlab.experiments.{name}.EXPERIMENT is named {experiment.name!r}")
    return experiment
