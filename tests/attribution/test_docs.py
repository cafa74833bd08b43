"""The Python blocks of docs/attribution.md run, in order, in one namespace."""

from __future__ import annotations

from tests._markdown import run_python_blocks


def test_user_guide_examples_run():
    run_python_blocks("docs/attribution.md", min_blocks=5)
