"""Single source of the gradlab version (read by pyproject and ``gradlab --version``)."""

__version__ = "0.1.0"
