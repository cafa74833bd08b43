"""Unit tests of large_step_perceptron's data and check logic (smoke run: the notebook test)."""

from __future__ import annotations

import numpy as np

from gradlab.experiments.large_step_perceptron import Config, checks, datasets

GAMMAS = [0.1, 10.0, 100.0, 1e4, 1e6]


def _side(iterations, perceptron=72, cosine=(0.9, 0.99, 0.9995, 0.99995, 1.0)):
    return {
        "perceptron_iterations": perceptron,
        "iterations": list(iterations),
        "cosine_to_perceptron": list(cosine),
        "final_loss": [1e-2] * len(GAMMAS),
    }


def _results(*, digits=(2000, 90, 70, 72, 72), losses=(0.05, 0.03, 0.05, 5.0, 300.0), **kw):
    return {
        "gammas": GAMMAS,
        "digits_3v8": _side(digits, **kw),
        "synthetic": _side((1000, 20, 8, 7, 7), perceptron=7),
        "breast_cancer": {"final_loss": list(losses)},
    }


def test_datasets_are_labelled_plus_minus_one_with_an_intercept():
    data = datasets(Config(synthetic_n=60))
    for a, y in data.values():
        assert set(np.unique(y)) == {-1.0, 1.0}
        np.testing.assert_array_equal(a[:, -1], 1.0)
    a, y = data["synthetic"]
    assert a.shape == (60, 21)


def test_checks_pass_on_the_claimed_behaviour():
    result = checks(Config(), _results())
    assert all(c.passed for c in result), [c for c in result if not c.passed]
    by = {c.name: c for c in result}
    assert by["digits_3v8: iterations at gamma=10 / at 0.1"].value == 90 / 2000
    assert by["breast_cancer: min ratio of consecutive final losses, gamma >= 100"].value == 60.0


def test_checks_fail_on_slow_separation_far_from_the_perceptron_and_falling_loss():
    bad = _results(digits=(500, 90, 100, 72, -1), losses=(0.05, 0.03, 0.05, 5.0, 4.0))
    by = {c.name: c for c in checks(Config(), bad)}
    assert not by["digits_3v8: iterations at gamma=10 / at 0.1"].passed  # 0.18
    # 100 / 72 - 1 = 0.39, and a run that never separated (-1) is NaN, never a pass
    assert not by["digits_3v8: max |iterations / perceptron's - 1|, gamma >= 100"].passed
    assert not by["breast_cancer: min ratio of consecutive final losses, gamma >= 100"].passed


def test_cosine_check_only_counts_gamma_from_1e4():
    ok = checks(Config(), _results(cosine=(0.5, 0.5, 0.5, 0.9995, 1.0)))
    by = {c.name: c for c in ok}
    assert by["digits_3v8: min cosine to the perceptron, gamma >= 10000"].passed
    bad = checks(Config(), _results(cosine=(1.0, 1.0, 1.0, 0.998, 1.0)))
    assert not {c.name: c for c in bad}[
        "digits_3v8: min cosine to the perceptron, gamma >= 10000"
    ].passed
