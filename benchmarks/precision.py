"""Error and time of bfloat16 matvecs in gradlab.spectral: ``python -m benchmarks.precision``.

Top-5 Hessian eigenvalues (``eigsh``) and the Hutch++ trace of the wide digits MLP
(64-512-512-10, 301,066 params, 1,024 examples) in three precisions, all with float32
recurrences (x64 off, the default):

- ``float32``: the default (operator and vectors in float32), the reference;
- ``bf16_vectors``: ``matvec_dtype="bfloat16"`` on the float32 operator: only the vectors
  handed to the HVP are rounded to bfloat16 (the HVP casts them back to its params' float32);
- ``bf16_operator``: the operator built at bfloat16 params and batch, ``matvec_dtype=
  "bfloat16"``: the whole HVP (forward, backward, tangent) runs in bfloat16.

Relative errors are against the float32 run (whose own error, ~1e-6, is far below the ones
measured). Times are medians over alternating repeats of the jitted call (CPU: bfloat16 is
emulated there, so it is not faster; the figure that matters on CPU is the error).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import gradlab as gl
from benchmarks._workloads import digits_mlp, emit, time_alternating


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="wide", choices=("small", "wide"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    work = digits_mlp(args.size)
    params, batch = work.params, work.batch
    key = jax.random.key(0)

    def to_bf16(tree):
        return jax.tree_util.tree_map(
            lambda x: x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x,
            tree,
        )

    def build(variant, params, batch):
        if variant == "bf16_operator":
            return gl.curvature.hessian(work.loss_fn, to_bf16(params), to_bf16(batch)), "bfloat16"
        hvp = gl.curvature.hessian(work.loss_fn, params, batch)
        return hvp, ("bfloat16" if variant == "bf16_vectors" else None)

    def top5(variant):
        @jax.jit
        def run(params, batch):
            hvp, md = build(variant, params, batch)
            eig = gl.spectral.eigsh(
                hvp,
                params,
                k=5,
                key=key,
                num_matvecs=30,
                tol=1e-3,
                max_restarts=5,
                matvec_dtype=md,
            )
            return eig.eigenvalues, eig.converged, eig.num_matvecs

        return run

    def hutchpp(variant):
        @jax.jit
        def run(params, batch):
            hvp, md = build(variant, params, batch)
            est = gl.spectral.trace(hvp, params, key=key, num_matvecs=60, matvec_dtype=md)
            return est.value, est.sem

        return run

    variants = ("float32", "bf16_vectors", "bf16_operator")
    eig_fns = {v: top5(v) for v in variants}
    tr_fns = {v: hutchpp(v) for v in variants}
    eigs = {v: jax.device_get(fn(params, batch)) for v, fn in eig_fns.items()}
    traces = {v: jax.device_get(fn(params, batch)) for v, fn in tr_fns.items()}
    ref_vals, ref_trace = eigs["float32"][0], traces["float32"][0]
    times = time_alternating(
        {f"eigsh_{v}": (fn, (params, batch)) for v, fn in eig_fns.items()},
        repeats=args.repeats,
    )
    result = {"workload": f"digits MLP {args.size} ({work.num_params} params, 1024 examples)"}
    for v in variants:
        vals, conv, count = eigs[v]
        rel = np.abs(vals - ref_vals) / np.abs(ref_vals)
        result[v] = {
            "top5": [float(x) for x in vals],
            "top5_rel_err_vs_float32": [float(x) for x in rel],
            "top5_max_rel_err": float(rel.max()),
            "converged": [bool(c) for c in conv],
            "num_matvecs": int(count),
            "eigsh_s": times[f"eigsh_{v}"],
            "hutchpp_trace": float(traces[v][0]),
            "hutchpp_sem": float(traces[v][1]),
            "trace_rel_err_vs_float32": float(abs(traces[v][0] - ref_trace) / abs(ref_trace)),
        }
    emit(result)


if __name__ == "__main__":
    main()
