"""Sharded vs single-device checks, in subprocesses with 4 simulated CPU devices.

``python _multi_device.py --group G [kind ...]`` runs one group of checks (``operators``:
curvature operators and bad placements; ``spectral``: the algorithms on a data-parallel
Hessian; ``ntk``: NTK operator and empirical kernel) for the mesh kinds given (default
``explicit auto``). Each group is launched by its own test file (``test_sharded_operators.py``,
``test_sharded_spectral.py``, ``test_sharded_ntk.py``, through ``_launch.py``) with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``, so the rest of the suite keeps one
device and pytest-xdist workers run the groups concurrently. Prints one JSON object per line:
``{"name", "err", "tol"}`` for a numeric comparison (relative error against the single-device
result in float64) or ``{"name", "error"}`` for an expected ``ValueError`` message; the
time of each record goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import gradlab as gl

# No side effects at import: pytest's --doctest-modules imports every module under tests/, and a
# global jax_enable_x64 here leaked float64 into every later test of that xdist worker. The
# launcher (_launch.py) sets XLA_FLAGS/JAX_PLATFORMS; x64 is switched on in __main__.

TOL = 1e-10


START = time.perf_counter()
GROUPS = ("operators", "spectral", "ntk")


def emit(**record):
    print(json.dumps(record), flush=True)
    print(f"{time.perf_counter() - START:.1f}s {record['name']}", file=sys.stderr, flush=True)


def rel_err(got, want):
    """Relative Frobenius error over all leaves, on the host (no device work to compile)."""
    got, want = jax.device_get(got), jax.device_get(want)
    pairs = list(zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True))
    num = sum(float(np.sum((np.asarray(a) - np.asarray(b)) ** 2)) for a, b in pairs)
    den = sum(float(np.sum(np.asarray(b) ** 2)) for _, b in pairs)
    return (num / max(den, 1e-300)) ** 0.5


_REFERENCE = {}


def compare(name, got, want, tol=TOL):
    emit(name=name, err=rel_err(got, want), tol=tol)


def reference(name, fn):
    """Single-device results, computed once for both mesh kinds (``fn=None``: look up)."""
    if name not in _REFERENCE:
        _REFERENCE[name] = jax.device_get(fn())
    return _REFERENCE[name]


# The Auto mesh runs a subset (XLA places its inputs; the code path is the same shard_map).
AUTO = {"hessian", "ggn", "empirical_fisher", "eigsh", "trace", "ntk_operator"}


def wanted(kind, name):
    return kind == "explicit" or name.split("/")[0] in AUTO


def expect_error(name, fn):
    try:
        fn()
    except ValueError as err:
        emit(name=name, error=str(err))
    else:
        emit(name=name, error=None)


CALLS = [0]  # Python calls of model_fn: counts traces (and eager evaluations)


def model_fn(params, x):
    CALLS[0] += 1
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def loss_fn(params, batch):
    x, y = batch
    return gl.curvature.softmax_cross_entropy(model_fn(params, x), y)


def cubic(outputs, targets):  # a loss without a closed-form output Hessian (autodiff path)
    return jnp.mean(jnp.sum((outputs - 0.1 * targets[:, None]) ** 3 + outputs**2, axis=-1))


def problem(n):
    k = jax.random.split(jax.random.key(0), 6)
    params = {
        "w1": jax.random.normal(k[0], (3, 5), jnp.float64),
        "b1": 0.1 * jax.random.normal(k[1], (5,), jnp.float64),
        "w2": jax.random.normal(k[2], (5, 4), jnp.float64),
        "b2": jnp.zeros(4, jnp.float64),
    }
    x = jax.random.normal(k[3], (n, 3), jnp.float64)
    y = jax.random.randint(k[4], (n,), 0, 4)
    return params, x, y


def operators(params):
    key = jax.random.key(3)
    return {
        "hessian": lambda b: gl.curvature.hessian(loss_fn, params, b),
        "ggn": lambda b: gl.curvature.ggn(model_fn, "softmax_cross_entropy", params, b),
        "ggn_autodiff": lambda b: gl.curvature.ggn(model_fn, cubic, params, b),
        "fisher": lambda b: gl.curvature.fisher(model_fn, params, b, key=key, num_samples=2),
        "fisher_gaussian": lambda b: gl.curvature.fisher(
            model_fn, params, b, key=key, likelihood="gaussian"
        ),
        "empirical_fisher": lambda b: gl.curvature.empirical_fisher(loss_fn, params, b),
    }


def check_operators(kind):
    mesh = gl.distributed.make_data_mesh(4, axis_type=kind)
    params, x, y = problem(8)
    sharded = gl.distributed.shard_batch((x, y), mesh)
    # Uneven: 7 examples padded to 8, the shards hold 2, 2, 2, 1 true examples.
    masked = gl.distributed.shard_batch((x[:7], y[:7]), mesh, pad=True)
    for name, build in operators(params).items():
        if not wanted(kind, name):
            continue
        want = reference(name, lambda: gl.curvature.dense(build((x, y)), params))
        compare(f"{kind}/{name}", gl.curvature.dense(build(sharded), params), want)
        if name.startswith("fisher"):  # labels are drawn for the padded batch: compare with the
            # same MaskedBatch on one device (padding exactness is tested on one device)
            one = gl.distributed.MaskedBatch(
                jax.device_get(masked.batch), jax.device_get(masked.mask)
            )
            want7 = gl.curvature.dense(build(one), params)
        else:
            want7 = reference(
                f"{name}/7", lambda: gl.curvature.dense(build((x[:7], y[:7])), params)
            )
        compare(f"{kind}/{name}/masked", gl.curvature.dense(build(masked), params), want7)

    # Built and applied inside jit (the batch is traced: Explicit types carry the sharding).
    v = jax.tree.map(jnp.ones_like, params)
    hvp = jax.jit(lambda p, b, v: gl.curvature.hessian(loss_fn, p, b)(v))
    compare(
        f"{kind}/hessian/jit",
        hvp(params, sharded, v),
        gl.curvature.hessian(loss_fn, params, (x, y))(v),
    )
    # Params replicated on the mesh by the user.
    rep = gl.distributed.replicate(params, mesh)
    compare(
        f"{kind}/hessian/replicated",
        gl.curvature.hessian(loss_fn, rep, sharded)(v),
        hvp(params, (x, y), v),
    )

    # linearize=True: the whole sharded gradient is linearized once, at construction.
    for label, batch, want in (
        ("", sharded, reference("hessian", None)),
        ("/masked", masked, reference("hessian/7", None)),
    ):
        before = CALLS[0]
        hvp_lin = gl.curvature.hessian(loss_fn, params, batch, linearize=True)
        built = CALLS[0]
        compare(f"{kind}/hessian/linearize{label}", gl.curvature.dense(hvp_lin, params), want)
        hvp_lin(v)
        # model_fn ran at construction (linearize), and never again in the products
        emit(
            name=f"{kind}/hessian/linearize{label}/traced_once",
            err=float((built == before) + CALLS[0] - built),
            tol=0.0,
        )
    # Eager products of one sharded operator compile one program, traced once: the second and
    # third products do not run model_fn in Python (op-by-op shard_map would, every time).
    hvp_eager = gl.curvature.hessian(loss_fn, params, sharded)
    hvp_eager(v)
    first = CALLS[0]
    hvp_eager(v)
    hvp_eager(v)
    emit(name=f"{kind}/hessian/eager/traced_once", err=float(CALLS[0] - first), tol=0.0)
    if kind == "explicit":
        lin = jax.jit(lambda p, b, v: gl.curvature.hessian(loss_fn, p, b, linearize=True)(v))
        compare(
            f"{kind}/hessian/linearize/jit", lin(params, masked, v), hvp(params, (x[:7], y[:7]), v)
        )


def check_spectral(kind):
    mesh = gl.distributed.make_data_mesh(4, axis_type=kind)
    params, x, y = problem(8)
    sharded = gl.distributed.shard_batch((x, y), mesh)
    v = jax.tree.map(jnp.ones_like, params)
    # Spectral algorithms on the data-parallel Hessian, same keys as on one device.
    single = gl.curvature.hessian(loss_fn, params, (x, y))
    multi = gl.curvature.hessian(loss_fn, params, sharded)
    key = jax.random.key(5)
    algorithms = {
        "eigsh": lambda m: gl.spectral.eigsh(m, params, k=3, key=key, num_matvecs=12).eigenvalues,
        "lanczos": lambda m: gl.spectral.lanczos(m, v, num_matvecs=10)[:2],
        "slq": lambda m: gl.spectral.slq(m, params, key=key, num_probes=2, num_matvecs=8),
        "trace": lambda m: gl.spectral.trace(m, params, key=key, num_matvecs=12),
        "diagonal": lambda m: gl.spectral.diagonal(m, params, key=key, num_matvecs=6),
        "cg": lambda m: gl.spectral.cg(m, v, damping=0.5, tol=1e-12).x,
        "power_iteration": lambda m: (
            gl.spectral.power_iteration(m, params, key=key, num_iters=30).eigenvalues
        ),
    }
    for name, run in algorithms.items():
        if wanted(kind, name):
            compare(f"{kind}/{name}", run(multi), reference(name, lambda: run(single)), 1e-8)
    if kind == "explicit":
        eig = jax.jit(
            lambda p, b: (
                gl.spectral.eigsh(
                    gl.curvature.ggn(model_fn, "softmax_cross_entropy", p, b),
                    p,
                    k=3,
                    key=key,
                    num_matvecs=12,
                ).eigenvalues
            )
        )
        compare(f"{kind}/eigsh/jit", eig(params, sharded), eig(params, (x, y)), 1e-8)


# New masked NTK checks skip the auto rule's cost analysis (masking is implementation-blind).
FIXED = "jacobian_contraction"


def zero_padding(kernel, n, columns):
    """``kernel`` (of 8 examples) with the rows, and columns if asked, of examples ``n:`` zeroed."""
    out = np.array(kernel)
    out[n:] = 0
    if columns:
        out[:, n:] = 0
    return out


def check_ntk(kind):
    mesh = gl.distributed.make_data_mesh(4, axis_type=kind)
    params, x, _ = problem(8)
    key = jax.random.key(5)
    # NTK: operator (masked too) and the empirical kernel with rows split over the mesh.
    xs = gl.distributed.shard_batch(x, mesh)
    u = jax.random.normal(jax.random.key(6), (8, 4), jnp.float64)
    compare(
        f"{kind}/ntk_operator",
        gl.ntk.ntk_operator(model_fn, params, xs)(u),
        reference("ntk_operator", lambda: gl.ntk.ntk_operator(model_fn, params, x)(u)),
    )
    matvec = gl.ntk.ntk_operator(model_fn, params, xs)
    matvec(u)
    first = CALLS[0]
    matvec(u)
    emit(name=f"{kind}/ntk_operator/eager/traced_once", err=float(CALLS[0] - first), tol=0.0)
    # x1 padded: 7 examples over 4 devices (a MaskedBatch); the kernel keeps the padded shape.
    # Its true block is the one-device kernel of x[:7], i.e. of x with example 7 zeroed out.
    mx = gl.distributed.shard_batch(x[:7], mesh, pad=True)
    got = gl.ntk.empirical_ntk(model_fn, params, mx)
    want = reference("ntk", lambda: gl.ntk.empirical_ntk(model_fn, params, x, vmap_axes=0))
    compare(f"{kind}/empirical_ntk/masked", got, zero_padding(want, 7, columns=True))
    host = jax.device_get(got)
    emit(
        name=f"{kind}/empirical_ntk/masked/padding_zero",
        err=float(np.abs(host[7:]).max() + np.abs(host[:, 7:]).max()),
        tol=0.0,
    )
    emit(
        name=f"{kind}/empirical_ntk/masked/sharded",
        error=None if got.sharding.spec[0] == "data" else str(got.sharding),
    )
    if kind != "explicit":
        return
    compare(
        f"{kind}/ntk_operator/tiled",
        gl.ntk.ntk_operator(model_fn, params, xs, batch_size=1)(u),
        reference("ntk_operator", None),
    )
    got = jax.device_get(gl.ntk.ntk_operator(model_fn, params, mx)(u))
    compare(
        f"{kind}/ntk_operator/masked", got[:7], gl.ntk.ntk_operator(model_fn, params, x[:7])(u[:7])
    )
    emit(name=f"{kind}/ntk_operator/masked_rows_zero", err=float(jnp.abs(got[7:]).max()), tol=0.0)
    lr = lambda xx: gl.ntk.max_learning_rate(model_fn, params, xx, key=key).lambda_max  # noqa: E731
    compare(f"{kind}/max_learning_rate", lr(xs), lr(x), 1e-8)
    for label, opts in {
        "traced": {},
        "full": {"trace_axes": ()},
        "diagonal": {"diagonal_axes": (0,)},
    }.items():
        got = gl.ntk.empirical_ntk(model_fn, params, xs, **opts)
        want = reference("ntk", None) if label == "traced" else None
        if want is None:
            want = gl.ntk.empirical_ntk(model_fn, params, x, vmap_axes=0, **opts)
        compare(f"{kind}/empirical_ntk/{label}", got, want)
        emit(
            name=f"{kind}/empirical_ntk/{label}/sharded",
            error=None if got.sharding.spec[0] == "data" else str(got.sharding),
        )
        if label == "diagonal":  # its own row-only path (no gathered x2); zeroing beyond
            # two axes ("full") is the same code, checked on one device (tests/ntk)
            got = gl.ntk.empirical_ntk(model_fn, params, mx, implementation=FIXED, **opts)
            compare(f"{kind}/empirical_ntk/masked/{label}", got, zero_padding(want, 7, False))
    x2 = x[:4]
    want = gl.ntk.empirical_ntk(model_fn, params, x, x2, vmap_axes=0)
    compare(f"{kind}/empirical_ntk/x2", gl.ntk.empirical_ntk(model_fn, params, xs, x2), want)
    # Both sides masked: x2 = 4 rows of which 3 are true examples.
    m2 = gl.distributed.MaskedBatch(x2, jnp.arange(4) < 3)
    compare(
        f"{kind}/empirical_ntk/masked/x2",
        gl.ntk.empirical_ntk(model_fn, params, mx, m2, implementation=FIXED),
        zero_padding(want.T, 3, columns=False).T * (np.arange(8) < 7)[:, None],
    )


def check_errors():
    mesh = gl.distributed.make_data_mesh(4)
    params, x, y = problem(10)
    expect_error("errors/not_divisible", lambda: gl.distributed.shard_batch((x, y), mesh))
    expect_error(
        "errors/axis_name", lambda: gl.distributed.shard_batch((x, y), mesh, axis_name="batch")
    )
    other = gl.distributed.make_data_mesh(2, devices=jax.devices()[2:])
    expect_error(
        "errors/params_mesh",
        lambda: gl.curvature.hessian(
            loss_fn,
            gl.distributed.replicate(params, other),
            gl.distributed.shard_batch((x[:8], y[:8]), mesh),
        ),
    )


CHECKS = {"operators": check_operators, "spectral": check_spectral, "ntk": check_ntk}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--group", choices=GROUPS, required=True)
    parser.add_argument("kinds", nargs="*", default=["explicit", "auto"])
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    assert len(jax.devices()) == 4, jax.devices()
    for kind in args.kinds:
        CHECKS[args.group](kind)
    if args.group == "operators":
        check_errors()
