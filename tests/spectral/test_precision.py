"""The mixed-precision option ``matvec_dtype=`` of the spectral algorithms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl

BF16_UNIT_ROUNDOFF = 2.0**-8  # bfloat16 keeps 8 significant bits


def _problem(n=60):
    """A well-conditioned symmetric matrix: top eigenvalues 10, 9, 8, 7, 6, the rest in [0, 1]."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.concatenate([[10.0, 9.0, 8.0, 7.0, 6.0], rng.uniform(0.0, 1.0, n - 5)])
    return (q * lam) @ q.T, np.sort(lam)[::-1]


def _recording(a):
    """A matvec on ``{"w": (n,)}`` that records the dtype of every input it is traced with."""
    seen = []

    def matvec(v):
        seen.append(v["w"].dtype)
        return {"w": (a @ v["w"].astype(a.dtype)).astype(v["w"].dtype)}

    return matvec, seen


def _calls(like, key):
    return {
        "lanczos": lambda mv, **kw: gl.spectral.lanczos(mv, like, num_matvecs=6, **kw).alphas,
        "eigsh": lambda mv, **kw: gl.spectral.eigsh(mv, like, k=2, key=key, **kw).eigenvalues,
        "power_iteration": lambda mv, **kw: (
            gl.spectral.power_iteration(mv, like, key=key, num_iters=5, **kw).eigenvalues
        ),
        "slq": lambda mv, **kw: (
            gl.spectral.slq(mv, like, key=key, num_probes=2, num_matvecs=5, **kw).nodes
        ),
        "hutch++": lambda mv, **kw: gl.spectral.trace(mv, like, key=key, num_matvecs=9, **kw).value,
        "xtrace": lambda mv, **kw: (
            gl.spectral.trace(mv, like, key=key, num_matvecs=8, estimator="xtrace", **kw).value
        ),
        "diagonal": lambda mv, **kw: gl.spectral.diagonal(
            mv, like, key=key, num_matvecs=4, **kw
        ).value["w"],
        "cg": lambda mv, **kw: gl.spectral.cg(mv, like, damping=1.0, max_iters=5, **kw).x["w"],
    }


def test_matvec_sees_its_dtype_and_recurrences_stay_float32(key):
    a, _ = _problem(20)
    a = jnp.asarray(a, jnp.float32)
    like = {"w": jnp.ones(20, jnp.float32)}
    for name, call in _calls(like, key).items():
        matvec, seen = _recording(a)
        # Tracing is enough to see every dtype (and much cheaper than compiling 8 loops).
        out = jax.eval_shape(lambda call=call, matvec=matvec: call(matvec, matvec_dtype="bfloat16"))
        # gradlab.distributed's mesh probe may first evaluate the operator's output shape at
        # like's dtype (shape only, no product); from the algorithm's own probe on, every call
        # the algorithm makes sees bfloat16.
        probes = 1 if seen and seen[0] == jnp.float32 else 0
        assert len(seen) > probes and all(d == jnp.bfloat16 for d in seen[probes:]), (name, seen)
        assert out.dtype == jnp.float32, name  # recurrences and results in float32


def test_bfloat16_like_is_worked_in_float32(key):
    a, _ = _problem(20)
    matvec, seen = _recording(jnp.asarray(a, jnp.float32))
    like = {"w": jnp.ones(20, jnp.bfloat16)}
    eig = jax.eval_shape(
        lambda: gl.spectral.eigsh(matvec, like, k=2, key=key, matvec_dtype=jnp.bfloat16)
    )
    assert eig.eigenvalues.dtype == jnp.float32 and all(d == jnp.bfloat16 for d in seen)


def test_float32_matvecs_equal_the_default(key):
    a, _ = _problem(20)
    matvec, seen = _recording(jnp.asarray(a, jnp.float32))
    like = {"w": jnp.ones(20, jnp.float32)}
    calls = _calls(like, key)
    for name in ("eigsh", "hutch++", "cg"):  # the shared prepare() path and cg's own
        default = calls[name](matvec)
        assert all(d == jnp.float32 for d in seen), (name, seen)  # default: like's dtype
        np.testing.assert_array_equal(
            calls[name](matvec, matvec_dtype="float32"), default, err_msg=name
        )


def test_x64_works_in_float64_with_float32_matvecs(x64, key):
    a, lam = _problem()
    matvec, seen = _recording(jnp.asarray(a, jnp.float32))
    like = {"w": jnp.zeros(len(lam), jnp.float32)}
    eig = gl.spectral.eigsh(matvec, like, k=5, key=key, matvec_dtype="float32")
    assert eig.eigenvalues.dtype == jnp.float64 and all(d == jnp.float32 for d in seen)
    # float32 matvecs (relative error ~ 6e-8 per product) give float32-accurate eigenvalues.
    np.testing.assert_allclose(eig.eigenvalues, lam[:5], rtol=1e-5)


def test_bfloat16_eigenvalue_error_within_the_rounding_bound(x64, key):
    """Bound: with matvec errors ``||f_j|| <= eps ||A||`` the Krylov decomposition is
    ``A Q^T + F = Q^T T + r e_m^T``, so a Ritz pair ``(theta, y = Q^T s)`` has
    ``||A y - theta y|| <= beta_m |s_m| + ||F||_2`` and, ``A`` being symmetric, an eigenvalue
    within that distance. Here the input and the output of each product are rounded to
    bfloat16: ``eps <= 2u + u^2`` and ``||F||_2 <= sqrt(m) eps ||A||`` for ``m`` basis columns."""
    a, lam = _problem()
    a = jnp.asarray(a)
    like = jnp.zeros(len(lam))

    def matvec(v):
        return (a @ v.astype(a.dtype)).astype(jnp.bfloat16)

    m = 20
    eig = gl.spectral.eigsh(matvec, like, k=5, key=key, num_matvecs=m, matvec_dtype="bfloat16")
    eps = 2 * BF16_UNIT_ROUNDOFF + BF16_UNIT_ROUNDOFF**2
    bound = np.asarray(eig.residuals) + np.sqrt(m) * eps * lam[0]
    err = np.abs(np.asarray(eig.eigenvalues) - lam[:5])
    assert np.all(err <= bound), (err, bound)
    assert np.all(err > 0)  # the rounding is real: bf16 is not silently widened


@pytest.mark.parametrize("bad", ["bf16", "int32", jnp.complex64, 3])
def test_bad_matvec_dtype(bad):
    with pytest.raises(ValueError, match=r"matvec_dtype=.*expected None or one of 'bfloat16'"):
        gl.spectral.trace(
            lambda v: v, jnp.ones(3), key=jax.random.key(0), num_matvecs=4, matvec_dtype=bad
        )


def test_float64_matvecs_need_x64():
    if jax.config.jax_enable_x64:
        pytest.skip("x64 is on in this session")
    with pytest.raises(ValueError, match=r"matvec_dtype='float64' needs 64-bit.*jax_enable_x64"):
        gl.spectral.eigsh(
            lambda v: v, jnp.ones(3), k=1, key=jax.random.key(0), matvec_dtype="float64"
        )
    with pytest.raises(ValueError, match="matvec_dtype"):
        gl.spectral.cg(lambda v: v, jnp.ones(3), matvec_dtype="float64")
