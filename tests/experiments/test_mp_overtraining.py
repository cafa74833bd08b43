"""Unit tests of the pieces of the mp_overtraining reproduction (the run itself is the notebook's
smoke test): the closed-form Marchenko-Pastur CDF, the SLQ CDF and KS distance, the problem
statistics and the GD curves."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from gradlab.experiments import check
from gradlab.experiments.mp_overtraining import (
    Config,
    _gd_curves,
    _problems,
    checks,
    ks_distance,
    marchenko_pastur_cdf,
    marchenko_pastur_density,
    slq_cdf,
)

RATIOS = [0.25, 0.8, 1.0, 1.25, 2.0]


def _quad_cdf(x: float, ratio: float) -> float:
    """Reference: atom plus adaptive quadrature of the density (substitution removes the
    square-root end-point singularities)."""
    a, b = (1 - np.sqrt(ratio)) ** 2, (1 + np.sqrt(ratio)) ** 2
    atom = max(0.0, 1 - 1 / ratio) if x >= 0 else 0.0
    if x <= a:
        return atom
    hi = min(x, b)
    # t = a + (b - a) sin^2(phi): dt = (b - a) sin(2 phi) dphi
    phi_hi = np.arcsin(np.sqrt((hi - a) / (b - a)))

    def integrand(phi):
        t = a + (b - a) * np.sin(phi) ** 2
        return marchenko_pastur_density(t, ratio) * (b - a) * np.sin(2 * phi)

    value, _ = integrate.quad(integrand, 0.0, phi_hi, epsabs=1e-13, epsrel=1e-12, limit=200)
    return atom + value


@pytest.mark.parametrize("ratio", RATIOS)
def test_mp_cdf_matches_quadrature_of_density(ratio):
    b = (1 + np.sqrt(ratio)) ** 2
    xs = np.concatenate([np.linspace(-0.5, b + 0.5, 23), [1e-6, 0.01, b - 1e-6]])
    exact = marchenko_pastur_cdf(xs, ratio)
    ref = np.array([_quad_cdf(float(x), ratio) for x in xs])
    np.testing.assert_allclose(exact, ref, atol=1e-9)


@pytest.mark.parametrize("ratio", RATIOS)
def test_mp_cdf_is_a_distribution_function(ratio):
    a, b = (1 - np.sqrt(ratio)) ** 2, (1 + np.sqrt(ratio)) ** 2
    xs = np.linspace(-1.0, b + 1.0, 5001)
    f = marchenko_pastur_cdf(xs, ratio)
    assert np.all(np.diff(f) >= -1e-15)
    assert f[0] == 0.0 and abs(f[-1] - 1.0) < 1e-12
    # the atom at zero is exactly 1 - 1/ratio for ratio > 1, absent otherwise
    atom = marchenko_pastur_cdf([0.0], ratio)[0] - marchenko_pastur_cdf([-1e-12], ratio)[0]
    assert atom == pytest.approx(max(0.0, 1 - 1 / ratio), abs=1e-12)
    # and the derivative in the bulk is the density
    x = np.linspace(a, b, 9)[1:-1]
    h = 1e-6
    deriv = (marchenko_pastur_cdf(x + h, ratio) - marchenko_pastur_cdf(x - h, ratio)) / (2 * h)
    np.testing.assert_allclose(deriv, marchenko_pastur_density(x, ratio), rtol=1e-6)


def test_mp_cdf_rejects_bad_ratio():
    with pytest.raises(ValueError, match="ratio=0"):
        marchenko_pastur_cdf([1.0], 0)


@pytest.mark.parametrize("n, p", [(300, 600), (300, 150)])
def test_mp_law_fits_an_independent_wishart_sample(n, p):
    # Eigenvalue rigidity makes the empirical CDF of one sample O(log N / N) from the law.
    x = np.random.default_rng(0).standard_normal((p, n))
    eig = np.linalg.eigvalsh(x.T @ x / p)
    ks = ks_distance(eig[None], np.full((1, n), 1.0 / n), n / p, zero_tol=1e-8)
    assert ks < 0.03


def test_slq_cdf_steps():
    nodes = np.array([[0.0, 1.0, 3.0], [2.0, 1e-9, 5.0]])
    weights = np.array([[0.2, 0.3, 0.5], [0.5, 0.25, 0.25]])
    # per probe weights sum to 1; the estimate averages the two probes
    got = slq_cdf(nodes, weights, [-1.0, 0.0, 1.0, 2.5, 10.0], zero_tol=1e-6)
    np.testing.assert_allclose(got, [0.0, 0.225, 0.375, 0.625, 1.0])
    # without snapping, the 1e-9 node is not yet counted at x = 0
    assert slq_cdf(nodes, weights, [0.0])[0] == pytest.approx(0.1)


@pytest.mark.parametrize("ratio", [0.5, 1.0, 2.0])
def test_ks_distance_equals_brute_force_supremum(ratio):
    rng = np.random.default_rng(1)
    b = (1 + np.sqrt(ratio)) ** 2
    nodes = np.sort(rng.uniform(0, b, (3, 7)), axis=1)
    nodes[:, 0] = 0.0  # a node at exactly zero, like a null space
    weights = rng.dirichlet(np.ones(7), size=3)
    grid = np.linspace(-0.1, b + 0.1, 400001)
    grid = np.union1d(grid, np.concatenate([nodes.ravel(), np.nextafter(nodes.ravel(), -1)]))
    brute = np.max(np.abs(slq_cdf(nodes, weights, grid) - marchenko_pastur_cdf(grid, ratio)))
    assert ks_distance(nodes, weights, ratio) == pytest.approx(brute, abs=1e-9)


def test_problem_statistics_use_the_first_examples():
    keys = jax.random.split(jax.random.key(0), 2)
    cov, rhs, u_star, y2 = _problems(keys, jnp.int32(5), max_examples=9, dim=3, noise_std=0.5)
    from gradlab.data import linear_teacher

    x, y, w = linear_teacher(keys[1], num_examples=9, dim=3, noise_std=0.5)
    x, y = x[:5], y[:5]
    np.testing.assert_allclose(cov[1], x.T @ x / 5, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rhs[1], x.T @ y / 5, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(u_star[1], w / np.sqrt(3), rtol=1e-6)
    np.testing.assert_allclose(y2[1], np.mean(y**2), rtol=1e-5)


def test_gd_curves_equal_gd_on_the_data_loss(x64):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((7, 4)))
    y = jnp.asarray(rng.standard_normal(7))
    u_star = jnp.asarray(rng.standard_normal(4))

    def loss(u):
        return 0.5 * jnp.mean((y - x @ u) ** 2)

    lr, steps = 0.3, 6
    u = jnp.zeros(4)
    test_ref, train_ref = [jnp.sum(u_star**2)], [loss(u)]
    for _ in range(steps):
        u = u - lr * jax.grad(loss)(u)
        test_ref.append(jnp.sum((u - u_star) ** 2))
        train_ref.append(loss(u))
    test, train = _gd_curves(
        (x.T @ x / 7)[None],
        (x.T @ y / 7)[None],
        u_star[None],
        jnp.mean(y**2)[None],
        lr,
        jnp.zeros(steps),
    )
    np.testing.assert_allclose(test[:, 0], np.array(test_ref), rtol=1e-12)
    np.testing.assert_allclose(train[:, 0], np.array(train_ref), rtol=1e-12, atol=1e-14)


def _results(gaps: dict, max_ks: float) -> dict:
    peak = max(gaps, key=gaps.get)
    return {
        "peak_alpha": peak,
        "peak_ratio": gaps[peak] / max(gaps[0.5], gaps[2.0]),
        "max_ks": max_ks,
    }


def test_checks_pass_and_fail_on_the_right_values():
    cfg = Config()
    good = checks(cfg, _results({0.5: 0.1, 0.8: 0.5, 1.0: 4.0, 1.25: 0.6, 2.0: 0.1}, 0.02))
    assert all(c.passed for c in good)
    bad_peak = checks(cfg, _results({0.5: 1.0, 0.8: 0.5, 1.0: 0.9, 1.25: 0.6, 2.0: 0.1}, 0.02))
    assert [c.passed for c in bad_peak] == [False, False, True]
    bad_ks = checks(cfg, _results({0.5: 0.1, 0.8: 0.5, 1.0: 4.0, 1.25: 0.6, 2.0: 0.1}, 0.06))
    assert [c.passed for c in bad_ks] == [True, True, False]
    assert good[0] == check("overtraining gap peaks at alpha", 1.0, "in", (0.8, 1.25))
