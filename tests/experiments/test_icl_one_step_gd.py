"""Unit tests of icl_one_step_gd: the closed-form Gamma* and the check logic.

The smoke run is the notebook test (tests/experiments/test_notebooks.py -k icl_one_step_gd).
"""

from __future__ import annotations

import numpy as np
import pytest

from gradlab.experiments.icl_one_step_gd import (
    KNOWN_FAILING,
    SETTINGS,
    Config,
    checks,
    closed_form_gamma,
    input_covariance,
)


def test_closed_form_gaussian_matches_the_published_expression():
    n = 10
    sigma = input_covariance("anisotropic", 6, 10.0)
    expected = n * np.linalg.inv((n + 1) * sigma + np.trace(sigma) * np.eye(6))
    np.testing.assert_allclose(closed_form_gamma("anisotropic", sigma, n), expected, rtol=1e-12)
    np.testing.assert_allclose(closed_form_gamma("isotropic", np.eye(10), n), np.eye(10) * 10 / 21)


@pytest.mark.parametrize("setting", SETTINGS)
def test_closed_form_minimises_the_monte_carlo_loss(setting):
    """The least-squares Gamma of a large sample (the loss is quadratic in Gamma) is Gamma*."""
    d, n, b = 3, 4, 1_000_000  # Monte Carlo error of Gamma_ls ~ 0.015 (anisotropic)
    rng = np.random.default_rng(0)
    sigma = input_covariance(setting, d, 10.0)
    if setting == "uniform":
        x = rng.uniform(-1.0, 1.0, (b, n + 1, d))
    else:
        x = rng.standard_normal((b, n + 1, d)) @ np.linalg.cholesky(sigma).T
    w = rng.standard_normal((b, d))
    y = np.einsum("bnd,bd->bn", x, w)
    h = np.einsum("bn,bnd->bd", y[:, :-1], x[:, :-1]) / n
    feats = np.einsum("bd,be->bde", x[:, -1], h).reshape(b, d * d)
    gamma_ls = np.linalg.lstsq(feats, y[:, -1], rcond=None)[0].reshape(d, d)
    gamma = closed_form_gamma(setting, sigma, n)
    assert np.linalg.norm(gamma_ls - gamma) / np.linalg.norm(gamma) < 0.03


def _results(config, *, cos=0.999, lsa=1.0, gd=1.002, err=0.02, aniso_lsa=0.9):
    row = {"sensitivity_cosine": [cos], "loss_lsa": [lsa], "loss_gd": [gd], "gamma_error": [err]}
    out = {s: dict(row) for s in ("isotropic", "uniform")}
    out["anisotropic"] = {"loss_lsa": [aniso_lsa], "loss_gd": [1.0], "gamma_error": [err]}
    return out


def test_checks_pass_on_the_claimed_behaviour():
    result = checks(Config(), _results(Config()))
    assert len(result) == 8 and all(c.passed for c in result), result


def test_checks_fail_where_the_claims_fail():
    bad = _results(Config(), cos=0.98, lsa=1.0, gd=0.98, err=0.06, aniso_lsa=0.995)
    result = checks(Config(), bad)
    assert not any(c.passed for c in result), result


def test_loss_gap_is_two_sided_and_known_failing_names_checks():
    worse = _results(Config(), lsa=1.02, gd=1.0)
    gaps = [c for c in checks(Config(), worse) if "loss LSA / loss GD - 1" in c.name]
    assert gaps and not any(c.passed for c in gaps)
    assert set(KNOWN_FAILING) <= {c.name for c in checks(Config(), _results(Config()))}
