"""TRAK: random-projected per-example gradients and the after-kernel attribution scores."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import lax

from gradlab._src.errors import check_choice, check_real
from gradlab._src.tree import tree_size
from gradlab._src.typing import Batch, Params
from gradlab.attribution._common import (
    check_callable,
    check_labels,
    check_scalar_loss,
    first_example_batch,
    gradient_chunk_size,
    map_examples,
    num_examples,
    num_models,
    one_example,
    split_supervised_batch,
    static_fn,
)
from gradlab.attribution._projection import PROJECTIONS, check_dim, make_projector
from gradlab.attribution._tracin import flat_grad_fn

__all__ = ["trak_features", "trak_scores"]


@partial(jax.jit, static_argnums=(0,), static_argnames=("dim", "projection", "chunk_size"))
def _features(fn, params, batch, key, *, dim, projection, chunk_size):
    project = make_projector(projection, key, params, dim)
    return map_examples(flat_grad_fn(fn, params, project), batch, chunk_size)


def trak_features(
    loss_fn: Callable[[Params, Batch], jax.Array],
    params: Params,
    batch: Batch,
    *,
    dim: int,
    key: jax.Array,
    projection: Literal["rademacher", "kronecker"] = "rademacher",
    chunk_size: int | None = None,
) -> jax.Array:
    r"""Randomly projected per-example gradients, never storing the ``(N, P)`` gradient matrix.

    .. math:: \phi_i = R^\top \nabla_\theta\, \mathrm{loss\_fn}(\theta, \{z_i\}),

    where :math:`R \in \mathbb{R}^{P \times d}` has i.i.d. Rademacher entries :math:`\pm 1/\sqrt{d}`
    drawn from ``key`` (the same key gives the same :math:`R`, so train and test features are
    comparable), so :math:`\langle \phi_i, \phi_j \rangle` is an unbiased, Johnson-Lindenstrauss
    estimate of :math:`\langle g_i, g_j \rangle`. The ``N x P`` gradient matrix is never formed:
    gradients are computed one chunk of examples at a time and projected at once, and
    :math:`R` itself is generated in row blocks of at most :math:`2^{22}` entries inside a scan,
    so memory is ``O(N d + chunk P + 2^{22})``.

    The dense projection costs ``P d`` multiply-adds per example, far more than the gradient
    itself for ``d`` in the thousands. ``projection="kronecker"`` instead reshapes the flat
    gradient (zero-padded) to a near-square ``a x b`` matrix :math:`M` and returns
    :math:`\mathrm{vec}(R_a^\top M R_b)`, i.e. the projection :math:`R = R_a \otimes R_b` with
    small Rademacher factors (``k_a k_b = d``): about ``P sqrt(d)`` multiply-adds, still unbiased,
    with heavier tails than i.i.d. entries (Jin, Kolda, Ward, arXiv 1909.04801). It works for any
    ``loss_fn``; exploiting the outer-product structure of each Dense layer's gradient would
    also skip forming the gradient, but needs per-layer hooks and saves little more, since
    forming the gradient is already the cheap part.

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``, differentiated on each example as a batch
            of size one (for TRAK proper, the model-output function, e.g. the margin, see
            :func:`trak_scores`).
        params: point at which the gradients are taken.
        batch: pytree of arrays sharing a leading example axis of size ``N``.
        dim: projection dimension ``d >= 1``.
        key: PRNG key of the projection.
        projection: ``"rademacher"`` (i.i.d. entries, ``P x dim`` multiply-adds per example) or
            ``"kronecker"`` (``R_a ⊗ R_b`` on the gradient reshaped to a near-square matrix,
            about ``P sqrt(dim)``; unbiased too, with heavier tails; pick ``dim`` with a
            balanced factorisation such as a power of two).
        chunk_size: examples per vmapped chunk; ``None`` picks as many as keep one chunk of
            gradients within 2**24 entries (all ``N`` for small models).

    Returns:
        ``(N, dim)`` features.

    Raises:
        ValueError: ``dim < 1``, batch leaves with different leading sizes, ``chunk_size < 1``
            or a non-scalar ``loss_fn``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> def loss_fn(w, batch):
        ...     return jnp.mean(batch @ w)  # gradient of example i is x_i
        >>> x = jnp.eye(3)[:2] * 2.0
        >>> phi = gl.attribution.trak_features(loss_fn, jnp.zeros(3), x, dim=8,
        ...                                    key=jax.random.key(0))
        >>> phi.shape
        (2, 8)
        >>> jnp.sum(phi**2, axis=1)  # Rademacher: norms of coordinate vectors are exact
        Array([4., 4.], dtype=float32)

    References:
        Park, Georgiev, Ilyas, Leclerc, Madry, "TRAK: Attributing Model Behavior at Scale",
        ICML 2023, https://arxiv.org/abs/2303.14186. Jin, Kolda, Ward, "Faster
        Johnson-Lindenstrauss transforms via Kronecker products", https://arxiv.org/abs/1909.04801.
    """
    check_callable("loss_fn", loss_fn)
    dim = check_dim("dim", dim)
    check_choice("projection", projection, PROJECTIONS)
    chunk_size = gradient_chunk_size(chunk_size, tree_size(params))
    num_examples("batch", batch)
    check_scalar_loss("loss_fn", loss_fn, params, batch)
    return _features(
        static_fn(loss_fn),
        params,
        batch,
        key,
        dim=dim,
        projection=projection,
        chunk_size=chunk_size,
    )


def margin_fn(apply_fn: Any) -> Callable[[Params, Batch], jax.Array]:
    """TRAK's classification output on a batch of one ``(inputs, label)``.

    ``log(p_y / (1 - p_y)) = z_y - logsumexp_{k != y} z_k`` for logits ``z``.
    """

    def margin(params: Params, batch: Batch) -> jax.Array:
        x, y = batch
        logits = apply_fn(params, x)[0]
        correct = jnp.arange(logits.shape[-1]) == y[0]
        others = jax.nn.logsumexp(jnp.where(correct, -jnp.inf, logits))
        return jnp.sum(jnp.where(correct, logits, 0.0)) - others

    return margin


@partial(
    jax.jit, static_argnums=(0,), static_argnames=("dim", "projection", "stacked", "chunk_size")
)
def _scores(apply_fn, params, train, test, key, damping, *, dim, projection, stacked, chunk_size):
    margin = margin_fn(apply_fn)

    def one_model(m: jax.Array, p: Params) -> tuple[jax.Array, jax.Array]:
        project = make_projector(projection, jax.random.fold_in(key, m), p, dim)
        feature = flat_grad_fn(margin, p, project)
        phi = map_examples(feature, train, chunk_size)  # (N_train, d)
        phi_test = map_examples(feature, test, chunk_size)  # (N_test, d)
        kernel = phi.T @ phi + damping * jnp.eye(dim, dtype=phi.dtype)
        evals, evecs = jnp.linalg.eigh(kernel)
        cutoff = evals[-1] * dim * jnp.finfo(evals.dtype).eps
        inv = jnp.where(evals > cutoff, 1.0 / jnp.where(evals > cutoff, evals, 1.0), 0.0)
        scores = ((phi_test @ evecs) * inv) @ (phi @ evecs).T  # phi_t (Phi^T Phi)^+ Phi^T
        q = map_examples(lambda z: jax.nn.sigmoid(-margin(p, one_example(z))), train, chunk_size)
        return scores, q  # q = 1 - p_y: TRAK's out-to-loss reweighting

    if not stacked:
        scores, q = one_model(jnp.asarray(0), params)
        return scores * q[None, :]

    def step(carry, inputs):
        s, q = one_model(*inputs)
        return (carry[0] + s, carry[1] + q), None

    k = jax.tree_util.tree_leaves(params)[0].shape[0]
    n_train = jax.tree_util.tree_leaves(train)[0].shape[0]
    n_test = jax.tree_util.tree_leaves(test)[0].shape[0]
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
    init = (jnp.zeros((n_test, n_train), dtype), jnp.zeros((n_train,), dtype))
    (s, q), _ = lax.scan(step, init, (jnp.arange(k), params))
    return (s / k) * (q / k)[None, :]


def trak_scores(
    apply_fn: Callable[[Params, Any], jax.Array],
    params: Params,
    train_batch: Batch,
    test_batch: Batch,
    *,
    dim: int,
    key: jax.Array,
    stacked: bool = False,
    damping: float = 0.0,
    projection: Literal["rademacher", "kronecker"] = "rademacher",
    chunk_size: int | None = None,
) -> jax.Array:
    r"""TRAK attribution scores of a classifier, ensembled over models.

    For each model :math:`m` (params :math:`\theta_m`) TRAK linearises the model-output function
    :math:`f(\theta, z) = \log\frac{p_y}{1 - p_y}` (the margin of the correct class), projects
    its per-example gradients, :math:`\Phi_m = [\phi_m(z_j)]_j` with :func:`trak_features`, and
    takes the one-step Newton estimate of removing each training example from logistic
    regression on those features:

    .. math:: \tau(z', z_j) = \Bigl(\frac{1}{M}\sum_m \phi_m(z')^\top
              (\Phi_m^\top\Phi_m + \lambda I)^{-1} \phi_m(z_j)\Bigr)\,
              \Bigl(\frac{1}{M}\sum_m Q_{m,j}\Bigr), \qquad Q_{m,j} = 1 - p_y(z_j; \theta_m),

    the out-to-loss reweighting :math:`Q` of Park et al. (their soft-thresholding step is
    omitted). The inverse is a pseudo-inverse through an eigendecomposition of the ``d x d``
    kernel (eigenvalues below ``d eps lambda_max`` dropped), so ``N_train < d`` with
    ``damping=0`` is well defined. Each model gets its own projection (``fold_in(key, m)``).

    Args:
        apply_fn: ``apply_fn(params, inputs) -> logits (batch, C)``.
        params: one model, or (``stacked=True``) ``M`` models stacked along a leading axis
            (independently trained models or checkpoints), scanned one at a time.
        train_batch: ``(inputs, labels)``, ``N_train`` examples with integer labels in
            ``[0, C)``.
        test_batch: ``(inputs, labels)``, ``N_test`` examples.
        dim: projection dimension ``d >= 1`` (Park et al. use thousands).
        key: PRNG key of the projections.
        projection: ``"rademacher"`` (i.i.d. entries, ``P x dim`` multiply-adds per example) or
            ``"kronecker"`` (``R_a ⊗ R_b`` on the gradient reshaped to a near-square matrix,
            about ``P sqrt(dim)``; unbiased too, with heavier tails; pick ``dim`` with a
            balanced factorisation such as a power of two).
        stacked: whether ``params`` has a leading model axis.
        damping: ridge :math:`\lambda \ge 0` added to :math:`\Phi^\top\Phi`.
        chunk_size: examples per vmapped chunk; ``None`` picks as many as keep one chunk of
            gradients within 2**24 entries (all ``N`` for small models).

    Returns:
        ``(N_test, N_train)`` scores.

    Raises:
        ValueError: ``dim < 1``, ``damping < 0``, labels out of range, logits that are not
            ``(batch, C)``, batch leaves with different leading sizes or ``chunk_size < 1``.
        TypeError: a batch is not an ``(inputs, labels)`` pair.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> def apply_fn(w, x):
        ...     return x @ w
        >>> x = jax.random.normal(jax.random.key(1), (6, 3)); y = jnp.array([0, 1, 0, 1, 0, 1])
        >>> tau = gl.attribution.trak_scores(apply_fn, jnp.zeros((3, 2)), (x, y), (x[:2], y[:2]),
        ...                                  dim=16, key=jax.random.key(0))
        >>> tau.shape
        (2, 6)

    References:
        Park, Georgiev, Ilyas, Leclerc, Madry, "TRAK: Attributing Model Behavior at Scale",
        ICML 2023, https://arxiv.org/abs/2303.14186.
    """
    check_callable("apply_fn", apply_fn)
    dim = check_dim("dim", dim)
    check_choice("projection", projection, PROJECTIONS)
    check_real("damping", damping, 0.0)
    one = jax.tree_util.tree_map(lambda p: p[0], params) if stacked else params
    chunk_size = gradient_chunk_size(chunk_size, tree_size(one))
    if stacked:
        num_models("params", params)
    for name, batch in (("train_batch", train_batch), ("test_batch", test_batch)):
        inputs, labels = split_supervised_batch(name, batch)
        num_examples(name, batch)
        out = jax.eval_shape(apply_fn, one, first_example_batch(inputs))
        if len(getattr(out, "shape", ())) != 2:
            raise ValueError(
                f"apply_fn must return logits of shape (batch, num_classes), got "
                f"{getattr(out, 'shape', type(out).__name__)} for a batch of one"
            )
        if jnp.ndim(labels) != 1:
            raise ValueError(f"{name} labels must have shape (N,), got {jnp.shape(labels)}")
        check_labels(f"{name} labels", labels, out.shape[1])
    check_scalar_loss("the TRAK margin", margin_fn(apply_fn), one, train_batch)
    return _scores(
        static_fn(apply_fn),
        params,
        train_batch,
        test_batch,
        key,
        jnp.asarray(damping),
        dim=dim,
        projection=projection,
        stacked=bool(stacked),
        chunk_size=chunk_size,
    )
