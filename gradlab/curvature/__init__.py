"""gradlab.curvature (under construction)."""

__all__: list[str] = []
