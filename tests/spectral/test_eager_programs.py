"""Eager spectral calls on a gradlab operator keep one compiled program on the operator.

Without it every eager call traces and compiles the algorithm's loops again (about a second on
a tiny MLP's Hessian, even for the same operator and options); with it a repeated call is one
dispatch. Only gradlab's own operators (pure functions of the vector) get a kept program: a
user's callable may read state that changes between calls.
"""

from __future__ import annotations

import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradlab as gl
from gradlab._src import programs
from tests.spectral._operators import tiny_mlp_problem


def _counted_hessian():
    loss_fn, params, batch = tiny_mlp_problem()
    calls = [0]

    def counted(p, b):
        calls[0] += 1
        return loss_fn(p, b)

    return gl.curvature.hessian(counted, params, batch), params, calls


CALLS = {
    "eigsh": lambda hvp, p, key: gl.spectral.eigsh(hvp, p, k=2, key=key, num_matvecs=8),
    "power_iteration": lambda hvp, p, key: gl.spectral.power_iteration(
        hvp, p, key=key, num_iters=20
    ),
    "lanczos": lambda hvp, p, key: gl.spectral.lanczos(
        hvp, jax.tree.map(lambda a: jax.random.normal(key, a.shape, a.dtype), p), num_matvecs=6
    ),
    "slq": lambda hvp, p, key: gl.spectral.slq(hvp, p, key=key, num_probes=2, num_matvecs=6),
    "trace": lambda hvp, p, key: gl.spectral.trace(hvp, p, key=key, num_matvecs=9),
    "diagonal": lambda hvp, p, key: gl.spectral.diagonal(hvp, p, key=key, num_matvecs=4),
    "cg": lambda hvp, p, key: gl.spectral.cg(
        hvp, jax.tree.map(lambda a: jax.random.normal(key, a.shape, a.dtype), p), damping=1.0
    ),
}


def _equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", sorted(CALLS))
def test_repeated_eager_calls_reuse_the_program(x64, name):
    hvp, params, calls = _counted_hessian()
    call = CALLS[name]
    first = call(hvp, params, jax.random.key(0))
    traced = calls[0]
    assert traced > 0
    again = call(hvp, params, jax.random.key(0))
    other = call(hvp, params, jax.random.key(1))
    assert calls[0] == traced, "a repeated eager call traced the operator again"
    _equal(again, first)
    # The key is an argument of the kept program, not a constant baked into it.
    differs = [
        not np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(first), jax.tree.leaves(other), strict=True)
    ]
    assert any(differs)
    if name in ("eigsh", "cg"):  # and it computes what the user's own jit computes
        jitted = jax.jit(lambda key: call(hvp, params, key))(jax.random.key(1))
        for x, y in zip(jax.tree.leaves(other), jax.tree.leaves(jitted), strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-9, atol=1e-12)


def test_options_and_shapes_are_part_of_the_key(x64):
    hvp, params, calls = _counted_hessian()
    key = jax.random.key(0)
    two = gl.spectral.eigsh(hvp, params, k=2, key=key)
    three = gl.spectral.eigsh(hvp, params, k=3, key=key)
    assert two.eigenvalues.shape == (2,) and three.eigenvalues.shape == (3,)
    np.testing.assert_allclose(two.eigenvalues, three.eigenvalues[:2], rtol=1e-8)
    # float32 vectors on the float64 operator: another program, float32 Lanczos basis
    single = gl.spectral.eigsh(
        hvp, jax.tree.map(lambda a: a.astype(jnp.float32), params), k=2, key=key
    )
    assert single.eigenvalues.dtype == jnp.float32


def test_the_operator_arrays_are_arguments_not_constants(x64):
    """The batch and params reach the program as arguments (closing ``jit`` over them would
    embed them in the HLO as constants)."""
    hvp, params, _ = _counted_hessian()
    gl.spectral.eigsh(hvp, params, k=1, key=jax.random.key(0))
    (entry,) = hvp.__dict__[programs._TABLE].values()
    _, consts, _ = entry
    kept = {id(c) for c in consts}
    assert all(id(leaf) in kept for leaf in jax.tree.leaves(params))


