"""gradlab.attribution: per-example gradients and the scores built from them.

Reserved for EL2N, GraNd, TracIn, influence functions and integrated gradients (DESIGN.md); it
exports nothing yet.
"""

__all__: list[str] = []
