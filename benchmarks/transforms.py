"""Per-step cost and state memory of every gradlab transform, relative to ``optax.adam``.

Workload: digits (first 1,024, standardised), tanh MLP 64-1024-1024-10 (1,126,410 params,
float32): the ~1M-parameter model the transforms issue asks for (DESIGN.md's "wide" MLP has only
0.3M). What is timed is one jitted optimizer step, ``(params, state, grads, extra) ->
(apply_updates(params, updates), new_state)``, with the gradient and every extra input (loss
value, per-example gradients of an 8-example micro-batch, per-task gradients of 2 half-batches,
margins) precomputed and passed as arguments: the ratio is the *transform's* cost, not the cost
of producing its inputs. Each transform is timed alternately with ``optax.adam`` (median of the
repeats) so machine noise cancels in the ratio.

Memory: floating-point state entries divided by the number of parameters ("parameter-sized
buffers"), next to the expected count from each transform's docstring.

    python -m benchmarks.transforms [--quick]

``--part2`` runs the part-2 cases instead (``benchmarks/_transforms_part2.py``: full training
steps on the 64-512-512-10 MLP, batch 256, state in bytes).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import gradlab as gl
from benchmarks._workloads import emit, time_alternating

gt = gl.transforms
SIZES = (64, 1024, 1024, 10)
LR = 1e-3
KEY = jax.random.key(0)
SUBSPACE_DIM = 16


def _workload():
    x, y = gl.data.digits(1024, dtype=jnp.float32)
    params, apply_fn = gl.models.init_mlp(jax.random.key(0), SIZES, dtype=jnp.float32)

    def loss_fn(params, batch):
        inputs, labels = batch
        return gl.models.softmax_cross_entropy(apply_fn(params, inputs), labels)

    return params, apply_fn, loss_fn, (x, y)


def _num_params(tree) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(tree))


def _state_floats(state) -> int:
    total = 0
    for leaf in jax.tree.leaves(state):
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
            total += int(leaf.size)
    return total


def _cases(params) -> list[tuple[str, Callable[[], Any], tuple[str, ...], Any]]:
    """(name, make_transform, extra-arg names, expected parameter-sized buffers)."""
    task_vectors = jax.tree.map(lambda p: jax.random.normal(KEY, (2, *p.shape), p.dtype), params)
    return [
        ("optax.adam", lambda: optax.adam(LR), (), 2),
        ("diffgrad", lambda: gt.diffgrad(LR), (), 3),
        ("adabelief (rectify, decay)", lambda: gt.adabelief(LR, weight_decay=1e-4), (), 2),
        ("adabelief (plain)", lambda: gt.adabelief(LR, rectify=False), (), 2),
        ("optax.adabelief", lambda: optax.adabelief(LR), (), 2),
        ("annealed_noise (per-leaf)", lambda: gt.annealed_noise(LR, 0.01, key=KEY), (), 0),
        ("optax.noisy_sgd", lambda: optax.noisy_sgd(LR, key=KEY), (), 0),
        ("am_sgd", lambda: gt.am_sgd(LR), ("value",), 1),
        ("am_adamw", lambda: gt.am_adamw(LR), ("value",), 2),
        ("lanton (Newton-Schulz)", lambda: gt.lanton(LR), (), 1),
        (
            "optax.contrib.muon",
            lambda: optax.contrib.muon(LR),
            (),
            "1 (Muon) + 2 on vectors (Adam)",
        ),
        (
            "adadagrad",
            lambda: gt.adadagrad(LR, batch_size=8, max_batch_size=1024),
            ("per_example_grads",),
            1,
        ),
        (
            "adadagrad (norm)",
            lambda: gt.adadagrad(LR, batch_size=8, max_batch_size=1024, variant="adagrad_norm"),
            ("per_example_grads",),
            0,
        ),
        (
            "dicesgd",
            lambda: gt.dicesgd(LR, noise_multiplier=1.0, key=KEY),
            ("per_example_grads",),
            1,
        ),
        ("pcgrad", lambda: gt.pcgrad(LR, reduction="mean", key=KEY), ("per_task_grads",), 0),
        (
            "adaptive_projective_gd",
            lambda: gt.adaptive_projective_gd(LR, task_vectors, reduction="mean"),
            ("per_task_grads",),
            "m k floats per projected leaf",
        ),
        (
            f"random_subspace (dense, d={SUBSPACE_DIM})",
            lambda: gt.random_subspace(LR, SUBSPACE_DIM, key=KEY),
            (),
            SUBSPACE_DIM,
        ),
        (
            f"random_subspace (chunked, d={SUBSPACE_DIM})",
            lambda: gt.random_subspace(LR, SUBSPACE_DIM, key=KEY, projection="chunked"),
            (),
            0,
        ),
        ("normalized_gd", lambda: gt.normalized_gd(LR), ("margins",), 0),
    ]


def _inputs(params, apply_fn, loss_fn, batch):
    x, y = batch
    value, grads = jax.value_and_grad(loss_fn)(params, batch)

    def one(p, xi, yi):
        return jax.grad(loss_fn)(p, (xi[None], yi[None]))

    per_example = jax.vmap(one, in_axes=(None, 0, 0))(params, x[:8], y[:8])
    halves = [jax.grad(loss_fn)(params, (x[i::2], y[i::2])) for i in range(2)]
    per_task = jax.tree.map(lambda a, b: jnp.stack([a, b]), *halves)
    logits = apply_fn(params, x)
    true = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
    other = jnp.max(
        jnp.where(jax.nn.one_hot(y, logits.shape[1], dtype=bool), -jnp.inf, logits), axis=1
    )
    extras = {
        "value": value,
        "per_example_grads": per_example,
        "per_task_grads": per_task,
        "margins": true - other,
    }
    return grads, extras


def _threaded(step, params, state, batch):
    """A no-argument timing closure that runs ``step`` and keeps its output for the next call."""
    held = [params, state]

    def run():
        held[0], held[1] = step(held[0], held[1], batch)
        return held

    return run


def main_part2(repeats: int, only: str | None = None) -> None:
    """Full training steps of the part-2 cases, each alternated with ``optax.adam``'s."""
    from benchmarks import _transforms_part2 as p2
    from benchmarks._workloads import digits_mlp

    work = digits_mlp("wide", n=p2.BATCH)

    def stepper(tx, extra_fn):
        tx = optax.with_extra_args_support(tx)
        extra_fn = extra_fn or p2.no_extra

        # params and state are donated, as in a training loop: buffers such as M-FAC's
        # gradient window are then updated in place instead of copied every step.
        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def step(params, state, batch):
            grads = jax.grad(work.loss_fn)(params, batch)
            extra = extra_fn(work.loss_fn, work.apply_fn, params, batch)
            updates, state = tx.update(grads, state, params, **extra)
            return optax.apply_updates(params, updates), state

        return step

    adam = optax.adam(p2.LR)
    adam_bytes = p2.state_bytes(adam.init(work.params))
    rows = []
    for name, case in p2.CASES.items():
        if only is not None and only not in name:
            continue
        tx = case.make()
        copy = functools.partial(jax.tree.map, jnp.copy)  # donated buffers must not be shared
        state = copy(tx.init(work.params))
        bytes_ = p2.state_bytes(state)
        times = time_alternating(
            {
                "adam": (
                    _threaded(
                        stepper(adam, None), copy(work.params), adam.init(work.params), work.batch
                    ),
                    (),
                ),
                "transform": (
                    _threaded(stepper(tx, case.extra_fn), copy(work.params), state, work.batch),
                    (),
                ),
            },
            repeats=repeats,
        )
        rows.append(
            {
                "transform": name,
                "step_ms": 1e3 * times["transform"],
                "adam_step_ms": 1e3 * times["adam"],
                "time_vs_adam": times["transform"] / times["adam"],
                "state_bytes": bytes_,
                "state_vs_adam": bytes_ / adam_bytes,
                "note": case.note,
            }
        )
        print(f"# {name}: {rows[-1]['time_vs_adam']:.2f}x adam", flush=True)
    emit(
        {
            "benchmark": "transforms-part2",
            "workload": {
                "mlp": [64, 512, 512, 10],
                "num_params": work.num_params,
                "batch": p2.BATCH,
            },
            "timed": "grad + update + apply_updates (params and state threaded and donated)",
            "repeats": repeats,
            "results": rows,
        }
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (1-2 minutes)")
    parser.add_argument("--part2", action="store_true", help="the part-2 cases (full steps)")
    parser.add_argument("--only", default=None, help="part 2: only cases whose name contains this")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 15
    if args.part2:
        main_part2(repeats, args.only)
        return

    params, apply_fn, loss_fn, batch = _workload()
    num_params = _num_params(params)
    grads, extras = _inputs(params, apply_fn, loss_fn, batch)
    jax.block_until_ready((grads, extras))

    def stepper(tx, names):
        tx = optax.with_extra_args_support(tx)

        @jax.jit
        def step(params, state, grads, extra):
            updates, state = tx.update(grads, state, params, **extra)
            return optax.apply_updates(params, updates), state

        return step

    adam = optax.adam(LR)
    adam_step, adam_state = stepper(adam, ()), adam.init(params)
    rows = []
    for name, make, names, expected in _cases(params):
        tx = make()
        state = tx.init(params)
        step = stepper(tx, names)
        extra = {k: extras[k] for k in names}
        times = time_alternating(
            {
                "adam": (adam_step, (params, adam_state, grads, {})),
                "transform": (step, (params, state, grads, extra)),
            },
            repeats=repeats,
        )
        rows.append(
            {
                "transform": name,
                "extra_args": list(names),
                "step_ms": 1e3 * times["transform"],
                "adam_step_ms": 1e3 * times["adam"],
                "time_vs_adam": times["transform"] / times["adam"],
                "state_param_buffers": _state_floats(state) / num_params,
                "expected_param_buffers": expected,
            }
        )
        print(f"# {name}: {rows[-1]['time_vs_adam']:.2f}x adam", flush=True)

    emit(
        {
            "benchmark": "transforms",
            "quick": args.quick,
            "workload": {
                "mlp": list(SIZES),
                "num_params": num_params,
                "examples": int(batch[0].shape[0]),
            },
            "repeats": repeats,
            "results": rows,
        }
    )


if __name__ == "__main__":
    main()
