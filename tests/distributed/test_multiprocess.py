"""The multi-process run (``benchmarks/multiprocess_hessian.py``) agrees with one process.

Three subprocesses on the loopback interface: one single-device reference run and two
processes x two CPU devices joined by ``jax.distributed.initialize`` (gloo CPU collectives) on
a free port; the whole launch is bounded by a timeout and the children are killed past it.
"""

from __future__ import annotations

import sys

import pytest

from benchmarks.multiprocess_hessian import compare, run

# jaxlib ships gloo CPU collectives (JAX's default since 0.5.1) for Linux and macOS only.
pytestmark = pytest.mark.skipif(
    sys.platform not in ("linux", "darwin"),
    reason=f"no gloo CPU collectives in jaxlib on {sys.platform}",
)


def test_two_processes_match_one():
    result = run(processes=2, devices_per_process=2, timeout=300.0)
    one, many = result["single_process"], result["multi_process"]
    assert one["processes"] == 1 and one["devices"] == 1
    for m in many:
        assert (m["processes"], m["devices"], m["local_devices"]) == (2, 4, 2)
        assert m["batch_sharding"] == "P('data',)"
    assert all(one["top5_converged"]) and all(many[0]["top5_converged"])
    diff = compare(result)
    # Every process reads the same replicated outputs.
    assert diff["processes_agree"]
    # Same keys, same math; only the order of the float32 sums over examples differs (per
    # device, then across devices and processes), a relative change of ~1e-6 in each HVP.
    assert diff["top5_max_rel_diff"] < 1e-4, diff
    assert diff["hutchpp_rel_diff"] < 1e-4, diff
