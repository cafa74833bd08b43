"""gradlab.experiments (under construction)."""

__all__: list[str] = []
