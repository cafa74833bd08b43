"""Sharded NTK operator and empirical kernel equal their single-device results (4 CPU devices).

The checks run in one subprocess (``_multi_device.py --group ntk``, see ``_launch.py``) so
this test session keeps its single device; each check comes back as one JSON line.
"""

from __future__ import annotations

import pytest

from tests.distributed._launch import check, run_group


@pytest.fixture(scope="module")
def records():
    return run_group("ntk")


MASKED = ["empirical_ntk/masked", "empirical_ntk/masked/padding_zero"]
NAMES = [
    "ntk_operator",
    "ntk_operator/tiled",
    "ntk_operator/masked",
    "ntk_operator/masked_rows_zero",
    "ntk_operator/eager/traced_once",
    "max_learning_rate",
    "empirical_ntk/traced",
    "empirical_ntk/full",
    "empirical_ntk/diagonal",
    "empirical_ntk/x2",
    *MASKED,
    "empirical_ntk/masked/diagonal",
    "empirical_ntk/masked/x2",
]
AUTO_NAMES = ["ntk_operator", "ntk_operator/eager/traced_once", *MASKED]
CASES = [("explicit", n) for n in NAMES] + [("auto", n) for n in AUTO_NAMES]


@pytest.mark.parametrize(("kind", "name"), CASES)
def test_sharded_equals_single_device(records, kind, name):
    check(records, f"{kind}/{name}")


def test_empirical_ntk_rows_stay_sharded(records):
    for label in ("traced", "full", "diagonal", "masked"):
        assert records[f"explicit/empirical_ntk/{label}/sharded"]["error"] is None, label
    assert records["auto/empirical_ntk/masked/sharded"]["error"] is None
