"""The transform contract suite: every row of ``_registry.ALL_ROWS`` must pass every test here.

Checks (DESIGN.md "Testing ladder", item 4): converges on a quadratic and on Rosenbrock (per-row
tolerances); runs under ``jit`` and does not retrace on the second call; ignores unknown extra
args; a missing required extra arg raises a ``ValueError`` naming it; keeps the state's shapes
and dtypes for float32 and bfloat16 params (the state is routed through ``lax.cond``, which
rejects any drift); works inside ``optax.chain``, under ``optax.inject_hyperparams`` and with a
schedule as learning rate (each gives the plain transform's trajectory over the first steps and
converges; the schedule drops the rate to 0 for the last steps, which must then freeze the loss).
The unknown-extra-args and no-retrace checks share one jitted step that always passes an unknown
argument and must reproduce the plain run's first losses.

To keep the suite fast every trajectory is one jitted ``lax.scan`` and is cached per
``(row, problem, variant, dtype)`` so tests that need the same run share it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.transforms._registry import ALL_ROWS, ROWS_BY_NAME, Ctx, Row

ROW_IDS = [row.name for row in ALL_ROWS]
BASE_SEED = 1234  # per-step keys for extra_args_fn are fold_in(key(BASE_SEED), step)
FROZEN_STEPS = 3
rows = pytest.mark.parametrize("row_name", ROW_IDS)


# ----------------------------------------------------------------------------- problems


def _quadratic(dtype):
    """0.5 * sum a (p - c)^2 on a two-leaf pytree (a (4, 3) matrix and a (3,) vector)."""
    a = {
        "w": jnp.linspace(0.5, 4.0, 12, dtype=jnp.float32).reshape(4, 3),
        "b": jnp.array([1.0, 2.0, 3.0], jnp.float32),
    }
    c = {
        "w": jnp.linspace(-2.0, 2.0, 12, dtype=jnp.float32).reshape(3, 4).T,
        "b": jnp.array([1.5, -1.0, 0.5], jnp.float32),
    }

    def obj(p):
        terms = jax.tree.map(
            lambda x, ai, ci: jnp.sum(ai * (x.astype(jnp.float32) - ci) ** 2), p, a, c
        )
        return 0.5 * sum(jax.tree.leaves(terms))

    params0 = {"w": jnp.zeros((4, 3), dtype), "b": jnp.zeros((3,), dtype)}
    return obj, params0


def _rosenbrock(dtype):
    """Two independent 2-D Rosenbrock functions, both started at (-1.2, 1)."""

    def obj(p):
        x = p["x"].astype(jnp.float32)
        y = p["y"].astype(jnp.float32)
        return jnp.sum(100.0 * (y - x**2) ** 2 + (1.0 - x) ** 2)

    params0 = {"x": jnp.full((2,), -1.2, dtype), "y": jnp.ones((2,), dtype)}
    return obj, params0


PROBLEMS = {"quadratic": _quadratic, "rosenbrock": _rosenbrock}


def _make(row: Row, variant: str, learning_rate: float) -> optax.GradientTransformationExtraArgs:
    if variant == "plain":
        return row.make(learning_rate)
    if variant == "chain":
        return optax.chain(
            optax.clip_by_global_norm(1e9), row.make(learning_rate), optax.identity()
        )
    if variant == "inject":
        factory = optax.inject_hyperparams(row.factory, static_args=row.static_hparams)
        return factory(learning_rate, **row.kwargs)
    if variant == "schedule":
        # The row's rate, then 0 for the last FROZEN_STEPS steps: the prefix must match the
        # plain run and the final losses must not move (the schedule sees the step count).
        return row.make(
            optax.piecewise_constant_schedule(
                learning_rate, {row.quadratic_steps - FROZEN_STEPS: 0.0}
            )
        )
    raise AssertionError(variant)


@functools.cache
def _trajectory(
    row_name: str, problem: str, variant: str = "plain", dtype: str = "float32", steps=None
):
    """Run ``steps`` optimizer steps in one jitted scan; the state goes through ``lax.cond``.

    Returns ``(losses (steps + 1,), init_state, final_state, final_params, update_dtypes)``.
    """
    update_dtypes = []
    row = ROWS_BY_NAME[row_name]
    obj, params0 = PROBLEMS[problem](jnp.dtype(dtype))
    if steps is None:
        steps = row.quadratic_steps if problem == "quadratic" else row.rosenbrock_steps
    lr = row.learning_rate
    if problem == "rosenbrock" and row.rosenbrock_learning_rate is not None:
        lr = row.rosenbrock_learning_rate
    tx = _make(row, variant, lr)
    base_key = jax.random.key(BASE_SEED)

    @jax.jit
    def run(params0):
        state0 = tx.init(params0)

        def body(carry, step):
            params, state = carry
            value, grads = jax.value_and_grad(obj)(params)
            ctx = Ctx(params, grads, obj, value, step, jax.random.fold_in(base_key, step))
            updates, new_state = tx.update(grads, state, params, **row.extra_args(ctx))
            # lax.cond demands identical pytree structure, shapes and dtypes in both branches:
            # any drift of the state (or of the updates vs the gradients) fails here at trace time.
            new_state = jax.lax.cond(step >= 0, lambda: new_state, lambda: state)
            update_dtypes.append(jax.tree.map(lambda u: u.dtype, updates))  # at trace time
            return (optax.apply_updates(params, updates), new_state), value

        (params, state), values = jax.lax.scan(
            body, (params0, state0), jnp.arange(steps, dtype=jnp.int32)
        )
        return jnp.concatenate([values, obj(params)[None]]), state0, state, params

    values, state0, state, params = run(params0)
    return np.asarray(values), state0, state, params, update_dtypes[0]


def _probe_ctx(obj, params):
    value, grads = jax.value_and_grad(obj)(params)
    return Ctx(params, grads, obj, value, jnp.zeros((), jnp.int32), jax.random.key(7))


def _avals(tree):
    return jax.tree.map(lambda x: (jnp.shape(x), x.dtype, getattr(x, "weak_type", False)), tree)


def _trees_equal(a, b):
    def same(x, y):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        return bool(jnp.array_equal(x, y, equal_nan=True))

    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        jax.tree.leaves(jax.tree.map(same, a, b))
    )


# ----------------------------------------------------------------------------- convergence


@rows
def test_converges_on_quadratic(row_name):
    row = ROWS_BY_NAME[row_name]
    losses = _trajectory(row_name, "quadratic")[0]
    assert np.all(np.isfinite(losses)), losses
    assert losses[-1] <= row.quadratic_tol * losses[0], (losses[0], losses[-1])


@rows
def test_converges_on_rosenbrock(row_name):
    row = ROWS_BY_NAME[row_name]
    losses = _trajectory(row_name, "rosenbrock")[0]
    assert np.all(np.isfinite(losses)), losses
    assert losses[-1] <= row.rosenbrock_tol * losses[0], (losses[0], losses[-1])


# ----------------------------------------------------------------------------- dtypes


@rows
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_state_and_updates_keep_dtypes(row_name, dtype):
    row = ROWS_BY_NAME[row_name]
    # float32 shares the convergence run; bfloat16 runs a short trajectory of its own.
    steps = None if dtype == "float32" else 10
    losses, state0, state, params, update_dtypes = _trajectory(
        row_name, "quadratic", dtype=dtype, steps=steps
    )
    assert _avals(state) == _avals(state0)
    assert all(p.dtype == jnp.dtype(dtype) for p in jax.tree.leaves(params))
    assert all(d == jnp.dtype(dtype) for d in jax.tree.leaves(update_dtypes)), update_dtypes
    if dtype == "float32" or row.bf16_ok:
        assert np.all(np.isfinite(losses)), losses


# ----------------------------------------------------------------------------- jit / extra args


@functools.cache
def _jitted_steps(row_name: str, num_calls: int = 3):
    """Call one jitted step ``num_calls`` times, always passing an unknown extra argument.

    Returns ``(number of traces, losses before each call and after the last)``.
    """
    row = ROWS_BY_NAME[row_name]
    obj, params = _quadratic(jnp.float32)
    tx = row.make()
    traces = []

    @jax.jit
    def step(params, state, step):
        traces.append(1)  # Python side effect: runs only while tracing
        value, grads = jax.value_and_grad(obj)(params)
        ctx = Ctx(
            params, grads, obj, value, step, jax.random.fold_in(jax.random.key(BASE_SEED), step)
        )
        extra = row.extra_args(ctx)
        updates, state = tx.update(grads, state, params, **extra, gradlab_unknown_arg=jnp.ones(3))
        return optax.apply_updates(params, updates), state, value

    state = tx.init(params)
    losses = []
    for i in range(num_calls):
        params, state, value = step(params, state, jnp.int32(i))
        losses.append(float(value))
    losses.append(float(obj(params)))
    return len(traces), np.asarray(losses)


@rows
def test_jit_does_not_retrace_on_second_call(row_name):
    num_traces, _ = _jitted_steps(row_name)
    assert num_traces == 1, f"traced {num_traces} times in 3 calls (state or params types drift)"


@rows
def test_ignores_unknown_extra_args(row_name):
    """Every call above passed ``gradlab_unknown_arg``: same losses as the plain run."""
    _, losses = _jitted_steps(row_name)
    plain = _trajectory(row_name, "quadratic")[0][: len(losses)]
    np.testing.assert_allclose(losses, plain, rtol=1e-4, atol=1e-6 * plain[0])


@rows
def test_missing_extra_arg_raises_naming_it(row_name):
    row = ROWS_BY_NAME[row_name]
    if not row.required_extra_args:
        pytest.skip("no required extra args")
    obj, params = _quadratic(jnp.float32)
    tx = row.make()
    state = tx.init(params)
    ctx = _probe_ctx(obj, params)
    extra = row.extra_args(ctx)
    for name in row.required_extra_args:
        rest = {k: v for k, v in extra.items() if k != name}
        with pytest.raises(ValueError, match=name):
            tx.update(ctx.grads, state, params, **rest)


# ----------------------------------------------------------------------------- composition


def _assert_same_trajectory(row_name, variant, compare_steps=25):
    """The first ``compare_steps`` losses agree with the plain run's; the whole run converges.

    Only a prefix is compared: near the optimum, methods with fixed-size steps (LMO, sign,
    normalised) oscillate and float-rounding differences between equivalent programs grow.
    """
    row = ROWS_BY_NAME[row_name]
    # Same length as the convergence run, so the plain trajectory is shared (cached).
    plain = _trajectory(row_name, "quadratic", "plain")[0]
    other = _trajectory(row_name, "quadratic", variant)[0]
    np.testing.assert_allclose(
        other[:compare_steps], plain[:compare_steps], rtol=1e-4, atol=1e-6 * plain[0]
    )
    assert other[-1] <= row.quadratic_tol * other[0], (other[0], other[-1])


@rows
def test_works_inside_chain(row_name):
    _assert_same_trajectory(row_name, "chain")


@rows
def test_works_with_inject_hyperparams(row_name):
    _assert_same_trajectory(row_name, "inject")
    # The injected state really exposes the float hyperparameters as arrays.
    row = ROWS_BY_NAME[row_name]
    factory = optax.inject_hyperparams(row.factory, static_args=row.static_hparams)
    state = factory(row.learning_rate, **row.kwargs).init(_quadratic(jnp.float32)[1])
    floats = [
        k for k, v in row.kwargs.items() if isinstance(v, float) and k not in row.static_hparams
    ]
    assert set(floats) | {"learning_rate"} <= set(state.hyperparams)


@rows
def test_accepts_schedule_as_learning_rate(row_name):
    _assert_same_trajectory(row_name, "schedule")
    # The schedule drops the rate to 0 for the last FROZEN_STEPS steps: the loss stops moving.
    losses = _trajectory(row_name, "quadratic", "schedule")[0]
    np.testing.assert_array_equal(losses[-FROZEN_STEPS:], losses[-1])
