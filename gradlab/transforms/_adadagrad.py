"""AdAdaGrad: AdaGrad / AdaGrad-Norm with adaptive batch-size tests (Lau, Liu, Kolar, 2024)."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradlab._src.errors import check_choice, check_int, check_real
from gradlab._src.tree import tree_dtype
from gradlab.transforms._dicesgd import (
    check_learning_rate,
    check_stacked_like,
    mean_over_examples,
    require_extra,
)
from gradlab.transforms._pcgrad import stack_ravel

__all__ = [
    "AdAdaGradState",
    "adadagrad",
    "batch_size_tests",
    "scale_by_adadagrad",
]

Test = Literal["norm", "inner_product", "augmented"]
Variant = Literal["adagrad", "adagrad_norm"]


class AdAdaGradState(NamedTuple):
    """State of :func:`scale_by_adadagrad`.

    Attributes:
        count: int32 scalar, number of updates so far.
        sum_of_squares: AdaGrad's accumulator, a pytree like the params (``"adagrad"``) or a
            scalar :math:`b_t^2` (``"adagrad_norm"``; float32, or float64 for float64 params).
        batch_size: int32 scalar, the batch size to use for the *next* step: never smaller than
            the current one and at most ``max_batch_size``.
        statistic: float32 scalar, the batch size the last test asked for (before rounding up,
            the ``max(current, .)`` and the cap); ``inf`` if the mean gradient was zero.

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.transforms import scale_by_adadagrad
        >>> state = scale_by_adadagrad(batch_size=8, max_batch_size=512).init(jnp.zeros(3))
        >>> int(state.batch_size)
        8
    """

    count: jax.Array
    sum_of_squares: Any
    batch_size: jax.Array
    statistic: jax.Array


def _summed_variance(g: jax.Array, mean: jax.Array) -> jax.Array:
    """``sum_j var_j(g[:, j])`` with ``ddof=1``, without a major-axis reduce.

    ``jnp.var(g, axis=0)`` lowers to a major-axis reduce that XLA-CPU runs 20-60x slower than
    this (as ``jnp.mean(axis=0)``; see :func:`~gradlab.transforms._dicesgd.mean_over_examples`).
    """
    deviation = g - mean
    return jnp.sum(deviation * deviation) / (g.shape[0] - 1)


def batch_size_tests(
    per_example_grads: Any, *, eta: Any = 0.1, theta: Any = 0.1, nu: Any = 0.1
) -> dict[str, jax.Array]:
    r"""The batch sizes the norm, inner-product, orthogonality and augmented tests ask for.

    From per-example gradients :math:`g_1, \dots, g_m` (:math:`m \ge 2`) of a test micro-batch
    with mean :math:`\bar g`, with unbiased (``ddof=1``) sample variances:

    .. math::

        b_{\text{norm}} &= \frac{\sum_k \widehat{\operatorname{Var}}_i(g_{i,k})}
                               {\eta^2 \|\bar g\|^2}, \qquad
        b_{\text{ip}} = \frac{\widehat{\operatorname{Var}}_i(g_i^\top \bar g)}
                             {\theta^2 \|\bar g\|^4}, \\
        b_{\text{orth}} &= \frac{\sum_k \widehat{\operatorname{Var}}_i
              \big(g_i - \tfrac{g_i^\top \bar g}{\|\bar g\|^2} \bar g\big)_k}{\nu^2 \|\bar g\|^2},
        \qquad b_{\text{aug}} = \max(b_{\text{ip}}, b_{\text{orth}}).

    A batch of size :math:`b` passes the norm test (Byrd et al., 2012) when
    :math:`\operatorname{Var}/b \le \eta^2 \|\nabla F\|^2`, i.e. :math:`b \ge b_{\text{norm}}`;
    likewise for the inner-product and orthogonality tests (Bollapragada et al., 2018). The
    inner products are global, over the whole pytree, as in the tests' definitions (the
    authors' code sums per-layer inner-product variances instead). A zero mean gradient with
    nonzero variance asks for an infinite batch (``inf``); zero variance asks for ``0``.

    Args:
        per_example_grads: pytree with a leading example axis of size ``m >= 2``.
        eta: norm-test constant :math:`\eta > 0` (paper default 0.1).
        theta: inner-product-test constant :math:`\theta > 0` (default 0.1).
        nu: orthogonality-test constant :math:`\nu > 0` (default 0.1).

    Returns:
        dict with float scalars ``"norm"``, ``"inner_product"``, ``"orthogonality"``,
        ``"augmented"`` (required batch sizes, unrounded) and ``"grad_norm_sq"``
        (:math:`\|\bar g\|^2`).

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.transforms import batch_size_tests
        >>> g = jnp.array([[1.0, 0.0], [3.0, 0.0]])  # mean (2, 0), variance 2 on coordinate 0
        >>> float(batch_size_tests(g, eta=0.5)["norm"])  # 2 / (0.25 * 4)
        2.0

    References:
        Lau, Liu, Kolar, "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient
        Methods", 2024. https://arxiv.org/abs/2402.11215
    """
    leaves = jax.tree.leaves(per_example_grads)
    dtype = jnp.promote_types(jnp.result_type(*leaves), jnp.float32)
    g = stack_ravel(per_example_grads, dtype)
    m = g.shape[0]
    if m < 2:
        raise ValueError(
            f"per_example_grads has {m} example on its leading axis: the batch-size tests need a "
            "test micro-batch of at least 2 examples (unbiased sample variances)"
        )
    mean = mean_over_examples(g)
    norm_sq = jnp.sum(mean * mean)
    var_total = _summed_variance(g, mean)
    dots = g @ mean
    var_dots = jnp.var(dots, ddof=1)
    safe = jnp.where(norm_sq > 0, norm_sq, 1.0)
    ortho = g - jnp.outer(dots / safe, mean)
    var_ortho = _summed_variance(ortho, mean_over_examples(ortho))

    def ratio(num, den):
        return jnp.where(
            den > 0, num / jnp.where(den > 0, den, 1.0), jnp.where(num > 0, jnp.inf, 0.0)
        )

    norm = ratio(var_total, eta**2 * norm_sq)
    inner = ratio(var_dots, theta**2 * norm_sq**2)
    orth = ratio(var_ortho, nu**2 * norm_sq)
    return {
        "norm": norm,
        "inner_product": inner,
        "orthogonality": orth,
        "augmented": jnp.maximum(inner, orth),
        "grad_norm_sq": norm_sq,
    }


def scale_by_adadagrad(
    *,
    batch_size: int,
    max_batch_size: int,
    test: Test = "norm",
    variant: Variant = "adagrad",
    eta: Any = 0.1,
    theta: Any = 0.1,
    nu: Any = 0.1,
    initial_accumulator_value: Any = 0.1,
    eps: Any = 1e-7,
) -> optax.GradientTransformationExtraArgs:
    r"""AdaGrad or AdaGrad-Norm scaling plus an adaptive batch-size test (AdAdaGrad).

    Scaling (``variant``): AdaGrad, :math:`s_t = s_{t-1} + g_t^2`,
    :math:`u_t = g_t / \sqrt{s_t + \epsilon}` (identical to ``optax.scale_by_rss``), or
    AdaGrad-Norm, :math:`b_t^2 = b_{t-1}^2 + \|g_t\|^2`, :math:`u_t = g_t / \sqrt{b_t^2 +
    \epsilon}`, both started from ``initial_accumulator_value``.

    Batch size: at every step the chosen ``test`` (see :func:`batch_size_tests`: ``"norm"``,
    ``"inner_product"`` or ``"augmented"`` = inner-product + orthogonality) is evaluated on the
    per-example gradients of a test micro-batch and the state's ``batch_size`` becomes

    .. math:: b_{k+1} = \min\big(b_{\max},\ \max(b_k, \lceil b_{\text{test}} \rceil)\big),

    so the batch never shrinks and is capped (as in the authors' code). The transform only
    *reports* the batch size; the training loop reads ``state.batch_size`` (or
    ``optax.tree.get(opt_state, "batch_size")``) and draws the next batch accordingly, see
    :func:`adaptive_batch_training`. Defaults :math:`\eta = \theta = \nu = 0.1` are those of
    the authors' code.

    **How the per-example gradients arrive.** As the extra argument ``per_example_grads``: a
    pytree like the params with a leading axis over the test micro-batch (at least 2
    examples; e.g. the first few examples of the batch, from ``jax.vmap(jax.grad(...))``). The
    ``updates`` argument is the usual mean gradient of the whole batch and is what gets scaled.

    Args:
        batch_size: initial batch size :math:`b_0 \ge 1`.
        max_batch_size: cap :math:`b_{\max} \ge b_0` (e.g. the dataset size).
        test: ``"norm"``, ``"inner_product"`` or ``"augmented"``.
        variant: ``"adagrad"`` (coordinate-wise) or ``"adagrad_norm"`` (scalar).
        eta: norm-test constant :math:`\eta > 0`.
        theta: inner-product-test constant :math:`\theta > 0`.
        nu: orthogonality-test constant :math:`\nu > 0` (used by ``"augmented"``).
        initial_accumulator_value: starting accumulator, :math:`\ge 0`.
        eps: added inside the square root, :math:`\ge 0`.

    Returns:
        A ``GradientTransformationExtraArgs``; ``update(updates, state, params=None, *,
        per_example_grads)`` returns the scaled updates and an :class:`AdAdaGradState`. Memory:
        one parameter-sized buffer (``"adagrad"``) or none (``"adagrad_norm"``).

    Raises:
        ValueError: bad batch sizes, test or variant names, non-positive test constants,
            negative accumulator or ``eps`` (construction); missing ``per_example_grads``, fewer
            than 2 examples, mismatched shapes (first call).

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.transforms import scale_by_adadagrad
        >>> tx = scale_by_adadagrad(batch_size=2, max_batch_size=64, eta=0.6)
        >>> state = tx.init(jnp.zeros(2))
        >>> per_ex = jnp.array([[1.0, 0.0], [3.0, 0.0]])  # the norm test asks for b = 1.39
        >>> u, state = tx.update(per_ex.mean(0), state, per_example_grads=per_ex)
        >>> int(state.batch_size)
        2
        >>> per_ex = jnp.array([[1.0, 0.0], [5.0, 0.0]])  # 8 / (0.36 * 9) = 2.47 -> 3
        >>> u, state = tx.update(per_ex.mean(0), state, per_example_grads=per_ex)
        >>> int(state.batch_size)
        3

    References:
        Lau, Liu, Kolar, "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient
        Methods", 2024. https://arxiv.org/abs/2402.11215
    """
    where = "scale_by_adadagrad"
    batch_size = check_int("batch_size", batch_size, 1)
    max_batch_size = check_int("max_batch_size", max_batch_size, batch_size)
    check_choice("test", test, ("norm", "inner_product", "augmented"))
    check_choice("variant", variant, ("adagrad", "adagrad_norm"))
    for name, value in (("eta", eta), ("theta", theta), ("nu", nu)):
        check_real(name, value, 0.0, lo_open=True)
    check_real("initial_accumulator_value", initial_accumulator_value, 0.0)
    check_real("eps", eps, 0.0)
    rss = optax.scale_by_rss(initial_accumulator_value, eps)

    def init_fn(params):
        if variant == "adagrad":
            acc = rss.init(params).sum_of_squares
        else:
            dtype = jnp.promote_types(tree_dtype(params), jnp.float32)
            acc = jnp.full((), initial_accumulator_value, dtype)
        return AdAdaGradState(
            count=jnp.zeros((), jnp.int32),
            sum_of_squares=acc,
            batch_size=jnp.full((), batch_size, jnp.int32),
            statistic=jnp.zeros((), jnp.float32),
        )

    def update_fn(updates, state, params=None, *, per_example_grads=None, **extra):
        del params, extra
        require_extra(
            per_example_grads,
            "per_example_grads",
            f"{where}(...).update",
            "pass per-example gradients of a test micro-batch (leading axis, >= 2 examples)",
        )
        check_stacked_like("per_example_grads", per_example_grads, updates)
        stats = batch_size_tests(per_example_grads, eta=eta, theta=theta, nu=nu)
        stat = stats[test].astype(jnp.float32)
        wanted = jnp.ceil(jnp.minimum(stat, float(max_batch_size)))
        new_batch = jnp.clip(wanted.astype(jnp.int32), state.batch_size, max_batch_size)
        if variant == "adagrad":
            out, rss_state = rss.update(updates, optax.ScaleByRssState(state.sum_of_squares))
            acc = rss_state.sum_of_squares
        else:
            acc_dtype = state.sum_of_squares.dtype
            sq = sum(jnp.sum(jnp.square(g.astype(acc_dtype))) for g in jax.tree.leaves(updates))
            acc = state.sum_of_squares + sq
            inv = jnp.where(acc > 0, jax.lax.rsqrt(acc + eps), 0.0)
            out = jax.tree.map(lambda g: (g * inv).astype(g.dtype), updates)
        new_state = AdAdaGradState(
            count=optax.safe_increment(state.count),
            sum_of_squares=acc,
            batch_size=new_batch,
            statistic=stat,
        )
        return out, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def adadagrad(
    learning_rate: optax.ScalarOrSchedule,
    *,
    batch_size: int,
    max_batch_size: int,
    test: Test = "norm",
    variant: Variant = "adagrad",
    eta: Any = 0.1,
    theta: Any = 0.1,
    nu: Any = 0.1,
    initial_accumulator_value: Any = 0.1,
    eps: Any = 1e-7,
) -> optax.GradientTransformationExtraArgs:
    r"""AdAdaGrad / AdAdaGrad-Norm: :func:`scale_by_adadagrad` followed by the learning rate.

    .. math:: \theta_{k+1} = \theta_k - \alpha\, g_k / \sqrt{s_k + \epsilon}

    with the batch size for step :math:`k+1` reported in the state. ``update`` needs the extra
    argument ``per_example_grads``.

    Args:
        learning_rate: :math:`\alpha`, a float or an optax schedule.
        batch_size: initial batch size.
        max_batch_size: cap on the batch size.
        test: ``"norm"``, ``"inner_product"`` or ``"augmented"``.
        variant: ``"adagrad"`` or ``"adagrad_norm"``.
        eta: norm-test constant.
        theta: inner-product-test constant.
        nu: orthogonality-test constant.
        initial_accumulator_value: starting accumulator.
        eps: added inside the square root.

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Examples:
        >>> import jax.numpy as jnp, optax
        >>> from gradlab.transforms import adadagrad
        >>> opt = adadagrad(0.1, batch_size=4, max_batch_size=128)
        >>> state = opt.init(jnp.zeros(3))
        >>> per_ex = jnp.array([[1.0, 0.0, 2.0], [1.2, 0.1, 1.8], [0.8, -0.1, 2.2], [1.0, 0.0, 2.0]])
        >>> u, state = opt.update(per_ex.mean(0), state, per_example_grads=per_ex)
        >>> int(optax.tree.get(state, "batch_size"))  # 0.06 / (0.01 * 5) = 1.2: stays at 4
        4

    References:
        Lau, Liu, Kolar, 2024. https://arxiv.org/abs/2402.11215
    """
    check_learning_rate(learning_rate)
    return optax.chain(
        scale_by_adadagrad(
            batch_size=batch_size,
            max_batch_size=max_batch_size,
            test=test,
            variant=variant,
            eta=eta,
            theta=theta,
            nu=nu,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )
