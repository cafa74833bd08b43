"""Input attributions: saliency (input gradients), gradient x input, integrated gradients."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradlab._src.errors import check_choice, check_int
from gradlab._src.typing import Params
from gradlab.attribution._common import check_callable, check_labels, static_fn

__all__ = ["IntegratedGradients", "gradient_x_input", "integrated_gradients", "saliency"]

Method = Literal["trapezoid", "riemann_right", "riemann_left", "riemann_middle"]
METHODS = ("trapezoid", "riemann_right", "riemann_left", "riemann_middle")


class IntegratedGradients(NamedTuple):
    """Result of :func:`integrated_gradients`.

    Attributes:
        attributions: ``(N, ...)`` like ``x``: the attribution of every input feature.
        completeness_gap: ``(N,)``: ``sum(attributions_i) - (F(x_i) - F(baseline_i))``, zero for
            exact integration (the completeness axiom); its size measures the quadrature error.
        output_difference: ``(N,)``: ``F(x_i) - F(baseline_i)``, the scale to compare the gap to.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> ig = gl.attribution.integrated_gradients(
        ...     lambda w, x: x @ w, jnp.ones((2, 1)), jnp.array([[1.0, 2.0]]), baseline=0.0)
        >>> ig.attributions, ig.completeness_gap  # linear model: exact
        (Array([[1., 2.]], dtype=float32), Array([0.], dtype=float32))
    """

    attributions: jax.Array
    completeness_gap: jax.Array
    output_difference: jax.Array


def _check_inputs(apply_fn: Any, params: Params, x: Any, target: Any) -> jax.Array:
    """Validate ``x`` and ``target`` against the model's per-example output; return targets."""
    check_callable("apply_fn", apply_fn)
    if jnp.ndim(x) < 1 or jnp.shape(x)[0] < 1:
        raise ValueError(
            f"x must have a leading example axis with N >= 1, got shape {jnp.shape(x)}"
        )
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"x has dtype {jnp.result_type(x)}: expected real floating-point inputs")
    n = jnp.shape(x)[0]
    one = jax.ShapeDtypeStruct((1, *jnp.shape(x)[1:]), jnp.result_type(x))
    out = jax.eval_shape(apply_fn, params, one)
    out_shape = tuple(getattr(out, "shape", ()))
    if target is None:
        if out_shape not in ((1,), (1, 1)):
            raise ValueError(
                f"target=None needs a model with one output per example, but apply_fn returns "
                f"shape {out_shape} for a batch of one: pass target (an int or (N,) ints)"
            )
        return jnp.zeros((n,), jnp.int32)
    if len(out_shape) != 2:
        raise ValueError(
            f"apply_fn must return outputs of shape (batch, num_outputs), got {out_shape} for a "
            "batch of one"
        )
    target = jnp.asarray(target)
    if target.ndim == 0:
        target = jnp.full((n,), target)
    if target.shape != (n,):
        raise ValueError(f"target must be an int or have shape ({n},), got {target.shape}")
    check_labels("target", target, out_shape[1])
    return target


