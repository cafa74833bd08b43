"""Unit tests of softmax_ghosts' check logic (the smoke run is the notebook test)."""

from __future__ import annotations

import numpy as np

from gradlab.experiments.softmax_ghosts import KNOWN_FAILING, Config, checks, r_grid


def test_r_grid_is_geometric_and_contains_one():
    grid = r_grid(0.05, 100.0, 25)
    assert grid[0] == 0.05 and grid[-1] == 100.0 and 1.0 in grid.tolist()
    assert np.all(np.diff(grid) > 0)


def _results(config, *, ctrl=0.95, plain=(0.9, 0.1, 0.1), retention=None, factor=10.0):
    r = r_grid(config.r_min, config.r_max, config.num_r)
    if retention is None:  # keeps everything up to r = 2, loses half beyond
        retention = np.where(r <= 2.0, 1.0, 0.5)
    n = config.num_seeds
    return {
        "r": r.tolist(),
        "controller": {"final_accuracy": [[ctrl] * n for _ in config.base_lrs]},
        "plain": {"median_final_accuracy": list(plain)},
        "single_step": {
            "retention": [list(retention)] * 4,
            "hessian_radius_factor": [factor] * 4,
            "directional_factor": [factor] * 4,
        },
    }


def test_checks_pass_on_the_claimed_behaviour():
    config = Config()
    result = checks(config, _results(config))
    assert all(c.passed for c in result), [c for c in result if not c.passed]
    plain = [c for c in result if c.name.startswith("plain Adam")]
    assert [c.value for c in plain] == [0.1, 0.1]  # lr 1e-3 and 1e-2, not lr 1e-4


def test_checks_fail_where_the_claims_fail():
    config = Config()
    r = np.asarray(r_grid(config.r_min, config.r_max, config.num_r))
    bad = _results(
        config,
        ctrl=0.5,
        plain=(0.9, 0.9, 0.1),
        retention=np.where(r < 0.9, 1.0, 0.95),  # dips below 1 but never under 0.9
        factor=2.0,
    )
    result = {c.name: c for c in checks(config, bad)}
    assert not result["controller: min final test accuracy (all lrs, seeds)"].passed
    assert not result["plain Adam: median final test accuracy at lr 0.001"].passed
    assert result["plain Adam: median final test accuracy at lr 0.01"].passed
    assert not result["single step: min median retention over r <= 10"].passed
    assert not result["median (2 / u^T H u) / rho_a(u), random unit u"].passed


def test_safe_retention_counts_r_equal_one_but_not_beyond():
    config = Config()
    r = np.asarray(r_grid(config.r_min, config.r_max, config.num_r))
    at_one = _results(config, retention=np.where(r < 1.0, 1.0, 0.5))
    name = "single step: min retention over r <= 1 (every checkpoint)"
    assert not {c.name: c for c in checks(config, at_one)}[name].passed
    above = _results(config, retention=np.where(r <= 1.0, 1.0, 0.5))
    assert {c.name: c for c in checks(config, above)}[name].passed


def test_known_failing_names_a_check():
    names = {c.name for c in checks(Config(), _results(Config()))}
    assert set(KNOWN_FAILING) <= names
