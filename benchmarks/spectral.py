"""Benchmark of gradlab.spectral on the digits MLP Hessians: ``python -m benchmarks.spectral``.

Figures (JSON): Lanczos(100) time against 100 Hessian-vector products and against a bare
loop of 100 HVPs plus the two reorthogonalisation passes (the floor), compile time at 200 vs
20 matvecs, ``eigsh`` top-5 matvec count and error against a float64 reference, Hutch++ trace
error against the exact trace (computed per layer; Hutchinson and the leaf-stratified
estimator also over 5 keys), SLQ time, ratios to the obvious plain-JAX
version (Python loop over a jitted HVP, reorthogonalisation and QR on the host with NumPy) and
the compiled peak memory of a 1,000-probe Hutchinson trace against one HVP, and repeated
eager ``eigsh`` calls on one operator (kept program vs traced at every call).
``--quick`` keeps repeats small and runs the heavy parts on the small model only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import gradlab as gl
from benchmarks._workloads import digits_mlp, emit, time_alternating, time_fn
from gradlab._src.tree import ravel


def _hvp(loss_fn, params, batch):
    return gl.curvature.hessian(loss_fn, params, batch)


def _flat_hvp(loss_fn, params, batch):
    _, unravel = ravel(params)
    hvp = _hvp(loss_fn, params, batch)
    return lambda v: ravel(hvp(unravel(v)))[0]


# --------------------------------------------------------------------------------------------
# Baselines written the obvious way: a Python loop over a jitted HVP, host-side linear algebra.
# --------------------------------------------------------------------------------------------


def plain_lanczos(flat_hvp_jit, v0, m):
    """Lanczos with full reorthogonalisation on the host (NumPy), HVPs jitted one at a time."""
    n = v0.shape[0]
    basis = np.zeros((m, n), np.float32)
    alphas, betas = np.zeros(m), np.zeros(m)
    q = v0 / np.linalg.norm(v0)
    for i in range(m):
        basis[i] = q
        w = np.asarray(flat_hvp_jit(jnp.asarray(q)))
        alphas[i] = q @ w
        for _ in range(2):
            w = w - basis[: i + 1].T @ (basis[: i + 1] @ w)
        betas[i] = np.linalg.norm(w)
        q = w / betas[i]
    t = np.diag(alphas) + np.diag(betas[:-1], 1) + np.diag(betas[:-1], -1)
    return t, basis


def plain_hutchpp(flat_hvp_jit, n, m, seed=0):
    rng = np.random.default_rng(seed)
    s = m // 3
    probes = rng.choice([-1.0, 1.0], size=(s, n)).astype(np.float32)
    y = np.stack([np.asarray(flat_hvp_jit(jnp.asarray(p))) for p in probes])
    q = np.linalg.qr(y.T)[0].T
    top = sum(float(qi @ np.asarray(flat_hvp_jit(jnp.asarray(qi)))) for qi in q)
    vals = []
    for _ in range(m - 2 * s):
        z = rng.choice([-1.0, 1.0], size=n).astype(np.float32)
        g = z - (q @ z) @ q
        vals.append(float(g @ np.asarray(flat_hvp_jit(jnp.asarray(g)))))
    return top + np.mean(vals)


def plain_slq(flat_hvp_jit, n, num_probes, m, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num_probes):
        z = rng.choice([-1.0, 1.0], size=n).astype(np.float32)
        t, _ = plain_lanczos(flat_hvp_jit, z, m)
        vals, vecs = np.linalg.eigh(t)
        out.append((vals, vecs[0] ** 2))
    return out


# --------------------------------------------------------------------------------------------
# Exact Hessian trace of the tanh MLP, layer by layer.
# --------------------------------------------------------------------------------------------


def exact_trace_per_layer(params, batch, chunk=16):
    r"""Exact :math:`\operatorname{tr} \nabla^2 L` for the benchmark MLP (tanh, softmax CE).

    The weights of layer ``l`` enter only through its pre-activations ``z_{n,:} = a_{n,:} W + b``
    and examples do not interact, so :math:`\partial^2 L / \partial W_{ij}^2 = \sum_n a_{ni}^2
    D_{nj}` with :math:`D_{nj} = \partial^2 L / \partial z_{nj}^2` (and the bias gets
    :math:`\sum_n D_{nj}`). ``D`` needs one HVP per unit of the layer with respect to ``Z``,
    applied to all examples at once, instead of one per parameter.
    """
    names = sorted(params["params"], key=lambda k: int(k.split("_")[1]))
    num_layers = len(names)

    def layer_trace(index, params, batch):
        layers = params["params"]
        x, y = batch

        def loss_from(z):
            h = z
            for j in range(index, num_layers):
                if j > index:
                    h = h @ layers[names[j]]["kernel"] + layers[names[j]]["bias"]
                if j < num_layers - 1:
                    h = jnp.tanh(h)
            return gl.models.softmax_cross_entropy(h, y)

        a_in = x
        for j in range(index):
            a_in = jnp.tanh(a_in @ layers[names[j]]["kernel"] + layers[names[j]]["bias"])
        z = a_in @ layers[names[index]]["kernel"] + layers[names[index]]["bias"]
        grad_fn = jax.grad(loss_from)

        def diag_unit(j):
            e = jnp.zeros_like(z).at[:, j].set(1.0)
            return jax.jvp(grad_fn, (z,), (e,))[1][:, j]

        d = lax.map(diag_unit, jnp.arange(z.shape[1]), batch_size=chunk).T  # (N, width)
        return jnp.sum(jnp.sum(a_in**2, axis=1)[:, None] * d) + jnp.sum(d)

    fn = jax.jit(layer_trace, static_argnums=0)
    result = {name: float(fn(index, params, batch)) for index, name in enumerate(names)}
    return result


# --------------------------------------------------------------------------------------------


def lanczos_timings(wl, repeats, m=100):
    params, batch = wl.params, wl.batch
    v0 = jax.tree.map(lambda x: jax.random.normal(jax.random.key(1), x.shape, x.dtype), params)

    @jax.jit
    def one_hvp(p, b, v):
        return _hvp(wl.loss_fn, p, b)(v)

    @jax.jit
    def hvp_loop(p, b, v):
        mv = _flat_hvp(wl.loss_fn, p, b)
        flat = ravel(v)[0]
        return lax.fori_loop(0, m, lambda i, w: mv(w) / jnp.linalg.norm(w), flat)

    @jax.jit
    def floor(p, b, v):
        mv = _flat_hvp(wl.loss_fn, p, b)
        flat = ravel(v)[0]
        basis = jnp.zeros((m, flat.shape[0]), flat.dtype).at[0].set(flat / jnp.linalg.norm(flat))

        def body(i, basis):
            w = mv(basis[i])
            for _ in range(2):
                w = w - (basis @ w) @ basis
            nxt = jnp.minimum(i + 1, m - 1)
            return lax.dynamic_update_index_in_dim(basis, w / jnp.linalg.norm(w), nxt, 0)

        return lax.fori_loop(0, m, body, basis)

    @jax.jit
    def ours(p, b, v):
        return gl.spectral.lanczos(_hvp(wl.loss_fn, p, b), v, num_matvecs=m)

    @jax.jit
    def ours_plain(p, b, v):
        return gl.spectral.lanczos(_hvp(wl.loss_fn, p, b), v, num_matvecs=m, reorthogonalize=False)

    t_hvp = time_fn(one_hvp, params, batch, v0, repeats=max(5, repeats * 3))
    times = time_alternating(
        {
            "hvp_loop": (hvp_loop, (params, batch, v0)),
            "floor": (floor, (params, batch, v0)),
            "lanczos": (ours, (params, batch, v0)),
            "lanczos_no_reorth": (ours_plain, (params, batch, v0)),
        },
        repeats=repeats,
    )
    flat_jit = jax.jit(_flat_hvp_args(wl))
    flat_v0 = np.asarray(ravel(v0)[0])
    t0 = time.perf_counter()
    plain_lanczos(lambda v: flat_jit(params, batch, v), flat_v0, m)
    t_plain = time.perf_counter() - t0
    return {
        "num_params": wl.num_params,
        "num_matvecs": m,
        "hvp_s": t_hvp,
        "hvp_loop_s": times["hvp_loop"],
        "floor_s": times["floor"],
        "lanczos_s": times["lanczos"],
        "lanczos_no_reorth_s": times["lanczos_no_reorth"],
        "plain_jax_python_loop_s": t_plain,
        "ratio_lanczos_to_100_hvp": times["lanczos"] / (m * t_hvp),
        "ratio_lanczos_to_hvp_loop": times["lanczos"] / times["hvp_loop"],
        "ratio_lanczos_to_floor": times["lanczos"] / times["floor"],
        "ratio_floor_to_hvp_loop": times["floor"] / times["hvp_loop"],
        "ratio_plain_jax_to_lanczos": t_plain / times["lanczos"],
    }


def _flat_hvp_args(wl):
    def f(p, b, v):
        return _flat_hvp(wl.loss_fn, p, b)(v)

    return f


def loop_overhead(n=301_066, m=100, repeats=3):
    """Lanczos vs the floor with a trivial operator (``v -> d * v``): the loop's own overhead."""
    d = jnp.linspace(0.1, 1.0, n)
    v0 = jnp.ones(n)

    @jax.jit
    def ours(d, v):
        return gl.spectral.lanczos(lambda u: d * u, v, num_matvecs=m).alphas

    @jax.jit
    def ours_plain(d, v):
        return gl.spectral.lanczos(lambda u: d * u, v, num_matvecs=m, reorthogonalize=False).alphas

    @jax.jit
    def floor(d, v):
        basis = jnp.zeros((m, n), v.dtype).at[0].set(v / jnp.linalg.norm(v))

        def body(i, basis):
            w = d * basis[i]
            for _ in range(2):
                w = w - (basis @ w) @ basis
            nxt = jnp.minimum(i + 1, m - 1)
            return lax.dynamic_update_index_in_dim(basis, w / jnp.linalg.norm(w), nxt, 0)

        return lax.fori_loop(0, m, body, basis)[0]

    times = time_alternating(
        {"floor": (floor, (d, v0)), "lanczos": (ours, (d, v0)), "no_reorth": (ours_plain, (d, v0))},
        repeats=repeats,
    )
    return {
        **{f"{k}_s": v for k, v in times.items()},
        "ratio_lanczos_to_floor": times["lanczos"] / times["floor"],
    }


