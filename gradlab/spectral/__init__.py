"""gradlab.spectral (under construction)."""

__all__: list[str] = []
