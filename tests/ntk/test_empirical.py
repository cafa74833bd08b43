"""Every empirical-NTK implementation against the dense float64 oracle J1 J2^T (jax.jacrev)."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from tests.ntk import _models as m

IMPLS = ("jacobian_contraction", "ntk_vector_products", "structured", "auto")
FLAX_MODELS = {"mlp1": lambda: m.mlp(1), "mlp10": lambda: m.mlp(10), "cnn": m.cnn}
_ORACLES: dict = {}


def _oracle(apply_fn, params, x1, x2):
    """The dense kernel, cached per (model, inputs) so the many axis combinations share it."""
    key = (id(apply_fn), id(x1), id(x2))
    if key not in _ORACLES:
        _ORACLES[key] = (
            np.asarray(m.dense_full_kernel(apply_fn, params, x1, x1 if x2 is None else x2)),
            (apply_fn, x1, x2),  # keep the objects alive so their ids stay unique
        )
    return _ORACLES[key][0]


def _axes_combos(ndim):
    """Every (trace, diagonal) pair of disjoint axis sets, with negative spellings mixed in."""
    axes = range(ndim)
    for r in range(ndim + 1):
        for trace in itertools.combinations(axes, r):
            rest = [a for a in axes if a not in trace]
            for q in range(len(rest) + 1):
                for diag in itertools.combinations(rest, q):
                    yield tuple(a - ndim if a == ndim - 1 else a for a in trace), diag


def _check(impl, params, apply_fn, x1, x2, trace, diag, vmap_axes, batch_size=None):
    ndim = apply_fn(params, x1).ndim
    same = 0 in [a % ndim for a in trace + diag]
    xb = None if same else x2
    full = _oracle(apply_fn, params, x1, xb)
    want = m.reference_contract(full, ndim, trace, diag)
    got = gl.ntk.empirical_ntk(
        apply_fn,
        params,
        x1,
        xb,
        implementation=impl,
        trace_axes=trace,
        diagonal_axes=diag,
        vmap_axes=vmap_axes,
        batch_size=batch_size,
    )
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    return got


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", sorted(FLAX_MODELS))
def test_matches_jacrev_default_and_full(x64, impl, name):
    params, apply_fn, x1, x2 = FLAX_MODELS[name]()
    combos = [((-1,), 0), ((), 0)] + ([((), None)] if name != "cnn" else [])
    for trace, vmap_axes in combos:
        _check(impl, params, apply_fn, x1, x2, trace, (), vmap_axes)


@pytest.mark.parametrize("impl", IMPLS[:3])
def test_every_trace_diagonal_combination(x64, impl):
    params, apply_fn, x1, x2 = m.mlp(10)
    for trace, diag in _axes_combos(2):
        _check(impl, params, apply_fn, x1, x2, trace, diag, 0)


@pytest.mark.parametrize("impl", IMPLS)
def test_three_axis_outputs_embed_layernorm(x64, impl):
    """(N, T, O) outputs; Embed + Dense over tokens (structured) + LayerNorm (Jacobian rest)."""
    params, apply_fn, x1, x2 = m.seq_model()
    combos = list(_axes_combos(3))
    # a spread of the 27 combinations (every axis traced, diagonal and kept somewhere)
    for trace, diag in combos[:: 4 if impl == "structured" else 9]:
        _check(impl, params, apply_fn, x1, x2, trace, diag, 0)
    _check(impl, params, apply_fn, x1, x2, (-1,), (), None)


@pytest.mark.parametrize("impl", IMPLS)
def test_pytree_params_pure_jax(x64, impl):
    """Plain function: structured factors the matmuls from the jaxpr (tests/ntk/test_jaxpr.py)."""
    params, apply_fn, x1, x2 = m.pytree_model()
    for trace, diag in list(_axes_combos(2))[:: 3 if impl in ("auto", "structured") else 2]:
        _check(impl, params, apply_fn, x1, x2, trace, diag, 0)


@pytest.mark.parametrize("impl", IMPLS[:3])
def test_tiles_equal_untiled(x64, impl):
    params, apply_fn, x1, x2 = m.mlp(10)
    x1 = jnp.concatenate([x1, x1[:2] * 0.5])  # 7 examples, tiles of 3 with padding
    for trace, diag, other in (((), (), x2), ((-1,), (0,), None)):
        got = _check(impl, params, apply_fn, x1, other, trace, diag, 0, batch_size=3)
        assert got.shape[0] == 7


def test_own_functions_equal_dispatch(x64):
    params, apply_fn, x1, x2 = m.mlp(10)
    for impl in IMPLS[:3]:
        fn = getattr(gl.ntk, impl)
        a = fn(apply_fn, params, x1, x2, trace_axes=(), vmap_axes=0)
        b = gl.ntk.empirical_ntk(
            apply_fn, params, x1, x2, implementation=impl, trace_axes=(), vmap_axes=0
        )
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("impl", IMPLS)
def test_symmetric_psd(x64, impl):
    params, apply_fn, x1, _ = m.mlp(10)
    k = gl.ntk.empirical_ntk(apply_fn, params, x1, implementation=impl, trace_axes=(), vmap_axes=0)
    flat = np.asarray(jnp.transpose(k, (0, 2, 1, 3)).reshape(50, 50))
    np.testing.assert_allclose(flat, flat.T, atol=1e-12)
    assert np.linalg.eigvalsh(flat).min() > -1e-10


def test_vmap_axes_matters_when_examples_interact(x64):
    """With batch statistics, vmap_axes=None is exact and vmap_axes=0 (a false promise) is not."""
    params, apply_fn, x1, _ = m.mlp(2)

    def batchnormed(p, x):
        out = apply_fn(p, x)
        return out - out.mean(axis=0)

    full = m.dense_full_kernel(batchnormed, params, x1, x1)
    want = m.reference_contract(full, 2, (-1,), ())
    exact = gl.ntk.empirical_ntk(batchnormed, params, x1)
    np.testing.assert_allclose(exact, want, rtol=1e-10, atol=1e-10)
    wrong = gl.ntk.empirical_ntk(batchnormed, params, x1, vmap_axes=0)
    assert not np.allclose(wrong, want)


def test_nnx_model_through_split_merge(x64):
    from flax import nnx

    model = nnx.Sequential(
        nnx.Linear(3, 5, rngs=nnx.Rngs(0), param_dtype=jnp.float64),
        nnx.tanh,
        nnx.Linear(5, 2, rngs=nnx.Rngs(1), param_dtype=jnp.float64),
    )
    graphdef, state = nnx.split(model)

    def apply_fn(p, x):
        return nnx.merge(graphdef, p)(x)

    x1 = jax.random.normal(jax.random.key(0), (4, 3), jnp.float64)
    x2 = jax.random.normal(jax.random.key(1), (2, 3), jnp.float64)
    for impl in ("ntk_vector_products", "auto"):
        _check(impl, state, apply_fn, x1, x2, (), (), 0)


def test_linen_inside_jit(x64):
    params, apply_fn, x1, x2 = m.mlp(10)
    fn = jax.jit(
        lambda p, a, b: gl.ntk.empirical_ntk(
            apply_fn, p, a, b, implementation="structured", vmap_axes=0
        )
    )
    want = gl.ntk.jacobian_contraction(apply_fn, params, x1, x2, vmap_axes=0)
    np.testing.assert_allclose(fn(params, x1, x2), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"implementation": "fastest"}, "implementation='fastest'"),
        ({"trace_axes": (2,)}, "trace_axes entry=2 is out of range"),
        ({"diagonal_axes": (-3,)}, "diagonal_axes entry=-3 is out of range"),
        ({"trace_axes": (1,), "diagonal_axes": (-1,)}, "overlap"),
        ({"trace_axes": (0, 0)}, "same axis twice"),
        ({"batch_size": 2}, "needs vmap_axes"),
        ({"batch_size": 0, "vmap_axes": 0}, "batch_size=0"),
        ({"vmap_axes": "rows"}, "vmap_axes='rows'"),
    ],
)
def test_bad_arguments(x64, kwargs, match):
    params, apply_fn, x1, _ = m.mlp(2)
    with pytest.raises(ValueError, match=match):
        gl.ntk.empirical_ntk(apply_fn, params, x1, **kwargs)


def test_mismatched_feature_shapes(x64):
    params, apply_fn, x1, _ = m.mlp(2)
    with pytest.raises(ValueError, match="feature shape"):
        gl.ntk.empirical_ntk(apply_fn, params, x1, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="equal"):
        gl.ntk.empirical_ntk(apply_fn, params, x1, x1[:2], diagonal_axes=(0,), vmap_axes=0)


@pytest.mark.parametrize("jit", [False, True])
def test_every_implementation_returns_the_parameter_dtype(x64, jit):
    """float64 params under a float32-output model: one kernel dtype for every implementation
    (a JVP comes back in the output's dtype, a Jacobian in the parameters')."""
    params, apply_fn, x1, _ = m.mlp(3)

    def f32(p, x):
        return apply_fn(p, x).astype(jnp.float32)

    for impl in ("jacobian_contraction", "ntk_vector_products", "structured"):
        fn = functools.partial(gl.ntk.empirical_ntk, f32, vmap_axes=0, implementation=impl)
        k = (jax.jit(fn) if jit else fn)(params, x1)
        assert k.dtype == jnp.float64, (impl, k.dtype)


@pytest.mark.parametrize("implementation", ["auto", "jacobian_contraction", "structured"])
def test_eager_calls_compile_once(x64, implementation):
    """Called eagerly, the kernel is one compiled program that later calls reuse: the second
    call does not run apply_fn in Python at all (op by op, every call would)."""
    params, apply_fn, x1, _ = m.mlp(3)
    calls = [0]

    def counted(p, x):
        calls[0] += 1
        return apply_fn(p, x)

    first = gl.ntk.empirical_ntk(counted, params, x1, implementation=implementation)
    assert calls[0] > 0
    before = calls[0]
    again = gl.ntk.empirical_ntk(counted, params, x1, implementation=implementation)
    assert calls[0] == before
    np.testing.assert_array_equal(first, again)
    # unhashable options (a list) still work, run as is
    listed = gl.ntk.empirical_ntk(
        counted, params, x1, implementation=implementation, trace_axes=[-1]
    )
    np.testing.assert_allclose(listed, first, rtol=1e-12)


def test_compiled_kernels_do_not_keep_apply_fns_alive(x64, monkeypatch):
    """The eager-call cache is bounded: after enough other models, what an apply_fn closed
    over is freed (jax.jit with a static apply_fn would keep thousands alive). The bound is
    lowered to 2 here so that the test compiles few kernels."""
    import gc
    import weakref

    from gradlab.ntk import _detect

    monkeypatch.setattr(_detect, "_CACHE_SIZE", 2)
    params, apply_fn, x1, _ = m.mlp(2)

    class Scale:
        value = 1.0

    def make(scale):
        return lambda p, x: scale.value * apply_fn(p, x)

    for vmap_axes in (0, None):
        scale = Scale()
        gl.ntk.empirical_ntk(make(scale), params, x1, vmap_axes=vmap_axes)
        alive = weakref.ref(scale)
        del scale
        gc.collect()
        assert alive() is not None  # cached: still alive right after the call
        for _ in range(3):
            gl.ntk.empirical_ntk(make(Scale()), params, x1, vmap_axes=vmap_axes)
        gc.collect()
        assert alive() is None
