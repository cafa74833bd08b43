"""The linear datamodeling score, Spearman correlation and subset retraining."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import gradlab as gl


def test_spearman_by_hand():
    # ranks (0, 1, 2, 3) and (0, 2, 1, 3): rho = 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 12 / 60
    a = jnp.array([0.1, 0.5, 0.7, 2.0])
    b = jnp.array([-3.0, 4.0, 1.0, 9.0])
    assert float(gl.attribution.spearman(a, b)) == pytest.approx(0.8, abs=1e-6)
    # ties share their mean rank: (0, 1.5, 1.5, 3) vs (0, 1, 2, 3) by the Pearson formula
    ra, rb = np.array([0.0, 1.5, 1.5, 3.0]), np.arange(4.0)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    expected = (ra @ rb) / np.sqrt((ra @ ra) * (rb @ rb))
    tied = jnp.array([1.0, 2.0, 2.0, 5.0])
    assert float(gl.attribution.spearman(tied, a)) == pytest.approx(expected, abs=1e-6)


def test_lds_equals_mean_of_per_test_spearman(x64):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    n_test, n_train, s = 5, 12, 30
    scores = jax.random.normal(k1, (n_test, n_train))
    subsets = jax.random.bernoulli(k2, 0.5, (s, n_train))
    outputs = jax.random.normal(k3, (s, n_test))
    outputs = outputs + 0.5 * (subsets @ scores.T)  # correlated with the linear model
    predicted = np.asarray(subsets, float) @ np.asarray(scores).T
    expected = np.mean(
        [stats.spearmanr(predicted[:, j], outputs[:, j]).statistic for j in range(n_test)]
    )
    assert float(gl.attribution.lds(scores, subsets, outputs)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        (((5,), (3, 5), (3, 1)), r"scores has shape \(5,\)"),
        (((2, 5), (3, 4), (3, 2)), r"subsets has shape \(3, 4\)"),
        (((2, 5), (3, 5), (4, 2)), r"subset_outputs has shape \(4, 2\)"),
        (((2, 5), (3, 5), (3, 3)), r"subset_outputs has shape \(3, 3\)"),
    ],
)
def test_lds_bad_shapes(shapes, match):
    scores, subsets, outputs = (np.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        gl.attribution.lds(scores, subsets.astype(bool), outputs)


def test_retrain_subsets_matches_a_loop(x64):
    """Weighted ridge regression in closed form: the vmapped run equals a Python loop."""
    n, d = 10, 2
    x = jax.random.normal(jax.random.key(1), (n, d))
    y = x @ jnp.array([1.0, -1.0])
    x_test = jnp.eye(d)

    def train_and_eval(weights, key):
        del key
        xt = x.T * weights
        w = jnp.linalg.solve(xt @ x + 0.1 * jnp.eye(d), xt @ y)
        return x_test @ w

    run = gl.attribution.retrain_subsets(
        train_and_eval, n, key=jax.random.key(2), num_subsets=7, chunk_size=3
    )
    assert run.subsets.shape == (7, n) and run.subsets.dtype == jnp.bool_
    assert np.all(np.asarray(run.subsets).sum(axis=1) == n // 2)
    assert len({tuple(m) for m in np.asarray(run.subsets).tolist()}) > 1
    reference = jax.jit(train_and_eval)
    for s in range(7):  # a Python loop of single retrainings
        expected = reference(run.subsets[s].astype(float), None)
        np.testing.assert_allclose(run.outputs[s], expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_train": 1}, "num_train=1 is out of range"),
        ({"num_subsets": 0}, "num_subsets=0 is out of range"),
        ({"fraction": 1.0}, "fraction=1.0 is out of range"),
        ({"chunk_size": 0}, "chunk_size=0 is out of range"),
    ],
)
def test_retrain_subsets_bad_input(kwargs, match):
    args = {"num_train": 4, **kwargs}
    n = args.pop("num_train")
    with pytest.raises(ValueError, match=match):
        gl.attribution.retrain_subsets(lambda w, k: w, n, key=jax.random.key(0), **args)
