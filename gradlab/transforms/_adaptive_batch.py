"""The AdAdaGrad training loop: batch sizes read from the optimizer state (Lau, Liu, Kolar, 2024)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradlab._src.errors import check_int
from gradlab.transforms._dicesgd import canonical_key, check_stacked_like

__all__ = ["AdaptiveBatchRun", "adaptive_batch_training"]


class AdaptiveBatchRun(NamedTuple):
    """Result of :func:`adaptive_batch_training`.

    Attributes:
        params: final parameters.
        opt_state: final optimizer state.
        batch_sizes: ``(num_steps,)`` int array, the batch size used at every step.
        losses: ``(num_steps,)`` mean loss of each step's batch (before its update).

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.transforms import AdaptiveBatchRun
        >>> run = AdaptiveBatchRun(jnp.zeros(2), None, jnp.array([4, 8]), jnp.array([1.0, 0.5]))
        >>> run.batch_sizes.tolist()
        [4, 8]
    """

    params: Any
    opt_state: Any
    batch_sizes: jax.Array
    losses: jax.Array


def adaptive_batch_training(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    data: Any,
    *,
    optimizer: optax.GradientTransformationExtraArgs,
    key: jax.Array,
    num_steps: int,
    test_batch_size: int | None = None,
) -> AdaptiveBatchRun:
    r"""The AdAdaGrad training loop: read the batch size from the state, sample, step.

    At step :math:`k` the loop reads :math:`b_k` from the optimizer state (the
    ``batch_size`` field of an :class:`AdAdaGradState` anywhere inside it), samples
    :math:`b_k` examples without replacement, computes the mean gradient on them and the
    per-example gradients of the first ``min(b_k, test_batch_size)`` of them (the test
    micro-batch), and applies the update; the state then holds :math:`b_{k+1} \ge b_k`,
    capped by the optimizer's ``max_batch_size`` (which must not exceed the dataset size).
    Because array shapes follow the batch size, the loop runs on the host and the jitted
    step is compiled once per distinct batch size (batch sizes only grow, so at most a
    handful of times when the tests double it).

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss over the examples of ``batch``
            (a pytree of arrays with a leading example axis).
        params: initial parameters.
        data: the dataset, a pytree of arrays with a leading example axis ``N``.
        optimizer: e.g. :func:`adadagrad` (must report ``batch_size`` in its state).
        key: PRNG key for sampling the batches.
        num_steps: number of steps (>= 1).
        test_batch_size: cap on the test micro-batch size (default: the whole batch).

    Returns:
        :class:`AdaptiveBatchRun` with ``batch_sizes`` non-decreasing.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.transforms import adadagrad, adaptive_batch_training
        >>> x = jax.random.normal(jax.random.key(0), (256, 3)); y = x @ jnp.array([1.0, -2.0, 0.5])
        >>> loss = lambda w, b: jnp.mean((b[0] @ w - b[1]) ** 2)
        >>> opt = adadagrad(1.0, batch_size=4, max_batch_size=256, eta=0.2)
        >>> run = adaptive_batch_training(loss, jnp.zeros(3), (x, y), optimizer=opt,
        ...                               key=jax.random.key(1), num_steps=3)
        >>> bool(jnp.all(jnp.diff(run.batch_sizes) >= 0)), bool(run.losses[-1] < run.losses[0])
        (True, True)

    References:
        Lau, Liu, Kolar, 2024. https://arxiv.org/abs/2402.11215
    """
    num_steps = check_int("num_steps", num_steps, 1)
    if test_batch_size is not None:
        test_batch_size = check_int("test_batch_size", test_batch_size, 2)
    key = canonical_key(key, "adaptive_batch_training")
    num_examples = check_stacked_like("data", data, jax.tree.map(lambda x: x[0], data))

    def example_loss(p, example):
        return loss_fn(p, jax.tree.map(lambda x: x[None], example))

    @jax.jit
    def step(params, opt_state, batch):
        value, grads = jax.value_and_grad(loss_fn)(params, batch)
        test = jax.tree.map(lambda x: x[:test_batch_size], batch)
        per_example = jax.vmap(jax.grad(example_loss), (None, 0))(params, test)
        updates, opt_state = optimizer.update(
            grads, opt_state, params, per_example_grads=per_example
        )
        return optax.apply_updates(params, updates), opt_state, value

    opt_state = optimizer.init(params)
    sizes, losses = [], []
    for _ in range(num_steps):
        size = int(optax.tree.get(opt_state, "batch_size"))
        if size > num_examples:
            raise ValueError(
                f"the optimizer asks for batch_size={size} but data has only {num_examples} "
                "examples: set max_batch_size <= the dataset size"
            )
        key, sub = jax.random.split(key)
        idx = jax.random.choice(sub, num_examples, (size,), replace=False)
        params, opt_state, value = step(params, opt_state, jax.tree.map(lambda x: x[idx], data))
        sizes.append(size)
        losses.append(value)
    return AdaptiveBatchRun(params, opt_state, jnp.asarray(sizes, jnp.int32), jnp.stack(losses))
