"""Fisher information operators: Monte-Carlo (sampled labels) and empirical (data labels)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp

from gradlab._src.errors import check_choice, check_int
from gradlab._src.programs import pure_operator
from gradlab._src.typing import Batch, MatVec, Params, PRNGKey
from gradlab.curvature._checks import (
    as_vector_like,
    check_callable,
    check_labels,
    check_scalar_loss,
    num_examples,
    split_supervised_batch,
)
from gradlab.curvature._ggn import gauss_newton_matvec
from gradlab.curvature._hessian import per_example_losses
from gradlab.distributed._batch import MaskedBatch
from gradlab.distributed._parallel import data_axis, shape_only, split_mask, sum_over_examples

__all__ = ["draw_noise", "empirical_fisher", "fisher", "sampled_scores"]

LIKELIHOODS = ("categorical", "gaussian")


def draw_noise(likelihood: str, key: Any, out: Any, num_samples: int) -> jax.Array:
    """The sampling noise of the Monte-Carlo Fisher for the whole batch, example axis first.

    Gumbel noise ``(N, S, ..., C)`` for ``"categorical"`` (labels ``argmax(logits + noise)``,
    which is ``jax.random.categorical``), standard normal ``(N, S, ...)`` for ``"gaussian"``.
    Drawn for the whole batch so that a batch split over devices uses exactly the labels one
    device would draw; :func:`fisher` and K-FAC's ``"mc"`` draw the same samples from one key.
    """
    sample = jax.random.gumbel if likelihood == "categorical" else jax.random.normal
    return jnp.moveaxis(sample(key, (num_samples, *out.shape), out.dtype), 0, 1)


def sampled_scores(logits: jax.Array, gumbel: jax.Array) -> jax.Array:
    """Scores ``d(-log p(y | z)) / dz = softmax(z) - e_y`` of the labels
    ``y = argmax(logits + gumbel)``, shaped ``(S, N, ..., C)`` for ``gumbel`` from
    :func:`draw_noise`."""
    labels = jnp.argmax(logits + jnp.moveaxis(gumbel, 1, 0), axis=-1)  # (S, N, ...)
    p = jax.nn.softmax(logits, axis=-1)
    return p - jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)


def _check_key(key: Any) -> None:
    if key is None:
        raise ValueError(
            "fisher() requires the argument 'key' (a jax.random.key) to sample labels, but it "
            "was not given"
        )
    shape = getattr(key, "shape", None)
    is_typed = hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    if shape is None or not ((is_typed and shape == ()) or (not is_typed and tuple(shape) == (2,))):
        raise TypeError(
            f"key={key!r} must be a single PRNG key (jax.random.key(...) or "
            "jax.random.PRNGKey(...)), not a batch of keys or another value"
        )


def _categorical_operator(num_samples: int) -> Callable[[Any, Any], Any]:
    def output_operator(logits: jax.Array, gumbel: jax.Array) -> Callable[[jax.Array], jax.Array]:
        # gumbel: (N, S, ..., C), drawn for the whole batch; labels = argmax(logits + gumbel)
        # is exactly jax.random.categorical(key, logits, shape=(S, ...)).
        positions = logits.size // logits.shape[-1]
        r = jax.lax.stop_gradient(sampled_scores(logits, gumbel))

        def apply(u: jax.Array) -> jax.Array:
            s = jnp.sum(r * u, axis=-1, keepdims=True)
            return jnp.sum(r * s, axis=0) / (num_samples * positions)

        return apply

    return output_operator


def _gaussian_operator(num_samples: int) -> Callable[[Any, Any], Any]:
    def output_operator(outputs: jax.Array, noise: jax.Array) -> Callable[[jax.Array], jax.Array]:
        n = outputs.shape[0]
        # y = f + eps with eps ~ N(0, I): the score d(-log p)/df = f - y = -eps.
        eps = jnp.moveaxis(noise, 1, 0)  # (S, N, ...)
        axes = tuple(range(2, eps.ndim))

        def apply(u: jax.Array) -> jax.Array:
            s = jnp.sum(eps * u, axis=axes, keepdims=True)
            return jnp.sum(eps * s, axis=0) / (num_samples * n)

        return apply

    return output_operator


def fisher(
    model_fn: Callable[[Params, Any], Any],
    params: Params,
    batch: Batch,
    *,
    key: PRNGKey,
    likelihood: Literal["categorical", "gaussian"] = "categorical",
    num_samples: int = 1,
) -> MatVec:
    r"""Monte-Carlo Fisher information with labels sampled from the model.

    With :math:`f_n = \mathrm{model\_fn}(\theta, x_n)`, :math:`S` = ``num_samples`` labels
    :math:`y_{ns} \sim p(y \mid f_n)` and scores :math:`r_{ns} = \nabla_f [-\log p(y_{ns}
    \mid f_n)]`,

    .. math:: \hat F v = \frac{1}{N S} \sum_{n, s} J_n^\top r_{ns} r_{ns}^\top J_n v .

    Its expectation over the samples is the true Fisher
    :math:`\frac1N \sum_n J_n^\top \mathbb{E}[r r^\top] J_n`, which for these likelihoods equals
    the GGN of the matching mean loss: ``"categorical"`` (logits ``(..., C)``, one categorical
    per position, normalised by the number of positions) matches :func:`ggn` with
    :func:`softmax_cross_entropy`, and ``"gaussian"`` (unit variance, mean ``f``, normalised by
    the leading size ``N``) matches :func:`ggn` with :func:`mse`. The labels are drawn once
    per ``key``: the returned operator is a fixed symmetric PSD matrix of rank at most
    ``N * S``, and one product costs a forward pass, a JVP and a VJP (like :func:`ggn`).

    **Data parallel.** If the example axis of ``batch`` is split over a device mesh (e.g. by
    :func:`gradlab.distributed.shard_batch`), every product runs per shard in
    ``jax.shard_map`` and the shards' products are summed with ``psum``: the same result, one
    shard's activations per device. A :class:`gradlab.distributed.MaskedBatch` weights out
    padded examples exactly. See the Scaling out guide.

    Args:
        model_fn: ``model_fn(params, inputs) -> outputs`` (logits for ``"categorical"``).
        params: point at which the Fisher is taken.
        batch: ``(inputs, targets)``, the same pair :func:`ggn` takes so that the two can be
            swapped; ``targets`` are not used (labels are sampled) and may be ``None``.
        key: PRNG key for the sampled labels (required).
        likelihood: ``"categorical"`` or ``"gaussian"``.
        num_samples: labels sampled per example (``>= 1``).

    Returns:
        ``matvec(v) -> Fv``, pytrees shaped like ``params``; jit/vmap-compatible.

    Raises:
        ValueError: unknown ``likelihood``, ``num_samples < 1``, missing ``key``, batch leaves
            with different leading sizes, integer ``targets`` outside ``[0, C)`` for
            ``"categorical"`` (when concrete), or (first call) a ``v`` leaf with the wrong shape.
        TypeError: ``batch`` is not a pair, ``num_samples`` is not an int, ``key`` is not a
            single key, or (first call) ``v`` has a different structure from ``params``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> def model_fn(w, x):
        ...     return x @ w
        >>> x = jnp.array([[1.0, 0.0], [1.0, 2.0]]); w = jnp.zeros((2, 3))
        >>> fv = gl.curvature.fisher(model_fn, w, (x, None), key=jax.random.key(0),
        ...                          num_samples=4)
        >>> fv(jnp.ones((2, 3))).shape
        (2, 3)

    References:
        Martens, "New insights and perspectives on the natural gradient method", JMLR 2020,
        https://arxiv.org/abs/1412.1193. Kunstner, Balles, Hennig, "Limitations of the
        empirical Fisher approximation", NeurIPS 2019, https://arxiv.org/abs/1905.12558.
    """
    check_callable("model_fn", model_fn)
    check_choice("likelihood", likelihood, LIKELIHOODS)
    num_samples = check_int("num_samples", num_samples, 1)
    _check_key(key)
    data, mask = split_mask(batch)
    inputs, targets = split_supervised_batch(
        "batch", data, " (fisher samples its own labels: pass (inputs, None) if you have none)"
    )
    num_examples("batch", data)
    out = jax.eval_shape(model_fn, shape_only(params), shape_only(inputs))
    if not isinstance(out, jax.ShapeDtypeStruct) or not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(
            f"model_fn must return one floating array for likelihood={likelihood!r}, got {out}"
        )
    if likelihood == "categorical":
        if out.ndim < 2:
            raise ValueError(
                "likelihood='categorical' needs logits of shape (N, ..., num_classes), got "
                f"shape {out.shape}"
            )
        check_labels("batch targets", out.shape, targets)  # unused, but wrong labels are a bug
        operator = _categorical_operator(num_samples)
    else:
        if out.ndim < 1:
            raise ValueError(
                f"likelihood='gaussian' needs outputs with a leading example axis, got shape "
                f"{out.shape}"
            )
        operator = _gaussian_operator(num_samples)
    noise = draw_noise(likelihood, key, out, num_samples)
    if mask is not None:
        batch = MaskedBatch((inputs, noise), mask)
    else:
        batch = (inputs, noise)
    return gauss_newton_matvec(model_fn, params, batch, operator)


def empirical_fisher(
    loss_fn: Callable[[Params, Batch], jax.Array],
    params: Params,
    batch: Batch,
) -> MatVec:
    r"""Empirical Fisher: the mean outer product of per-example gradients.

    .. math:: F_{\mathrm{emp}} v = \frac{1}{N} \sum_{n=1}^{N} g_n (g_n^\top v),
        \qquad g_n = \nabla_\theta\, \mathrm{loss\_fn}(\theta, B_n),

    where :math:`B_n` is example ``n`` as a batch of size 1 of the same ``loss_fn``. The
    products :math:`g_n^\top v` come from one vmapped JVP of the per-example losses, and
    :math:`\sum_n c_n g_n` from the transpose of the same linearisation (a VJP), so the
    ``(N, P)`` matrix of per-example gradients is never materialised: memory is that of one
    batched forward/backward pass. Unlike :func:`fisher`, it uses the data labels, so it is
    not the Fisher in general (see Kunstner et al.).

    **Data parallel.** If the example axis of ``batch`` is split over a device mesh (e.g. by
    :func:`gradlab.distributed.shard_batch`), every product runs per shard in
    ``jax.shard_map`` and the shards' products are summed with ``psum``: the same result, one
    shard's activations per device. A :class:`gradlab.distributed.MaskedBatch` weights out
    padded examples exactly. See the Scaling out guide.

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``, written for a batch (it is called on
            batches of size 1).
        params: point at which the gradients are taken.
        batch: any pytree of arrays sharing a leading example axis.

    Returns:
        ``matvec(v) -> F_emp v``, pytrees shaped like ``params``; jit/vmap-compatible.

    Raises:
        ValueError: ``loss_fn`` does not return a real scalar (on the full batch or a batch of
            one), batch leaves with different leading sizes, or (first call) a ``v`` leaf with
            the wrong shape.
        TypeError: ``loss_fn`` is not callable, or (first call) ``v`` has a different
            structure from ``params``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> def loss_fn(w, x):
        ...     return jnp.mean(x @ w)  # per-example gradient g_n = x_n
        >>> x = jnp.array([[1.0, 0.0], [1.0, 2.0]])
        >>> gl.curvature.dense(gl.curvature.empirical_fisher(loss_fn, jnp.zeros(2), x),
        ...                    jnp.zeros(2))  # (x^T x) / N
        Array([[1., 1.],
               [1., 2.]], dtype=float32)

    References:
        Kunstner, Balles, Hennig, "Limitations of the empirical Fisher approximation",
        NeurIPS 2019, https://arxiv.org/abs/1905.12558.
    """
    check_callable("loss_fn", loss_fn)
    data, mask = split_mask(batch)
    num_examples("batch", data)
    axis = data_axis("batch", batch, params)
    check_scalar_loss("loss_fn", loss_fn, shape_only(params), shape_only(data))
    one = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct((1, *a.shape[1:]), a.dtype), data)
    check_scalar_loss("loss_fn (on a batch of one example)", loss_fn, shape_only(params), one)

    def local(rep: Any, shard: Any, weights: Any) -> Any:
        p, v = rep
        losses, jvp_fn = jax.linearize(lambda q: per_example_losses(loss_fn, q, shard), p)
        dots = jvp_fn(v)  # g_n . v, shape (n,)
        coeffs = dots / dots.shape[0] if weights is None else dots * weights
        (out,) = jax.linear_transpose(jvp_fn, p)(coeffs.astype(losses.dtype))
        return out

    def matvec(v: Any) -> Any:
        v = as_vector_like(v, params)
        return sum_over_examples(local, axis, (params, v), data, mask)

    return pure_operator(matvec)
