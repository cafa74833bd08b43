"""Sharded operators, spectra and NTKs equal their single-device results (4 CPU devices).

Every multi-device check runs in one subprocess (``_multi_device.py``) with
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

SCRIPT = Path(__file__).with_name("_multi_device.py")
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


OPERATORS = ["hessian", "ggn", "ggn_autodiff", "fisher", "fisher_gaussian", "empirical_fisher"]
ALGORITHMS = ["eigsh", "eigsh/jit", "lanczos", "slq", "trace", "diagonal", "cg", "power_iteration"]
NTK = [
    "ntk_operator",
    "ntk_operator/tiled",
    "ntk_operator/masked",
    "ntk_operator/masked_rows_zero",
    "max_learning_rate",
    "empirical_ntk/traced",
    "empirical_ntk/full",
    "empirical_ntk/diagonal",
    "empirical_ntk/x2",
]
NAMES = (
    OPERATORS
    + [f"{op}/masked" for op in OPERATORS]
    + ["hessian/jit", "hessian/replicated"]
    + ALGORITHMS
    + NTK
)


# The Auto mesh runs a subset of the same code paths (see AUTO in _multi_device.py).
AUTO_NAMES = [
    "hessian",
    "ggn",
    "empirical_fisher",
    "hessian/masked",
    "ggn/masked",
    "empirical_fisher/masked",
    "hessian/jit",
    "hessian/replicated",
    "eigsh",
    "trace",
    "ntk_operator",
    "empirical_ntk/traced",
]
CASES = [("explicit", n) for n in NAMES] + [("auto", n) for n in AUTO_NAMES]


@pytest.mark.parametrize(("kind", "name"), CASES)
def test_sharded_equals_single_device(records, kind, name):
    record = records[f"{kind}/{name}"]
    assert record["err"] <= record["tol"], record


def test_empirical_ntk_rows_stay_sharded(records):
    for label in ("traced", "full", "diagonal"):
        assert records[f"explicit/empirical_ntk/{label}/sharded"]["error"] is None, label
    assert records["auto/empirical_ntk/traced/sharded"]["error"] is None


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("not_divisible", r"10 examples.*4 devices of mesh axis 'data': pass pad=True"),
        ("axis_name", r"axis_name='batch' is not an axis of the mesh: expected one .*'data'"),
        ("uneven_placement", r"10 examples split over mesh axes \('data',\).*pad=True"),
        ("params_mesh", r"params leaf .* is placed on mesh .*replicate\(params, mesh\)"),
    ],
)
def test_bad_placement_errors(records, name, pattern):
    import re

    message = records[f"errors/{name}"]["error"]
    assert message is not None and re.search(pattern, message), message
