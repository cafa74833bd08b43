"""The examples of docs/faq.md (jit arguments, vmap_axes, float64, vmap over seeds) run as written."""

from __future__ import annotations

from tests._markdown import run_python_blocks


def test_faq_examples_run():
    namespace = run_python_blocks("docs/faq.md", min_blocks=6)
    assert namespace["tops"].shape == (4, 3)