def test_the_table_is_bounded_and_dies_with_the_operator(x64, monkeypatch):
    monkeypatch.setattr(programs, "PER_OPERATOR", 2)  # the bound is read at each call
    loss_fn, params, batch = tiny_mlp_problem()

    class Scale:  # a weak-referenceable object the loss closes over
        value = 1.0

    def make_loss(scale):
        return lambda p, b: scale.value * loss_fn(p, b)

    scale = Scale()
    hvp = gl.curvature.hessian(make_loss(scale), params, batch)
    for num_iters in (1, 2, 3, 1):
        gl.spectral.power_iteration(hvp, params, key=jax.random.key(0), num_iters=num_iters)
    table = hvp.__dict__[programs._TABLE]
    assert [dict(key[1])["num_iters"] for key in table] == [3, 1]  # 2: least recently used
    # Defaults are filled in: passing one explicitly reuses the same program.
    gl.spectral.power_iteration(hvp, params, key=jax.random.key(0), num_iters=1, tol=1e-6)
    assert len(table) == 2
    alive = weakref.ref(scale)
    del hvp, scale
    gc.collect()
    assert alive() is None


def test_a_users_callable_is_traced_at_every_call(x64):
    """A plain function may read state that changes: it never gets a kept program."""
    state = {"a": jnp.diag(jnp.arange(1.0, 6.0))}

    def matvec(v):
        return state["a"] @ v

    first = gl.spectral.eigsh(matvec, jnp.zeros(5), k=1, key=jax.random.key(0))
    state["a"] = 2 * state["a"]
    second = gl.spectral.eigsh(matvec, jnp.zeros(5), k=1, key=jax.random.key(0))
    np.testing.assert_allclose(second.eigenvalues, 2 * first.eigenvalues, rtol=1e-10)
    assert programs._TABLE not in matvec.__dict__
    # Nor does a gradlab operator solved with a user's preconditioner.
    hvp, params, calls = _counted_hessian()
    b = jax.tree.map(jnp.ones_like, params)
    gl.spectral.cg(hvp, b, damping=1.0, preconditioner=lambda r: r)
    assert programs._TABLE not in hvp.__dict__


def test_checks_still_run_on_eager_calls(x64):
    hvp, params, _ = _counted_hessian()
    gl.spectral.eigsh(hvp, params, k=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="k="):
        gl.spectral.eigsh(hvp, params, k=0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="zero norm"):
        gl.spectral.lanczos(hvp, jax.tree.map(jnp.zeros_like, params), num_matvecs=3)
    with pytest.raises(ValueError, match="tol"):
        gl.spectral.cg(hvp, params, tol=-1.0)


def test_operator_built_inside_a_transformation_is_not_kept(x64):
    """Built under ``jax.grad`` the operator closes over tracers: the algorithm runs inline
    and is differentiable as before."""
    loss_fn, params, batch = tiny_mlp_problem()
    b = jax.tree.map(jnp.ones_like, params)

    def solve_norm(scale):
        hvp = gl.curvature.hessian(lambda p, d: scale * loss_fn(p, d), params, batch)
        x = gl.spectral.cg(hvp, b, damping=10.0).x
        return sum(jnp.vdot(leaf, leaf) for leaf in jax.tree.leaves(x))

    grad = jax.grad(solve_norm)(1.0)
    step = 1e-3
    fd = (solve_norm(1.0 + step) - solve_norm(1.0 - step)) / (2 * step)
    np.testing.assert_allclose(grad, fd, rtol=1e-2)


def test_array_valued_options_work_as_before(x64):
    """A 0-d integer array for a count is read as that count; a float array for a tolerance
    is an argument of the program."""
    hvp, params, _ = _counted_hessian()
    key = jax.random.key(0)
    plain = gl.spectral.eigsh(hvp, params, k=2, key=key)
    as_array = gl.spectral.eigsh(hvp, params, k=jnp.asarray(2), key=key, tol=jnp.asarray(1e-6))
    np.testing.assert_allclose(as_array.eigenvalues, plain.eigenvalues, rtol=1e-10)
