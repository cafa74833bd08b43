"""trace() and diagonal(): exactness on diagonal matrices, 5-sem bounds, Hutch++/XTrace gains."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from tests.spectral._operators import as_matvec, known_operator

N = 150


def _dense_spd(seed=1):
    lam = np.random.default_rng(seed).uniform(0.5, 3.0, N)
    return known_operator(lam, seed=seed)


def _decaying(seed=2, n=N):
    return known_operator(10.0 * np.exp(-np.arange(n) / 4.0) + 1e-3, seed=seed)


@pytest.mark.parametrize("estimator", ["hutchinson", "stratified"])
def test_trace_exact_on_diagonal(x64, estimator):
    d = jnp.asarray(np.random.default_rng(0).normal(size=40))
    est = gl.spectral.trace(
        lambda v: d * v, jnp.zeros(40), key=jax.random.key(0), num_matvecs=5, estimator=estimator
    )
    np.testing.assert_allclose(est.value, np.sum(d), rtol=1e-12)
    assert float(est.sem) < 1e-12


@pytest.mark.parametrize("chunk_size", [1, 5])
def test_stratified_within_5_sem_on_dense_spd(x64, chunk_size):
    a = _dense_spd()
    like = {"a": jnp.zeros((5, 10)), "b": jnp.zeros(100)}
    _, unravel = jax.flatten_util.ravel_pytree(like)

    def mv(tree):
        return unravel(jnp.asarray(a) @ jax.flatten_util.ravel_pytree(tree)[0])

    est = gl.spectral.trace(
        mv,
        like,
        key=jax.random.key(3),
        num_matvecs=60,
        estimator="stratified",
        chunk_size=chunk_size,
    )
    assert 0 < float(est.sem) < 0.2 * np.trace(a)
    assert abs(float(est.value) - np.trace(a)) < 5 * float(est.sem)


def test_diagonal_exact_on_diagonal(x64):
    d = {"a": jnp.arange(1.0, 7.0).reshape(2, 3), "b": -jnp.arange(3.0)}
    mv = lambda v: jax.tree.map(jnp.multiply, d, v)  # noqa: E731
    est = gl.spectral.diagonal(mv, d, key=jax.random.key(1), num_matvecs=7, chunk_size=3)
    for name in d:
        np.testing.assert_allclose(est.value[name], d[name], rtol=1e-12)
        np.testing.assert_allclose(est.sem[name], 0.0, atol=1e-12)


@pytest.mark.parametrize(
    ("estimator", "chunk_size"),
    [("hutchinson", 1), ("hutchinson", 16), ("hutch++", 7), ("xtrace", 1)],
)
def test_trace_within_5_sem(x64, estimator, chunk_size):
    a = _dense_spd()
    est = gl.spectral.trace(
        as_matvec(a),
        jnp.zeros(N),
        key=jax.random.key(3),
        num_matvecs=60,
        estimator=estimator,
        chunk_size=chunk_size,
    )
    assert 0 < float(est.sem) < 0.2 * np.trace(a)
    assert abs(float(est.value) - np.trace(a)) < 5 * float(est.sem)


@pytest.mark.parametrize("estimator", ["hutchinson", "xdiag"])
def test_diagonal_within_5_sem(x64, estimator):
    a = _dense_spd(seed=4)
    est = gl.spectral.diagonal(
        as_matvec(a),
        jnp.zeros(N),
        key=jax.random.key(5),
        num_matvecs=80,
        estimator=estimator,
        chunk_size=8,
    )
    z = (np.asarray(est.value) - np.diag(a)) / np.asarray(est.sem)
    assert np.mean(np.abs(z) < 5) >= 0.99
    assert 0.3 < np.sqrt(np.mean(z**2)) < 2.0  # the sem is the right size, not just large


def test_hutchinson_sem_matches_empirical_spread(x64):
    a = _dense_spd(seed=6)
    run = jax.jit(
        jax.vmap(
            lambda k: gl.spectral.trace(
                as_matvec(a), jnp.zeros(N), key=k, num_matvecs=20, estimator="hutchinson"
            )
        )
    )
    ests = run(jax.random.split(jax.random.key(1), 40))
    values, sems = np.asarray(ests.value), np.asarray(ests.sem)
    ratio = np.std(values - np.trace(a)) / np.mean(sems)
    assert 0.6 < ratio < 1.5


def test_variance_reduction_beats_hutchinson(x64):
    a = _decaying(n=80)
    truth = np.trace(a)

    def errors(name):
        run = jax.jit(
            jax.vmap(
                lambda k: (
                    gl.spectral.trace(
                        as_matvec(a), jnp.zeros(80), key=k, num_matvecs=30, estimator=name
                    ).value
                )
            )
        )
        return np.abs(np.asarray(run(jax.random.split(jax.random.key(0), 20))) - truth)

    base = errors("hutchinson")
    for name in ("hutch++", "xtrace"):
        assert np.mean(errors(name)) < 0.5 * np.mean(base), name


def test_xdiag_beats_hutchinson_on_decaying_spectrum(x64):
    a = _decaying(seed=7)

    def err(name):
        est = gl.spectral.diagonal(
            as_matvec(a), jnp.zeros(N), key=jax.random.key(0), num_matvecs=40, estimator=name
        )
        return np.mean(np.abs(np.asarray(est.value) - np.diag(a)))

    assert err("xdiag") < 0.5 * err("hutchinson")


def test_nan_operator_gives_nan_not_hang():
    est = gl.spectral.trace(
        lambda v: v * jnp.nan, jnp.zeros(5), key=jax.random.key(0), num_matvecs=4
    )
    assert np.isnan(est.value)


def test_bad_arguments():
    mv, like, key = (lambda v: v), jnp.zeros(5), jax.random.key(0)
    with pytest.raises(ValueError, match="estimator='hutch'.*'hutch\\+\\+'"):
        gl.spectral.trace(mv, like, key=key, num_matvecs=10, estimator="hutch")
    with pytest.raises(ValueError, match="num_matvecs=0 is out of range"):
        gl.spectral.trace(mv, like, key=key, num_matvecs=0)
    with pytest.raises(
        ValueError, match="num_matvecs=3 is out of range: expected 4 <= num_matvecs"
    ):
        gl.spectral.trace(mv, like, key=key, num_matvecs=3, estimator="xtrace")
    with pytest.raises(ValueError, match="estimator='xtrace'"):
        gl.spectral.diagonal(mv, like, key=key, num_matvecs=10, estimator="xtrace")
    with pytest.raises(ValueError, match="chunk_size"):
        gl.spectral.diagonal(mv, like, key=key, num_matvecs=10, chunk_size=0)
    with pytest.raises(TypeError, match="structure"):
        gl.spectral.trace(lambda v: (v,), like, key=key, num_matvecs=10)


def _two_leaf_operator(coupling, seed=11, diagonal_blocks=False):
    """A symmetric operator on {"a": (20,), "b": (4, 10)} with cross-leaf block ``coupling * C``."""
    rng = np.random.default_rng(seed)
    if diagonal_blocks:
        a11, a22 = np.diag(rng.uniform(1, 2, 20)), np.diag(rng.uniform(-1, 1, 40))
    else:
        a11 = known_operator(rng.uniform(0.5, 2.0, 20), seed=seed)
        a22 = known_operator(rng.uniform(-1.0, 1.0, 40), seed=seed + 1)
    c = coupling * rng.normal(size=(20, 40))
    a = np.block([[a11, c], [c.T, a22]])
    like = {"a": jnp.zeros(20), "b": jnp.zeros((4, 10))}
    _, unravel = jax.flatten_util.ravel_pytree(like)

    def mv(tree):
        return unravel(jnp.asarray(a) @ jax.flatten_util.ravel_pytree(tree)[0])

    return a, like, mv


def test_stratified_ignores_cross_leaf_blocks(x64):
    # Diagonal within each leaf, dense between leaves: every leaf-supported probe is exact.
    a, like, mv = _two_leaf_operator(5.0, diagonal_blocks=True)
    key = jax.random.key(3)
    est = gl.spectral.trace(mv, like, key=key, num_matvecs=8, estimator="stratified")
    np.testing.assert_allclose(float(est.value), np.trace(a), rtol=1e-12)
    assert float(est.sem) < 1e-10
    plain = gl.spectral.trace(mv, like, key=key, num_matvecs=8, estimator="hutchinson")
    assert float(plain.sem) > 1.0


def test_stratified_sem_is_honest_and_beats_hutchinson(x64):
    a, like, mv = _two_leaf_operator(1.0)
    truth = np.trace(a)

    def run(name):
        fn = jax.jit(
            jax.vmap(lambda k: gl.spectral.trace(mv, like, key=k, num_matvecs=24, estimator=name))
        )
        est = fn(jax.random.split(jax.random.key(5), 40))
        return np.asarray(est.value) - truth, np.asarray(est.sem)

    err, sem = run("stratified")
    assert 0.6 < np.std(err) / np.mean(sem) < 1.5
    assert abs(np.mean(err)) < 5 * np.std(err) / np.sqrt(len(err))  # unbiased
    base_err, _ = run("hutchinson")
    assert np.mean(np.abs(err)) < 0.5 * np.mean(np.abs(base_err))


def test_stratified_chunking_does_not_change_the_estimate(x64):
    a, like, mv = _two_leaf_operator(1.0, seed=12)
    key = jax.random.key(8)
    one = gl.spectral.trace(mv, like, key=key, num_matvecs=30, estimator="stratified")
    four = gl.spectral.trace(
        mv, like, key=key, num_matvecs=30, estimator="stratified", chunk_size=4
    )
    np.testing.assert_allclose(float(four.value), float(one.value), rtol=1e-12)
    np.testing.assert_allclose(float(four.sem), float(one.sem), rtol=1e-10)


def test_stratified_needs_two_probes_per_leaf():
    like = {"a": jnp.zeros(3), "b": jnp.zeros(2), "c": jnp.zeros(4)}
    with pytest.raises(ValueError, match=r"num_matvecs=5 .*'stratified'.*3 non-empty.*>= 6"):
        gl.spectral.trace(
            lambda v: v, like, key=jax.random.key(0), num_matvecs=5, estimator="stratified"
        )
    est = gl.spectral.trace(
        lambda v: v, like, key=jax.random.key(0), num_matvecs=6, estimator="stratified"
    )
    np.testing.assert_allclose(float(est.value), 9.0)
