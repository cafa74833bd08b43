"""Unit tests of hessian_outliers' pieces (the full pipeline runs in the notebook smoke test)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradlab.experiments.hessian_outliers import Config, checks, outlier_gap, plot, runs_of


def test_outlier_gap_sorts_and_finds_largest_ratio():
    assert outlier_gap([1.0, 0.9, 9.0, 8.0]) == (2, 8.0)
    i, r = outlier_gap([5.0, 1.0])
    assert (i, r) == (1, 5.0)


def test_outlier_gap_nonpositive_next_is_infinite():
    i, r = outlier_gap([3.0, 2.0, 0.0])
    assert i == 2 and math.isinf(r)


def test_runs_of_covers_both_sweeps_without_duplicates():
    runs = runs_of(Config())
    assert runs == [(2, 32), (5, 32), (10, 32), (10, 64), (10, 128), (10, 256)]
    assert len(set(runs)) == len(runs)


def _fake_run(c, w, lam, **extra):
    i, r = outlier_gap(lam)
    return {
        "num_classes": c,
        "width": w,
        "hessian_top": list(lam),
        "gap_index": i,
        "gap_ratio": r,
        "ggn_rel_error": 0.01,
        **extra,
    }


def test_checks_pass_and_fail():
    config = Config(class_counts=(3,), widths=(8,))
    good = [_fake_run(3, 8, [9.0, 8.0, 1.0, 0.9, 0.8, 0.7], dense_rel_error=1e-6)]
    result = checks(config, {"runs": good})
    assert all(c.passed for c in result), result
    # the gap sits at i = 1 instead of C-1 = 2
    bad = [_fake_run(3, 8, [9.0, 2.0, 1.9, 0.9, 0.8, 0.7], dense_rel_error=1e-6)]
    failed = {c.name for c in checks(config, {"runs": bad}) if not c.passed}
    assert any("position of largest gap" in n for n in failed)
    # no run was small enough for the dense cross-check: that check cannot pass
    nodense = [_fake_run(3, 8, [9.0, 8.0, 1.0, 0.9, 0.8, 0.7])]
    assert any("dense" in c.name and not c.passed for c in checks(config, {"runs": nodense}))


def test_gap_ratio_threshold_comes_from_config():
    lam = [9.0, 8.0, 5.0, 3.2, 2.9, 2.7]  # largest gap at i = 2, ratio 1.6
    run = _fake_run(3, 8, lam, dense_rel_error=0.0)
    ratio = next(c for c in checks(Config(), {"runs": [run]}) if "lambda_(C-1)" in c.name)
    assert not ratio.passed and ratio.threshold == 2.0
    ratio = next(
        c
        for c in checks(Config(min_outlier_ratio=1.5), {"runs": [run]})
        if "lambda_(C-1)" in c.name
    )
    assert ratio.passed


def test_plot_returns_figure():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    config = Config(class_counts=(2, 3), widths=(8, 16))
    grid = np.linspace(-1, 10, 50)
    runs = [
        _fake_run(2, 8, [5.0, 1.0, 0.9, 0.8]),
        _fake_run(
            3,
            8,
            [9.0, 8.0, 1.0, 0.9, 0.8, 0.7],
            slq={"grid": grid.tolist(), "density": np.exp(-(grid**2)).tolist()},
        ),
        _fake_run(3, 16, [9.0, 8.0, 1.0, 0.9, 0.8, 0.7]),
    ]
    fig = plot(config, {"runs": runs})
    assert len(fig.axes) == 3
