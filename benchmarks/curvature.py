"""Curvature-vector products vs one gradient on the shared digits-MLP workloads.

    python -m benchmarks.curvature [--quick]

For the small (64-128-128-10) and wide (64-512-512-10) tanh MLPs on 1,024 digits (float32,
mean softmax cross-entropy), prints JSON with the median time of one jitted gradient, one
Hessian-vector product (jvp of grad; and with ``linearize=True``), one GGN-vector product
(closed-form cross-entropy output Hessian; and the autodiff fallback), one Fisher and one
empirical-Fisher product, and each time's ratio to the gradient. Repeats alternate between
the functions so machine noise cancels in the ratios. A second table times ``K`` products
inside one ``lax.fori_loop`` (as Lanczos/CG run them), where ``linearize=True`` can reuse the
primal work, reported per product.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import gradlab as gl
from benchmarks._workloads import digits_mlp, emit, time_alternating
from gradlab._src.tree import tree_norm, tree_random_like

TARGET_RATIO = 2.5


def _normalise(v):
    n = tree_norm(v)
    return jax.tree_util.tree_map(lambda a: a / n, v)


def bench_size(size: str, repeats: int, loop_len: int) -> dict:
    w = digits_mlp(size)
    apply_fn, loss_fn = w.apply_fn, w.loss_fn
    v = tree_random_like(jax.random.key(1), w.params, "normal")
    key = jax.random.key(2)

    def ce_autodiff(logits, labels):  # no closed form attached: autodiff output HVP
        return gl.models.softmax_cross_entropy(logits, labels)

    ops = {
        "hvp": lambda p, b: gl.curvature.hessian(loss_fn, p, b),
        "hvp_linearize": lambda p, b: gl.curvature.hessian(loss_fn, p, b, linearize=True),
        "ggn": lambda p, b: gl.curvature.ggn(apply_fn, gl.curvature.softmax_cross_entropy, p, b),
        "ggn_autodiff_loss": lambda p, b: gl.curvature.ggn(apply_fn, ce_autodiff, p, b),
        "fisher": lambda p, b: gl.curvature.fisher(apply_fn, p, b, key=key),
        "empirical_fisher": lambda p, b: gl.curvature.empirical_fisher(loss_fn, p, b),
    }
    fns = {"grad": (jax.jit(jax.grad(loss_fn)), (w.params, w.batch))}
    for name, make in ops.items():
        fns[name] = (jax.jit(lambda p, b, v, make=make: make(p, b)(v)), (w.params, w.batch, v))
    times = time_alternating(fns, repeats=repeats, warmup=2)
    single = {name: {"seconds": t, "ratio_to_grad": t / times["grad"]} for name, t in times.items()}

    loop_fns = {}
    for name in ("hvp", "hvp_linearize", "ggn"):
        make = ops[name]

        def run(p, b, v, make=make):
            mv = make(p, b)
            return jax.lax.fori_loop(0, loop_len, lambda i, x: _normalise(mv(x)), v)

        loop_fns[name] = (jax.jit(run), (w.params, w.batch, v))
    loop_fns["grad_x_K"] = (
        jax.jit(
            lambda p, b: jax.lax.fori_loop(
                0,
                loop_len,
                lambda i, g: jax.tree_util.tree_map(
                    jnp.add, g, jax.grad(loss_fn)(jax.tree_util.tree_map(jnp.add, p, g), b)
                ),
                jax.tree_util.tree_map(jnp.zeros_like, p),
            )
        ),
        (w.params, w.batch),
    )
    loop_times = time_alternating(loop_fns, repeats=max(3, repeats // 3), warmup=1)
    per_product = {name: t / loop_len for name, t in loop_times.items()}
    in_loop = {
        name: {"seconds_per_product": t, "ratio_to_grad": t / per_product["grad_x_K"]}
        for name, t in per_product.items()
    }
    return {
        "num_params": w.num_params,
        "single_product": single,
        "fori_loop": {"num_products": loop_len, **in_loop},
        "targets_met": {
            "hvp<=2.5x": single["hvp"]["ratio_to_grad"] <= TARGET_RATIO,
            "ggn<=2.5x": single["ggn"]["ratio_to_grad"] <= TARGET_RATIO,
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (about a minute)")
    args = parser.parse_args(argv)
    repeats, loop_len = (7, 10) if args.quick else (31, 20)
    result = {
        "benchmark": "curvature",
        "quick": args.quick,
        "repeats": repeats,
        "workload": "digits, 1024 examples, float32, tanh MLP, mean softmax cross-entropy, jit",
        "small": bench_size("small", repeats, loop_len),
        "wide": bench_size("wide", repeats, loop_len),
    }
    emit(result)


if __name__ == "__main__":
    main()
