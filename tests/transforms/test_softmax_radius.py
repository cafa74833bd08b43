"""Softmax-radius step control against a hand computation on a linear softmax model."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gradlab.transforms import scale_by_softmax_radius, softmax_radius


def _linear_model(seed=0, batch=5, dim=3, classes=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, dim))
    params = {"w": rng.normal(size=(dim, classes)), "b": rng.normal(size=(classes,))}
    update = {"w": rng.normal(size=(dim, classes)), "b": rng.normal(size=(classes,))}
    return x, params, update


@pytest.mark.parametrize("ratio, magnitude", [(1.0, 3.0), (0.5, 0.1), (2.0, 0.5)])
def test_scales_by_pi_over_logit_spread(x64, ratio, magnitude):
    x, params, update = _linear_model()
    update = jax.tree.map(lambda u: magnitude * u, update)
    # By hand: a = x dW + db (the logits are linear in the params), Delta = max_b spread_b.
    a = x @ update["w"] + update["b"]
    delta = np.max(a.max(axis=1) - a.min(axis=1))
    expected_scale = min(1.0, ratio * math.pi / delta)

    x_j = jnp.asarray(x)
    tx = scale_by_softmax_radius(ratio=ratio)
    params_j = jax.tree.map(jnp.asarray, params)
    step = jax.jit(lambda u, s, p: tx.update(u, s, p, logits_fn=lambda q: x_j @ q["w"] + q["b"]))
    out, state = step(jax.tree.map(jnp.asarray, update), tx.init(params_j), params_j)
    np.testing.assert_allclose(float(state.spread), delta, rtol=1e-6)
    np.testing.assert_allclose(float(state.scale), expected_scale, rtol=1e-6)
    for key in ("w", "b"):
        np.testing.assert_allclose(out[key], expected_scale * update[key], rtol=1e-12)
    assert out["w"].dtype == jnp.float64
    # The capped step has normalised length exactly ratio (when it was capped).
    if expected_scale < 1.0:
        a_capped = x @ np.asarray(out["w"]) + np.asarray(out["b"])
        spread = np.max(a_capped.max(axis=1) - a_capped.min(axis=1))
        np.testing.assert_allclose(spread / math.pi, ratio, rtol=1e-12)


def test_zero_step_and_nonfinite_spread():
    x = jnp.ones((2, 3))
    tx = scale_by_softmax_radius()
    w = jnp.zeros((3, 4))
    out, state = tx.update(jnp.zeros((3, 4)), tx.init(w), w, logits_fn=lambda p: x @ p)
    assert float(state.spread) == 0.0 and float(state.scale) == 1.0
    assert bool(jnp.all(out == 0.0))
    bad = jnp.full((3, 4), jnp.inf)
    out, state = tx.update(bad.at[0, 0].set(-jnp.inf), state, w, logits_fn=lambda p: x @ p)
    assert float(state.scale) == 0.0  # Delta = NaN/inf: the step is dropped, no NaN leaks


def test_chain_after_adam_matches_hand_scale_and_injects_ratio():
    x = jnp.array([[1.0, -1.0], [0.5, 2.0]])
    logits_fn = lambda w: x @ w  # noqa: E731
    w = jnp.zeros((2, 3))
    g = jnp.array([[1.0, -1.0, 0.0], [0.0, 2.0, -3.0]])
    adam = optax.adam(5.0)
    u_adam, _ = adam.update(g, adam.init(w), w)
    tx = optax.chain(optax.adam(5.0), scale_by_softmax_radius(ratio=0.25))
    u, _ = tx.update(g, tx.init(w), w, logits_fn=logits_fn)
    a = np.asarray(x @ u_adam)
    delta = np.max(a.max(1) - a.min(1))
    np.testing.assert_allclose(u, u_adam * min(1.0, 0.25 * math.pi / delta), rtol=1e-5)
    injected = optax.inject_hyperparams(scale_by_softmax_radius)(ratio=jnp.asarray(0.25))
    u2, _ = injected.update(u_adam, injected.init(w), w, logits_fn=logits_fn)
    np.testing.assert_allclose(u2, u, rtol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="ratio"):
        scale_by_softmax_radius(ratio=0.0)
    with pytest.raises(ValueError, match="learning_rate"):
        softmax_radius(-1.0)
    tx = scale_by_softmax_radius()
    with pytest.raises(ValueError, match="logits_fn"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.ones(2))
    with pytest.raises(ValueError, match="params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)), logits_fn=lambda p: p[None])
