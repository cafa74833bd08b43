"""Shared helpers for the spectral tests: dense operators with known spectra."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def known_operator(eigenvalues, seed=0):
    """Dense symmetric ``A = Q diag(lambda) Q^T`` (float64 numpy) with a Haar-random ``Q``."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    n = lam.shape[0]
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    q = q * np.sign(np.diag(r))
    a = (q * lam) @ q.T
    return (a + a.T) / 2


def as_matvec(a):
    """A jnp matvec for a dense matrix (uses the current default float dtype)."""
    aj = jnp.asarray(a)
    return lambda v: aj @ v


def spectrum500():
    """500 eigenvalues: clusters at the top, a negative bulk and a negative cluster at the bottom."""
    rng = np.random.default_rng(1)
    top = [10.0, 10.0 + 1e-3, 10.0 + 2e-3, 9.0, 8.5]
    bottom = [-6.0, -6.0 + 1e-3, -5.5, -5.0, -4.9]
    bulk = rng.uniform(-3.0, 5.0, 490)
    return np.concatenate([top, bottom, bulk])


def tiny_mlp_problem():
    """A tiny tanh MLP with softmax cross-entropy (float64): ``(loss_fn, params, batch)``."""
    import jax

    k1, k2, k3, k4 = jax.random.split(jax.random.key(3), 4)
    x = jax.random.normal(k1, (24, 4), jnp.float64)
    y = jax.random.randint(k2, (24,), 0, 3)
    params = {
        "w1": 0.8 * jax.random.normal(k3, (4, 8), jnp.float64),
        "b1": jnp.zeros(8, jnp.float64),
        "w2": 0.8 * jax.random.normal(k4, (8, 3), jnp.float64),
        "b2": jnp.zeros(3, jnp.float64),
    }

    def loss_fn(p, batch):
        xb, yb = batch
        logits = jnp.tanh(xb @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))

    return loss_fn, params, (x, y)
