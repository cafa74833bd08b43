"""Data-parallel scaling of HVPs and Lanczos: ``python -m benchmarks.scaling``.

**CPU section** (always): for 1, 2 and 4 simulated CPU devices, each in its own subprocess
(``XLA_FLAGS=--xla_force_host_platform_device_count=K``), the wide digits MLP (301,066 params,
1,024 examples) with its batch placed by ``gl.distributed.shard_batch`` on a
``gl.distributed.make_data_mesh`` mesh (``--axis-type explicit``, the default, or ``auto``) and
the params replicated, so every product runs per shard in ``jax.shard_map`` with a ``psum``:

- ``hvp_ms``: median time of one jitted Hessian-vector product;
- ``lanczos_step_ms``: median time of ``lanczos(num_matvecs=10)`` divided by 10;
- memory per device from the compiled program's ``memory_analysis()`` (XLA's static buffer
  assignment of the per-device SPMD program; CPU devices have no runtime ``memory_stats()``):
  ``hvp_temp_mib`` (peak temporaries), ``hvp_args_mib`` (arguments resident on the device) and
  ``hvp_batch_temp_mib``, the batch-dependent part: temporaries at the full batch minus those
  at one example per device. Data parallelism must divide that last one by ``K``.

Simulated devices share the same cores, so time cannot drop with ``K`` (it rises by the
collectives' overhead); the per-device memory is what the CPU run shows.

**GPU section** (only when ``jax.default_backend() == "gpu"``, otherwise printed as skipped):
a ResNet-18-scale flax model (11 M params, GroupNorm instead of BatchNorm so it is a pure
function of its params) on a 32x32x3 batch of 256, in float32 and bfloat16: the HVP/gradient
time ratio and the Lanczos overhead (time per Lanczos step / time per HVP), and the
``matvec_dtype="bfloat16"`` eigenvalue deviation.

``--quick`` uses fewer repeats; ``--gpu-smoke`` runs the GPU section on the current backend with
a tiny batch (to check the code path, not for figures).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_TAG = "RESULT "
MIB = 2.0**20
LANCZOS_STEPS = 10


def _cpu_worker(devices: int, repeats: int, axis_type: str) -> dict:
    import jax
    import jax.numpy as jnp

    import gradlab as gl
    from benchmarks._workloads import digits_mlp, time_fn

    assert jax.device_count() == devices, jax.devices()
    work = digits_mlp("wide")
    mesh = gl.distributed.make_data_mesh(devices, axis_type=axis_type)
    params = gl.distributed.replicate(work.params, mesh)
    batch = gl.distributed.shard_batch(work.batch, mesh)
    small = gl.distributed.shard_batch(
        jax.tree_util.tree_map(lambda a: a[:devices], work.batch), mesh
    )
    v = jax.tree_util.tree_map(jnp.ones_like, params)

    @jax.jit
    def hvp(params, batch, v):
        return gl.curvature.hessian(work.loss_fn, params, batch)(v)

    @jax.jit
    def lanczos(params, batch, v):
        op = gl.curvature.hessian(work.loss_fn, params, batch)
        return gl.spectral.lanczos(op, v, num_matvecs=LANCZOS_STEPS).alphas

    def compiled(fn, *args):
        exe = fn.lower(*args).compile()
        stats = exe.memory_analysis()
        return exe, stats.temp_size_in_bytes, stats.argument_size_in_bytes

    hvp_exe, temp, args = compiled(hvp, params, batch, v)
    _, temp_small, _ = compiled(hvp, params, small, v)
    lz_exe, lz_temp, _ = compiled(lanczos, params, batch, v)
    t_hvp = time_fn(hvp_exe, params, batch, v, repeats=repeats)
    t_lz = time_fn(lz_exe, params, batch, v, repeats=max(2, repeats // 3))
    return {
        "devices": devices,
        "axis_type": axis_type,
        "hvp_ms": 1e3 * t_hvp,
        "lanczos_step_ms": 1e3 * t_lz / LANCZOS_STEPS,
        "hvp_temp_mib": temp / MIB,
        "hvp_args_mib": args / MIB,
        "hvp_batch_temp_mib": (temp - temp_small) / MIB,
        "lanczos_temp_mib": lz_temp / MIB,
    }


def _resnet18(dtype):
    import flax.linen as nn
    import jax

    class Block(nn.Module):
        channels: int
        stride: int

        @nn.compact
        def __call__(self, x):
            conv = dict(use_bias=False, dtype=dtype, param_dtype=dtype)
            norm = dict(num_groups=8, dtype=dtype, param_dtype=dtype)
            y = nn.Conv(self.channels, (3, 3), (self.stride, self.stride), **conv)(x)
            y = jax.nn.relu(nn.GroupNorm(**norm)(y))
            y = nn.GroupNorm(**norm)(nn.Conv(self.channels, (3, 3), **conv)(y))
            if self.stride != 1 or x.shape[-1] != self.channels:
                x = nn.Conv(self.channels, (1, 1), (self.stride, self.stride), **conv)(x)
            return jax.nn.relu(x + y)

    class ResNet18(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(64, (3, 3), use_bias=False, dtype=dtype, param_dtype=dtype)(x)
            x = jax.nn.relu(nn.GroupNorm(num_groups=8, dtype=dtype, param_dtype=dtype)(x))
            for i, c in enumerate((64, 128, 256, 512)):
                x = Block(c, 1 if i == 0 else 2)(x)
                x = Block(c, 1)(x)
            return nn.Dense(10, dtype=dtype, param_dtype=dtype)(x.mean(axis=(1, 2)))

    return ResNet18()


def _gpu_section(batch_size: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    import gradlab as gl
    from benchmarks._workloads import time_alternating

    out = {"device": str(jax.devices()[0]), "batch": batch_size}
    for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
        model = _resnet18(dtype)
        x = jax.random.normal(jax.random.key(0), (batch_size, 32, 32, 3), dtype)
        y = jax.random.randint(jax.random.key(1), (batch_size,), 0, 10)
        params = model.init(jax.random.key(2), x[:1])

        def loss_fn(params, batch, model=model):
            inputs, labels = batch
            logits = model.apply(params, inputs).astype(jnp.float32)
            return gl.models.softmax_cross_entropy(logits, labels)

        v = jax.tree_util.tree_map(jnp.ones_like, params)
        grad = jax.jit(jax.grad(loss_fn))
        hvp = jax.jit(lambda p, b, v: gl.curvature.hessian(loss_fn, p, b)(v))
        md = "bfloat16" if dtype == jnp.bfloat16 else None
        lz = jax.jit(
            lambda p, b, v: (
                gl.spectral.lanczos(
                    gl.curvature.hessian(loss_fn, p, b), v, num_matvecs=20, matvec_dtype=md
                ).alphas
            )
        )
        times = time_alternating(
            {
                "grad": (grad, (params, (x, y))),
                "hvp": (hvp, (params, (x, y), v)),
                "lanczos20": (lz, (params, (x, y), v)),
            },
            repeats=repeats,
        )
        out[name] = {
            "num_params": sum(int(p.size) for p in jax.tree_util.tree_leaves(params)),
            "grad_ms": 1e3 * times["grad"],
            "hvp_ms": 1e3 * times["hvp"],
            "hvp_over_grad": times["hvp"] / times["grad"],
            "lanczos_step_over_hvp": times["lanczos20"] / 20 / times["hvp"],
        }
    return out


def _run_worker(devices: int, repeats: int, timeout: float, axis_type: str) -> dict:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "benchmarks.scaling", "--worker", str(devices)]
    cmd += ["--repeats", str(repeats), "--axis-type", axis_type]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker with {devices} devices failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)][-1]
    return json.loads(line[len(RESULT_TAG) :])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--devices", default="1,2,4")
    parser.add_argument("--gpu-smoke", action="store_true")
    parser.add_argument("--axis-type", default="explicit", choices=("explicit", "auto"))
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    if args.worker:
        print(
            RESULT_TAG + json.dumps(_cpu_worker(args.worker, repeats, args.axis_type)), flush=True
        )
        return
    if args.gpu_smoke:
        print(json.dumps(_gpu_section(4, 2), indent=2))
        return

    import jax

    from benchmarks._workloads import emit

    t0 = time.perf_counter()
    with open("/proc/loadavg") if os.path.exists("/proc/loadavg") else open(os.devnull) as f:
        load_before = f.read().strip()
    cpu = []
    for k in args.devices.split(","):
        cpu.append(_run_worker(int(k), repeats, args.timeout, args.axis_type))
        print(json.dumps(cpu[-1]), file=sys.stderr, flush=True)  # progress
    base = cpu[0]
    for row in cpu:
        row["hvp_batch_temp_vs_1dev"] = row["hvp_batch_temp_mib"] / base["hvp_batch_temp_mib"]
        row["hvp_time_vs_1dev"] = row["hvp_ms"] / base["hvp_ms"]
    result = {
        "cpu_simulated_devices": cpu,
        "memory_source": "compiled.memory_analysis() of the per-device SPMD program",
        "loadavg_before": load_before,
        "seconds": time.perf_counter() - t0,
    }
    if jax.default_backend() == "gpu":
        result["gpu"] = _gpu_section(256, repeats)
    else:
        result["gpu"] = f"skipped: no GPU (backend {jax.default_backend()!r})"
        print("GPU section skipped: no GPU backend", file=sys.stderr)
    emit(result)


if __name__ == "__main__":
    main()
