"""Sharded K-FAC / EK-FAC construction equals the single-device one (4 simulated CPU devices).

Every multi-device check runs in one subprocess (``_multi_device_kfac.py``, launched by
``_launch.py`` with 4 simulated CPU devices), so this test session keeps its single
device; each check is reported back as one JSON line and asserted here.
"""

from __future__ import annotations

import pytest

from tests.distributed._launch import check, run_script


@pytest.fixture(scope="module")
def records():
    return run_script("_multi_device_kfac.py")


EXPLICIT = [
    f"{which}/{case}"
    for which in ("kfac", "ekfac")
    for case in ("type2", "mc", "empirical", "masked", "jit", "conv_reduce")
] + ["kfac/masked_mc", "ekfac/inverse"]
AUTO = ["ekfac/type2"]
CASES = [f"explicit/{name}" for name in EXPLICIT] + [f"auto/{name}" for name in AUTO]


@pytest.mark.parametrize("name", CASES)
def test_sharded_equals_single_device(records, name):
    check(records, name)


@pytest.mark.parametrize("which", ["kfac", "ekfac"])
def test_construction_never_gathers_the_batch(records, which):
    assert records[f"explicit/{which}/no_gather"]["error"] is None