def compile_times(wl):
    params, batch = wl.params, wl.batch
    out = {}
    for m in (20, 200):
        best = float("inf")
        for _ in range(2):
            fn = jax.jit(
                lambda p, b, v, m=m: gl.spectral.lanczos(_hvp(wl.loss_fn, p, b), v, num_matvecs=m)
            )
            t0 = time.perf_counter()
            fn.lower(params, batch, params).compile()
            best = min(best, time.perf_counter() - t0)
        out[f"compile_s_{m}"] = best
    out["compile_ratio_200_vs_20"] = out["compile_s_200"] / out["compile_s_20"]
    return out


def eigsh_run(wl, repeats, k=5, tol=1e-6, num_matvecs=None):
    params, batch = wl.params, wl.batch

    @jax.jit
    def ours(p, b, key):
        return gl.spectral.eigsh(
            _hvp(wl.loss_fn, p, b), p, k=k, key=key, tol=tol, num_matvecs=num_matvecs
        )

    @jax.jit
    def one_hvp(p, b, v):
        return _hvp(wl.loss_fn, p, b)(v)

    key = jax.random.key(0)
    res = ours(params, batch, key)
    t = time_fn(ours, params, batch, key, repeats=repeats)
    t_hvp = time_fn(one_hvp, params, batch, params, repeats=max(5, 3 * repeats))
    count = int(res.num_matvecs)
    flat_jit = jax.jit(_flat_hvp_args(wl))
    v0 = np.random.default_rng(0).normal(size=wl.num_params).astype(np.float32)
    t0 = time.perf_counter()
    tmat, _ = plain_lanczos(lambda v: flat_jit(params, batch, v), v0, count)
    np.linalg.eigvalsh(tmat)
    t_plain = time.perf_counter() - t0
    return {
        "eigenvalues": [float(x) for x in res.eigenvalues],
        "residuals": [float(x) for x in res.residuals],
        "converged": [bool(x) for x in res.converged],
        "num_matvecs": count,
        "time_s": t,
        "hvp_s": t_hvp,
        "ratio_time_to_its_matvecs": t / (count * t_hvp),
        "plain_jax_same_matvecs_s": t_plain,
        "ratio_plain_jax_to_ours": t_plain / t,
    }


