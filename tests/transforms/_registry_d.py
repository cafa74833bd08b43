"""transforms-D's rows (part 2: Sven, softmax radius, GRN); see ``_registry.py`` for the fields."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from gradlab import transforms as gt
from tests.transforms._row import Ctx, Row


def _flat(params) -> jax.Array:
    return jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(params)])


def _stand_in_logits(params) -> jax.Array:
    """(3, 4) logits, a fixed linear map of the flattened params (any problem size)."""
    flat = _flat(params)
    m = jax.random.normal(jax.random.key(3), (12, flat.shape[0]), jnp.float32)
    return (m @ flat).reshape(3, 4)


def _logits(ctx: Ctx) -> dict:
    # The suite's problems are not classification problems: the radius is measured on stand-in
    # logits linear in the params (the cap binds on the first two quadratic steps: 0.70, 0.91).
    return {"logits_fn": _stand_in_logits}


def _obj(ctx: Ctx) -> dict:
    return {"obj_fn": ctx.obj_fn}


def _residuals(params) -> jax.Array:
    """Per-term residuals of the suite's two problems (told apart by the params' keys).

    Quadratic (``test_contract._quadratic``): ``sqrt(a) * (p - c)``, 15 residuals, half their
    squared norm is the loss. Rosenbrock: ``10 (y - x^2)`` and ``1 - x``, 4 residuals.
    """
    if "w" in params:
        a = jnp.concatenate([jnp.linspace(0.5, 4.0, 12), jnp.array([1.0, 2.0, 3.0])])
        c_w = jnp.linspace(-2.0, 2.0, 12, dtype=jnp.float32).reshape(3, 4).T
        c = jnp.concatenate([c_w.reshape(-1), jnp.array([1.5, -1.0, 0.5])])
        p = jnp.concatenate([params["w"].reshape(-1), params["b"]]).astype(jnp.float32)
        return jnp.sqrt(a) * (p - c)
    x, y = params["x"].astype(jnp.float32), params["y"].astype(jnp.float32)
    return jnp.concatenate([10.0 * (y - x**2), 1.0 - x])


def _sven_full_rank(learning_rate, *, key, rtol):
    """``sven`` with ``rank = min(m, P)`` of the problem at hand (15 or 4): one row serves
    both problems although ``rank`` is fixed at construction (as ``_registry_b``'s shim)."""

    def make(tree):
        rank = 15 if "w" in tree else 4
        return gt.sven(learning_rate, rank=rank, key=key, rtol=rtol)

    def init_fn(params):
        return make(params).init(params)

    def update_fn(updates, state, params=None, **extra):
        return make(updates).update(updates, state, params, **extra)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _res(ctx: Ctx) -> dict:
    return {"residual_fn": _residuals}


_GRN_STATIC = ("curvature", "max_search", "cg_max_iters", "num_samples", "key")

ROWS_D: list[Row] = [
    Row(
        name="softmax-radius",
        factory=gt.softmax_radius,
        learning_rate=0.1,
        kwargs={"ratio": 1.0},
        extra_args_fn=_logits,
        required_extra_args=("logits_fn",),
        rosenbrock_learning_rate=1e-3,
        rosenbrock_steps=2000,
        quadratic_tol=1e-3,
        rosenbrock_tol=0.1,
    ),
    # Unit steps (the paper's method): the adaptive gamma does the step-size control.
    Row(
        name="grn-hessian",
        factory=gt.grn,
        learning_rate=1.0,
        kwargs={"gamma0": 1.0, "cg_tol": 1e-4},
        static_hparams=_GRN_STATIC,
        extra_args_fn=_obj,
        required_extra_args=("obj_fn",),
        quadratic_steps=30,
        rosenbrock_steps=100,
        quadratic_tol=1e-6,
        rosenbrock_tol=1e-3,
    ),
    # curvature="ggn"/"fisher" differ from this row only in the matvec they hand to CG (their
    # numerics, key handling included, are in test_grn.py); a row each would double the cost.
    Row(
        name="sven",
        factory=_sven_full_rank,
        learning_rate=0.5,
        kwargs={"key": jax.random.key(0), "rtol": 1e-3},
        static_hparams=("key",),
        extra_args_fn=_res,
        required_extra_args=("residual_fn",),
        quadratic_steps=50,
        rosenbrock_steps=100,
        quadratic_tol=1e-6,
        rosenbrock_tol=1e-3,
    ),
]
