"""Sharded vs single-device K-FAC / EK-FAC construction, in ONE subprocess with 4 CPU devices.

Launched by ``test_sharded_kfac.py`` with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
(so the rest of the suite keeps one device). Prints one JSON object per line:
``{"name", "err", "tol"}``, the relative error of a sharded result against the single-device
one in float64 (K-FAC: its factors and diagonal; EK-FAC: its dense matrix, which does not
depend on the signs of the eigenvectors), or ``{"name", "error"}`` for a structural check.
"""

from __future__ import annotations

import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp

import gradlab as gl

# No side effects at import (pytest --doctest-modules imports every module under tests/):
# x64 is switched on under __main__ only.

TOL = 1e-10


def emit(**record):
    print(json.dumps(record), flush=True)


def rel_err(got, want):
    got, want = jax.device_get(got), jax.device_get(want)
    num = sum(
        float(jnp.sum((jnp.asarray(a) - b) ** 2))
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)
    )
    den = sum(float(jnp.sum(jnp.asarray(b) ** 2)) for b in jax.tree.leaves(want))
    return (num / max(den, 1e-300)) ** 0.5


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


def as_matrix(op, params):
    """K-FAC: its factors and diagonal; EK-FAC: its dense matrix (sign-free)."""
    if isinstance(op, gl.curvature.KFAC):
        return (op.factors, op.diagonal)
    return gl.curvature.dense(op.matvec, params)


BUILDERS = {"kfac": gl.curvature.kfac, "ekfac": gl.curvature.ekfac}
KEY = jax.random.key(3)


def build(which, apply_fn, params, batch, fisher_type, **opts):
    key = KEY if fisher_type == "mc" else None
    return BUILDERS[which](
        apply_fn, "softmax_cross_entropy", params, batch, fisher_type=fisher_type, key=key, **opts
    )


def check_mesh(kind):
    mesh = gl.distributed.make_data_mesh(4, axis_type=kind)
    params, apply_fn, x, y = problem(12)
    sharded = gl.distributed.shard_batch((x, y), mesh)
    types = ("type2", "mc", "empirical") if kind == "explicit" else ("type2",)
    for which in BUILDERS:
        for fisher_type in types:
            want = build(which, apply_fn, params, (x, y), fisher_type)
            got = build(which, apply_fn, params, sharded, fisher_type)
            emit(
                name=f"{kind}/{which}/{fisher_type}",
                err=rel_err(as_matrix(got, params), as_matrix(want, params)),
                tol=TOL,
            )
            if fisher_type == "type2":  # the operator built on the mesh is usable eagerly
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
    one = gl.distributed.MaskedBatch(jax.device_get(masked.batch), jax.device_get(masked.mask))
    for which in BUILDERS:
        want = build(which, apply_fn, params, (x[:10], y[:10]), "type2")
        got = build(which, apply_fn, params, masked, "type2")
        emit(
            name=f"{kind}/{which}/masked",
            err=rel_err(as_matrix(got, params), as_matrix(want, params)),
            tol=TOL,
        )
    # mc noise is drawn for the padded batch: compare with the same MaskedBatch on one device.
    want = build("kfac", apply_fn, params, one, "mc")
    got = build("kfac", apply_fn, params, masked, "mc")
    emit(name=f"{kind}/kfac/masked_mc", err=rel_err(got, want), tol=TOL)

    # Built inside the user's jit (the traced batch carries its Explicit sharding).
    for which in BUILDERS:
        run = jax.jit(lambda p, b, w=which: as_matrix(build(w, apply_fn, p, b, "type2"), p))
        want = as_matrix(build(which, apply_fn, params, (x, y), "type2"), params)
        emit(name=f"{kind}/{which}/jit", err=rel_err(run(params, sharded), want), tol=TOL)
    # The compiled construction never gathers the batch: one shard per device.
    lowered = jax.jit(lambda p, b: build("ekfac", apply_fn, p, b, "mc")).lower(params, sharded)
    text = lowered.compile().as_text()
    emit(name=f"{kind}/no_gather", error="all-gather" if "all-gather" in text else None)

    # kfac_approx="reduce" (and "expand") on a tiny convolution: 4 positions per image.
    cnn = TinyCNN()
    xi = jax.random.normal(jax.random.key(7), (8, 3, 3, 2), jnp.float64)
    yi = jax.random.randint(jax.random.key(8), (8,), 0, 3)
    cp = _f64(cnn.init(jax.random.key(9), xi[:1]))
    si = gl.distributed.shard_batch((xi, yi), mesh)
    for which, approx in (("kfac", "reduce"), ("ekfac", "reduce"), ("kfac", "expand")):
        want = build(which, cnn.apply, cp, (xi, yi), "type2", kfac_approx=approx)
        got = build(which, cnn.apply, cp, si, "type2", kfac_approx=approx)
        emit(
            name=f"{kind}/{which}/conv_{approx}",
            err=rel_err(as_matrix(got, cp), as_matrix(want, cp)),
            tol=TOL,
        )


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    assert len(jax.devices()) == 4, jax.devices()
    for kind in sys.argv[1:] or ["explicit", "auto"]:
        check_mesh(kind)
