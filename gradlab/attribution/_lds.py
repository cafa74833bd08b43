"""The linear datamodeling score (LDS) and retraining on random subsets in one vmap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradlab._src.errors import check_int, check_real
from gradlab.attribution._common import check_callable, map_examples

__all__ = ["SubsetRetraining", "lds", "retrain_subsets", "spearman"]


def _average_ranks(x: jax.Array) -> jax.Array:
    """0-based ranks of a 1-D array, ties sharing the mean of their ranks (as scipy)."""
    s = jnp.sort(x)
    below = jnp.searchsorted(s, x, side="left")
    upto = jnp.searchsorted(s, x, side="right")
    return 0.5 * (below + upto - 1).astype(jnp.result_type(x, jnp.float32))


def spearman(a: jax.Array, b: jax.Array) -> jax.Array:
    r"""Spearman rank correlation of two 1-D arrays (Pearson correlation of average ranks).

    Ties get the mean of the ranks they span, as :func:`scipy.stats.spearmanr` does. A
    constant input has no defined correlation and gives NaN.

    Args:
        a: ``(S,)`` values.
        b: ``(S,)`` values.

    Returns:
        A scalar in ``[-1, 1]`` (or NaN).

    Examples:
        >>> import jax.numpy as jnp, gradlab as gl
        >>> float(gl.attribution.spearman(jnp.array([1.0, 2.0, 3.0]), jnp.array([10.0, 30.0, 20.0])))
        0.5
    """
    return _spearman(jnp.asarray(a), jnp.asarray(b))


@jax.jit
def _spearman(a: jax.Array, b: jax.Array) -> jax.Array:
    ra = _average_ranks(a)
    rb = _average_ranks(b)
    ra = ra - jnp.mean(ra)
    rb = rb - jnp.mean(rb)
    return jnp.sum(ra * rb) / jnp.sqrt(jnp.sum(ra * ra) * jnp.sum(rb * rb))


@jax.jit
def _lds(scores: jax.Array, subsets: jax.Array, subset_outputs: jax.Array) -> jax.Array:
    predicted = subsets.astype(scores.dtype) @ scores.T  # (S, N_test)
    rho = jax.vmap(_spearman, in_axes=(1, 1))(predicted, subset_outputs)
    return jnp.nanmean(rho)


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(jnp.shape(x))


def lds(scores: jax.Array, subsets: jax.Array, subset_outputs: jax.Array) -> jax.Array:
    r"""Linear datamodeling score: how well summed attribution scores rank retrained outputs.

    For each test example :math:`j`, the attribution scores predict the output of a model
    retrained on subset :math:`S_s` of the training set by the additive model
    :math:`g_j(S_s) = \sum_{i \in S_s} \tau_{ji}`; the LDS is the Spearman rank correlation
    between :math:`g_j(S_s)` and the measured output :math:`f_j(S_s)` over the ``S`` subsets,
    averaged over test examples:

    .. math:: \mathrm{LDS} = \frac{1}{N_{\mathrm{test}}} \sum_j
        \rho_{\mathrm{Spearman}}\bigl(\{g_j(S_s)\}_s, \{f_j(S_s)\}_s\bigr).

    Scores and outputs must be oriented alike: if ``subset_outputs`` are test losses, use
    scores that predict the loss change of including an example (as :func:`influence` gives;
    negate TracIn/TRAK scores, which are positive for helpful examples). Test examples whose
    outputs or predictions are constant over the subsets have no correlation (NaN) and are
    left out of the mean.

    Args:
        scores: ``(N_test, N_train)`` attribution scores.
        subsets: ``(S, N_train)`` bool (or 0/1) membership masks of the retraining subsets.
        subset_outputs: ``(S, N_test)`` outputs of the model retrained on each subset.

    Returns:
        A scalar, the mean Spearman correlation.

    Raises:
        ValueError: inputs of the wrong rank or of inconsistent sizes.

    Examples:
        >>> import jax.numpy as jnp, gradlab as gl
        >>> scores = jnp.array([[1.0, 2.0, 4.0]])
        >>> subsets = jnp.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]], dtype=bool)
        >>> outputs = jnp.array([[3.0], [6.5], [5.0]])  # ordered as the summed scores 3, 6, 5
        >>> float(gl.attribution.lds(scores, subsets, outputs))
        1.0

    References:
        Park et al., "TRAK: Attributing model behavior at scale", ICML 2023,
        https://arxiv.org/abs/2303.14186.
    """
    s_shape, m_shape, o_shape = _shape(scores), _shape(subsets), _shape(subset_outputs)
    if len(s_shape) != 2:
        raise ValueError(f"scores has shape {s_shape}: expected (N_test, N_train)")
    if len(m_shape) != 2 or m_shape[1] != s_shape[1]:
        raise ValueError(
            f"subsets has shape {m_shape}: expected (S, N_train) = (S, {s_shape[1]}) to match "
            f"scores of shape {s_shape}"
        )
    if o_shape != (m_shape[0], s_shape[0]):
        raise ValueError(
            f"subset_outputs has shape {o_shape}: expected (S, N_test) = "
            f"({m_shape[0]}, {s_shape[0]}) to match subsets {m_shape} and scores {s_shape}"
        )
    return _lds(jnp.asarray(scores), jnp.asarray(subsets), jnp.asarray(subset_outputs))


class SubsetRetraining(NamedTuple):
    """Random training subsets and the outputs of models retrained on them.

    Attributes:
        subsets: ``(S, N_train)`` bool membership masks.
        outputs: ``(S, ...)`` whatever ``train_and_eval`` returns per subset, stacked (for
            :func:`lds`: ``(S, N_test)``).

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> run = gl.attribution.retrain_subsets(lambda w, k: w[:2], 4, key=jax.random.key(0),
        ...                                      num_subsets=3)
        >>> run.subsets.shape, run.outputs.shape, run.subsets.sum(axis=1).tolist()
        ((3, 4), (3, 2), [2, 2, 2])
    """

    subsets: jax.Array
    outputs: Any


def retrain_subsets(
    train_and_eval: Callable[[jax.Array, jax.Array], Any],
    num_train: int,
    *,
    key: jax.Array,
    num_subsets: int = 100,
    fraction: float = 0.5,
    chunk_size: int | None = None,
) -> SubsetRetraining:
    r"""Retrain a model on many random subsets of the training set in one compiled program.

    Draws ``num_subsets`` subsets of exactly ``round(fraction * num_train)`` training examples
    (uniformly, without replacement) and calls ``train_and_eval(weights, key)`` for each, with
    ``weights`` the ``(num_train,)`` 0/1 float mask of the subset and a fresh key. The user's
    function trains on the *full* data with the loss weighted by ``weights`` (for example
    ``sum(w * l) / sum(w)``) and returns the test outputs. All retrainings are one
    ``vmap`` (within chunks of ``chunk_size`` subsets, scanned across chunks), so the
    expensive part of the LDS compiles once and runs as batched matrix products.

    Args:
        train_and_eval: ``(weights (N_train,), key) -> outputs`` (e.g. ``(N_test,)`` test
            losses); jit/vmap-compatible, typically a ``lax.scan`` of optimiser steps.
        num_train: the number of training examples ``N_train >= 2``.
        key: PRNG key for the subsets and the per-subset keys.
        num_subsets: ``S >= 1`` subsets.
        fraction: subset size as a fraction of ``num_train``, ``0 < fraction < 1``.
        chunk_size: subsets vmapped together; ``None`` vmaps all ``S`` at once.

    Returns:
        :class:`SubsetRetraining` with ``subsets (S, N_train)`` and the stacked ``outputs``.

    Raises:
        ValueError: ``num_train``, ``num_subsets``, ``fraction`` or ``chunk_size`` out of range.
        TypeError: ``train_and_eval`` not callable.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> x = jnp.arange(6.0)
        >>> run = gl.attribution.retrain_subsets(
        ...     lambda w, k: jnp.sum(w * x, keepdims=True) / jnp.sum(w), 6,
        ...     key=jax.random.key(0), num_subsets=5)
        >>> run.outputs.shape
        (5, 1)

    References:
        Ilyas et al., "Datamodels: predicting predictions from training data", ICML 2022,
        https://arxiv.org/abs/2202.00622. Park et al., "TRAK", https://arxiv.org/abs/2303.14186.
    """
    check_callable("train_and_eval", train_and_eval)
    num_train = check_int("num_train", num_train, 2, None)
    num_subsets = check_int("num_subsets", num_subsets, 1, None)
    fraction = check_real("fraction", fraction, 0.0, 1.0, lo_open=True, hi_open=True)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, 1, None)
    size = min(max(round(fraction * num_train), 1), num_train - 1)

    def one(args: tuple[jax.Array, jax.Array]) -> Any:
        mask, k = args
        return train_and_eval(mask.astype(jnp.result_type(float)), k)

    @jax.jit
    def run(key: jax.Array) -> tuple[jax.Array, Any]:
        k_sub, k_run = jax.random.split(key)

        def draw(k: jax.Array) -> jax.Array:
            chosen = jax.random.permutation(k, num_train)[:size]
            return jnp.zeros((num_train,), bool).at[chosen].set(True)

        subsets = jax.vmap(draw)(jax.random.split(k_sub, num_subsets))
        keys = jax.random.split(k_run, num_subsets)
        return subsets, map_examples(one, (subsets, keys), chunk_size)

    subsets, outputs = run(key)
    return SubsetRetraining(subsets, outputs)
