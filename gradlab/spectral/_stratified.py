r"""Hutchinson's trace estimator stratified by pytree leaf, with Neyman allocation.

Write the operator in blocks by leaf, :math:`A = (A_{bc})`. A Rademacher probe supported on
leaf ``b`` alone gives :math:`z_b^\top A_{bb} z_b`, an unbiased estimate of
:math:`\operatorname{tr} A_{bb}` with variance :math:`2 \sum_{i \ne j} (A_{bb})_{ij}^2`: the
cross-leaf blocks :math:`A_{bc}` never enter it. A full-vector probe pays for all of them
(variance :math:`2 \sum_{i \ne j} A_{ij}^2`). For network Hessians most of the Frobenius mass sits
in the cross-layer blocks (96 % on the wide digits MLP of ``benchmarks/spectral.py``), so the
same number of matvecs gives a several times smaller standard error.

The budget ``N`` is spent in two phases (classical two-phase stratified sampling):

1. a pilot of ``p0 = max(2, N // (4 L))`` probes on each of the ``L`` leaves, which estimates each
   block's per-probe standard deviation :math:`s_b`;
2. the remaining ``N - L p0`` probes go to the leaves in proportion to
   :math:`\max(N s_b / \sum_c s_c - p_0, 0)`, so the final counts approach Neyman's optimum
   :math:`n_b \propto s_b`, which minimises :math:`\sum_b s_b^2 / n_b` for a fixed total.

The estimate is :math:`\sum_b \bar x_b` and ``sem`` is :math:`\sqrt{\sum_b s_b^2 / n_b}` from all
of each leaf's probes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradlab._src.random import rademacher
from gradlab.spectral._common import map_rows

__all__ = ["min_stratified_matvecs", "stratified_trace"]


def min_stratified_matvecs(sizes: Sequence[int]) -> int:
    """The smallest budget :func:`stratified_trace` accepts: two probes per non-empty leaf."""
    return 2 * sum(1 for s in sizes if s > 0)


def stratified_trace(
    mv: Callable[[jax.Array], jax.Array],
    sizes: Sequence[int],
    key: jax.Array,
    budget: int,
    chunk_size: int,
    dtype: Any,
) -> tuple[jax.Array, jax.Array]:
    """``(value, sem)`` of the stratified estimator on flat vectors.

    ``sizes`` are the leaf sizes in ``ravel_pytree`` order (the flat vector is their
    concatenation); ``budget >= min_stratified_matvecs(sizes)`` is checked by the caller.
    """
    sizes = np.asarray(sizes, np.int64)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    nonempty = np.flatnonzero(sizes > 0)
    starts = jnp.asarray(bounds[nonempty], jnp.int32)
    stops = jnp.asarray(bounds[nonempty + 1], jnp.int32)
    num_strata = len(nonempty)
    n = int(bounds[-1])
    pilot = max(2, budget // (4 * num_strata))
    num_pilot = pilot * num_strata
    rest = budget - num_pilot

    def sample(args):
        k, b = args
        idx = lax.iota(jnp.int32, n)
        mask = (idx >= starts[b]) & (idx < stops[b])
        z = jnp.where(mask, rademacher(k, (n,), dtype), jnp.zeros((), dtype))
        return jnp.vdot(z, mv(z))

    keys = jax.random.split(key, budget)
    pilot_strata = jnp.repeat(jnp.arange(num_strata, dtype=jnp.int32), pilot)
    pilot_vals = map_rows(sample, (keys[:num_pilot], pilot_strata), chunk_size)
    values, strata = pilot_vals, pilot_strata
    if rest > 0:
        sd = jnp.std(pilot_vals.reshape(num_strata, pilot), axis=1, ddof=1)
        total = jnp.sum(sd)
        target = budget * sd / jnp.where(total > 0, total, 1.0)  # all zero when total is
        extra = jnp.maximum(target - pilot, 0.0)
        extra = jnp.where(jnp.sum(extra) > 0, extra, jnp.ones_like(extra))
        # Slot j of the rest goes to the first stratum whose cumulative share exceeds j + 1/2,
        # so each stratum gets round(share * rest) slots (within one).
        edges = jnp.cumsum(extra) / jnp.sum(extra) * rest
        slots = jnp.arange(rest, dtype=edges.dtype) + 0.5
        rest_strata = jnp.sum(edges[None, :] <= slots[:, None], axis=1).astype(jnp.int32)
        rest_strata = jnp.minimum(rest_strata, num_strata - 1)
        rest_vals = map_rows(sample, (keys[num_pilot:], rest_strata), chunk_size)
        values = jnp.concatenate([pilot_vals, rest_vals])
        strata = jnp.concatenate([pilot_strata, rest_strata])
    counts = jax.ops.segment_sum(jnp.ones_like(values), strata, num_strata)
    means = jax.ops.segment_sum(values, strata, num_strata) / counts
    sq = jax.ops.segment_sum((values - means[strata]) ** 2, strata, num_strata)
    var = sq / (counts - 1.0)
    return jnp.sum(means), jnp.sqrt(jnp.sum(var / counts))
