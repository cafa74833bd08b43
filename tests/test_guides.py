"""The Python examples of the guides without an area test of their own run as written."""

from __future__ import annotations

import pytest

from tests._markdown import run_python_blocks


@pytest.mark.parametrize(("page", "min_blocks"), [("docs/index.md", 1), ("docs/transforms.md", 10)])
def test_guide_examples_run(page, min_blocks):
    run_python_blocks(page, min_blocks=min_blocks)
