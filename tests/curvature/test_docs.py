"""The Python blocks of docs/curvature.md run, in order, in one namespace."""

from __future__ import annotations

import pathlib
import re

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "curvature.md"


def test_user_guide_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 8
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    # the accumulation example compares against the full-batch operator: check it held
    full, approx = namespace["full"], namespace["gvp_all"](namespace["v"])
    import jax
    import jax.numpy as jnp

    err = max(
        jax.tree_util.tree_leaves(
            jax.tree_util.tree_map(lambda a, b: jnp.max(jnp.abs(a - b)), approx, full)
        )
    )
    scale = max(
        jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a: jnp.max(jnp.abs(a)), full))
    )
    assert float(err) <= 1e-5 * float(scale)
