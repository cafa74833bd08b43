"""The ``vmap_axes=None`` default: probe for independent examples, then the fast or exact path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from gradlab.ntk import _detect
from tests.ntk import _models as m


def _oracle(apply_fn, params, x1, x2, trace_axes):
    full = m.dense_full_kernel(apply_fn, params, x1, x1 if x2 is None else x2)
    return m.reference_contract(full, 2, trace_axes, ())


def _x(n=5, seed=19):
    return jax.random.normal(jax.random.key(seed), (n, 3), jnp.float64)


def test_independent_models_pass_the_probe(x64):
    for params, apply_fn, x1, x2 in (m.pytree_model(), m.seq_model()):  # x2; integer inputs
        assert bool(_detect.independent(apply_fn, params, x1, x2))
    params, apply_fn, x1, _ = m.mlp(10)
    assert bool(_detect.independent(apply_fn, params, x1[:1], None))  # one example


@pytest.mark.parametrize(
    "name", ["batch_norm", "attention", "frozen_centering", "batch_size_scaled"]
)
def test_coupled_models_keep_the_exact_whole_batch_kernel(x64, name):
    params, apply_fn = m.coupled_models()[name]
    x1 = _x()
    assert not bool(_detect.independent(apply_fn, params, x1, None))
    want = _oracle(apply_fn, params, x1, None, (-1,))
    got = gl.ntk.empirical_ntk(apply_fn, params, x1)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    if name != "frozen_centering":  # its Jacobian is per-example: flagged conservatively
        wrong = gl.ntk.empirical_ntk(apply_fn, params, x1, vmap_axes=0)
        assert not np.allclose(wrong, want, rtol=1e-6)  # the per-example kernel is not it
    if name == "batch_norm":  # the explicit override gives the same exact kernel
        forced = gl.ntk.empirical_ntk(apply_fn, params, x1, whole_batch=True)
        np.testing.assert_allclose(forced, want, rtol=1e-10, atol=1e-12)


def test_under_jit_both_kinds_are_exact_without_host_sync(x64):
    """Traced inputs: the verdict is a traced bool and lax.cond runs the matching kernel."""
    params, apply_fn = m.coupled_models()["batch_norm"]
    x1 = _x()
    fn = jax.jit(lambda p, x: gl.ntk.empirical_ntk(apply_fn, p, x))
    want = _oracle(apply_fn, params, x1, None, (-1,))
    np.testing.assert_allclose(fn(params, x1), want, rtol=1e-10, atol=1e-12)
    params, apply_fn, x1, x2 = m.mlp(10)
    fn = jax.jit(lambda p, a, b: gl.ntk.structured(apply_fn, p, a, b, trace_axes=()))
    want = _oracle(apply_fn, params, x1, x2, ())
    np.testing.assert_allclose(fn(params, x1, x2), want, rtol=1e-10, atol=1e-12)


def _counting_dispatch(calls):
    def compute(axes):
        calls.append(axes)
        return jnp.zeros(())

    def go(fn, p, x):
        return _detect.dispatch(
            compute,
            fn,
            p,
            x,
            None,
            vmap_axes=None,
            whole_batch=False,
            batch_size=None,
            validate=lambda: None,
        )

    return go


def test_dispatch_computes_one_kernel_eagerly_and_under_jit(x64):
    """Under jit the stand-in probe picks the one kernel that is compiled (no lax.cond)."""
    params, apply_fn, x1, _ = m.mlp(2)
    coupled = m.coupled_models()["attention"]
    calls = []
    go = _counting_dispatch(calls)
    go(apply_fn, params, x1)
    go(coupled[1], coupled[0], x1)
    assert calls == [0, None]
    calls.clear()
    jax.jit(lambda p, x: go(apply_fn, p, x))(params, x1)
    jax.jit(lambda p, x: go(coupled[1], p, x))(coupled[0], x1)
    assert calls == [0, None]
    calls.clear()
    go(apply_fn, params, x1[0])  # no example axis: the whole-batch kernel, no probe
    assert calls == [None]


def test_under_jit_without_stand_ins_lax_cond_compiles_both(x64):
    """Integer inputs (token ids) or an apply_fn closing over traced values: no stand-ins."""
    calls = []
    go = _counting_dispatch(calls)
    params, apply_fn, tokens, _ = m.seq_model()
    jax.jit(lambda p, x: go(apply_fn, p, x))(params, tokens)
    assert sorted(calls, key=str) == [0, None]
    calls.clear()
    mp, mapply, x1, _ = m.mlp(2)
    jax.jit(lambda p, x, s: go(lambda q, z: s * mapply(q, z), p, x))(mp, x1, 2.0)
    assert sorted(calls, key=str) == [0, None]
    # and the kernels stay exact on that path
    scaled = jax.jit(lambda p, x, s: gl.ntk.empirical_ntk(lambda q, z: s * mapply(q, z), p, x))
    want = 4.0 * _oracle(mapply, mp, x1, None, (-1,))
    np.testing.assert_allclose(scaled(mp, x1, 2.0), want, rtol=1e-10, atol=1e-12)


def _gated(params, x):
    """Per-example unless the gate is exactly 0, when a batch mean couples the examples."""
    coupling = jnp.mean(x, axis=0, keepdims=True) @ params["w"]
    return x @ params["w"] + jnp.where(params["gate"] == 0, coupling, 0.0)


def test_under_jit_a_value_dependent_coupling_gives_nan_not_a_wrong_kernel(x64):
    x1 = _x()
    params = {"w": jax.random.normal(jax.random.key(3), (3, 2), jnp.float64), "gate": jnp.zeros(())}
    want = _oracle(_gated, params, x1, None, (-1,))
    np.testing.assert_allclose(gl.ntk.empirical_ntk(_gated, params, x1), want, rtol=1e-10)
    fn = jax.jit(lambda p, x: gl.ntk.empirical_ntk(_gated, p, x))
    assert bool(jnp.all(jnp.isnan(fn(params, x1))))  # stand-in gate != 0: the runtime probe
    open_gate = {**params, "gate": jnp.ones(())}
    want = _oracle(_gated, open_gate, x1, None, (-1,))
    np.testing.assert_allclose(fn(open_gate, x1), want, rtol=1e-10, atol=1e-12)


def test_override_arguments(x64):
    params, apply_fn, x1, _ = m.mlp(2)
    with pytest.raises(ValueError, match="contradict"):
        gl.ntk.empirical_ntk(apply_fn, params, x1, vmap_axes=0, whole_batch=True)
    with pytest.raises(ValueError, match="needs vmap_axes"):
        gl.ntk.empirical_ntk(apply_fn, params, x1, batch_size=2)
    with pytest.raises(ValueError, match="whole_batch"):
        gl.ntk.empirical_ntk(apply_fn, params, x1, batch_size=2, whole_batch=True)
    with pytest.raises(ValueError, match="trace_axes entry=2"):
        gl.ntk.structured(apply_fn, params, x1, trace_axes=(2,))
