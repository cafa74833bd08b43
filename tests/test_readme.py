"""The README's Python examples run, in order, as one script (they build on each other)."""

from __future__ import annotations

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 4, "README should have a Python example per area"
    namespace: dict = {"__name__": "readme"}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)
    assert float(abs(namespace["params"]["w"] - 2.0).max()) < 1e-3  # diffgrad example converged
    assert namespace["top"].eigenvalues.shape == (5,)


def test_readme_test_command_is_marked():
    text = README.read_text()
    marker = text.index("<!-- ci:test-command -->")
    assert "pytest" in text[marker : marker + 200]
