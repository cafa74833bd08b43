"""Per-device memory of data-parallel K-FAC / EK-FAC construction: ``python -m benchmarks.kfac_scaling``.

The wide digits MLP (301,066 params, 1,024 examples, float32), ``fisher_type="mc"`` and
``"type2"``, its batch placed by ``gl.distributed.shard_batch`` on 1, 2 and 4 simulated CPU
devices (one process with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``, set here if
absent). For each, the compiled construction's ``memory_analysis()`` (XLA's static buffer
assignment of the per-device program): ``temp_mib`` (peak temporaries per device) and
``batch_temp_mib``, its batch-dependent part (temporaries at the full batch minus those at one
example per device), which data parallelism divides by the device count; the rest is the
factor- and params-sized buffers every device holds. Static figures: no timing, so the load
of the machine does not enter them.
"""

from __future__ import annotations

import os

MIB = 2.0**20


def _temp_mib(build, params, batch) -> float:
    import jax

    compiled = jax.jit(build).lower(params, batch).compile()
    return compiled.memory_analysis().temp_size_in_bytes / MIB


def main() -> None:
    import jax

    import gradlab as gl
    from benchmarks._workloads import digits_mlp, emit

    work = digits_mlp("wide")
    rows = []
    for which in ("kfac", "ekfac"):
        for fisher_type in ("mc", "type2"):

            def build(p, b, which=which, fisher_type=fisher_type):
                key = jax.random.key(0) if fisher_type == "mc" else None
                fn = getattr(gl.curvature, which)
                return fn(
                    work.apply_fn, "softmax_cross_entropy", p, b, fisher_type=fisher_type, key=key
                )

            for devices in (1, 2, 4):
                small = jax.tree_util.tree_map(lambda a, d=devices: a[:d], work.batch)
                batch = work.batch
                if devices > 1:
                    mesh = gl.distributed.make_data_mesh(devices)
                    batch = gl.distributed.shard_batch(batch, mesh)
                    small = gl.distributed.shard_batch(small, mesh)
                full = _temp_mib(build, work.params, batch)
                rows.append(
                    {
                        "operator": which,
                        "fisher_type": fisher_type,
                        "devices": devices,
                        "temp_mib": round(full, 2),
                        "batch_temp_mib": round(full - _temp_mib(build, work.params, small), 2),
                    }
                )
    emit({"benchmark": "kfac_scaling", "num_examples": 1024, "rows": rows})


if __name__ == "__main__":
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=4".strip()
    main()
