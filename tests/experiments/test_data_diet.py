"""Unit tests of data_diet's helpers and check logic (smoke run: the notebook test)."""

from __future__ import annotations

import numpy as np

from gradlab.experiments.data_diet import Config, checks, flip_labels, spearman


def test_flip_labels_moves_exactly_the_fraction_to_other_classes():
    y = np.arange(1000) % 10
    noisy, flipped = flip_labels(y, 0.1, 10, np.random.default_rng(1))
    assert flipped.sum() == 100
    assert np.all(noisy[flipped] != y[flipped]) and np.all(noisy[~flipped] == y[~flipped])
    assert set(np.unique(noisy)) <= set(range(10))


def test_spearman_is_rank_based_and_averages_ties():
    x = np.array([0.1, 0.5, 0.3, 2.0])
    assert spearman(x, np.exp(x)) == 1.0  # any increasing transform
    # ties: ranks (0.5, 0.5, 2, 3) vs (0, 1, 2, 3); Pearson of the ranks
    ra = np.array([0.5, 0.5, 2.0, 3.0])
    rb = np.arange(4.0)
    assert np.isclose(spearman([1, 1, 2, 3], [1, 2, 3, 4]), np.corrcoef(ra, rb)[0, 1])


def _results(full=0.97, hardest=0.97, random=0.955, easiest=0.90, precision=0.9, rho=0.95):
    return {
        "noise": {"precision": precision},
        "mean_accuracy": {"full": full, "hardest": hardest, "random": random, "easiest": easiest},
        "grand_init_vs_input_norm": rho,
    }


def test_checks_pass_on_the_claimed_behaviour():
    result = checks(Config(), _results())
    assert all(c.passed for c in result), [c for c in result if not c.passed]


def test_checks_fail_on_each_violation():
    config = Config()
    cases = {
        "precision of the top 10% EL2N at flipped labels": _results(precision=0.8),
        "full-data accuracy - hardest-half accuracy": _results(hardest=0.955, random=0.94),
        "hardest-half accuracy - random-half accuracy": _results(random=0.965),
        "easiest-half accuracy - random-half accuracy": _results(easiest=0.94),
        "Spearman(GraNd at init, input norm) (Kirsch)": _results(rho=0.5),
    }
    for name, results in cases.items():
        by = {c.name: c for c in checks(config, results)}
        assert not by[name].passed, name
        assert sum(not c.passed for c in by.values()) == 1, name