def eager_calls(wl, repeats=3, k=5):
    """Eager ``eigsh`` (no jit around it) on the library's Hessian operator, called again with
    new keys: the kept program (one dispatch) against a user's wrapper of the same operator,
    which is traced and compiled at every call (what every eager call cost before)."""
    hvp = gl.curvature.hessian(wl.loss_fn, wl.params, wl.batch)
    wrapped = lambda v: hvp(v)  # noqa: E731  (a plain callable: no kept program)

    def call(op, seed):
        t0 = time.perf_counter()
        jax.block_until_ready(gl.spectral.eigsh(op, wl.params, k=k, key=jax.random.key(seed)))
        return time.perf_counter() - t0

    first = call(hvp, 0)
    kept, traced = [], []
    for i in range(repeats):  # alternating
        kept.append(call(hvp, i + 1))
        traced.append(call(wrapped, i + 1))
    return {
        "first_call_s": first,
        "later_call_s": float(np.median(kept)),
        "user_wrapper_every_call_s": float(np.median(traced)),
        "ratio_wrapper_to_kept": float(np.median(traced) / np.median(kept)),
    }


def trace_run(wl, repeats, m=300, num_keys=5):
    params, batch = wl.params, wl.batch

    def make(estimator, budget, chunk):
        return jax.jit(
            lambda p, b, key: gl.spectral.trace(
                _hvp(wl.loss_fn, p, b),
                p,
                key=key,
                num_matvecs=budget,
                estimator=estimator,
                chunk_size=chunk,
            )
        )

    key = jax.random.key(0)
    out = {}
    hpp = make("hutch++", m, 1)
    est = hpp(params, batch, key)
    out["hutch++"] = {
        "num_matvecs": m,
        "value": float(est.value),
        "sem": float(est.sem),
        "time_s": time_fn(hpp, params, batch, key, repeats=repeats),
    }
    for name, budget in [
        ("xtrace", m),
        ("hutchinson", m),
        ("hutchinson_15", 15),
        ("stratified", m),
    ]:
        fn = make(name.split("_")[0], budget, 1)
        e = fn(params, batch, key)
        out[name] = {"num_matvecs": budget, "value": float(e.value), "sem": float(e.sem)}
        if name == "stratified":
            out[name]["time_s"] = time_fn(fn, params, batch, key, repeats=repeats)
        if name in ("stratified", "hutchinson") and num_keys > 1:
            more = [fn(params, batch, jax.random.key(s)) for s in range(1, num_keys)]
            out[name]["values_other_keys"] = [float(r.value) for r in more]
            out[name]["sems_other_keys"] = [float(r.sem) for r in more]
    flat_jit = jax.jit(_flat_hvp_args(wl))
    t0 = time.perf_counter()
    plain_hutchpp(lambda v: flat_jit(params, batch, v), wl.num_params, m)
    out["hutch++"]["plain_jax_s"] = time.perf_counter() - t0
    out["hutch++"]["ratio_plain_jax_to_ours"] = (
        out["hutch++"]["plain_jax_s"] / out["hutch++"]["time_s"]
    )
    return out


