"""Reproduced paper figures: configs, runner, acceptance checks and the ``gradlab`` CLI.

Each reproduction is a module ``gradlab.experiments.NAME`` exposing ``EXPERIMENT`` (an
:class:`Experiment`), a YAML config ``configs/NAME.yaml`` and a notebook ``notebooks/NAME.py``.
Run one from Python with :func:`run_experiment` or from the shell with
``gradlab reproduce NAME``; ``gradlab list`` shows them all.

This package imports matplotlib, scikit-learn, PyYAML and tqdm only when a reproduction runs.
"""

from gradlab.experiments.registry import NAMES
from gradlab.experiments.registry import get as get_experiment
from gradlab.experiments.runner import RunResult, format_checks, run_experiment
from gradlab.experiments.schema import Check, Experiment, check, load_config

__all__ = [
    "NAMES",
    "Check",
    "Experiment",
    "RunResult",
    "check",
    "format_checks",
    "get_experiment",
    "load_config",
    "run_experiment",
]
