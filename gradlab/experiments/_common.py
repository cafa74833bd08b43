"""Training and measurement helpers shared by the reproductions (stable: other modules import it).

Everything here is small and generic: full-batch gradient descent as one ``lax.scan``, a
least-squares line fit in log-log space, the coefficient of determination and a stratified
train/test split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from gradlab._src.tree import tree_size

__all__ = ["fit_line", "gd_train", "loglog_slope", "r_squared", "stratified_split", "tree_size"]


def gd_train(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    batch: Any,
    *,
    learning_rate: float,
    num_steps: int,
) -> tuple[Any, jax.Array]:
    """Full-batch gradient descent ``theta <- theta - lr * grad L(theta; batch)`` in one scan.

    Call it inside ``jax.jit`` (``num_steps`` static). Returns the final params and the loss
    before each step, shape ``(num_steps,)``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.experiments._common import gd_train
        >>> w, losses = gd_train(lambda w, b: jnp.sum((w - b) ** 2), jnp.zeros(2),
        ...                      jnp.ones(2), learning_rate=0.25, num_steps=20)
        >>> bool(jnp.allclose(w, 1.0, atol=1e-5)), bool(losses[-1] < losses[0])
        (True, True)
    """

    def step(p, _):
        loss, g = jax.value_and_grad(loss_fn)(p, batch)
        p = jax.tree_util.tree_map(lambda a, b: a - learning_rate * b, p, g)
        return p, loss

    return jax.lax.scan(step, params, None, length=num_steps)


def fit_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares line ``y ~ slope * x + intercept``; returns ``(slope, intercept, R^2)``.

    Examples:
        >>> from gradlab.experiments._common import fit_line
        >>> [round(v, 6) for v in fit_line([0, 1, 2], [1, 3, 5])]
        [2.0, 1.0, 1.0]
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept), r_squared(y, slope * x + intercept)


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Slope of the least-squares line through ``(log x, log y)``.

    Examples:
        >>> from gradlab.experiments._common import loglog_slope
        >>> round(loglog_slope([1, 2, 4, 8], [3, 1.5, 0.75, 0.375]), 6)
        -1.0
    """
    return fit_line(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)))[0]


def r_squared(y: Sequence[float], y_hat: Sequence[float]) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` of a fit ``y_hat`` to ``y``.

    Examples:
        >>> from gradlab.experiments._common import r_squared
        >>> r_squared([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
        1.0
    """
    y = np.asarray(y, dtype=np.float64)
    y_hat = np.asarray(y_hat, dtype=np.float64)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    ss_res = float(np.sum((y - y_hat) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def stratified_split(
    y: np.ndarray, test_fraction: float, rng: np.random.Generator, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` holding ``test_fraction`` of every class out for testing.

    Each class is permuted with ``rng`` and its first ``round(test_fraction * size)`` indices
    go to the test set; the train indices are shuffled once more, the test ones are not.

    Examples:
        >>> import numpy as np
        >>> from gradlab.experiments._common import stratified_split
        >>> y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
        >>> train, test = stratified_split(y, 0.25, np.random.default_rng(0), num_classes=2)
        >>> sorted(y[test].tolist()), sorted(np.concatenate([train, test]).tolist()) == list(range(8))
        ([0, 1], True)
    """
    train, test = [], []
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = round(test_fraction * idx.size)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), np.concatenate(test)
