"""Hessian spectrum and trace on several processes: ``python -m benchmarks.multiprocess_hessian``.

Runs the same analysis of the small digits MLP (64-128-128-10, 1,024 examples) twice and prints
both results side by side:

1. on **one process** with one CPU device (the batch unsharded);
2. on **2 processes x 2 CPU devices** on localhost: each process calls
   ``jax.distributed.initialize`` (coordinator ``127.0.0.1:<free port>``; cross-process
   collectives on CPU go through gloo, JAX's default since 0.5.1), loads only *its half* of the
   examples and assembles the global batch with ``jax.make_array_from_process_local_data``
   over a 4-device mesh ``("data",)``; the params are replicated.

The analysis is jitted once per process: the top-5 Hessian eigenvalues (``eigsh``) and the
Hutch++ trace (60 matvecs; same keys in both runs), with every output replicated so each
process can read it. XLA places the cross-device (and cross-process) sum of the per-shard
gradients; with ``--check`` the launcher exits non-zero when the two runs disagree beyond
float32 rounding.

Options: ``--timeout`` bounds the whole run (each stage is killed past it). The launcher starts
the workers with ``--worker --num-processes N --process-id i --port P``; on several hosts, start
one worker per host yourself and add ``--host <address of process 0>``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

RESULT_TAG = "RESULT "
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root


def free_port() -> int:
    """A TCP port on the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# Worker: one process of the analysis (imports jax only here, after the env is set up).
# --------------------------------------------------------------------------------------------


def worker(
    num_processes: int,
    process_id: int,
    port: int,
    eig_tol: float,
    host: str = "127.0.0.1",
    axis_type: str = "explicit",
) -> dict:
    import jax
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import gradlab as gl

    if num_processes > 1:
        jax.distributed.initialize(
            coordinator_address=f"{host}:{port}",
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=60,
            coordinator_bind_address=f"{host}:{port}",  # loopback only by default
        )
    devices = jax.devices()  # global: every process's devices
    mesh = gl.distributed.make_data_mesh(axis_type=axis_type)  # every process's devices
    replicated = NamedSharding(mesh, P())
    by_example = NamedSharding(mesh, P("data"))

    x, y = gl.data.digits(1024)
    params, apply_fn = gl.models.init_mlp(jax.random.key(0), (64, 128, 128, 10))

    # Each process holds only its own contiguous block of examples (as a data loader would).
    rows = len(x) // num_processes
    local = slice(process_id * rows, (process_id + 1) * rows)
    batch = tuple(
        jax.make_array_from_process_local_data(by_example, np.asarray(a[local])) for a in (x, y)
    )
    params = jax.tree_util.tree_map(
        lambda p: jax.make_array_from_process_local_data(replicated, np.asarray(p)), params
    )

    def loss_fn(params, batch):
        inputs, labels = batch
        return gl.models.softmax_cross_entropy(apply_fn(params, inputs), labels)

    @jax.jit
    def analyse(params, batch):
        hvp = gl.curvature.hessian(loss_fn, params, batch)
        eig = gl.spectral.eigsh(hvp, params, k=5, key=jax.random.key(1), tol=eig_tol)
        hpp = gl.spectral.trace(hvp, params, key=jax.random.key(2), num_matvecs=60)
        out = {
            "top5": eig.eigenvalues,
            "top5_converged": eig.converged,
            "eigsh_matvecs": eig.num_matvecs,
            "hutchpp": hpp.value,
            "hutchpp_sem": hpp.sem,
        }
        return jax.lax.with_sharding_constraint(out, replicated)

    t0 = time.perf_counter()
    out = jax.block_until_ready(analyse(params, batch))
    seconds = time.perf_counter() - t0
    result = {k: np.asarray(v).tolist() for k, v in out.items()}
    result.update(
        processes=jax.process_count(),
        devices=len(devices),
        local_devices=jax.local_device_count(),
        batch_sharding=str(batch[0].sharding.spec),
        seconds_with_compile=seconds,
    )
    if num_processes > 1:
        jax.distributed.shutdown()
    return result


# --------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------


def _env(devices: int) -> dict:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _start(
    num_processes: int, process_id: int, port: int, devices: int, eig_tol: float, axis_type: str
):
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.multiprocess_hessian",
        "--worker",
        f"--num-processes={num_processes}",
        f"--process-id={process_id}",
        f"--port={port}",
        f"--eig-tol={eig_tol}",
        f"--axis-type={axis_type}",
    ]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _collect(procs, deadline: float) -> list[dict]:
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if proc.returncode != 0:
                raise RuntimeError(f"worker exited with {proc.returncode}:\n{err[-3000:]}")
            lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_TAG)]
            results.append(json.loads(lines[-1][len(RESULT_TAG) :]))
    finally:
        for proc in procs:  # only our own children, by handle
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def run(
    *,
    processes: int = 2,
    devices_per_process: int = 2,
    timeout: float = 120.0,
    eig_tol: float = 1e-6,
    axis_type: str = "explicit",
) -> dict:
    """Run the analysis on 1 process (1 device) and on ``processes x devices_per_process``."""
    deadline = time.monotonic() + timeout
    single = _start(1, 0, 0, 1, eig_tol, axis_type)
    port = free_port()
    multi = [
        _start(processes, i, port, devices_per_process, eig_tol, axis_type)
        for i in range(processes)
    ]
    (one,) = _collect([single], deadline)
    many = _collect(multi, deadline)
    return {"single_process": one, "multi_process": many}


def compare(result: dict) -> dict:
    """Relative differences between the single- and multi-process figures."""
    one, many = result["single_process"], result["multi_process"]

    def rel(a, b):
        a, b = (a if isinstance(a, list) else [a]), (b if isinstance(b, list) else [b])
        return max(abs(x - y) / max(abs(x), 1e-30) for x, y in zip(a, b, strict=True))

    same_across = all(m["top5"] == many[0]["top5"] for m in many)
    return {
        "top5_max_rel_diff": rel(one["top5"], many[0]["top5"]),
        "hutchpp_rel_diff": rel(one["hutchpp"], many[0]["hutchpp"]),
        "processes_agree": same_across,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help="coordinator port (--worker)")
    parser.add_argument("--host", default="127.0.0.1", help="coordinator address (--worker)")
    parser.add_argument("--devices-per-process", type=int, default=2)
    parser.add_argument("--eig-tol", type=float, default=1e-6)
    parser.add_argument("--axis-type", default="explicit", choices=("explicit", "auto"))
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--check", action="store_true", help="exit 1 if the runs disagree")
    args = parser.parse_args(argv)
    if args.worker:
        res = worker(
            args.num_processes, args.process_id, args.port, args.eig_tol, args.host, args.axis_type
        )
        print(RESULT_TAG + json.dumps(res), flush=True)
        return 0
    result = run(
        processes=args.num_processes,
        devices_per_process=args.devices_per_process,
        timeout=args.timeout,
        eig_tol=args.eig_tol,
        axis_type=args.axis_type,
    )
    result["difference"] = compare(result)
    print(json.dumps(result, indent=2))
    if args.check:
        d = result["difference"]
        ok = d["processes_agree"] and d["top5_max_rel_diff"] < 1e-4
        ok = ok and d["hutchpp_rel_diff"] < 1e-3
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
