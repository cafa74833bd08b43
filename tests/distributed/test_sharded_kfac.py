"""Sharded K-FAC / EK-FAC construction equals the single-device one (4 simulated CPU devices).

Every multi-device check runs in one subprocess (``_multi_device_kfac.py``) with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``, so this test session keeps its single
device; each check is reported back as one JSON line and asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("_multi_device_kfac.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def records():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = {}
    for line in proc.stdout.splitlines():
        record = json.loads(line)
        out[record["name"]] = record
    return out


EXPLICIT = [
    f"{which}/{case}"
    for which in ("kfac", "ekfac")
    for case in ("type2", "mc", "empirical", "masked", "jit", "conv_reduce")
] + ["kfac/masked_mc", "ekfac/inverse"]
AUTO = ["ekfac/type2"]
CASES = [f"explicit/{name}" for name in EXPLICIT] + [f"auto/{name}" for name in AUTO]


@pytest.mark.parametrize("name", CASES)
def test_sharded_equals_single_device(records, name):
    record = records[name]
    assert record["err"] <= record["tol"], record


@pytest.mark.parametrize("which", ["kfac", "ekfac"])
def test_construction_never_gathers_the_batch(records, which):
    assert records[f"explicit/{which}/no_gather"]["error"] is None