def slq_run(wl, repeats, num_probes=10, m=100):
    params, batch = wl.params, wl.batch
    fn = jax.jit(
        lambda p, b, key: gl.spectral.slq(
            _hvp(wl.loss_fn, p, b), p, key=key, num_probes=num_probes, num_matvecs=m
        )
    )
    key = jax.random.key(0)
    t = time_fn(fn, params, batch, key, repeats=repeats)
    flat_jit = jax.jit(_flat_hvp_args(wl))
    t0 = time.perf_counter()
    plain_slq(lambda v: flat_jit(params, batch, v), wl.num_params, num_probes, m)
    t_plain = time.perf_counter() - t0
    return {
        "num_probes": num_probes,
        "num_matvecs": m,
        "time_s": t,
        "plain_jax_s": t_plain,
        "ratio_plain_jax_to_ours": t_plain / t,
    }


def memory_run(wl, num_probes=1000):
    params, batch = wl.params, wl.batch

    def stats(fn):
        mem = jax.jit(fn).lower(params, batch).compile().memory_analysis()
        if mem is None:
            return None
        return {
            "temp_bytes": int(mem.temp_size_in_bytes),
            "argument_bytes": int(mem.argument_size_in_bytes),
            "output_bytes": int(mem.output_size_in_bytes),
        }

    one = stats(lambda p, b: _hvp(wl.loss_fn, p, b)(p))
    out = {"one_hvp": one}
    for chunk in (1, 16):
        out[f"hutchinson_{num_probes}_chunk{chunk}"] = stats(
            lambda p, b, chunk=chunk: gl.spectral.trace(
                _hvp(wl.loss_fn, p, b),
                p,
                key=jax.random.key(0),
                num_matvecs=num_probes,
                estimator="hutchinson",
                chunk_size=chunk,
            )
        )
    if one is not None:
        base = one["temp_bytes"] + one["output_bytes"]
        for name, st in list(out.items()):
            if name != "one_hvp" and st is not None:
                out[f"ratio_{name}_to_one_hvp"] = (st["temp_bytes"] + st["output_bytes"]) / base
    return out


