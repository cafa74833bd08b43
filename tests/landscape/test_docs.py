"""The Python blocks of docs/landscape.md run, in order, in one namespace."""

from __future__ import annotations

from tests._markdown import run_python_blocks


def test_user_guide_examples_run():
    run_python_blocks("docs/landscape.md", min_blocks=4)
