"""Transforms part 2 (Sven, softmax radius, GRN, Hessian alignment): per-step cost vs ``optax.adam``.

Workload: the wide digits MLP of ``_workloads`` (tanh 64-512-512-10, 301,066 params, float32),
one batch of 256 examples. These methods take *functions* of the params as extra arguments
(``obj_fn``, ``logits_fn``, ``residual_fn``) and run their own forward/backward passes, so
what is timed is a whole jitted training step: ``value_and_grad`` of the batch loss, the
optimizer update (with its extra passes) and ``apply_updates``. The baseline is the same step
with ``optax.adam``; each case is timed alternately with it (median of the repeats) so machine
noise cancels in the ratio. The Hessian-alignment penalty is a loss helper: its case is the
adam step on ``risk + penalty`` of the last layer over 4 domains of 64 examples.

Memory: floating-point state entries divided by the number of parameters.

    python -m benchmarks.transforms_b [--quick]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax

import gradlab as gl
from benchmarks._workloads import digits_mlp, emit, time_alternating

gt = gl.transforms
LR = 1e-3
KEY = jax.random.key(0)
BATCH = 256


def _state_floats(state) -> int:
    total = 0
    for leaf in jax.tree.leaves(state):
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
            total += int(leaf.size)
    return total


def _per_example_losses(apply_fn, params, batch):
    x, y = batch
    logp = jax.nn.log_softmax(apply_fn(params, x))
    return -jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0]


def _extra(apply_fn, loss_fn, params, batch):
    """Every extra argument these transforms may ask for, as closures over ``batch``."""
    return {
        "obj_fn": lambda p: loss_fn(p, batch),
        "logits_fn": lambda p: apply_fn(p, batch[0]),
        "residual_fn": lambda p: _per_example_losses(apply_fn, p, batch),
    }


def _cases():
    """(name, make_transform, extra-arg names)."""
    return [
        (
            "adam + scale_by_softmax_radius",
            lambda: optax.chain(optax.adam(LR), gt.scale_by_softmax_radius()),
            ("logits_fn",),
        ),
        ("softmax_radius (SGD)", lambda: gt.softmax_radius(0.1), ("logits_fn",)),
        ("grn (hessian, cg_max_iters=10)", lambda: gt.grn(cg_max_iters=10), ("obj_fn",)),
        (
            "grn (ggn, cg_max_iters=10)",
            lambda: gt.grn(curvature="ggn", cg_max_iters=10),
            ("obj_fn", "logits_fn"),
        ),
        ("sven (rank 16)", lambda: gt.sven(0.1, rank=16, key=KEY), ("residual_fn",)),
        ("sven (rank 64)", lambda: gt.sven(0.1, rank=64, key=KEY), ("residual_fn",)),
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (a few minutes)")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 10

    wl = digits_mlp("wide", n=BATCH)
    params, apply_fn, loss_fn, batch = wl.params, wl.apply_fn, wl.loss_fn, wl.batch

    def stepper(tx, names):
        tx = optax.with_extra_args_support(tx)

        @jax.jit
        def step(params, state, batch):
            grads = jax.grad(loss_fn)(params, batch)
            extra = _extra(apply_fn, loss_fn, params, batch)
            updates, state = tx.update(grads, state, params, **{k: extra[k] for k in names})
            return optax.apply_updates(params, updates), state

        return step

    adam = optax.adam(LR)
    adam_step, adam_state = stepper(adam, ()), adam.init(params)
    rows = []

    def record(name, names, fn, args, state):
        times = time_alternating(
            {"adam": (adam_step, (params, adam_state, batch)), "case": (fn, args)},
            repeats=repeats,
        )
        rows.append(
            {
                "transform": name,
                "extra_args": list(names),
                "step_ms": 1e3 * times["case"],
                "adam_step_ms": 1e3 * times["adam"],
                "time_vs_adam": times["case"] / times["adam"],
                "state_param_buffers": _state_floats(state) / wl.num_params,
            }
        )
        print(f"# {name}: {rows[-1]['time_vs_adam']:.2f}x adam", flush=True)

    for name, make, names in _cases():
        tx = make()
        state = tx.init(params)
        step = stepper(tx, names)
        record(name, names, step, (params, state, batch), state)
        if name.startswith("grn"):
            _, after = step(params, state, batch)
            inner = after[0]
            rows[-1]["first_step"] = {
                "num_trials": int(inner.num_trials),
                "num_skipped": int(inner.num_skipped),
                "gamma": float(inner.gamma),
            }

    # Hessian alignment: adam on risk + HGP penalty of the last layer, 4 domains of 64.
    layers = params["params"]
    last = sorted(layers)[-1]  # "Dense_2": the classifier head
    domains = jax.tree.map(lambda a: a.reshape(4, BATCH // 4, *a.shape[1:]), batch)

    def penalised(p, domains):
        def head_loss(head, b):
            return loss_fn({"params": {**p["params"], last: head}}, b)

        head = p["params"][last]
        out = gt.hessian_alignment_penalty(head_loss, head, domains, alpha=0.1, beta=0.1)
        return out.risk + out.penalty

    @jax.jit
    def hgp_step(params, state, domains):
        grads = jax.grad(penalised)(params, domains)
        updates, state = adam.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    record(
        "adam on risk + hessian_alignment_penalty (last layer, 4 domains)",
        (),
        hgp_step,
        (params, adam_state, domains),
        adam_state,
    )

    emit(
        {
            "benchmark": "transforms_b",
            "quick": args.quick,
            "workload": {"mlp": [64, 512, 512, 10], "num_params": wl.num_params, "batch": BATCH},
            "timed": "jitted step: value_and_grad + update (with its extra passes) + apply",
            "repeats": repeats,
            "results": rows,
        }
    )


if __name__ == "__main__":
    main()
