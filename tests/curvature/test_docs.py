"""The Python blocks of docs/curvature.md run, in order, in one namespace."""

from __future__ import annotations

from tests._markdown import run_python_blocks


def test_user_guide_examples_run():
    namespace = run_python_blocks("docs/curvature.md", min_blocks=8)
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
