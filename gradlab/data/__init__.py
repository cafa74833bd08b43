"""Datasets for experiments, tests and notebooks: bundled scikit-learn sets and synthetic
generators. Nothing here ever downloads.

scikit-learn is imported only when a bundled set is loaded, so ``import gradlab.data`` is cheap.
"""

from gradlab.data._bundled import breast_cancer, digits
from gradlab.data._synthetic import gaussian_blobs, linear_teacher, unit_circle

__all__ = ["breast_cancer", "digits", "gaussian_blobs", "linear_teacher", "unit_circle"]
