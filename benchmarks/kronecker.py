"""K-FAC / EK-FAC: construction and inverse costs, preconditioner quality, optimizer comparison.

    python -m benchmarks.kronecker [--quick]

Workloads: the wide digits MLP (64-512-512-10) and a small CNN on the 8x8 digit images
(Conv 16 3x3 -> tanh -> Conv 16 3x3 stride 2 -> tanh -> Dense 10), 1,024 examples, float32,
mean softmax cross-entropy. Prints JSON with

* the time of building ``gradlab.curvature.kfac`` (``mc`` and ``type2``) and ``ekfac``
  (``mc``) over the time of one gradient (target <= 2 for ``mc``);
* the time of one damped-inverse product with the eigendecompositions cached (``eigen()``
  done once) and with them redone (``kfac.inverse(damping)(v)``), over one GGN-vector product
  (target <= 1 for the cached product);
* the cosine between the preconditioned gradient and the exact damped-GGN solve
  (``gradlab.spectral.cg`` to ``tol=1e-6``) for K-FAC, EK-FAC and the Hutchinson diagonal;
* the K-FAC optimizer against ``optax.adam`` and ``gl.transforms.adahessian`` at equal wall
  time on the wide MLP (training loss on the full batch; reported, not asserted).

Repeats alternate between the timed functions, so machine noise cancels in the ratios.
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import gradlab as gl
from benchmarks._workloads import Workload, block, digits_mlp, emit, time_alternating
from gradlab._src.tree import tree_random_like, tree_vdot

CE = "softmax_cross_entropy"
DAMPING = 1e-3


class SmallCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Conv(16, (3, 3))(x))
        x = jnp.tanh(nn.Conv(16, (3, 3), strides=(2, 2))(x))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def digits_cnn(n: int = 1024) -> Workload:
    x, y = gl.data.digits(n)
    x = x.reshape(-1, 8, 8, 1)
    module = SmallCNN()
    params = module.init(jax.random.key(0), x[:1])

    def loss_fn(p, batch):
        return gl.curvature.softmax_cross_entropy(module.apply(p, batch[0]), batch[1])

    num = sum(int(a.size) for a in jax.tree.leaves(params))
    return Workload(params, module.apply, loss_fn, (x, y), num)


def _cosine(a, b) -> float:
    return float(tree_vdot(a, b) / jnp.sqrt(tree_vdot(a, a) * tree_vdot(b, b)))


def bench_costs(w: Workload, repeats: int) -> dict:
    apply_fn, key = w.apply_fn, jax.random.key(1)
    v = tree_random_like(jax.random.key(2), w.params, "normal")
    eig = jax.jit(lambda p, b: gl.curvature.kfac(apply_fn, CE, p, b).eigen())(w.params, w.batch)
    ek = jax.jit(lambda p, b: gl.curvature.ekfac(apply_fn, CE, p, b))(w.params, w.batch)
    fns = {
        "grad": (jax.jit(jax.grad(w.loss_fn)), (w.params, w.batch)),
        "kfac_mc": (
            jax.jit(lambda p, b: gl.curvature.kfac(apply_fn, CE, p, b, fisher_type="mc", key=key)),
            (w.params, w.batch),
        ),
        "kfac_type2": (
            jax.jit(lambda p, b: gl.curvature.kfac(apply_fn, CE, p, b)),
            (w.params, w.batch),
        ),
        "ekfac_mc": (
            jax.jit(lambda p, b: gl.curvature.ekfac(apply_fn, CE, p, b, fisher_type="mc", key=key)),
            (w.params, w.batch),
        ),
        "ggn_product": (
            jax.jit(lambda p, b, v: gl.curvature.ggn(apply_fn, CE, p, b)(v)),
            (w.params, w.batch, v),
        ),
        "kfac_inverse_cached": (jax.jit(lambda e, v: e.inverse(DAMPING)(v)), (eig, v)),
        "ekfac_inverse": (jax.jit(lambda e, v: e.inverse(DAMPING)(v)), (ek, v)),
        "kfac_inverse_with_eigh": (
            jax.jit(lambda k, v: k.inverse(DAMPING)(v)),
            (jax.jit(lambda p, b: gl.curvature.kfac(apply_fn, CE, p, b))(w.params, w.batch), v),
        ),
    }
    t = time_alternating(fns, repeats=repeats, warmup=1)
    out = {name: {"seconds": s} for name, s in t.items()}
    for name in ("kfac_mc", "kfac_type2", "ekfac_mc"):
        out[name]["ratio_to_grad"] = t[name] / t["grad"]
    for name in ("kfac_inverse_cached", "ekfac_inverse", "kfac_inverse_with_eigh"):
        out[name]["ratio_to_ggn_product"] = t[name] / t["ggn_product"]
    return out


def bench_quality(w: Workload, num_probes: int) -> dict:
    apply_fn = w.apply_fn
    grad = jax.grad(w.loss_fn)(w.params, w.batch)

    @jax.jit
    def exact(p, b, g):
        return gl.spectral.cg(
            gl.curvature.ggn(apply_fn, CE, p, b), g, damping=DAMPING, tol=1e-6, max_iters=2000
        )

    sol = exact(w.params, w.batch, grad)

    @jax.jit
    def candidates(p, b, g):
        kf = gl.curvature.kfac(apply_fn, CE, p, b)
        kmc = gl.curvature.kfac(apply_fn, CE, p, b, fisher_type="mc", key=jax.random.key(3))
        ek = gl.curvature.ekfac(apply_fn, CE, p, b)
        diag = gl.spectral.diagonal(
            gl.curvature.ggn(apply_fn, CE, p, b), p, key=jax.random.key(4), num_matvecs=num_probes
        ).value
        return {
            "kfac_type2": kf.inverse(DAMPING)(g),
            "kfac_mc": kmc.inverse(DAMPING)(g),
            "ekfac_type2": ek.inverse(DAMPING)(g),
            f"hutchinson_diagonal_{num_probes}": jax.tree.map(
                lambda gi, d: gi / (jnp.clip(d, 0.0) + DAMPING), g, diag
            ),
            "gradient": g,
        }

    got = candidates(w.params, w.batch, grad)
    return {
        "damping": DAMPING,
        "cg": {
            "num_iters": int(sol.num_iters),
            "converged": bool(sol.converged),
            "relative_residual": float(sol.residual_norm),
        },
        "cosine_to_cg_solve": {name: _cosine(x, sol.x) for name, x in got.items()},
    }


ADAHESSIAN_LR = 0.2  # best of {0.01, 0.05, 0.2} by full-batch loss after 200 steps


def bench_optimizer(w: Workload, kfac_steps: int) -> dict:
    """K-FAC for ``kfac_steps`` steps vs Adam for the same wall time (full-batch loss)."""
    opts = {
        "kfac": gl.transforms.kfac(
            0.1, w.apply_fn, CE, damping=1e-2, update_interval=10, key=jax.random.key(5)
        ),
        "adam": optax.with_extra_args_support(optax.adam(3e-3)),
        "adahessian": gl.transforms.adahessian(ADAHESSIAN_LR, key=jax.random.key(6)),
    }

    def make_step(opt):
        @jax.jit
        def step(p, s, b):
            value, g = jax.value_and_grad(w.loss_fn)(p, b)
            u, s = opt.update(g, s, p, batch=b, obj_fn=lambda q: w.loss_fn(q, b))
            return optax.apply_updates(p, u), s, value

        return step

    steps = {k: make_step(opt) for k, opt in opts.items()}
    for name, opt in opts.items():
        s0 = opt.init(w.params)
        block(steps[name](w.params, s0, w.batch))  # compile
    results = {}
    budget = None
    for name in ("kfac", "adam", "adahessian"):
        p, s = w.params, opts[name].init(w.params)
        count = 0
        t0 = time.perf_counter()
        while (count < kfac_steps) if name == "kfac" else (time.perf_counter() - t0 < budget):
            p, s, _ = steps[name](p, s, w.batch)
            block(p)
            count += 1
        elapsed = time.perf_counter() - t0
        budget = budget or elapsed
        results[name] = {
            "steps": count,
            "seconds": elapsed,
            "final_loss": float(w.loss_fn(p, w.batch)),
        }
    results["initial_loss"] = float(w.loss_fn(w.params, w.batch))
    results["settings"] = (
        "kfac: lr 0.1, damping 1e-2, decay 0.95, update_interval 10, fisher_type mc; "
        f"adam: lr 3e-3; adahessian: lr {ADAHESSIAN_LR}, defaults otherwise (one HVP per step); "
        "full batch of 1024; adam and adahessian run for K-FAC's wall time"
    )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (about two minutes)")
    args = parser.parse_args(argv)
    repeats, probes, steps = (5, 20, 50) if args.quick else (11, 100, 100)
    mlp, cnn = digits_mlp("wide"), digits_cnn()
    result = {
        "benchmark": "kronecker",
        "quick": args.quick,
        "repeats": repeats,
        "workload": "digits, 1024 examples, float32, mean softmax cross-entropy, jit",
        "wide_mlp": {
            "num_params": mlp.num_params,
            "costs": bench_costs(mlp, repeats),
            "quality": bench_quality(mlp, probes),
            "optimizer": bench_optimizer(mlp, steps),
        },
        "small_cnn": {
            "num_params": cnn.num_params,
            "costs": bench_costs(cnn, repeats),
            "quality": bench_quality(cnn, probes),
        },
    }
    emit(result)


if __name__ == "__main__":
    main()
