"""The K-FAC optimizer's rows for the contract suite; see ``_registry.py`` for the Row fields.

K-FAC needs a model built from supported flax layers and a loss on its outputs, while the
suite's problems are plain objectives of a params pytree. The shim below writes each problem
as a least-squares model: every params leaf becomes the kernel ``(1, size)`` of a bias-free
``flax.linen.Dense`` applied to the input ``1`` (so the layer's output *is* the leaf), and the
residuals ``r`` of the objective (``0.5 |r|^2 == objective``) are the model's outputs under
``mse`` with zero targets. K-FAC is then the exact Gauss-Newton block of each leaf (one example,
no weight sharing): Newton's method on the quadratic, block Gauss-Newton on Rosenbrock.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gradlab import transforms as gt
from tests.transforms._row import Ctx, Row

_ONE = jnp.ones((1, 1), jnp.float32)


def _as_kernels(tree):
    return jax.tree.map(lambda x: x.reshape(1, -1), tree)


def _quadratic_residuals(values):
    # The suite's quadratic 0.5 sum a (p - c)^2, with a and c read back from its objective.
    from tests.transforms.test_contract import PROBLEMS  # the suite imports this module

    obj, params0 = PROBLEMS["quadratic"](jnp.float32)
    g0 = jax.grad(obj)(params0)
    a = jax.tree.map(lambda g1, g: g1 - g, jax.grad(obj)(jax.tree.map(jnp.ones_like, params0)), g0)
    c = jax.tree.map(lambda g, ai: -g / ai, g0, a)
    res = [jnp.sqrt(a[k]).reshape(-1) * (values[k] - c[k].reshape(-1)) for k in ("w", "b")]
    return jnp.concatenate(res)


def _rosenbrock_residuals(values):
    x, y = values["x"], values["y"]
    return math.sqrt(2.0) * jnp.concatenate([10.0 * (y - x**2), 1.0 - x])


def _model_fn(kernels, inputs):
    values = {
        name: nn.Dense(k.shape[-1], use_bias=False).apply({"params": {"kernel": k}}, inputs)[0]
        for name, k in kernels.items()
    }
    values = {k: v.astype(jnp.float32) for k, v in values.items()}
    res = _rosenbrock_residuals(values) if "x" in values else _quadratic_residuals(values)
    return res[None]


def _batch(ctx: Ctx) -> dict:
    size = 15 if "w" in ctx.params else 4
    return {"batch": (_ONE, jnp.zeros((1, size), jnp.float32))}


def _kfac_on_problem(learning_rate, *, damping, decay, update_interval, fisher_type, key):
    """``gt.kfac`` on the problem's params written as Dense kernels (see the module docstring)."""
    inner = gt.kfac(
        learning_rate,
        _model_fn,
        "mse",
        damping=damping,
        decay=decay,
        update_interval=update_interval,
        fisher_type=fisher_type,
        key=key,
    )

    def init_fn(params):
        return inner.init(_as_kernels(params))

    def update_fn(updates, state, params=None, **extra):
        u, state = inner.update(_as_kernels(updates), state, _as_kernels(params), **extra)
        return jax.tree.map(lambda x, like: x.reshape(like.shape), u, updates), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


ROWS_KFAC: list[Row] = [
    Row(
        "kfac-type2",
        _kfac_on_problem,
        1.0,
        {
            "damping": 1e-3,
            "decay": 0.5,
            "update_interval": 2,
            "fisher_type": "type2",
            "key": jax.random.key(0),
        },
        static_hparams=("update_interval", "fisher_type", "key"),
        extra_args_fn=_batch,
        required_extra_args=("batch",),
        quadratic_tol=1e-6,
        rosenbrock_tol=0.01,  # block Gauss-Newton (x and y blocks): 0.003 after 500 steps
    ),
]
