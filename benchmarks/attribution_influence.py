"""Influence solvers and the linear datamodeling score (LDS) table on digits.

    python -m benchmarks.attribution_influence [--quick]

1. **Influence solvers** on the small digits MLP workload (64-128-128-10, 26,122 params,
   briefly trained): 64 test points over 1,024 training points, GGN curvature. Time per
   query of CG, Arnoldi (top-k eigenpairs once, then projections) and EK-FAC (if
   ``gl.curvature.ekfac`` exists), alternating repeats; agreement with the CG scores
   (Pearson and Spearman over all test-train pairs).
2. **LDS table**: digits, logistic regression and a small tanh MLP (64-32-10), 1,000 training
   points, 100 random 50% subsets retrained in one vmap (``gl.attribution.retrain_subsets``),
   100 test points, model output = the test loss. LDS of influence (dense and CG), Arnoldi,
   EK-FAC, TracIn, TRAK (dim 2,048; 1 and 10 models) and GraNd. Scores are oriented as
   "predicted test-loss change when the example is included": influence as is, TracIn/TRAK/
   GraNd negated (they are positive for helpful examples).

Prints JSON (and a Markdown table of the LDS values).
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import optax

import gradlab as gl
from benchmarks._workloads import block, digits_mlp, emit, time_alternating

DAMPING = 1e-2  # the L2 penalty of the LDS training objective, hence its damping


def _log(msg: str) -> None:
    print(f"[attribution_influence] {msg}", file=sys.stderr, flush=True)


def _has_ekfac() -> bool:
    return hasattr(gl.curvature, "ekfac")


def _corr(a, b):
    a, b = jnp.ravel(a), jnp.ravel(b)
    return {
        "pearson": float(jnp.corrcoef(a, b)[0, 1]),
        "spearman": float(gl.attribution.spearman(a, b)),
    }


# ---------------------------------------------------------------- 1. influence solvers ---


def bench_solvers(quick: bool) -> dict:
    n_train, n_test = 1024, 64
    w = digits_mlp("small", n=n_train + n_test)
    x, y = w.batch
    train, test = (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
    params = _train_full(w.loss_fn, w.params, train, steps=100 if quick else 300)
    ce = gl.curvature.softmax_cross_entropy
    common = dict(curvature="ggn", model_fn=w.apply_fn, output_loss=ce, chunk_size=64)
    k = 32 if quick else 64

    def run(solver, **kw):
        def f(p, tr, te):
            options = {**common, **kw}
            return gl.attribution.influence(
                w.loss_fn, p, tr, te, damping=DAMPING, solver=solver, **options
            )

        return jax.jit(f)

    fns = {
        "cg": run("cg", tol=1e-4, max_iters=100),
        "arnoldi": run("arnoldi", k=k, num_matvecs=2 * k, key=jax.random.key(0), tol=1e-4),
    }
    if _has_ekfac():
        fns["ekfac"] = run("factored", curvature="ekfac")
    results = {}
    for name, fn in fns.items():
        _log(f"solvers: {name} (compile + first run)")
        results[name] = block(fn(params, train, test))
    _log("solvers: timing, alternating repeats")
    times = time_alternating(
        {name: (fn, (params, train, test)) for name, fn in fns.items()},
        repeats=1 if quick else 2,
        warmup=0,
    )
    ref = results["cg"].scores
    out = {"num_params": w.num_params, "n_train": n_train, "n_test": n_test, "k": k}
    for name, res in results.items():
        out[name] = {
            "seconds_per_query": times[name] / n_test,
            "converged_fraction": float(jnp.mean(res.converged)),
            "mean_matvecs": float(jnp.mean(res.num_matvecs)),
            "median_residual_norm": float(jnp.median(res.residual_norm)),
            "agreement_with_cg": _corr(res.scores, ref),
        }
    out["cg_over_arnoldi_time"] = times["cg"] / times["arnoldi"]
    return out


def _train_full(loss_fn, params, batch, *, steps, weight_decay=DAMPING, lr=1e-2):
    """Full-batch Adam on mean loss + weight_decay/2 |params|^2 (one scan)."""
    opt = optax.adam(lr)

    def objective(p):
        sq = sum(jnp.sum(a**2) for a in jax.tree_util.tree_leaves(p))
        return loss_fn(p, batch) + 0.5 * weight_decay * sq

    @jax.jit
    def fit(p):
        def step(carry, _):
            p, s = carry
            g = jax.grad(objective)(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (p, opt.init(p)), None, length=steps)[0][0]

    return fit(params)


# --------------------------------------------------------------------- 2. the LDS table ---


def _weighted_trainer(apply_fn, train, *, steps, lr, num_checkpoints=10):
    """``(params0, weights) -> (params, checkpoints)``: Adam on the weighted mean CE + L2."""
    opt = optax.adam(lr)
    x, y = train
    every = steps // num_checkpoints

    def objective(p, weights):
        logp = jax.nn.log_softmax(apply_fn(p, x))
        nll = -jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0]
        sq = sum(jnp.sum(a**2) for a in jax.tree_util.tree_leaves(p))
        return jnp.sum(weights * nll) / jnp.sum(weights) + 0.5 * DAMPING * sq

    def fit(p0, weights):
        def step(carry, i):
            p, s = carry
            g = jax.grad(objective)(p, weights)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), p

        (p, _), traj = jax.lax.scan(step, (p0, opt.init(p0)), jnp.arange(steps))
        ckpts = jax.tree_util.tree_map(lambda a: a[every - 1 :: every], traj)
        return p, ckpts

    return fit


def lds_table(name: str, sizes, *, quick: bool) -> dict:
    x, y = gl.data.digits(None)
    n_train, n_test = 1000, 100
    train, test = (x[:n_train], y[:n_train]), (x[n_train : n_train + n_test], y[n_train:][:n_test])
    p0, apply_fn = gl.models.init_mlp(jax.random.key(0), sizes)
    steps = 300 if quick else 1000
    lr = 1e-2
    fit = _weighted_trainer(apply_fn, train, steps=steps, lr=lr)
    num_subsets = 20 if quick else 100

    def loss_fn(p, batch):
        return gl.curvature.softmax_cross_entropy(apply_fn(p, batch[0]), batch[1])

    def test_losses(p):
        logp = jax.nn.log_softmax(apply_fn(p, test[0]))
        return -jnp.take_along_axis(logp, test[1][:, None], axis=1)[:, 0]

    timings = {}
    _log(f"{name}: retraining {num_subsets} subsets in one vmap")
    t0 = time.perf_counter()
    run = gl.attribution.retrain_subsets(
        lambda wts, k: test_losses(fit(p0, wts)[0]),
        n_train,
        key=jax.random.key(1),
        num_subsets=num_subsets,
        chunk_size=25,
    )
    block(run.outputs)
    timings["retrain_subsets"] = time.perf_counter() - t0

    params, ckpts = jax.jit(fit)(p0, jnp.ones(n_train))
    scores = {}

    def timed(label, fn):
        _log(f"{name}: {label}")
        t = time.perf_counter()
        scores[label] = block(fn())
        timings[label] = time.perf_counter() - t

    common = dict(curvature="ggn", model_fn=apply_fn, output_loss="softmax_cross_entropy")
    num_params = sum(a.size for a in jax.tree_util.tree_leaves(params))
    k = min(100, num_params)

    def infl(solver, **kw):
        res = gl.attribution.influence(
            loss_fn, params, train, test, damping=DAMPING, solver=solver, chunk_size=250, **kw
        )
        return res.scores

    timed("influence (dense)", lambda: infl("dense", **common))
    timed("influence (CG)", lambda: infl("cg", tol=1e-6, max_iters=200, **common))
    timed(
        f"influence (Arnoldi, k={k})",
        lambda: infl("arnoldi", k=k, key=jax.random.key(2), tol=1e-4, **common),
    )
    if _has_ekfac():
        timed("influence (EK-FAC)", lambda: infl("factored", **{**common, "curvature": "ekfac"}))
    lrs = jnp.full((ckpts_len := jax.tree_util.tree_leaves(ckpts)[0].shape[0],), lr)
    timed(
        "TracIn",
        lambda: -gl.attribution.tracin(loss_fn, ckpts, train, test, learning_rates=lrs),
    )
    timed(
        "TRAK (1 model)",
        lambda: (
            -gl.attribution.trak_scores(
                apply_fn, params, train, test, dim=2048, key=jax.random.key(3), chunk_size=250
            )
        ),
    )
    inits = jax.vmap(lambda k: gl.models.init_mlp(k, sizes)[0])(
        jax.random.split(jax.random.key(4), 10)
    )
    ensemble = jax.jit(jax.vmap(lambda p: fit(p, jnp.ones(n_train))[0]))(inits)
    timed(
        "TRAK (10 models)",
        lambda: -gl.attribution.trak_scores(
            apply_fn, ensemble, train, test, dim=2048, key=jax.random.key(3), stacked=True,
            chunk_size=250,
        ),
    )  # fmt: skip
    timed(
        "GraNd",
        lambda: -jnp.broadcast_to(gl.attribution.grand(loss_fn, params, train), (n_test, n_train)),
    )
    values = {
        label: float(gl.attribution.lds(s, run.subsets, run.outputs)) for label, s in scores.items()
    }
    ref = scores["influence (dense)"]
    agreement = {label: _corr(s, ref)["spearman"] for label, s in scores.items()}
    return {
        "model": name,
        "num_params": int(num_params),
        "num_subsets": num_subsets,
        "train_steps": steps,
        "tracin_checkpoints": int(ckpts_len),
        "lds": values,
        "spearman_with_dense_influence": agreement,
        "seconds": timings,
    }


def run(quick: bool = False) -> dict:
    """The solver comparison and both LDS tables; returns a JSON-able dict."""
    t0 = time.perf_counter()
    solvers = bench_solvers(quick)
    tables = [
        lds_table("logistic regression", (64, 10), quick=quick),
        lds_table("MLP 64-32-10", (64, 32, 10), quick=quick),
    ]
    return {
        "influence_solvers": solvers,
        "lds": tables,
        "quick": quick,
        "total_seconds": time.perf_counter() - t0,
    }


def markdown_table(result: dict) -> str:
    """The LDS values as a Markdown table (one column per model)."""
    tables = result["lds"]
    lines = ["| method | " + " | ".join(t["model"] for t in tables) + " |"]
    lines.append("| --- |" + " --- |" * len(tables))
    for label in tables[0]["lds"]:
        cells = " | ".join(f"{t['lds'].get(label, float('nan')):.3f}" for t in tables)
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps/subsets (smoke run)")
    args = parser.parse_args()
    result = run(args.quick)
    emit(result)
    print(markdown_table(result))


if __name__ == "__main__":
    main()
