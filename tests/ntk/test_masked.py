"""empirical_ntk on a MaskedBatch (one device): padded rows/columns are zero, the rest exact."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl

MASK = np.array([True, True, False, True, False, True])  # not a suffix: any mask works
REAL = np.flatnonzero(MASK)
IMPL = "jacobian_contraction"


def _model(params, x):
    return jnp.tanh(x @ params["w1"]) @ params["w2"]


def _problem():
    k = jax.random.split(jax.random.key(0), 3)
    params = {
        "w1": jax.random.normal(k[0], (3, 4), jnp.float64),
        "w2": jax.random.normal(k[1], (4, 2), jnp.float64),
    }
    return _model, params, jax.random.normal(k[2], (6, 3), jnp.float64)


def _expected(want, shape, rows, columns):
    """Scatter the kernel of the true examples into zeros of the padded shape."""
    out = np.zeros(shape)
    index = (rows,) if columns is None else np.ix_(rows, columns)
    out[index] = np.asarray(want)
    return out


@pytest.mark.parametrize(
    ("label", "options"),
    [("traced", {}), ("full", {"trace_axes": ()}), ("diagonal", {"diagonal_axes": (0,)})],
)
def test_masked_x1_matches_kernel_of_true_examples(x64, label, options):
    apply_fn, params, x = _problem()
    mb = gl.distributed.MaskedBatch(x, jnp.asarray(MASK))
    # One implementation keeps compilations few (the masking does not depend on it).
    got = gl.ntk.empirical_ntk(apply_fn, params, mb, implementation=IMPL, **options)
    want = gl.ntk.empirical_ntk(apply_fn, params, x[REAL], vmap_axes=0, **options)
    columns = None if label == "diagonal" else REAL
    expected = _expected(want, got.shape, REAL, columns)
    assert got.shape == (6,) if label == "diagonal" else got.shape[:2] == (6, 6)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # Exactly zero, not merely small: padded examples are copies of real ones.
    padded = ~MASK
    assert not np.any(np.asarray(got)[padded])
    if columns is not None:
        assert not np.any(np.asarray(got)[:, padded])


def test_masked_x2_and_jit(x64):
    apply_fn, params, x = _problem()
    x2 = x[::-1] + 0.5
    mb1 = gl.distributed.MaskedBatch(x, jnp.asarray(MASK))
    mb2 = gl.distributed.MaskedBatch(x2, jnp.asarray(MASK[::-1]))
    real2 = np.flatnonzero(MASK[::-1])
    want = gl.ntk.empirical_ntk(apply_fn, params, x[REAL], x2[real2], vmap_axes=0)
    both = jax.jit(lambda p, a, b: gl.ntk.empirical_ntk(apply_fn, p, a, b))(params, mb1, mb2)
    np.testing.assert_allclose(both, _expected(want, (6, 6), REAL, real2), rtol=1e-12, atol=0)
    # Only x2 masked: every row is a true example.
    plain = gl.ntk.empirical_ntk(apply_fn, params, x, mb2, vmap_axes=0)
    want = gl.ntk.empirical_ntk(apply_fn, params, x, x2[real2], vmap_axes=0)
    np.testing.assert_allclose(plain, _expected(want, (6, 6), np.arange(6), real2), rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"trace_axes": (0, 1)}, r"MaskedBatch, so the example axis 0 cannot be in trace_axes"),
        ({"whole_batch": True}, r"MaskedBatch, which needs independent examples.*whole_batch"),
        ({"vmap_axes": 1}, r"MaskedBatch, which needs independent examples.*vmap_axes=1"),
        ({"diagonal_axes": (0,), "x2": 1}, r"diagonal_axes containing the example axis 0, pass"),
    ],
)
def test_masked_rejects(kwargs, pattern):
    apply_fn, params, _ = _problem()
    x = jnp.ones((4, 3))
    mb = gl.distributed.MaskedBatch(x, jnp.arange(4) < 3)
    x2 = x if kwargs.pop("x2", None) else None
    with pytest.raises(ValueError, match=pattern):
        gl.ntk.empirical_ntk(apply_fn, params, mb, x2, **kwargs)
