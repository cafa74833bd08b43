"""LANTON-style noise-adaptive layer rates: hand computation (exact SVD), Muon reference, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import gradlab as gl

SHAPES = {"w1": (4, 3), "w2": (3, 5), "b1": (3,), "b2": (5,)}


def _direction(x):
    if x.ndim >= 2:
        u, _, vt = np.linalg.svd(x, full_matrices=False)
        return np.sqrt(max(1.0, x.shape[1] / x.shape[0])) * (u @ vt)
    return x / np.sqrt(np.mean(x**2))


def _hand(grads_seq, b1, b2, eps=1e-8):
    m = {k: np.zeros(s) for k, s in SHAPES.items()}
    nu = {k: 0.0 for k in SHAPES}
    out = []
    for t, g in enumerate(grads_seq, start=1):
        for k in SHAPES:
            dev = g[k] - m[k]
            dual = np.sum(dev * _direction(dev))  # scaled nuclear norm / sqrt(n) * l2 norm
            nu[k] = b2 * nu[k] + (1 - b2) * dual**2
        sigma = {k: np.sqrt(nu[k] / (1 - b2**t)) for k in SHAPES}
        m = {k: b1 * m[k] + (1 - b1) * g[k] for k in SHAPES}
        step = {}
        for group in (("w1", "w2"), ("b1", "b2")):
            mean = np.mean([sigma[k] for k in group])
            for k in group:
                step[k] = (mean + eps) / (sigma[k] + eps) * _direction(m[k])
        out.append(step)
    return out


def test_matches_hand_computation_with_exact_lmo(x64):
    rng = np.random.default_rng(0)
    seq = [
        {k: rng.normal(size=s) * (1 + i) for i, (k, s) in enumerate(SHAPES.items())}
        for _ in range(4)
    ]
    # nuclear norm cross-check of the dual norm used by the hand computation
    x = seq[0]["w2"]
    np.testing.assert_allclose(
        np.sum(x * _direction(x)), np.sqrt(5 / 3) * np.linalg.norm(x, "nuc"), rtol=1e-12
    )
    want = _hand(seq, 0.9, 0.8)
    tx = gl.transforms.scale_by_lanton(0.9, 0.8, lmo="svd")
    state = tx.init({k: jnp.zeros(s, jnp.float64) for k, s in SHAPES.items()})
    update = jax.jit(tx.update)
    for g, w in zip(seq, want):
        updates, state = update({k: jnp.asarray(v) for k, v in g.items()}, state)
        for k in SHAPES:
            np.testing.assert_allclose(np.asarray(updates[k]), w[k], rtol=1e-9, atol=1e-12)


def test_single_matrix_is_muon_without_nesterov():
    """One layer per group: alpha == 1, and the step is optax's Muon (same Newton-Schulz)
    times Muon's RMS->RMS factor sqrt(max(1, d_out / d_in))."""
    rng = np.random.default_rng(1)
    params = {"w": jnp.zeros((3, 5))}
    ours = gl.transforms.scale_by_lanton(0.95)
    muon = optax.contrib.scale_by_muon(beta=0.95, nesterov=False)
    s_ours, s_muon = ours.init(params), muon.init(params["w"])
    ours_update, muon_update = jax.jit(ours.update), jax.jit(muon.update)
    for _ in range(3):
        g = {"w": jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)}
        u_ours, s_ours = ours_update(g, s_ours)
        u_muon, s_muon = muon_update(g["w"], s_muon)
        # optax's Muon applies bias correction to the momentum; orthogonalisation is scale-free
        np.testing.assert_allclose(
            np.asarray(u_ours["w"]), np.sqrt(5 / 3) * np.asarray(u_muon), rtol=2e-3, atol=2e-4
        )


def test_noisier_layer_gets_smaller_rate():
    rng = np.random.default_rng(2)
    signal = rng.normal(size=(3, 3))
    tx = gl.transforms.scale_by_lanton(0.9, 0.9, lmo="svd")
    state = tx.init({"quiet": jnp.zeros((3, 3)), "noisy": jnp.zeros((3, 3))})
    step = jax.jit(tx.update)
    for _ in range(40):
        g = {
            "quiet": jnp.asarray(signal + 0.05 * rng.normal(size=(3, 3)), jnp.float32),
            "noisy": jnp.asarray(signal + 2.0 * rng.normal(size=(3, 3)), jnp.float32),
        }
        updates, state = step(g, state)
    # Both directions are scaled orthogonal 3x3 matrices (Frobenius norm sqrt(3)).
    alpha = {k: float(jnp.linalg.norm(updates[k])) / np.sqrt(3.0) for k in updates}
    noise = {k: float(jnp.sqrt(state.noise[k])) for k in updates}
    assert alpha["quiet"] > 1.0 > alpha["noisy"]
    np.testing.assert_allclose(
        alpha["quiet"] / alpha["noisy"], noise["noisy"] / noise["quiet"], rtol=1e-4
    )
    # group-normalised: the harmonic mean of the layer rates is the base rate
    np.testing.assert_allclose(2.0 / (1 / alpha["quiet"] + 1 / alpha["noisy"]), 1.0, rtol=1e-4)


def test_zero_gradient_is_finite():
    tx = gl.transforms.scale_by_lanton()
    params = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    updates, _ = jax.jit(tx.update)(params, tx.init(params))
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"b1": 1.0}, "b1"),
        ({"b2": -0.5}, "b2"),
        ({"ns_steps": 0}, "ns_steps"),
        ({"lmo": "qr"}, "lmo"),
        ({"weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_bad_input_raises_at_construction(kwargs, name):
    with pytest.raises(ValueError, match=name):
        gl.transforms.lanton(0.02, **kwargs)
