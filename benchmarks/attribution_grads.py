"""Per-example gradients: vmapped (gradlab) vs a Python loop of single-example grads.

    python -m benchmarks.attribution_grads [--quick]

Workload (DESIGN.md): digits, standardised, the small tanh MLP 64-128-128-10 (26,122 params),
mean softmax cross-entropy, float32, params and data passed to jitted functions as arguments.
Digits has 1,797 images, so the N=4,096 examples are the first 1,024 repeated four times.

Reports, from one run with alternating repeats:

* **time per example** of :func:`gradlab.attribution.per_example_grads` (one chunk of all N
  examples, and ``chunk_size=256``; the default ``None`` takes 642 here) against a Python loop that calls a jitted single-example ``jax.grad`` once
  per example (timed over ``loop_examples`` examples, the per-example time scaled), and their
  ratio ``loop / vmapped`` (higher is better), and the same for
  :func:`gradlab.attribution.per_example_grad_norms` (``chunk_size=256``), which computes the
  same gradients without writing the ``N x P`` result (the loop's gradients are stored);
* **peak memory** of the compiled programs, chunked vs unchunked, from XLA's buffer assignment
  (``compiled.memory_analysis()``: arguments + outputs + temporaries, bytes), for
  ``per_example_grads`` (whose ``N x P`` output dominates either way) and for
  ``per_example_grad_norms`` (where chunking removes the ``N x P`` temporaries).

:func:`run` returns the result dict so ``benchmarks/attribution.py`` can include it.
"""

from __future__ import annotations

import argparse
from typing import Any

import jax
import jax.numpy as jnp

import gradlab as gl
from benchmarks._workloads import digits_mlp, emit, time_alternating

__all__ = ["run"]


def _batch(n: int) -> tuple[Any, Any, tuple[jax.Array, jax.Array]]:
    w = digits_mlp("small", n=1024)
    x, y = w.batch
    reps = -(-n // x.shape[0])
    batch = (jnp.concatenate([x] * reps)[:n], jnp.concatenate([y] * reps)[:n])
    return w.params, w.loss_fn, batch


def _peak_bytes(fn: Any, *args: Any) -> int:
    stats = jax.jit(fn).lower(*args).compile().memory_analysis()
    return int(stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes)


def run(
    n: int = 4096, *, chunk_size: int = 256, loop_examples: int = 128, repeats: int = 5
) -> dict[str, Any]:
    """Time and memory of per-example gradients for ``n`` examples; returns a JSON-able dict."""
    params, loss_fn, batch = _batch(n)

    def vmapped(p, b):  # one chunk of all n examples
        return gl.attribution.per_example_grads(loss_fn, p, b, chunk_size=n)

    def chunked(p, b):
        return gl.attribution.per_example_grads(loss_fn, p, b, chunk_size=chunk_size)

    single = jax.jit(jax.grad(loss_fn))
    x, y = batch
    examples = [(x[i : i + 1], y[i : i + 1]) for i in range(loop_examples)]

    def loop(p, _):
        return [single(p, e) for e in examples]

    def norms(p, b, c=n):
        return gl.attribution.per_example_grad_norms(loss_fn, p, b, chunk_size=c)

    def default(p, b):
        return gl.attribution.per_example_grads(loss_fn, p, b)

    vmapped_jit, chunked_jit, default_jit = jax.jit(vmapped), jax.jit(chunked), jax.jit(default)
    norms_jit = jax.jit(lambda p, b: norms(p, b, chunk_size))
    times = time_alternating(
        {
            "vmapped": (vmapped_jit, (params, batch)),
            "chunked": (chunked_jit, (params, batch)),
            "default": (default_jit, (params, batch)),
            "norms_chunked": (norms_jit, (params, batch)),
            "loop": (loop, (params, batch)),
        },
        repeats=repeats,
    )
    per_example = {
        "vmapped": times["vmapped"] / n,
        "chunked": times["chunked"] / n,
        "default": times["default"] / n,
        "norms_chunked": times["norms_chunked"] / n,
        "loop": times["loop"] / loop_examples,
    }

    memory = {
        "grads_unchunked": _peak_bytes(vmapped, params, batch),
        "grads_chunked": _peak_bytes(chunked, params, batch),
        "grads_default": _peak_bytes(default, params, batch),
        "norms_unchunked": _peak_bytes(norms, params, batch),
        "norms_chunked": _peak_bytes(lambda p, b: norms(p, b, chunk_size), params, batch),
        "n_times_p_float32": n * sum(int(p.size) for p in jax.tree.leaves(params)) * 4,
    }
    return {
        "benchmark": "attribution_grads",
        "n": n,
        "chunk_size": chunk_size,
        "loop_examples": loop_examples,
        "repeats": repeats,
        "seconds_per_example": per_example,
        "speedup_loop_over_vmapped": per_example["loop"] / per_example["vmapped"],
        "speedup_loop_over_chunked": per_example["loop"] / per_example["chunked"],
        "speedup_loop_over_default": per_example["loop"] / per_example["default"],
        "speedup_loop_over_norms_chunked": per_example["loop"] / per_example["norms_chunked"],
        "peak_bytes": memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=1,024, 3 repeats")
    args = parser.parse_args()
    if args.quick:
        emit(run(1024, loop_examples=64, repeats=3) | {"quick": True})
    else:
        emit(run() | {"quick": False})


if __name__ == "__main__":
    main()
