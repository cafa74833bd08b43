"""The README's Python examples run, in order, as one script (they build on each other)."""

from __future__ import annotations

import pathlib

from tests._markdown import run_python_blocks

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
    namespace = run_python_blocks("README.md", min_blocks=4)
    assert float(abs(namespace["params"]["w"] - 2.0).max()) < 1e-3  # diffgrad example converged
    assert namespace["top"].eigenvalues.shape == (5,)


def test_readme_test_command_is_marked():
    text = README.read_text()
    marker = text.index("<!-- ci:test-command -->")
    assert "pytest" in text[marker : marker + 200]
