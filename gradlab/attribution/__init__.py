"""gradlab.attribution (under construction)."""

__all__: list[str] = []
