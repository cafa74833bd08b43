"""The structured path of plain JAX functions (dot_general uses found in the jaxpr), float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from gradlab.ntk import _jaxpr, _structured
from gradlab.ntk._layout import make_layout
from tests.ntk import _models as m


def _zoo():
    """Every kind of use at once: covered, folded, repeated, batched, and fallbacks."""
    shapes = {
        "w1": (3, 4),
        "b1": (4,),
        "w2": (4, 4),
        "scale": (4,),
        "wg": (2, 2, 3),
        "wt": (6, 6),
        "u": (6, 5),
        "v": (5, 2),
    }
    keys = jax.random.split(jax.random.key(7), len(shapes))
    params = {
        k: jax.random.normal(kk, s, jnp.float64) / 2
        for (k, s), kk in zip(shapes.items(), keys, strict=True)
    }

    def apply_fn(p, x):
        h = jnp.tanh(x @ p["w1"] + p["b1"])  # kernel and folded bias
        h = jnp.tanh(h @ p["w2"]) @ p["w2"]  # used twice, the 2nd input depends on w2 itself
        h = h * p["scale"]  # elementwise: Jacobian path
        g = jnp.einsum("...gi,gif->...gf", h.reshape(*h.shape[:-1], 2, 2), p["wg"])  # groups
        h = jax.jit(jax.nn.relu)(g.reshape(*h.shape[:-1], 6))  # custom_jvp inside a jit
        h = h @ p["wt"] + jnp.tanh(h @ p["wt"].T)  # W and W.T mixed: Jacobian path
        return jnp.tanh(h) @ (p["u"] @ p["v"])  # a product of two parameters

    x1 = jax.random.normal(jax.random.key(8), (4, 3), jnp.float64)
    x2 = jax.random.normal(jax.random.key(9), (3, 3), jnp.float64)
    return params, apply_fn, x1, x2


def _plan(apply_fn, params, x1, x2, vmap_axes=0):
    layout = make_layout(
        apply_fn,
        params,
        x1,
        x2,
        trace_axes=(),
        diagonal_axes=(),
        vmap_axes=vmap_axes,
        batch_size=None,
    )
    return _structured.discover_any(layout, params, x1, x2)


def _names(params, leaves):
    paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return sorted(paths[i] for i in leaves)


def test_plan_covers_contractions_and_leaves_the_rest(x64):
    params, apply_fn, x1, x2 = _zoo()
    plan = _plan(apply_fn, params, x1, x2)
    assert isinstance(plan, _jaxpr.JaxprPlan)
    covered = _names(params, plan.covered_leaves)
    assert covered == ["['b1']", "['u']", "['v']", "['w1']", "['w2']", "['wg']"]
    uses = {plan.calls[g[0]].kernel: len(g) for g in plan.groups}
    assert uses == {2: 1, 3: 1, 4: 1, 5: 2, 6: 1}  # u, v, w1, w2 (twice), wg
    assert [c.groups for c in plan.calls if c.kernel == 6] == [2]  # wg: 2 groups
    assert [c.bias for c in plan.calls if c.kernel == 4] == [0]  # b1 folded into w1


@pytest.mark.parametrize("trace_axes", [(-1,), ()])
def test_zoo_matches_jacrev(x64, trace_axes):
    params, apply_fn, x1, x2 = _zoo()
    full = jax.jit(m.dense_full_kernel, static_argnums=0)(apply_fn, params, x1, x2)
    want = m.reference_contract(full, 2, trace_axes, ())
    for kwargs in ({"vmap_axes": 0}, {"whole_batch": True}):
        fn = jax.jit(
            lambda p, a, b, kw=kwargs: gl.ntk.structured(
                apply_fn, p, a, b, trace_axes=trace_axes, **kw
            )
        )
        np.testing.assert_allclose(fn(params, x1, x2), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["gram", "jac"])
def test_plain_mlp_in_both_modes(x64, mode):
    """The benchmark's plain MLP, h = tanh(h @ w + b), with every leaf covered."""
    params, flax_fn, x1, x2 = m.mlp(3)
    layers = [(p["kernel"], p["bias"]) for p in params["params"].values()]

    def apply_fn(p, x):
        for i, (w, b) in enumerate(p):
            x = x @ w + b
            x = jnp.tanh(x) if i < len(p) - 1 else x
        return x

    plan = _plan(apply_fn, layers, x1, x2)
    assert plan.covered_leaves == frozenset(range(6)) and all(plan.biases)
    plan = plan._replace(modes=(mode,) * len(plan.modes))
    for trace in ((-1,), ()):
        layout = make_layout(
            apply_fn,
            layers,
            x1,
            x2,
            trace_axes=trace,
            diagonal_axes=(),
            vmap_axes=0,
            batch_size=None,
        )
        got = _structured.structured_run(layout, layers, plan, x1, x2, None)
        want = gl.ntk.jacobian_contraction(flax_fn, params, x1, x2, trace_axes=trace, vmap_axes=0)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_nothing_to_factor_is_rejected(x64):
    params = {"a": jnp.ones(3, jnp.float64), "s": jnp.array(2.0, jnp.float64)}

    def apply_fn(p, x):
        return jnp.sin(x * p["a"]) * p["s"]

    x = jnp.ones((2, 3), jnp.float64)
    assert not _plan(apply_fn, params, x, None).applies
    with pytest.raises(ValueError, match="dot_general"):
        gl.ntk.structured(apply_fn, params, x, vmap_axes=0)