def _scalar_output(apply_fn: Any, params: Params) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``(x_i, t_i) -> F(x_i)``: the target output of one example, evaluated as a batch of one."""

    def f(xi: jax.Array, ti: jax.Array) -> jax.Array:
        out = apply_fn(params, xi[None])
        return jnp.reshape(out, (-1,))[ti] if out.ndim == 2 else jnp.reshape(out, ())

    return f


@partial(jax.jit, static_argnums=(0,))
def _input_grads(apply_fn: Any, params: Params, x: jax.Array, target: jax.Array) -> jax.Array:
    return jax.vmap(jax.grad(_scalar_output(apply_fn, params)))(x, target)


def saliency(
    apply_fn: Callable[[Params, jax.Array], jax.Array],
    params: Params,
    x: jax.Array,
    *,
    target: Any = None,
    absolute: bool = False,
) -> jax.Array:
    r"""Input gradient (saliency map) of one output per example.

    .. math:: S_i = \frac{\partial F_{t_i}(x_i)}{\partial x_i}, \qquad
              F(x_i) = \mathrm{apply\_fn}(\theta, \{x_i\}),

    each example evaluated as a batch of size one. ``absolute=True`` returns :math:`|S_i|`, the
    map of Simonyan et al.

    Args:
        apply_fn: ``apply_fn(params, x) -> (batch, num_outputs)`` (or ``(batch,)`` /
            ``(batch, 1)`` for a single output).
        params: model params.
        x: ``(N, ...)`` inputs.
        target: output index per example: an int or ``(N,)`` ints in ``[0, num_outputs)``;
            ``None`` for a single-output model.
        absolute: return the absolute value of the gradient.

    Returns:
        ``(N, ...)`` like ``x``.

    Raises:
        ValueError: a target out of range or of the wrong shape, or ``target=None`` for a model
            with several outputs.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> w = jnp.array([[1.0, -2.0], [3.0, 0.5]])
        >>> gl.attribution.saliency(lambda w, x: x @ w, w, jnp.ones((1, 2)), target=1)
        Array([[-2. ,  0.5]], dtype=float32)

    References:
        Simonyan, Vedaldi, Zisserman, "Deep Inside Convolutional Networks: Visualising Image
        Classification Models and Saliency Maps", https://arxiv.org/abs/1312.6034.
    """
    target = _check_inputs(apply_fn, params, x, target)
    grads = _input_grads(static_fn(apply_fn), params, jnp.asarray(x), target)
    return jnp.abs(grads) if absolute else grads


def gradient_x_input(
    apply_fn: Callable[[Params, jax.Array], jax.Array],
    params: Params,
    x: jax.Array,
    *,
    target: Any = None,
) -> jax.Array:
    r"""Gradient times input: :math:`x_i \odot \partial F_{t_i}(x_i) / \partial x_i`.

    Equals integrated gradients with a zero baseline for a model linear in its input (then the
    attributions sum to :math:`F(x_i) - F(0)`).

    Args:
        apply_fn: ``apply_fn(params, x) -> (batch, num_outputs)`` (or one output per example).
        params: model params.
        x: ``(N, ...)`` inputs.
        target: an int or ``(N,)`` ints; ``None`` for a single-output model.

    Returns:
        ``(N, ...)`` like ``x``.

    Raises:
        ValueError: as :func:`saliency`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> w = jnp.array([[1.0], [3.0]])
        >>> gl.attribution.gradient_x_input(lambda w, x: x @ w, w, jnp.array([[2.0, -1.0]]))
        Array([[ 2., -3.]], dtype=float32)

    References:
        Shrikumar et al., "Not Just a Black Box: Learning Important Features Through
        Propagating Activation Differences", https://arxiv.org/abs/1605.01713.
    """
    x = jnp.asarray(x)
    return x * saliency(apply_fn, params, x, target=target)


def _quadrature(num_steps: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``alpha`` in [0, 1] and weights summing to one for the path integral."""
    m = num_steps
    if method == "trapezoid":
        alphas = np.linspace(0.0, 1.0, m + 1)
        weights = np.full(m + 1, 1.0 / m)
        weights[[0, -1]] *= 0.5
        return alphas, weights
    offset = {"riemann_right": 1.0, "riemann_left": 0.0, "riemann_middle": 0.5}[method]
    return (np.arange(m) + offset) / m, np.full(m, 1.0 / m)


@partial(jax.jit, static_argnums=(0,))
def _integrate(apply_fn, params, x, baseline, target, alphas, weights) -> IntegratedGradients:
    f = _scalar_output(apply_fn, params)
    grad = jax.vmap(jax.grad(f))
    delta = x - baseline

    def step(acc, node):
        alpha, weight = node
        return acc + weight * grad(baseline + alpha * delta, target), None

    total, _ = lax.scan(step, jnp.zeros_like(x), (alphas.astype(x.dtype), weights.astype(x.dtype)))
    attributions = delta * total
    difference = jax.vmap(f)(x, target) - jax.vmap(f)(baseline, target)
    gap = jnp.sum(attributions.reshape(x.shape[0], -1), axis=1) - difference
    return IntegratedGradients(attributions, gap, difference)


