"""Unit tests of batch_size_spectrum's pieces (the full pipeline runs in the notebook test)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradlab.experiments.batch_size_spectrum import Config, checks, excess_fit, max_stable


def test_excess_fit_recovers_constant():
    bs = np.array([8, 16, 64, 256])
    n = 1000
    c, r2 = excess_fit(bs, 7.0 * (1 / bs - 1 / n), n)
    assert c == pytest.approx(7.0) and r2 == pytest.approx(1.0)


def test_excess_fit_r2_low_for_wrong_law():
    bs = np.array([8, 16, 32, 64, 128, 256])
    _, r2 = excess_fit(bs, 1.0 - np.log(bs) / 10, 1000)  # decreasing but not ~ 1/B
    assert r2 < 0.9


def test_max_stable_first_failure_and_all_seeds():
    lrs = [0.1, 0.2, 0.4, 0.8]
    # seed 2 diverges at 0.4: stable means every seed below the loss cap
    losses = [[0.1, 0.1, 0.1, 9.0], [0.1, 0.1, 5.0, 9.0]]
    assert max_stable(lrs, losses, 2.3) == (0.2, 1)
    # NaN is unstable; a later "stable" lr after a failure does not count
    assert max_stable(lrs, [0.1, math.nan, 0.1, 0.1], 2.3) == (0.1, 0)
    lr, idx = max_stable(lrs, [9.0, 0.1, 0.1, 0.1], 2.3)
    assert math.isnan(lr) and idx == -1
    assert max_stable(lrs, [0.1, 0.1, 0.1, 0.1], 2.3) == (0.8, 3)


def _results(r2, sgd_slope, adam_slope, at_cap=False):
    row = {"batch_size": 8, "max_lr": 1.0, "index": 3, "at_cap": at_cap}
    return {
        "excess_r2": r2,
        "sgd_slope": sgd_slope,
        "adam_slope": adam_slope,
        "sweeps": {"sgd": {"rows": [row]}, "adam": {"rows": [row]}},
    }


def test_checks_use_config_thresholds():
    config = Config()
    assert all(c.passed for c in checks(config, _results(0.95, 1.0, 0.5)))
    failed = [c.name for c in checks(config, _results(0.8, 1.3, 0.2, at_cap=True)) if not c.passed]
    assert len(failed) == 4
    assert not checks(config, _results(math.nan, 1.0, 0.5))[0].passed
