"""Structured derivatives of flax.linen.Conv (patches x cotangents) against jax.jacrev, float64."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gradlab.ntk import _plan, _structured
from gradlab.ntk._layout import make_layout
from tests.ntk import _models as m

F64 = {"param_dtype": jnp.float64}


class ConvZoo(nn.Module):
    """One conv per configuration nn.Conv supports, chained (channels stay small)."""

    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Conv(4, (3, 3), strides=2, padding="VALID", **F64)(x))
        h = jnp.tanh(nn.Conv(4, (2, 3), kernel_dilation=(2, 1), feature_group_count=2, **F64)(h))
        h = jnp.tanh(nn.Conv(2, (3, 3), padding="CIRCULAR", use_bias=False, **F64)(h))
        h = jnp.tanh(nn.Conv(4, (2, 2), input_dilation=2, padding=((1, 0), (0, 1)), **F64)(h))
        masked = nn.Conv(2, (2, 2), mask=jnp.tril(jnp.ones((2, 2, 4, 2))), **F64)  # fallback
        h = jnp.tanh(masked(h))
        return nn.Dense(3, **F64)(h.mean(axis=(-3, -2)))


def _zoo():
    model = ConvZoo()
    x1 = jax.random.normal(jax.random.key(21), (2, 6, 6, 2), jnp.float64)
    x2 = jax.random.normal(jax.random.key(22), (2, 6, 6, 2), jnp.float64)
    return jax.jit(model.init)(jax.random.key(6), x1), model.apply, x1, x2


def _run(params, apply_fn, x1, x2, trace_axes, modes=None):
    layout = make_layout(
        apply_fn,
        params,
        x1,
        x2,
        trace_axes=trace_axes,
        diagonal_axes=(),
        vmap_axes=0,
        batch_size=None,
    )
    plan = _plan.discover(layout, params, x1, x2 is not None)
    if modes is not None:
        plan = plan._replace(modes=tuple(modes(g) for g in plan.modes))
    run = jax.jit(lambda p, a, b: _structured.structured_run(layout, p, plan, a, b, None))
    return plan, run(params, x1, x2)


def test_every_conv_configuration_matches_jacrev_in_both_modes(x64):
    params, apply_fn, x1, x2 = _zoo()
    full = jax.jit(m.dense_full_kernel, static_argnums=0)(apply_fn, params, x1, x2)
    for trace, force in (((), "gram"), ((), "jac"), ((-1,), None)):
        want = m.reference_contract(full, 2, trace, ())
        modes = None if force is None else (lambda g, f=force: f)
        plan, got = _run(params, apply_fn, x1, x2, trace, modes)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    kinds = [c.kind for c, cov in zip(plan.calls, plan.covered_calls, strict=True) if cov]
    assert kinds == ["conv"] * 4 + ["dense"]  # the masked conv went to the Jacobian path
    assert [c.groups for c in plan.calls[:2]] == [1, 2]
