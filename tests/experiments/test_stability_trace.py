"""Unit tests of stability_trace's pieces (the full pipeline runs in the notebook smoke test)."""

from __future__ import annotations

import numpy as np

from gradlab.experiments.stability_trace import Config, checks, eta_grid


def test_eta_grid_is_geometric_and_inclusive():
    grid = eta_grid((-7.0, -3.0), 0.25)
    assert grid[0] == 2.0**-7 and grid[-1] == 2.0**-3 and grid.size == 17
    np.testing.assert_allclose(grid[1:] / grid[:-1], 2.0**0.25)


def _side(etas, trace, lam, converged):
    return {
        "etas": etas,
        "converged": converged,
        "trace": trace,
        "trace_exact": trace,
        "trace_ratio": [t * e / 2 for t, e in zip(trace, etas, strict=True)],
        "lambda_ratio": [v * e / 2 for v, e in zip(lam, etas, strict=True)],
    }


def test_checks_trace_bound_only_counts_converged_runs():
    etas = [0.01, 0.02, 0.04, 0.08]
    # SGD: the last run would break the bound but did not converge
    sgd = _side(etas, [40.0, 40.0, 40.0, 100.0], [9.0] * 4, [True, True, True, False])
    gd = _side(etas, [40.0, 80.0, 120.0, 160.0], [9.0, 9.0, 9.0, 30.0], [True, True, True, False])
    result = {c.name: c for c in checks(Config(), {"sgd": sgd, "gd": gd})}
    assert all(c.passed for c in result.values()), result
    assert result["Tr(H) eta/2 at the largest converged SGD eta"].value == 40.0 * 0.04 / 2
    assert result["max Tr(H) eta/2 over converged GD runs"].value == 120.0 * 0.04 / 2


def test_checks_fail_on_violation_and_on_no_converged_runs():
    etas = [0.01, 0.02, 0.04, 0.08]
    sgd = _side(etas, [40.0, 40.0, 40.0, 40.0], [9.0] * 4, [True] * 4)  # 40 * 0.08 / 2 = 1.6
    gd = _side(etas, [40.0] * 4, [9.0] * 4, [False] * 4)
    result = {c.name: c for c in checks(Config(), {"sgd": sgd, "gd": gd})}
    assert not result["max Tr(H) eta/2 over converged SGD(B=1) runs"].passed
    assert not result["converged GD runs"].passed
    assert not result["max lambda_max eta/2 over converged GD runs"].passed  # NaN


def test_trace_cross_check_relative_error():
    etas = [0.01, 0.02, 0.04]
    sgd = _side(etas, [40.0] * 3, [9.0] * 3, [True] * 3)
    sgd["trace_exact"] = [40.0, 40.0, 44.0]  # 10% off on the last run
    gd = _side(etas, [40.0, 80.0, 120.0], [9.0] * 3, [True] * 3)
    result = {c.name: c for c in checks(Config(), {"sgd": sgd, "gd": gd})}
    c = result["Hutch++ trace vs exact dense trace, max rel. error"]
    assert not c.passed and abs(c.value - 4.0 / 44.0) < 1e-12
