"""The two shared benchmark workloads of DESIGN.md and a small timing toolkit.

Workloads: scikit-learn digits, standardised, first 1,024 examples, mean softmax cross-entropy,
float32, tanh MLP **small** 64-128-128-10 (26,122 params) or **wide** 64-512-512-10 (301,066).
Pass ``params`` and ``batch`` to jitted functions as *arguments* (never closure constants).
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import gradlab as gl

SIZES = {"small": (64, 128, 128, 10), "wide": (64, 512, 512, 10)}


class Workload(NamedTuple):
    """A benchmark problem: ``loss_fn(params, batch) -> scalar``, ``apply_fn(params, x)``."""

    params: Any
    apply_fn: Callable
    loss_fn: Callable
    batch: tuple[jax.Array, jax.Array]
    num_params: int


def digits_mlp(size: str = "small", n: int = 1024, dtype=jnp.float32, seed: int = 0) -> Workload:
    """The digits MLP workload (``size`` is ``"small"`` or ``"wide"``)."""
    if size not in SIZES:
        raise ValueError(f"size={size!r} is not a valid choice: expected one of {sorted(SIZES)}")
    x, y = gl.data.digits(n, dtype=dtype)
    params, apply_fn = gl.models.init_mlp(jax.random.key(seed), SIZES[size], dtype=dtype)

    def loss_fn(params, batch):
        inputs, labels = batch
        return gl.models.softmax_cross_entropy(apply_fn(params, inputs), labels)

    num_params = sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
    return Workload(params, apply_fn, loss_fn, (x, y), num_params)


def block(tree: Any) -> Any:
    """``block_until_ready`` on every leaf of a pytree."""
    return jax.block_until_ready(tree)


def time_fn(fn: Callable, *args: Any, repeats: int = 10, warmup: int = 1) -> float:
    """Median wall time in seconds of ``fn(*args)`` after ``warmup`` calls."""
    for _ in range(warmup):
        block(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_alternating(
    fns: dict[str, tuple[Callable, Sequence[Any]]], *, repeats: int = 10, warmup: int = 1
) -> dict[str, float]:
    """Median times of several functions whose repeats are interleaved so noise cancels in ratios."""
    for fn, args in fns.values():
        for _ in range(warmup):
            block(fn(*args))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, (fn, args) in fns.items():
            t0 = time.perf_counter()
            block(fn(*args))
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in samples.items()}


def environment() -> dict[str, Any]:
    """Versions and machine facts to store next to every benchmark result."""
    return {
        "jax": jax.__version__,
        "gradlab": gl.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "python": sys.version.split()[0],
        "machine": platform.machine(),
    }


def emit(result: dict[str, Any]) -> None:
    """Print a benchmark result as JSON (with the environment attached)."""
    print(json.dumps({"environment": environment(), **result}, indent=2, default=float))
