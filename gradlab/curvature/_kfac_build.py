"""K-FAC / EK-FAC construction: checks, capture of per-example statistics, data parallelism.

:func:`prepare` checks the arguments and plans the covered layers; the compiled construction
then captures, per example, every covered layer's inputs and output cotangents
(:class:`Rows`) together with the example weights ``w_n`` (``1 / N`` for a plain batch,
``mask_n / N_true`` for a :class:`~gradlab.distributed.MaskedBatch`), and hands them to a
``finish`` function that forms the weighted sums. A batch whose example axis is split over a
device mesh runs per shard inside ``jax.shard_map``: every device captures its own shard
only, and ``finish`` sums its statistics across shards with ``psum`` (the ``reduce``
argument), so the factors equal the single-device ones and no device holds more than one
shard's activations. Monte-Carlo labels are drawn for the whole batch before it is split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from gradlab._src.errors import check_choice, check_int
from gradlab._src.typing import Params, PRNGKey
from gradlab.curvature._checks import (
    check_callable,
    check_labels,
    check_scalar_loss,
    num_examples,
    split_supervised_batch,
)
from gradlab.curvature._fisher import _check_key, draw_noise
from gradlab.curvature._ggn import resolve_loss
from gradlab.curvature._kfac_capture import (
    SUPPORTED_LAYERS,
    Plan,
    discover,
    layer_inputs,
    make_forward,
)
from gradlab.curvature._kfac_columns import likelihood_of, output_columns
from gradlab.distributed._parallel import conform, data_axis, shape_only, split_mask

__all__ = ["FISHER_TYPES", "KFAC_APPROX", "Rows", "example_sum", "per_example", "prepare"]

FISHER_TYPES = ("type2", "mc", "empirical")
KFAC_APPROX = ("expand", "reduce")


class Rows(NamedTuple):
    """Per-layer statistics of one shard.

    ``a``: inputs ``(n, T, d_in)`` (``(n, T)`` indices for an Embed); ``g``: cotangents
    ``(K, n, T, d_out)`` of the per-example columns (no ``1/N``); ``w``: the example weights,
    ``(n,)`` ``mask / N_true`` for a masked batch, else the scalar ``1/N`` (``N`` counted over
    all shards).
    """

    a: jax.Array
    g: jax.Array
    w: jax.Array


Reduce = Callable[[Any], Any]


def prepare(
    where: str,
    model_fn: Callable,
    loss_fn: Any,
    params: Params,
    batch: Any,
    fisher_type: str,
    key: PRNGKey | None,
    kfac_approx: str,
    num_samples: int,
    finish: Callable[[Plan, dict[str, Rows], dict[str, jax.Array], Reduce], Any],
) -> Any:
    """Check the arguments, capture every covered layer, return ``finish(plan, rows, diag, reduce)``.

    ``diag`` holds the weighted per-shard sums of the uncovered leaves' squared gradients,
    ``reduce`` sums a pytree over the shards (the identity on one device). ``finish`` must be
    a module-level function (it is a static argument of the compiled construction).
    """
    check_callable("model_fn", model_fn)
    loss_fn = resolve_loss(loss_fn)
    check_choice("fisher_type", fisher_type, FISHER_TYPES)
    check_choice("kfac_approx", kfac_approx, KFAC_APPROX)
    num_samples = check_int("num_samples", num_samples, 1)
    if fisher_type == "mc":
        if key is None:
            raise ValueError(
                f"{where}(fisher_type='mc') requires the argument 'key' (a jax.random.key) to "
                "sample labels, but it was not given"
            )
        _check_key(key)
        if likelihood_of(loss_fn) is None:
            raise ValueError(
                f"fisher_type='mc' needs loss_fn to be a likelihood gradlab can sample from: "
                f"'softmax_cross_entropy' or 'mse', got {loss_fn!r}; use fisher_type='type2'"
            )
    data, mask = split_mask(batch)
    inputs, targets = split_supervised_batch("batch", data)
    n = num_examples("batch", data)
    try:
        outputs = jax.eval_shape(model_fn, shape_only(params), shape_only(inputs))
    except Exception as err:
        raise ValueError(
            f"params do not fit model_fn: model_fn(params, inputs) failed with "
            f"{type(err).__name__}: {err}"
        ) from err
    if not isinstance(outputs, jax.ShapeDtypeStruct) or outputs.shape[:1] != (n,):
        raise ValueError(
            f"{where} needs model_fn to return one array with a leading example axis of size "
            f"{n}, got {outputs}"
        )
    check_scalar_loss("loss_fn", loss_fn, outputs, shape_only(targets))
    if likelihood_of(loss_fn) == "categorical":
        check_labels("batch targets", outputs.shape, targets)
    one = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct((1, *a.shape[1:]), a.dtype), inputs)
    plan = discover(model_fn, shape_only(params), one)
    if not plan.groups:
        raise ValueError(
            f"{where} found no supported layer in model_fn: it needs flax linen layers "
            f"({', '.join(SUPPORTED_LAYERS)}) called through __call__ whose parameters are "
            "leaves of params (pass the variables dict that module.apply receives)"
        )
    axis = data_axis("batch", batch, params)
    static = (model_fn, loss_fn, plan, fisher_type, num_samples, kfac_approx, finish, axis)
    try:
        hash(static)
    except TypeError:  # an unhashable callable: run op by op (or inside the caller's jit)
        return _build(params, inputs, targets, mask, key, static=static)
    return _build_jit(params, inputs, targets, mask, key, static=static)


def _build(params: Params, inputs: Any, targets: Any, mask: Any, key: Any, *, static: tuple) -> Any:
    model_fn, loss_fn, plan, fisher_type, num_samples, kfac_approx, finish, axis = static
    noise = None
    if fisher_type == "mc":  # drawn for the whole batch, so that every split gets these labels
        out = jax.eval_shape(model_fn, shape_only(params), shape_only(inputs))
        noise = draw_noise(likelihood_of(loss_fn), key, out, num_samples)
    options = (model_fn, loss_fn, plan, fisher_type, num_samples, kfac_approx)

    def body(params: Any, shard: Any, mask: Any) -> Any:
        if axis is None:
            reduce = _identity
        else:

            def reduce(tree: Any) -> Any:
                return jax.tree_util.tree_map(lambda x: jax.lax.psum(x, axis.axes), tree)

        rows, diagonal = _capture(params, shard, mask, reduce, options)
        return finish(plan, rows, diagonal, reduce)

    shard = (inputs, targets, noise)
    if axis is None:
        return body(params, shard, mask)
    run = jax.shard_map(
        body,
        mesh=axis.mesh,
        in_specs=(PartitionSpec(), axis.spec, axis.spec),
        out_specs=PartitionSpec(),
        check_vma=False,
    )
    return run(conform(params, axis, None), conform(shard, axis, 0), conform(mask, axis, 0))


# One compiled program per (model, loss, plan, options): eager calls do not dispatch op by op.
_build_jit = jax.jit(_build, static_argnames=("static",))


def _identity(tree: Any) -> Any:
    return tree


def example_sum(x: jax.Array, w: jax.Array) -> jax.Array:
    """``sum_n w_n x[n]``; a scalar ``w`` (equal weights) multiplies the plain sum."""
    if w.ndim == 0:
        return w * jnp.sum(x, axis=0)
    return jnp.tensordot(w, x, axes=1)


def per_example(w: jax.Array, ndim: int) -> jax.Array:
    """``w`` shaped to broadcast over ``ndim``-dimensional rows ``(n, ...)`` (a scalar stays)."""
    return w if w.ndim == 0 else w.reshape((-1,) + (1,) * (ndim - 1))


def _capture(
    params: Any, shard: Any, mask: Any, reduce: Reduce, options: tuple
) -> tuple[dict[str, Rows], dict[str, jax.Array]]:
    """Rows of every covered layer and the weighted squared gradients of uncovered leaves."""
    model_fn, loss_fn, plan, fisher_type, num_samples, kfac_approx = options
    inputs, targets, noise = shard
    n = jax.tree_util.tree_leaves(inputs)[0].shape[0]
    leaves = jax.tree_util.tree_leaves(params)
    forward = make_forward(model_fn, params, plan)

    def batched(unc: list, eps: list) -> tuple[Any, list]:
        def one(u, e, x):
            return forward(u, e, jax.tree_util.tree_map(lambda a: a[None], x))

        return jax.vmap(one)(unc, eps, inputs)

    unc = [jnp.broadcast_to(leaves[i], (n, *jnp.shape(leaves[i]))) for i in plan.uncovered]
    covered = sorted((s, j) for j, s in enumerate(plan.slots) if s is not None)
    eps = [jnp.zeros((n, *plan.calls[j].out_shape), plan.calls[j].out_dtype) for _, j in covered]
    out, vjp_fn, captured = jax.vjp(batched, unc, eps, has_aux=True)
    outputs = out.reshape(n, *out.shape[2:])
    cols = output_columns(loss_fn, fisher_type, outputs, targets, noise, num_samples)
    cot = cols.reshape(cols.shape[0], *out.shape).astype(out.dtype)
    d_unc, d_eps = jax.vmap(vjp_fn)(cot)
    real = jnp.result_type(float)
    if mask is None:  # equal weights: one scalar 1 / N, applied to the sums
        weights = 1.0 / reduce(jnp.asarray(n, real))
    else:  # 1 / N_true for the true examples, 0 for the padding
        flags = mask.astype(real)
        weights = flags / reduce(jnp.sum(flags))
    diagonal = {}
    for i, d in zip(plan.uncovered, d_unc, strict=True):
        dt = jnp.promote_types(plan.dtypes[i], jnp.float32)
        sq = jnp.sum(jnp.square(d.astype(dt)), axis=0)
        diagonal[plan.paths[i]] = example_sum(sq, weights.astype(dt))
    rows = {}
    for g in plan.groups:
        dt = jnp.promote_types(plan.dtypes[g.kernel], jnp.float32)
        a_parts, g_parts = [], []
        for j in g.calls:
            s = plan.slots[j]
            a = layer_inputs(plan.calls[j], captured[s], n)
            a_parts.append(a if g.kind == "embed" else a.astype(dt))
            d = d_eps[s].astype(dt)
            g_parts.append(d.reshape(d.shape[0], n, -1, d.shape[-1]))
        a, gg = jnp.concatenate(a_parts, 1), jnp.concatenate(g_parts, 2)
        if kfac_approx == "reduce" and g.kind != "embed":
            a, gg = jnp.mean(a, 1, keepdims=True), jnp.sum(gg, 2, keepdims=True)
        a, gg = jax.lax.stop_gradient(a), jax.lax.stop_gradient(gg)
        rows[g.name] = Rows(a, gg, jax.lax.stop_gradient(weights.astype(dt)))
    return rows, diagonal
