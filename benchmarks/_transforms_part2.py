"""Part-2 transforms (curvature-aware and low-rank) for ``python -m benchmarks.transforms --part2``.

Workload: the wide digits MLP 64-512-512-10 (301,066 float32 params) on a batch of 256. Unlike
part 1, what is timed is the **whole training step** ``value_and_grad`` + ``update`` +
``apply_updates``: these methods spend their extra cost on Hessian-vector products or Jacobians
of the same batch, so the ratio to ``optax.adam``'s full step is the honest one (AdaHessian's
target of 3x Adam is "one HVP is 2-2.5 gradients"). The optimizer state is threaded through the
repeats and donated to the jitted step as in a training loop (so buffers such as M-FAC's window
are updated in place); methods with periodic refreshes (GaLore's SVD every ``update_proj_gap``
steps) run their ordinary steps and the median ignores the rare refresh. State size is the total bytes of
every array in the state (int4 codes, indices and counters included).

A case is a :class:`Case` in ``CASES``; each helper adds its rows in its own block below.
``extra_fn(loss_fn, apply_fn, params, batch) -> dict`` builds the extra arguments of ``update``
inside the jitted step (``obj_fn``, ``logits_fn``, ``residual_fn``, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax

import gradlab as gl

gt = gl.transforms
LR = 1e-3
KEY = jax.random.key(0)
RANK = 8  # equal rank for the low-rank rows; at most 10, the 512 x 10 head's smaller side
BATCH = 256


class Case(NamedTuple):
    """One benchmark row: ``make() -> GradientTransformation`` and its extra-argument builder."""

    make: Callable[[], optax.GradientTransformation]
    extra_fn: Callable[..., dict] | None = None
    note: str = ""


def no_extra(loss_fn, apply_fn, params, batch) -> dict:
    del loss_fn, apply_fn, params, batch
    return {}


def obj_fn_extra(loss_fn, apply_fn, params, batch) -> dict:
    del apply_fn, params
    return {"obj_fn": lambda p: loss_fn(p, batch)}


CASES: dict[str, Case] = {
    "optax.adam": Case(lambda: optax.adam(LR)),
}

# --- tx-a: AdaHessian, M-FAC, DCT low-rank, Q-GaLore (targets in the issue) ---
CASES.update(
    {
        "adahessian": Case(
            lambda: gt.adahessian(LR, key=KEY), obj_fn_extra, "target <= 3x adam (1 HVP/step)"
        ),
        "adahessian (update_interval=4)": Case(
            lambda: gt.adahessian(LR, key=KEY, update_interval=4), obj_fn_extra, "1 HVP / 4 steps"
        ),
        "optax.contrib.sophia": Case(
            lambda: optax.contrib.sophia(LR), obj_fn_extra, "HVP every 10 steps"
        ),
        "mfac (m=32)": Case(lambda: gt.mfac(LR, num_grads=32), None, "target <= 2x adam"),
        "mfac (m=8)": Case(lambda: gt.mfac(LR, num_grads=8)),
        f"optax.contrib.galore (rank={RANK})": Case(
            lambda: optax.contrib.galore(LR, rank=RANK), None, "SVD every 200 steps"
        ),
        f"dct_lowrank (rank={RANK})": Case(
            lambda: gt.dct_lowrank(LR, rank=RANK), None, "target: state <= GaLore's"
        ),
        f"q_galore (rank={RANK})": Case(
            lambda: gt.q_galore(LR, rank=RANK), None, "int4 projector, lazy SVD"
        ),
    }
)
# --- end tx-a ---

# --- tx-b: add your cases here (CASES.update({...})) ---
# --- end tx-b ---


def state_bytes(state: Any) -> int:
    """Total bytes of every array in ``state`` (PRNG keys count as their raw data)."""
    total = 0
    for leaf in jax.tree.leaves(state):
        if hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        total += int(getattr(leaf, "nbytes", 0))
    return total
