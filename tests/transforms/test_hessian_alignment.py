"""The HGP Hessian-alignment penalty against dense Hessians on a tiny softmax head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gradlab.transforms import hessian_alignment_penalty


def _head_problem(num_domains=3, num_examples=4, dim=3, classes=3):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(num_domains, num_examples, dim)))
    y = jnp.asarray(rng.integers(0, classes, size=(num_domains, num_examples)))
    head = {"w": jnp.asarray(0.5 * rng.normal(size=(dim, classes))), "b": jnp.zeros(classes)}

    def loss_fn(p, batch):
        feats, labels = batch
        logp = jax.nn.log_softmax(feats @ p["w"] + p["b"])
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

    return loss_fn, head, (x, y)


def _dense_penalty(loss_fn, head, batches, alpha, beta):
    """The same penalty from explicit (P, P) Hessians, means held fixed (stop_gradient)."""
    flat, unravel = ravel_pytree(head)
    num = batches[0].shape[0]
    domain = [jax.tree.map(lambda a, e=e: a[e], batches) for e in range(num)]

    def f(v, b):
        return loss_fn(unravel(v), b)

    def penalty(v):
        gs = [jax.grad(f)(v, b) for b in domain]
        hs = [jax.hessian(f)(v, b) for b in domain]
        g_bar = sum(gs) / num
        h_bar = sum(hs) / num
        hg_bar = jax.lax.stop_gradient(h_bar @ g_bar)
        g_bar = jax.lax.stop_gradient(g_bar)
        hess = sum(jnp.sum((h @ g - hg_bar) ** 2) for h, g in zip(hs, gs, strict=True)) / num
        grad = sum(jnp.sum((g - g_bar) ** 2) for g in gs) / num
        return alpha * hess + beta * grad, hess, grad

    return jax.jit(penalty), flat, unravel, domain


def test_penalty_and_its_gradient_match_dense_hessians(x64):
    loss_fn, head, batches = _head_problem()
    alpha, beta = 0.7, 0.2
    dense, flat, unravel, domain = _dense_penalty(loss_fn, head, batches, alpha, beta)
    out = jax.jit(lambda p: hessian_alignment_penalty(loss_fn, p, batches, alpha=alpha, beta=beta))(
        head
    )
    value, hess, grad = dense(flat)
    np.testing.assert_allclose(out.penalty, value, rtol=1e-12)
    np.testing.assert_allclose(out.hessian_term, hess, rtol=1e-12)
    np.testing.assert_allclose(out.gradient_term, grad, rtol=1e-12)
    np.testing.assert_allclose(out.risk, np.mean([loss_fn(head, b) for b in domain]), rtol=1e-12)
    assert out.penalty > 0 and out.hessian_term > 0
    # Gradient of the penalty (third derivatives through H_e g_e, means stopped).
    g = jax.jit(jax.grad(lambda p: hessian_alignment_penalty(loss_fn, p, batches, alpha=alpha,
                                                     beta=beta).penalty))(head)  # fmt: skip
    g_dense = jax.jit(jax.grad(lambda v: dense(v)[0]))(flat)
    np.testing.assert_allclose(ravel_pytree(g)[0], g_dense, rtol=1e-10, atol=1e-14)


def test_identical_domains_have_zero_penalty(x64):
    loss_fn, head, (x, y) = _head_problem()
    same = (jnp.repeat(x[:1], 3, axis=0), jnp.repeat(y[:1], 3, axis=0))
    out = jax.jit(lambda p: hessian_alignment_penalty(loss_fn, p, same))(head)
    np.testing.assert_allclose([out.hessian_term, out.gradient_term], 0.0, atol=1e-28)


def test_bad_input():
    loss_fn, head, batches = _head_problem()
    with pytest.raises(ValueError, match="alpha"):
        hessian_alignment_penalty(loss_fn, head, batches, alpha=-1.0)
    with pytest.raises(ValueError, match="beta"):
        hessian_alignment_penalty(loss_fn, head, batches, beta=-0.1)
    with pytest.raises(ValueError, match="domain_batches"):
        hessian_alignment_penalty(loss_fn, head, (batches[0], batches[1][:2]))
