"""Run a multi-device check script in a subprocess with 4 simulated CPU devices.

Shared by ``test_sharded_operators.py``, ``test_sharded_spectral.py``, ``test_sharded_ntk.py``
(one group of ``_multi_device.py`` each) and ``test_sharded_kfac.py`` (``_multi_device_kfac.py``):
one subprocess per test file, so pytest-xdist (``--dist loadfile``) runs them on different
workers at the same time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
ROOT = Path(__file__).resolve().parents[2]


def run_group(group: str) -> dict:
    """``{name: record}`` of every JSON line one group of ``_multi_device.py`` prints."""
    return run_script("_multi_device.py", "--group", group)


def run_script(script: str, *args: str) -> dict:
    """``{name: record}`` of every JSON line ``script`` prints; fails on a nonzero exit."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(HERE / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {record["name"]: record for record in map(json.loads, proc.stdout.splitlines())}


def check(records: dict, name: str) -> None:
    """A numeric record within its tolerance."""
    record = records[name]
    assert record["err"] <= record["tol"], record
