"""The loss on a line or a plane through the params, vmapped over the grid in chunks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from gradlab._src.errors import check_int, check_same_structure, check_scalar_output

__all__ = ["line", "plane"]


def _check_steps(name: str, steps: Any) -> jax.Array:
    steps = jnp.asarray(steps)
    if steps.ndim != 1 or steps.shape[0] == 0:
        raise ValueError(
            f"{name} has shape {tuple(steps.shape)}: expected a non-empty 1-D array of step "
            "sizes along the direction"
        )
    if not jnp.issubdtype(steps.dtype, jnp.number) or jnp.issubdtype(
        steps.dtype, jnp.complexfloating
    ):
        raise ValueError(f"{name} has dtype {steps.dtype}: expected real step sizes")
    return steps


def _evaluate(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    batch: Any,
    directions: tuple[Any, ...],
    coeffs: jax.Array,
    chunk_size: int,
) -> jax.Array:
    """``loss_fn(params + sum_m coeffs[g, m] directions[m], batch)`` for every row ``g``."""
    check_scalar_output("loss_fn", jax.eval_shape(loss_fn, params, batch))

    def at(c: jax.Array) -> jax.Array:
        def shift(w: jax.Array, *ds: jax.Array) -> jax.Array:
            step = sum(c[m].astype(w.dtype) * d.astype(w.dtype) for m, d in enumerate(ds))
            return w + step

        return loss_fn(jax.tree_util.tree_map(shift, params, *directions), batch)

    num = coeffs.shape[0]
    if chunk_size == 1:
        return lax.map(at, coeffs)
    return lax.map(at, coeffs, batch_size=min(chunk_size, num))


def line(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    batch: Any,
    direction: Any,
    alphas: Any,
    *,
    chunk_size: int = 32,
) -> jax.Array:
    r"""The loss along a line through ``params``: :math:`L(\theta + \alpha_i d)` for each alpha.

    The grid is evaluated by ``lax.map`` with ``batch_size=chunk_size``: points are vmapped
    within a chunk and scanned across chunks, so memory holds ``chunk_size`` shifted copies of
    the params (and their activations) however long the grid is, and compilation does not grow
    with its length.

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``.
        params: the centre of the slice (``alpha = 0``).
        batch: passed unchanged to ``loss_fn``.
        direction: a pytree with the structure and leaf shapes of ``params``, e.g. from
            :func:`random_direction` or :func:`eigen_direction`.
        alphas: non-empty 1-D array of step sizes.
        chunk_size: grid points evaluated together, ``>= 1``.

    Returns:
        ``(len(alphas),)`` array of losses.

    Raises:
        ValueError: empty or non-1-D ``alphas``, a ``direction`` leaf whose shape differs from
            the params' (``TypeError`` if the tree structures differ), a non-scalar
            ``loss_fn`` or ``chunk_size < 1``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> loss = lambda p, b: 0.5 * jnp.sum(p["w"] ** 2)
        >>> gl.landscape.line(loss, {"w": jnp.ones(2)}, None, {"w": jnp.ones(2)},
        ...                   jnp.array([-1.0, 0.0, 1.0]))
        Array([0., 1., 4.], dtype=float32)

    References:
        Goodfellow, Vinyals, Saxe, "Qualitatively characterizing neural network optimization
        problems", ICLR 2015, https://arxiv.org/abs/1412.6544; Li et al., "Visualizing the Loss
        Landscape of Neural Nets", NeurIPS 2018, https://arxiv.org/abs/1712.09913.
    """
    chunk_size = check_int("chunk_size", chunk_size, 1, None)
    alphas = _check_steps("alphas", alphas)
    check_same_structure("direction", direction, params)
    return _evaluate(loss_fn, params, batch, (direction,), alphas[:, None], chunk_size)


def plane(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    batch: Any,
    d1: Any,
    d2: Any,
    alphas: Any,
    betas: Any,
    *,
    chunk_size: int = 32,
) -> jax.Array:
    r"""The loss on a plane through ``params``: :math:`L(\theta + \alpha_i d_1 + \beta_j d_2)`.

    The ``len(alphas) * len(betas)`` grid points are flattened and evaluated as in
    :func:`line` (vmapped within chunks of ``chunk_size``, scanned across chunks), so memory is
    bounded by the chunk, not the grid. Row ``i`` holds ``alphas[i]``: to draw it with
    matplotlib's ``contour(x, y, z)`` pass ``z = losses.T`` (or use
    :func:`gradlab.landscape.plot.plot_plane`).

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``.
        params: the centre of the slice.
        batch: passed unchanged to ``loss_fn``.
        d1: first direction (pytree like ``params``), scaled by ``alphas``.
        d2: second direction (pytree like ``params``), scaled by ``betas``.
        alphas: non-empty 1-D array of steps along ``d1``.
        betas: non-empty 1-D array of steps along ``d2``.
        chunk_size: grid points evaluated together, ``>= 1``.

    Returns:
        ``(len(alphas), len(betas))`` array of losses.

    Raises:
        ValueError: empty or non-1-D ``alphas``/``betas``, a ``d1``/``d2`` leaf whose shape
            differs from the params' (``TypeError`` if the tree structures differ), a
            non-scalar ``loss_fn`` or ``chunk_size < 1``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> loss = lambda p, b: jnp.sum(p ** 2)
        >>> z = gl.landscape.plane(loss, jnp.zeros(2), None, jnp.array([1.0, 0.0]),
        ...                        jnp.array([0.0, 1.0]), jnp.array([0.0, 1.0, 2.0]),
        ...                        jnp.array([0.0, 1.0]))
        >>> z.shape, z[2, 1]
        ((3, 2), Array(5., dtype=float32))

    References:
        Li, Xu, Taylor, Studer, Goldstein, "Visualizing the Loss Landscape of Neural Nets",
        NeurIPS 2018, https://arxiv.org/abs/1712.09913.
    """
    chunk_size = check_int("chunk_size", chunk_size, 1, None)
    alphas = _check_steps("alphas", alphas)
    betas = _check_steps("betas", betas)
    check_same_structure("d1", d1, params)
    check_same_structure("d2", d2, params)
    dtype = jnp.result_type(alphas, betas)
    a, b = jnp.meshgrid(alphas.astype(dtype), betas.astype(dtype), indexing="ij")
    coeffs = jnp.stack([a.reshape(-1), b.reshape(-1)], axis=1)
    losses = _evaluate(loss_fn, params, batch, (d1, d2), coeffs, chunk_size)
    return losses.reshape(alphas.shape[0], betas.shape[0])
