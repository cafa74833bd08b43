"""Fastfood projection: the Walsh-Hadamard transform as butterflies vs as small matmuls.

    python -m benchmarks.fastfood

The workload of the ``intrinsic_dimension`` reproduction's largest network: 18 vmapped runs
(9 subspace dimensions x 2 seeds), ``D = 85,002`` parameters, blocks of ``L = 1024``; one
``fastfood_restrict`` (``P^T g``) followed by one ``fastfood_extend`` (``P z``), jit, float32.
``butterfly`` is the previous ``_fwht`` (``log2 L`` reshape/stack stages), ``matmul`` the
current one (``H_1024 = H_32 (x) H_32``, one dot per factor). Alternating repeats; CPU time
(process time) and wall time per call are printed, CPU time being the figure that survives a
loaded machine.
"""

import time

import jax
import jax.numpy as jnp

from gradlab.transforms import _fastfood as F


def butterfly(x):
    """The previous transform: ``log2 L`` stages of ``(a + b, a - b)`` on reshaped halves."""
    size = x.shape[-1]
    lead = x.shape[:-1]
    h = 1
    while h < size:
        x = x.reshape(*lead, size // (2 * h), 2, h)
        a, b = x[..., 0, :], x[..., 1, :]
        x = jnp.stack([a + b, a - b], axis=-2).reshape(*lead, size)
        h *= 2
    return x


def main(repeats: int = 7) -> dict:
    num_params, dim, runs = 85002, 1024, 18
    keys = jax.random.split(jax.random.key(0), runs)
    fac = jax.vmap(lambda k: F.fastfood_factors(k, num_params, dim, jnp.float32))(keys)
    g = jax.random.normal(jax.random.key(1), (runs, num_params))

    def both(fa, x):
        return F.fastfood_extend(fa, F.fastfood_restrict(fa, x, dim), num_params)

    current = F._fwht
    try:
        F._fwht = butterfly
        old = jax.jit(jax.vmap(both))
        old(fac, g).block_until_ready()  # traced (and compiled) with the butterfly transform
    finally:
        F._fwht = current
    new = jax.jit(jax.vmap(both))
    new(fac, g).block_until_ready()
    scale = float(jnp.max(jnp.abs(old(fac, g))))
    diff = float(jnp.max(jnp.abs(old(fac, g) - new(fac, g)))) / scale
    acc = {"butterfly": [0.0, 0.0], "matmul": [0.0, 0.0]}
    for _ in range(repeats):
        for name, fn in (("butterfly", old), ("matmul", new)):
            c0, t0 = time.process_time(), time.perf_counter()
            fn(fac, g).block_until_ready()
            acc[name][0] += time.process_time() - c0
            acc[name][1] += time.perf_counter() - t0
    out = {"max_rel_diff": diff}
    for name, (cpu, wall) in acc.items():
        out[name] = {"cpu_ms": 1e3 * cpu / repeats, "wall_ms": 1e3 * wall / repeats}
    out["cpu_ratio"] = acc["butterfly"][0] / acc["matmul"][0]
    with open("/proc/loadavg") as f:
        out["loadavg"] = f.read().split()[:3]
    return out


if __name__ == "__main__":
    for key, value in main().items():
        print(f"{key}: {value}")