def float64_reference(wl, size, *, with_trace=True, k=5, num_matvecs=160):
    """Top-k eigenvalues and the exact trace in float64 (x64 switched on for this part only).

    The model is rebuilt with float64 computation (the benchmark's flax MLP computes in its
    own dtype) and given the float32 weights cast to float64.
    """
    jax.config.update("jax_enable_x64", True)
    try:
        wl64 = digits_mlp(size, dtype=jnp.float64)
        params = jax.tree.map(lambda x: x.astype(jnp.float64), wl.params)
        batch = (wl.batch[0].astype(jnp.float64), wl.batch[1])
        fn = jax.jit(
            lambda p, b, key: gl.spectral.eigsh(
                _hvp(wl64.loss_fn, p, b), p, k=k, key=key, num_matvecs=num_matvecs, tol=1e-10
            )
        )
        ref = fn(params, batch, jax.random.key(123))
        out = {
            "eigenvalues": [float(x) for x in ref.eigenvalues],
            "converged": [bool(x) for x in ref.converged],
        }
        if with_trace:
            layers = exact_trace_per_layer(params, batch)
            out["trace_per_layer"] = layers
            out["trace"] = sum(layers.values())
        return out
    finally:
        jax.config.update("jax_enable_x64", False)


def _log(msg: str) -> None:
    print(f"[spectral bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, small model only")
    parser.add_argument(
        "--sizes", default=None, help="comma-separated models (default: small,wide; quick: small)"
    )
    parser.add_argument("--partial", default=None, help="also write results here after each stage")
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    sizes = (args.sizes or ("small" if args.quick else "small,wide")).split(",")
    result = {"quick": args.quick, "machine": "2-core CPU, shared, noisy", "sizes": sizes}

    def stage(name, fn, *fn_args):
        _log(name)
        result[name] = fn(*fn_args)
        if args.partial:
            with open(args.partial, "w") as f:
                json.dump(result, f, indent=2, default=float)

    for size in sizes:
        wl = digits_mlp(size)
        reps = repeats if size == "small" else 1
        stage(f"lanczos_{size}", lanczos_timings, wl, reps)
        if size == "small":
            stage("compile_small", compile_times, wl)
            stage("loop_overhead_trivial_operator", loop_overhead)
            stage("eager_eigsh_small", eager_calls, wl)
        stage(f"eigsh_{size}", eigsh_run, wl, reps)
        light = args.quick and size != "small"  # the wide HVP is slow on the shared CPU
        if not light:
            stage(f"trace_{size}", trace_run, wl, 1)
            stage(f"slq_{size}", slq_run, wl, 1)
        stage(f"memory_{size}", memory_run, wl)
        stage(
            f"float64_reference_{size}", lambda: float64_reference(wl, size, with_trace=not light)
        )
        ref = result[f"float64_reference_{size}"]
        eig = result[f"eigsh_{size}"]
        ref_vals = np.array(ref["eigenvalues"])
        eig["max_rel_error"] = float(
            np.max(np.abs(np.array(eig["eigenvalues"]) - ref_vals) / np.abs(ref_vals))
        )
        if light:
            continue
        tr = result[f"trace_{size}"]
        for est in ("hutch++", "xtrace", "hutchinson", "hutchinson_15", "stratified"):
            tr[est]["rel_error"] = abs(tr[est]["value"] - ref["trace"]) / abs(ref["trace"])
            tr[est]["error_in_sems"] = abs(tr[est]["value"] - ref["trace"]) / tr[est]["sem"]
            if "values_other_keys" in tr[est]:
                errs = np.abs(
                    np.array([tr[est]["value"], *tr[est]["values_other_keys"]]) - ref["trace"]
                )
                rel = errs / abs(ref["trace"])
                tr[est]["all_keys_max_rel_error"] = float(rel.max())
                tr[est]["all_keys_within_2pct"] = f"{int(np.sum(rel <= 0.02))}/{len(rel)}"
    emit(result)


if __name__ == "__main__":
    main()
