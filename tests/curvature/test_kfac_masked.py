"""K-FAC / EK-FAC of a MaskedBatch on one device: the masked examples contribute nothing."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl

CE = "softmax_cross_entropy"


class Scaled(nn.Module):
    """Two Dense layers and a raw scale (an uncovered leaf: its exact diagonal)."""

    @nn.compact
    def __call__(self, x):
        s = self.param("scale", nn.initializers.ones, (4,))
        return nn.Dense(3)(jnp.tanh(nn.Dense(4)(x) * s))


MASK = np.array([True, False, True, True, False, True, True, False])


def _problem():
    x = jax.random.normal(jax.random.key(1), (8, 3), jnp.float64)
    y = jax.random.randint(jax.random.key(2), (8,), 0, 3)
    module = Scaled()
    params = jax.tree.map(lambda a: a.astype(jnp.float64), module.init(jax.random.key(0), x[:1]))
    return params, module.apply, x, y


def _garbage(x, y, seed):
    """The same batch with other values in the masked-out rows."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    x2 = jnp.where(MASK[:, None], x, 10 * jax.random.normal(k1, x.shape, x.dtype))
    return x2, jnp.where(MASK, y, jax.random.randint(k2, y.shape, 0, 3))


def _dense(op, params):
    return np.asarray(gl.curvature.dense(op.matvec, params))


@pytest.mark.parametrize("builder", ["kfac", "ekfac"])
@pytest.mark.parametrize("fisher_type", ["type2", "empirical"])
def test_masked_batch_equals_the_true_examples(x64, builder, fisher_type):
    params, apply, x, y = _problem()
    build = getattr(gl.curvature, builder)
    masked = gl.distributed.MaskedBatch(_garbage(x, y, 3), jnp.asarray(MASK))
    got = build(apply, CE, params, masked, fisher_type=fisher_type)
    want = build(apply, CE, params, (x[MASK], y[MASK]), fisher_type=fisher_type)
    np.testing.assert_allclose(_dense(got, params), _dense(want, params), rtol=0, atol=1e-12)
    if builder == "kfac":  # A: mean over the true examples; G, diagonal: the loss's 1 / N_true
        for name, f in want.factors.items():
            np.testing.assert_allclose(got.factors[name].a, f.a, rtol=1e-12)
            np.testing.assert_allclose(got.factors[name].g, f.g, rtol=1e-12)
        np.testing.assert_allclose(
            got.diagonal["params/scale"], want.diagonal["params/scale"], rtol=1e-12
        )


def test_masked_mc_ignores_the_masked_rows(x64):
    """mc draws its noise for the padded batch (shapes only): masked rows change nothing."""
    params, apply, x, y = _problem()
    key = jax.random.key(4)

    def run(batch):
        return gl.curvature.kfac(
            apply,
            CE,
            params,
            gl.distributed.MaskedBatch(batch, jnp.asarray(MASK)),
            fisher_type="mc",
            key=key,
            num_samples=2,
        )

    a, b = run(_garbage(x, y, 5)), run(_garbage(x, y, 6))
    for got, want in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert float(jnp.abs(a.factors["params/Dense_1"].g).max()) > 0
