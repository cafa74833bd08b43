"""Part-2 rows (tx-a: AdaHessian, M-FAC, DCT low-rank, Q-GaLore); see ``_registry.py``."""

from __future__ import annotations

import jax

from gradlab import transforms as gt
from tests.transforms._row import Ctx, Row

_KEY = jax.random.key(0)


def _obj_fn(ctx: Ctx) -> dict:
    return {"obj_fn": ctx.obj_fn}


ROWS_C: list[Row] = [
    Row(
        name="adahessian",
        factory=gt.adahessian,
        learning_rate=0.3,
        kwargs={"key": _KEY},
        static_hparams=("key", "update_interval"),
        extra_args_fn=_obj_fn,
        required_extra_args=("obj_fn",),
        # Rosenbrock's large off-diagonal Hessian makes the Hutchinson diagonal noisy and the
        # RMS denominator large: a Newton-sized rate (1.0) is needed (0.018 measured).
        rosenbrock_learning_rate=1.0,
        quadratic_tol=1e-6,
        rosenbrock_tol=0.05,
    ),
    Row(
        name="adahessian-interval-3-power-half",
        factory=gt.adahessian,
        learning_rate=0.3,
        kwargs={"key": _KEY, "update_interval": 3, "hessian_power": 0.5},
        static_hparams=("key", "update_interval"),
        extra_args_fn=_obj_fn,
        required_extra_args=("obj_fn",),
        # hessian_power=0.5 takes larger steps where the curvature is large: small rate
        # (0.3 diverges on Rosenbrock; 0.03 reaches 0.0072 in 1000 steps).
        rosenbrock_learning_rate=0.03,
        rosenbrock_steps=1000,
        quadratic_tol=1e-6,
        rosenbrock_tol=0.03,
    ),
    Row(
        name="mfac",
        factory=gt.mfac,
        learning_rate=0.3,
        kwargs={"num_grads": 2, "damping": 1.0},
        static_hparams=("num_grads",),
        # The empirical Fisher of a deterministic gradient window is ~ g g^T: large steps are
        # damped by |g|^2 and small gradients get g / damping, so lr / damping must stay below
        # 2 / L near the optimum (L ~ 1000 on Rosenbrock). 0.0005 measured at 1000 steps.
        rosenbrock_learning_rate=0.1,
        rosenbrock_steps=1000,
        quadratic_tol=1e-6,
        rosenbrock_tol=0.002,
    ),
    Row(
        name="dct-lowrank",
        factory=gt.dct_lowrank,
        learning_rate=0.1,
        kwargs={"rank": 2},
        static_hparams=("rank", "update_interval"),
        # Rank 2 of the (4, 3) leaf's 4 DCT directions, re-selected every step, with Adam's
        # fixed-size steps: the loss stalls at O(lr^2) as the selection switches (measured
        # 1.5e-3 plain, 2.2e-3 under inject_hyperparams, whose float rounding differs).
        quadratic_tol=6e-3,
        rosenbrock_tol=0.002,
    ),
    Row(
        name="q-galore",
        factory=gt.q_galore,
        learning_rate=0.1,
        kwargs={"rank": 2, "update_proj_gap": 5, "block_size": 4, "cos_threshold": 0.4},
        static_hparams=("rank", "update_proj_gap", "block_size", "patience"),
        quadratic_tol=1e-6,
        rosenbrock_tol=0.002,
    ),
]
