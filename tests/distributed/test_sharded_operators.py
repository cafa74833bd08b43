"""Sharded curvature operators equal their single-device results (4 simulated CPU devices).

The checks run in one subprocess (``_multi_device.py --group operators``, see ``_launch.py``)
so this test session keeps its single device; each check comes back as one JSON line.
"""

from __future__ import annotations

import re

import pytest

from tests.distributed._launch import check, run_group


@pytest.fixture(scope="module")
def records():
    return run_group("operators")


OPERATORS = ["hessian", "ggn", "ggn_autodiff", "fisher", "fisher_gaussian", "empirical_fisher"]
LINEARIZE = [
    "hessian/linearize",
    "hessian/linearize/masked",
    "hessian/linearize/traced_once",
    "hessian/linearize/masked/traced_once",
]
NAMES = (
    OPERATORS
    + [f"{op}/masked" for op in OPERATORS]
    + ["hessian/jit", "hessian/replicated", "hessian/linearize/jit", "hessian/eager/traced_once"]
    + LINEARIZE
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
    "hessian/eager/traced_once",
    *LINEARIZE,
]
CASES = [("explicit", n) for n in NAMES] + [("auto", n) for n in AUTO_NAMES]


@pytest.mark.parametrize(("kind", "name"), CASES)
def test_sharded_equals_single_device(records, kind, name):
    check(records, f"{kind}/{name}")


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("not_divisible", r"10 examples.*4 devices of mesh axis 'data': pass pad=True"),
        ("axis_name", r"axis_name='batch' is not an axis of the mesh: expected one .*'data'"),
        ("params_mesh", r"params leaf .* is placed on mesh .*replicate\(params, mesh\)"),
    ],
)
def test_bad_placement_errors(records, name, pattern):
    message = records[f"errors/{name}"]["error"]
    assert message is not None and re.search(pattern, message), message
