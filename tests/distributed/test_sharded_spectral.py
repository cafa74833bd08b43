"""Spectral algorithms on a sharded Hessian equal their single-device results (4 CPU devices).

The checks run in one subprocess (``_multi_device.py --group spectral``, see ``_launch.py``)
so this test session keeps its single device; each check comes back as one JSON line.
"""

from __future__ import annotations

import pytest

from tests.distributed._launch import check, run_group


@pytest.fixture(scope="module")
def records():
    return run_group("spectral")


ALGORITHMS = ["eigsh", "eigsh/jit", "lanczos", "slq", "trace", "diagonal", "cg", "power_iteration"]
AUTO_NAMES = ["eigsh", "trace"]  # see AUTO in _multi_device.py
CASES = [("explicit", n) for n in ALGORITHMS] + [("auto", n) for n in AUTO_NAMES]


@pytest.mark.parametrize(("kind", "name"), CASES)
def test_sharded_equals_single_device(records, kind, name):
    check(records, f"{kind}/{name}")
