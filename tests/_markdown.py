"""Run the Python code blocks of a Markdown page, in order, in one namespace."""

from __future__ import annotations

import pathlib
import re

import jax

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_python_blocks(relative_path: str, *, min_blocks: int) -> dict:
    """Execute every fenced ``python`` block of ``ROOT/relative_path``; return the namespace."""
    path = ROOT / relative_path
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)
    assert len(blocks) >= min_blocks, f"{relative_path} has {len(blocks)} python blocks"
    namespace: dict = {"__name__": path.stem}
    # The examples are small and compile-bound: XLA's optimisation passes cost more than they
    # save (about 30% of these tests' time). The numbers they print are the same up to rounding.
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        for block in blocks:
            exec(compile(block, str(path), "exec"), namespace)
    finally:
        jax.config.update("jax_disable_most_optimizations", before)
    return namespace
