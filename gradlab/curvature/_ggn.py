"""Generalised Gauss-Newton products J^T H_L J v, never forming the Jacobian J."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from gradlab._src.errors import bad_choice_message
from gradlab._src.programs import pure_operator
from gradlab._src.typing import Batch, MatVec, Params
from gradlab.curvature._checks import (
    as_vector_like,
    check_callable,
    check_labels,
    check_scalar_loss,
    num_examples,
    split_supervised_batch,
)
from gradlab.curvature._losses import LOSSES_BY_NAME, softmax_cross_entropy
from gradlab.distributed._parallel import data_axis, shape_only, split_mask, sum_over_examples

__all__ = ["ggn"]

OutputOperator = Callable[[Any, Any], Callable[[Any], Any]]


def gauss_newton_matvec(
    model_fn: Callable[[Params, Any], Any],
    params: Params,
    batch: Any,
    output_operator: OutputOperator,
) -> MatVec:
    """``v -> J^T M(f) J v`` with ``J = d model_fn(params, inputs) / d params``.

    ``batch`` is ``(inputs, data)`` or a :class:`~gradlab.distributed.MaskedBatch` of it, and
    ``output_operator(outputs, data)`` returns the output-space linear map ``M`` of a mean over
    the examples of ``outputs`` (``data``: targets or pre-drawn noise, split with the inputs).
    One product runs the model once forward (``jax.linearize``: primal + JVP) and once
    backward (the transpose of the same linearisation), so the primal work is shared between
    the two passes. A batch split over a mesh runs per shard (``jax.shard_map``) and the
    products are summed; with a mask, ``M u`` is rescaled example by example.
    """
    data, mask = split_mask(batch)
    axis = data_axis("batch", batch, params)

    def local(rep: Any, shard: Any, weights: Any) -> Any:
        p, v = rep
        inputs, extra = shard
        outputs, jvp_fn = jax.linearize(lambda q: model_fn(q, inputs), p)
        mjv = output_operator(outputs, extra)(jvp_fn(v))
        if weights is not None:
            n = weights.shape[0]
            mjv = jax.tree_util.tree_map(
                lambda a: a * (weights * n).reshape((n,) + (1,) * (a.ndim - 1)), mjv
            )
        mjv = jax.tree_util.tree_map(lambda a, o: a.astype(o.dtype), mjv, outputs)
        (out,) = jax.linear_transpose(jvp_fn, p)(mjv)
        return out

    def matvec(v: Any) -> Any:
        v = as_vector_like(v, params)
        return sum_over_examples(local, axis, (params, v), data, mask)

    return pure_operator(matvec)


def resolve_loss(loss_fn: Any) -> Callable[..., Any]:
    """Map a loss name to the built-in loss; check that anything else is callable."""
    if isinstance(loss_fn, str):
        if loss_fn not in LOSSES_BY_NAME:
            raise ValueError(bad_choice_message("loss_fn", loss_fn, tuple(LOSSES_BY_NAME)))
        return LOSSES_BY_NAME[loss_fn]
    check_callable("loss_fn", loss_fn)
    return loss_fn


def ggn(
    model_fn: Callable[[Params, Any], Any],
    loss_fn: Callable[[Any, Any], jax.Array] | str,
    params: Params,
    batch: Batch,
) -> MatVec:
    r"""Matrix-free generalised Gauss-Newton matrix :math:`G = J^\top H_L J`.

    For outputs :math:`f = \mathrm{model\_fn}(\theta, x)` and a loss :math:`L(f, y)`,

    .. math:: G v = J^\top \bigl(\nabla_f^2 L\bigr) J v, \qquad J = \partial f / \partial\theta,

    computed as JVP -> output-space Hessian product -> VJP; :math:`J` is never formed and one
    product costs about one forward pass plus one JVP and one VJP. For a mean loss the GGN is
    the mean over examples of :math:`J_n^\top H_n J_n` (the :math:`1/N` sits inside
    :math:`\nabla_f^2 L`). It equals the Hessian when the model is linear in ``params`` and is
    positive semi-definite whenever the loss is convex in the outputs.

    **Closed forms.** If ``loss_fn`` is :func:`gradlab.curvature.softmax_cross_entropy` or
    :func:`gradlab.curvature.mse` (or the strings ``"softmax_cross_entropy"`` / ``"mse"``), the
    output-space product uses their closed forms: :math:`(\mathrm{diag}(p) - p p^\top) u / N`
    per example for cross-entropy (no second derivative through ``log_softmax``) and
    :math:`u / N` for ``mse``. More generally, any loss that carries an attribute
    ``output_hessian(outputs, targets) -> (u -> H_L u)`` is used that way. Any other callable
    falls back to an autodiff Hessian-vector product in output space, which is exact too.

    **Data parallel.** If the example axis of ``batch`` is split over a device mesh (e.g. by
    :func:`gradlab.distributed.shard_batch`), every product runs per shard in
    ``jax.shard_map`` and the shards' products are summed with ``psum``: the same result, one
    shard's activations per device. A :class:`gradlab.distributed.MaskedBatch` weights out
    padded examples exactly. See the Scaling out guide.

    Args:
        model_fn: ``model_fn(params, inputs) -> outputs`` (e.g. a flax module's ``apply``).
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, or ``"softmax_cross_entropy"`` or
            ``"mse"``.
        params: point at which the GGN is taken.
        batch: ``(inputs, targets)``, pytrees sharing a leading example axis.

    Returns:
        ``matvec(v) -> Gv``, pytrees shaped like ``params``; jit/vmap-compatible.

    Raises:
        TypeError: ``batch`` is not an ``(inputs, targets)`` pair, a function is not callable,
            or (first call) ``v`` has a different structure from ``params``.
        ValueError: ``loss_fn`` does not return a real scalar, an unknown loss name, batch
            leaves with different leading sizes, integer labels outside ``[0, C)`` for
            cross-entropy (checked whenever they are concrete, naming the example), or (first
            call) a leaf of ``v`` with the wrong shape.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> def model_fn(w, x):
        ...     return x @ w
        >>> x = jnp.array([[1.0, 0.0], [1.0, 2.0]]); t = jnp.zeros((2, 3))
        >>> w = jnp.ones((2, 3))
        >>> gv = gl.curvature.ggn(model_fn, gl.curvature.mse, w, (x, t))
        >>> hv = gl.curvature.hessian(lambda w, b: gl.curvature.mse(model_fn(w, b[0]), b[1]),
        ...                           w, (x, t))
        >>> v = jnp.arange(6.0).reshape(2, 3)
        >>> bool(jnp.allclose(gv(v), hv(v)))  # linear model + MSE: GGN == Hessian
        True

    References:
        Schraudolph, "Fast curvature matrix-vector products for second-order gradient
        descent", Neural Computation 2002. Martens, "New insights and perspectives on the
        natural gradient method", JMLR 2020, https://arxiv.org/abs/1412.1193.
    """
    check_callable("model_fn", model_fn)
    loss_fn = resolve_loss(loss_fn)
    data, _ = split_mask(batch)
    inputs, targets = split_supervised_batch("batch", data)
    num_examples("batch", data)
    outputs_shape = jax.eval_shape(model_fn, shape_only(params), shape_only(inputs))
    check_scalar_loss("loss_fn", loss_fn, outputs_shape, shape_only(targets))
    if loss_fn is softmax_cross_entropy and isinstance(outputs_shape, jax.ShapeDtypeStruct):
        check_labels("batch targets", outputs_shape.shape, targets)

    closed_form = getattr(loss_fn, "output_hessian", None)
    if closed_form is not None:

        def output_operator(outputs: Any, targets: Any) -> Callable[[Any], Any]:
            return closed_form(outputs, targets)

    else:

        def output_operator(outputs: Any, targets: Any) -> Callable[[Any], Any]:
            def grad_out(o: Any) -> Any:
                return jax.grad(loss_fn)(o, targets)

            return lambda u: jax.jvp(grad_out, (outputs,), (u,))[1]

    return gauss_newton_matvec(model_fn, params, batch, output_operator)