def integrated_gradients(
    apply_fn: Callable[[Params, jax.Array], jax.Array],
    params: Params,
    x: jax.Array,
    *,
    baseline: Any,
    target: Any = None,
    num_steps: int = 50,
    method: Method = "trapezoid",
) -> IntegratedGradients:
    r"""Integrated gradients along the straight path from ``baseline`` to ``x``.

    .. math:: \mathrm{IG}_j(x) = (x_j - x'_j) \int_0^1
              \frac{\partial F(x' + \alpha (x - x'))}{\partial x_j}\, d\alpha
              \approx (x_j - x'_j) \sum_k w_k\, \partial_j F(x' + \alpha_k (x - x')),

    with ``num_steps`` intervals of the composite trapezoid rule (``num_steps + 1`` gradient
    evaluations, error :math:`O(1/m^2)`) or a left/right/middle Riemann sum (``num_steps``
    evaluations; the paper's rule is ``"riemann_right"``, error :math:`O(1/m)` for left/right).
    The steps run in a ``lax.scan`` that accumulates the weighted gradient, so memory does not
    grow with ``num_steps``. Completeness says :math:`\sum_j \mathrm{IG}_j = F(x) - F(x')`; the
    result reports the gap as a check of the quadrature (exact for a model linear in ``x``).

    Args:
        apply_fn: ``apply_fn(params, x) -> (batch, num_outputs)`` (or one output per example).
        params: model params.
        x: ``(N, ...)`` inputs.
        baseline: the reference input :math:`x'`: shape ``x.shape``, one example's shape
            ``x.shape[1:]`` (shared by all), or a scalar.
        target: output index per example: an int or ``(N,)`` ints; ``None`` for a
            single-output model.
        num_steps: number of quadrature intervals ``m >= 1``.
        method: ``"trapezoid"``, ``"riemann_right"``, ``"riemann_left"`` or
            ``"riemann_middle"``.

    Returns:
        :class:`IntegratedGradients` ``(attributions (N, ...), completeness_gap (N,),
        output_difference (N,))``.

    Raises:
        ValueError: ``num_steps < 1``, a ``baseline`` whose shape is none of the allowed ones, an
            unknown ``method``, or a bad ``target`` (as :func:`saliency`).

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> def apply_fn(w, x):
        ...     return jnp.tanh(x @ w)
        >>> w = jnp.array([[1.0, -1.0], [0.5, 2.0]]); x = jnp.array([[1.0, 2.0]])
        >>> ig = gl.attribution.integrated_gradients(apply_fn, w, x, baseline=0.0, target=0,
        ...                                          num_steps=100)
        >>> ig.attributions.shape
        (1, 2)
        >>> bool(abs(ig.completeness_gap[0]) < 1e-4 * abs(ig.output_difference[0]))
        True

    References:
        Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep Networks", ICML 2017,
        https://arxiv.org/abs/1703.01365.
    """
    num_steps = check_int("num_steps", num_steps, 1)
    check_choice("method", method, METHODS)
    target = _check_inputs(apply_fn, params, x, target)
    x = jnp.asarray(x)
    baseline = jnp.asarray(baseline, dtype=x.dtype)
    if baseline.shape not in (x.shape, x.shape[1:], ()):
        raise ValueError(
            f"baseline has shape {baseline.shape}, which does not match x: expected "
            f"{x.shape} (one per example), {x.shape[1:]} (shared) or () (a scalar)"
        )
    baseline = jnp.broadcast_to(baseline, x.shape)
    alphas, weights = _quadrature(num_steps, method)
    return _integrate(static_fn(apply_fn), params, x, baseline, target, alphas, weights)
