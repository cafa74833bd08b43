"""Sharded vs single-device K-FAC / EK-FAC construction, in ONE subprocess with 4 CPU devices.

Launched by ``test_sharded_kfac.py`` with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
(so the rest of the suite keeps one device). Prints one JSON object per line:
``{"name", "err", "tol"}``, the relative error of a sharded result against the single-device
one in float64 (K-FAC: its factors and diagonal; EK-FAC: its dense matrix, which does not
depend on the signs of the eigenvectors), or ``{"name", "error"}`` for a structural check.
"""

from __future__ import annotations

import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import gradlab as gl
from tests.distributed._multi_device import TOL, emit, rel_err

# No side effects at import (pytest --doctest-modules imports every module under tests/):
# x64 is switched on under __main__ only.


class Net(nn.Module):
    """Dense, LayerNorm (uncovered: its exact diagonal), Dense."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(nn.LayerNorm()(jnp.tanh(nn.Dense(5)(x))))


class TinyCNN(nn.Module):
    """A 2x2 convolution (4 positions per image), average pooling, a Dense head."""

    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Conv(3, (2, 2), padding="VALID")(x))
        return nn.Dense(3)(jnp.mean(h, axis=(1, 2)))


def _f64(tree):
    return jax.tree.map(lambda a: a.astype(jnp.float64), tree)


def problem(n):
    k = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(k[0], (n, 3), jnp.float64)
    y = jax.random.randint(k[1], (n,), 0, 4)
    module = Net()
    return _f64(module.init(k[2], x[:1])), module.apply, x, y


def as_matrix(op, params=None):
    """K-FAC: its factors and diagonal. EK-FAC: per layer its kernel and bias blocks
    ``(Q_A x Q_G) diag(s) (Q_A x Q_G)^T`` and the diagonal, formed on the host (free of the
    eigenvectors' signs)."""
    if isinstance(op, gl.curvature.KFAC):
        return (op.factors, op.diagonal)
    blocks = {}
    for name, f in jax.device_get(op.factors).items():
        qg = np.asarray(f.qg)
        qa = np.eye(f.scales.shape[0]) if f.qa is None else np.asarray(f.qa)
        q = np.kron(qa, qg)
        blocks[name] = (q @ (np.asarray(f.scales).reshape(-1)[:, None] * q.T),)
        if f.bias_scales is not None:
            blocks[name] += (qg @ (np.asarray(f.bias_scales)[:, None] * qg.T),)
    return (blocks, jax.device_get(op.diagonal))


BUILDERS = {"kfac": gl.curvature.kfac, "ekfac": gl.curvature.ekfac}
FISHER_TYPES = ("type2", "mc", "empirical")


def build(which, apply_fn, params, batch, fisher_type, **opts):
    key = jax.random.key(3) if fisher_type == "mc" else None
    return BUILDERS[which](
        apply_fn, "softmax_cross_entropy", params, batch, fisher_type=fisher_type, key=key, **opts
    )


def compare(name, got, want, params):
    emit(name=name, err=rel_err(as_matrix(got, params), as_matrix(want, params)), tol=TOL)


def check_mesh(kind):
    mesh = gl.distributed.make_data_mesh(4, axis_type=kind)
    params, apply_fn, x, y = problem(12)
    sharded = gl.distributed.shard_batch((x, y), mesh)
    # The Auto mesh runs the same shard_map path: one case (EK-FAC builds the K-FAC factors).
    cases = [("ekfac", "type2")] if kind == "auto" else list(BUILDERS)
    cases = cases if kind == "auto" else [(w, t) for w in cases for t in FISHER_TYPES]
    for which, fisher_type in cases:
        want = build(which, apply_fn, params, (x, y), fisher_type)
        got = build(which, apply_fn, params, sharded, fisher_type)
        compare(f"{kind}/{which}/{fisher_type}", got, want, params)
        if (kind, which, fisher_type) == ("explicit", "ekfac", "type2"):  # usable eagerly
            v = jax.tree.map(jnp.ones_like, params)
            emit(
                name=f"{kind}/{which}/inverse",
                err=rel_err(got.inverse(0.1)(v), want.inverse(0.1)(v)),
                tol=TOL,
            )
    if kind != "explicit":
        return

    # Uneven: 10 examples padded to 12, the shards hold 3, 3, 3, 1 true examples.
    masked = gl.distributed.shard_batch((x[:10], y[:10]), mesh, pad=True)
    for which in BUILDERS:
        want = build(which, apply_fn, params, (x[:10], y[:10]), "type2")
        compare(
            f"{kind}/{which}/masked", build(which, apply_fn, params, masked, "type2"), want, params
        )
    # mc noise is drawn for the padded batch: compare with the same MaskedBatch on one device.
    one = gl.distributed.MaskedBatch(jax.device_get(masked.batch), jax.device_get(masked.mask))
    want = build("kfac", apply_fn, params, one, "mc")
    compare(f"{kind}/kfac/masked_mc", build("kfac", apply_fn, params, masked, "mc"), want, params)

    # Built inside the user's jit (the traced batch carries its Explicit sharding); the
    # compiled construction never gathers the batch (one shard's activations per device).
    for which, fisher_type in (("kfac", "mc"), ("ekfac", "type2")):
        run = jax.jit(lambda p, b, w=which, t=fisher_type: build(w, apply_fn, p, b, t))
        compiled = run.lower(params, sharded).compile()
        want = as_matrix(build(which, apply_fn, params, (x, y), fisher_type), params)
        got = as_matrix(compiled(params, sharded))
        emit(name=f"{kind}/{which}/jit", err=rel_err(got, want), tol=TOL)
        gathers = "all-gather" in compiled.as_text()
        emit(name=f"{kind}/{which}/no_gather", error="all-gather" if gathers else None)

    # kfac_approx="reduce" on a tiny convolution (4 positions per image, average pooled).
    cnn = TinyCNN()
    xi = jax.random.normal(jax.random.key(7), (8, 3, 3, 2), jnp.float64)
    yi = jax.random.randint(jax.random.key(8), (8,), 0, 3)
    cp = _f64(cnn.init(jax.random.key(9), xi[:1]))
    si = gl.distributed.shard_batch((xi, yi), mesh)
    for which in BUILDERS:
        want = build(which, cnn.apply, cp, (xi, yi), "type2", kfac_approx="reduce")
        got = build(which, cnn.apply, cp, si, "type2", kfac_approx="reduce")
        compare(f"{kind}/{which}/conv_reduce", got, want, cp)


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    assert len(jax.devices()) == 4, jax.devices()
    for kind in sys.argv[1:] or ["explicit", "auto"]:
        check_mesh(kind)
