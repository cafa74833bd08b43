"""Registry of every gradlab transform for the contract suite (``test_contract.py``).

Each transform is one or more :class:`Row` s. ``ROWS`` holds transforms-A's rows (this file),
``ROWS_B`` (``_registry_b.py``) transforms-B's; ``ALL_ROWS`` merges them and is what the contract
suite is parametrized over. A new transform is not done until it has a row here.

Row fields
----------
name
    Unique test id, e.g. ``"diffgrad"`` or ``"adabelief-rectify"``.
factory
    The alias ``<name>(learning_rate, **kwargs)`` (learning rate first, as optax aliases). The
    suite also wraps it in ``optax.inject_hyperparams(factory, static_args=static_hparams)`` and
    calls it with a schedule as ``learning_rate``.
learning_rate
    A float learning rate for which the row converges on both problems (see
    ``rosenbrock_learning_rate`` to override it for Rosenbrock).
kwargs
    Keyword arguments for ``factory`` besides the learning rate (a plain ``dict``; a PRNG key
    such as ``jax.random.key(0)`` goes here and its name into ``static_hparams``).
static_hparams
    Names of the factory arguments ``optax.inject_hyperparams`` must treat as static: ints,
    keys, option strings, callables that are not schedules. Bools are static automatically.
    Every other float/array argument must work as a traced array.
extra_args_fn
    ``None`` for transforms that only need ``(updates, state, params)``. Otherwise a function
    ``extra_args_fn(ctx: Ctx) -> dict`` returning the extra keyword arguments passed to
    ``update(grads, state, params, **extra)``. It is called *inside* the jitted training step,
    so it must be traceable. ``ctx`` carries ``params``, ``grads``, ``obj_fn`` (the loss as a
    function of params, e.g. ``{"obj_fn": ctx.obj_fn}``), ``value`` (loss at ``params``),
    ``step`` (int32 scalar) and ``key`` (a fresh PRNG key per step). Helpers below build
    per-example gradients (leading batch axis, mean == the full gradient) and per-task
    gradients (leading task axis, mean == the full gradient) from ``ctx``, e.g.
    ``extra_args_fn=lambda ctx: {"per_example_grads": per_example_grads(ctx, 4)}``.
required_extra_args
    Names of extra arguments whose absence must raise a ``ValueError`` naming them. The suite
    drops each one in turn from ``extra_args_fn``'s dict and checks the error.
quadratic_tol, rosenbrock_tol
    Convergence criterion ``loss_T <= tol * loss_0`` after ``quadratic_steps`` /
    ``rosenbrock_steps`` steps from the fixed starting points in ``test_contract.py``
    (quadratic: ``loss_0 = 23.77``; two Rosenbrocks from (-1.2, 1): ``loss_0 = 48.4``).
    Tolerances are loose and stated per row; calibrate them by running the row and leave a
    margin of about 3x (never loosen them just to hide a regression).
bf16_ok
    Whether a few steps with bfloat16 params must keep a finite loss (the state-stability check
    in bfloat16 runs regardless).
"""

from __future__ import annotations

import jax

import gradlab.transforms as gt
from tests.transforms._registry_b import ROWS_B
from tests.transforms._registry_kfac import ROWS_KFAC
from tests.transforms._row import Ctx, Row, per_example_grads, per_task_grads

__all__ = ["ALL_ROWS", "ROWS", "ROWS_BY_NAME", "Ctx", "Row", "per_example_grads", "per_task_grads"]


def _value(ctx: Ctx) -> dict:
    return {"value": ctx.value}


# Rows of transforms-A (diffGrad, AdaBelief, gradient noise, adaptive memory, noise-adaptive LR).
ROWS: list[Row] = [
    Row("diffgrad", gt.diffgrad, 0.1, quadratic_tol=1e-6, rosenbrock_tol=0.03),
    # The rectified warm-up is 5 plain momentum-SGD steps: Rosenbrock needs a small rate.
    Row(
        "adabelief-rectify-wd",
        gt.adabelief,
        0.1,
        {"weight_decay": 1e-4},
        static_hparams=("sma_threshold",),
        rosenbrock_learning_rate=4e-3,
        rosenbrock_steps=1500,
        quadratic_tol=1e-6,
    ),
    Row(
        "adabelief-plain",
        gt.adabelief,
        0.1,
        {"rectify": False},
        quadratic_tol=1e-6,
        rosenbrock_tol=0.01,
    ),
    Row(
        "annealed-noise",
        gt.annealed_noise,
        0.05,
        {"eta": 0.01, "key": jax.random.key(0)},
        static_hparams=("key",),
        rosenbrock_learning_rate=1e-3,
        rosenbrock_steps=2000,
        quadratic_tol=1e-4,
        rosenbrock_tol=0.03,
    ),
    Row(
        "annealed-noise-param-rms",
        gt.annealed_noise,
        0.05,
        {"eta": 0.01, "key": jax.random.key(0), "relative_to": "param_rms"},
        static_hparams=("key",),
        rosenbrock_learning_rate=1e-3,
        rosenbrock_steps=2000,
        quadratic_tol=1e-4,
        rosenbrock_tol=0.03,
    ),
    Row(
        "am-sgd",
        gt.am_sgd,
        0.2,
        {"lam": 0.1},
        extra_args_fn=_value,
        required_extra_args=("value",),
        rosenbrock_learning_rate=1e-3,
        rosenbrock_steps=2000,
        quadratic_tol=1e-10,
        rosenbrock_tol=0.03,
    ),
    Row(
        "am-adamw",
        gt.am_adamw,
        0.1,
        {"weight_decay": 1e-4},
        extra_args_fn=_value,
        required_extra_args=("value",),
        quadratic_tol=1e-6,
        rosenbrock_tol=1e-3,
    ),
    # LMO steps have a fixed size (about the learning rate), so with a constant rate the loss
    # stalls at O(lr^2): loose tolerances.
    Row(
        "lanton",
        gt.lanton,
        0.05,
        {"weight_decay": 0.0},
        static_hparams=("ns_steps",),
        rosenbrock_learning_rate=0.01,
        rosenbrock_steps=1500,
        quadratic_tol=1e-2,
        rosenbrock_tol=0.05,
    ),
]

ALL_ROWS: list[Row] = [*ROWS, *ROWS_B, *ROWS_KFAC]
ROWS_BY_NAME: dict[str, Row] = {row.name: row for row in ALL_ROWS}
assert len(ROWS_BY_NAME) == len(ALL_ROWS), "duplicate row names in the transform registry"
