"""K-FAC: a block-diagonal Kronecker-factored approximation of the GGN / Fisher."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gradlab._src.typing import Batch, Params, PRNGKey
from gradlab.curvature._kfac_build import Rows, per_example, prepare
from gradlab.curvature._kfac_capture import Plan
from gradlab.curvature._kfac_eigen import (
    EKFAC,
    EigenFactors,
    FactoredOperator,
    apply_blocks,
    check_damping,
)

__all__ = ["KFAC", "Factors", "kfac"]


class Factors(NamedTuple):
    """The two Kronecker factors of one layer (K-FAC's ``factors`` entries).

    Attributes:
        a: ``(d_in, d_in)`` input covariance (``d_in`` the flattened fan-in, ``kh * kw * c_in``
            for a convolution); ``(num_embeddings,)`` for an ``Embed``, whose ``A`` is diagonal.
        g: ``(d_out, d_out)`` output-gradient covariance; the bias block is ``g`` itself.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (3, 4, 2))
        >>> kf = gl.curvature.kfac(apply_fn, "mse", params, (jnp.ones((5, 3)), jnp.zeros((5, 2))))
        >>> a, g = kf.factors["params/Dense_1"]
        >>> a.shape, g.shape
        ((4, 4), (2, 2))
    """

    a: jax.Array
    g: jax.Array


def factors_of(plan: Plan, rows: dict[str, Rows]) -> dict[str, Factors]:
    """One shard's ``A = sum_n w_n mean_t a a^T``, ``G = sum_n w_n sum_(k, t) g g^T`` per layer.

    Summed over the shards (``reduce``), with ``w_n = 1 / N_true``: ``A`` is the mean over the
    true ``(n, t)`` and ``G`` carries the loss's ``1 / N``.
    """
    out = {}
    for grp in plan.groups:
        a, g, w = rows[grp.name]
        positions = a.shape[1]
        if grp.kind == "embed":
            num = plan.shapes[grp.kernel][0]
            wa = jnp.broadcast_to(per_example(w, 2), a.shape).reshape(-1)
            ca = jnp.zeros(num, g.dtype).at[a.reshape(-1)].add(wa) / positions
        else:
            ca = _weighted_gram("nti,ntj->ij", a, w, 0) / positions
        out[grp.name] = Factors(ca, _weighted_gram("knto,kntp->op", g, w, 1))
    return out


def _weighted_gram(spec: str, x: jax.Array, w: jax.Array, axis: int) -> jax.Array:
    """``einsum(spec, x * w, x)`` with ``w`` over the example axis ``axis`` of ``x``."""
    if w.ndim == 0:  # equal weights: scale the (small) result, not the rows
        return w * jnp.einsum(spec, x, x)
    return jnp.einsum(spec, x * per_example(w, x.ndim - axis), x)


def _eigh(m: jax.Array) -> tuple[jax.Array, jax.Array]:
    lam, q = jnp.linalg.eigh((m + m.T) / 2)
    return jnp.clip(lam, 0.0), q


def eigen_of(plan: Plan, factors: dict[str, Factors], diagonal: dict) -> EKFAC:
    """K-FAC in eigen form: an :class:`EKFAC` with scales ``lambda_A lambda_G^T``."""
    out = {}
    for grp in plan.groups:
        f = factors[grp.name]
        lam_g, qg = _eigh(f.g)
        if grp.kind == "embed":
            lam_a, qa = f.a, None
        else:
            lam_a, qa = _eigh(f.a)
        bias = lam_g if grp.bias is not None else None
        out[grp.name] = EigenFactors(qa, qg, lam_a[:, None] * lam_g[None, :], bias)
    return EKFAC(out, dict(diagonal), plan)


@jax.tree_util.register_pytree_node_class
class KFAC(FactoredOperator):
    r"""The K-FAC approximation returned by :func:`kfac` (a registered pytree).

    Attributes:
        factors: ``{layer name: Factors(a, g)}``, the layer name being the kernel's path
            without its last component (``"params/Dense_0"``).
        diagonal: ``{leaf path: array shaped like the leaf}``, the exact diagonal of the
            approximated operator on the leaves that no supported layer uses.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (3, 4, 2))
        >>> kf = gl.curvature.kfac(apply_fn, "mse", params, (jnp.ones((5, 3)), jnp.zeros((5, 2))))
        >>> sorted(kf.factors)
        ['params/Dense_0', 'params/Dense_1']
        >>> kf.factors["params/Dense_0"].a.shape, kf.factors["params/Dense_0"].g.shape
        ((3, 3), (4, 4))
    """

    def matvec(self, v: Any) -> Any:
        r"""``K v``: per layer :math:`A V G` on the kernel ``V`` (as ``(d_in, d_out)``), ``b G``."""

        def kernel(grp, f, w):
            w = w.astype(f.g.dtype)
            if grp.kind == "embed":
                return f.a[:, None] * (w @ f.g)
            return f.a @ w @ f.g

        return apply_blocks(
            self.plan,
            v,
            kernel,
            lambda grp, f, b: b.astype(f.g.dtype) @ f.g,
            lambda p, x: self.diagonal[p] * x,
            self.factors,
        )

    def eigen(self) -> EKFAC:
        """The same operator in eigen form (eigendecompositions of every ``A`` and ``G``)."""
        return eigen_of(self.plan, self.factors, self.diagonal)

    def inverse(self, damping: Any) -> Callable[[Any], Any]:
        r"""``v -> (K + damping I)^{-1} v``, exact, through the factors' eigendecompositions.

        With :math:`A = Q_A \Lambda_A Q_A^\top` and :math:`G = Q_G \Lambda_G Q_G^\top`, the
        kernel block's inverse is :math:`Q_A [(Q_A^\top V Q_G) \oslash (\lambda_A \lambda_G^\top
        + \delta)] Q_G^\top` (no factored-damping approximation). The eigendecompositions run
        once per call of ``inverse``; the returned function reuses them.

        Args:
            damping: a real ``>= 0`` (arrays accepted, e.g. a traced hyperparameter).

        Returns:
            A function on params-shaped pytrees.
        """
        check_damping(damping)
        return self.eigen().inverse(damping)


def kfac(
    model_fn: Callable[[Params, Any], Any],
    loss_fn: Callable[[Any, Any], jax.Array] | str,
    params: Params,
    batch: Batch,
    *,
    fisher_type: Literal["type2", "mc", "empirical"] = "type2",
    key: PRNGKey | None = None,
    kfac_approx: Literal["expand", "reduce"] = "expand",
    num_samples: int = 1,
) -> KFAC:
    r"""Kronecker-factored approximate curvature (K-FAC) of the GGN, Fisher or empirical Fisher.

    Every approximated operator has the form :math:`C = \sum_n J_n^\top M_n J_n` (sum over
    examples, :math:`J_n` the Jacobian of example ``n``'s outputs). For a layer
    :math:`y_t = W^\top a_t` applied at positions ``t`` with output cotangents
    :math:`g_{t,k} = J_{y_t}^\top s_k` (columns :math:`M_n = \sum_k s_k s_k^\top`), K-FAC keeps
    one block per layer and factors it:

    .. math:: C_W \approx A \otimes G, \qquad
        A = \frac{1}{N T} \sum_{n,t} a_{nt} a_{nt}^\top, \qquad
        G = \sum_{n,t,k} g_{ntk} g_{ntk}^\top,

    with ``kfac_approx="expand"`` (positions count as examples) or, with ``"reduce"``, the
    inputs averaged and cotangents summed over positions first (Eschenhagen et al. 2023). The
    bias is its own block, :math:`G`. The columns are those of the operator K-FAC stands for:

    * ``"type2"``: :math:`M_n` = the output Hessian of ``loss_fn``: approximates
      :func:`ggn` (same loss, reduction and scale). Closed-form square roots for
      ``softmax_cross_entropy`` and ``mse``; any other loss through its Hessian on each
      example as a batch of one (so it matches :func:`ggn` for losses that average examples).
    * ``"mc"``: scores of ``num_samples`` labels sampled per position with ``key``, drawn as
      :func:`fisher` draws them: approximates ``fisher(..., key=key, num_samples=...)`` with
      the likelihood of the loss (categorical for cross-entropy, gaussian for mse).
    * ``"empirical"``: the data-label gradient: approximates :func:`empirical_fisher` of
      ``lambda p, b: loss_fn(model_fn(p, b[0]), b[1])``.

    K-FAC is exact (equal to the layer blocks of the operator) for deep linear networks with
    mse and any batch size (expand), for any network on a batch of one example, for deep linear
    convolutions with a per-position mse (expand) and with average-pooled outputs (reduce).

    **Layers.** Found through ``flax.linen.intercept_methods`` (public flax API, no graph
    tags): ``flax.linen.Dense``, ``flax.linen.Conv`` (2-D, any stride, padding and dilation;
    one feature group, no mask) and ``flax.linen.Embed`` (its ``A`` is diagonal and it always
    uses "expand"), called through ``__call__``, whose kernels are leaves of ``params``. A
    kernel shared by several calls collects all of them as extra positions. Every other leaf
    (normalisation scales, custom layers, tied weights used through ``attend``) gets its exact
    diagonal. Examples are treated as independent: ``model_fn`` runs on each example as a
    batch of one (vmapped). A kernel that ``model_fn`` also reads outside its layer (a raw
    matmul) is not detected.

    Cost: one forward and ``K`` backward passes (batched), with ``K`` the columns per example
    (``C`` per position for type-2 cross-entropy, the output size for type-2 mse,
    ``num_samples`` for mc, one for empirical); memory ``O(sum d_in^2 + d_out^2)``.

    **Data parallel.** If the example axis of ``batch`` is split over a device mesh (e.g. by
    :func:`gradlab.distributed.shard_batch`), each device captures its own shard inside
    ``jax.shard_map`` and the per-shard sums of :math:`A`, :math:`G` and the diagonal are
    ``psum``-ed: the same factors as on one device (mc labels are drawn for the whole batch
    first), one shard's activations per device. A :class:`gradlab.distributed.MaskedBatch`
    weights the true examples by ``1 / N_true`` and padding by zero. See the Scaling out guide.

    Args:
        model_fn: ``model_fn(params, inputs) -> outputs`` (a flax linen ``apply``).
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, or ``"softmax_cross_entropy"`` /
            ``"mse"``.
        params: the variables ``model_fn`` takes.
        batch: ``(inputs, targets)`` sharing a leading example axis, or a
            :class:`gradlab.distributed.MaskedBatch` of it.
        fisher_type: ``"type2"``, ``"mc"`` or ``"empirical"``.
        key: PRNG key, required for ``"mc"``.
        kfac_approx: ``"expand"`` or ``"reduce"``.
        num_samples: labels sampled per position for ``"mc"`` (``>= 1``).

    Returns:
        A :class:`KFAC` pytree with ``matvec(v)``, ``inverse(damping)(v)``, ``eigen()``,
        ``factors`` and ``diagonal``; ``kfac`` itself runs inside ``jit``.

    Raises:
        ValueError: unknown ``fisher_type``/``kfac_approx``, ``"mc"`` without ``key`` or
            with another loss, params that do not fit ``model_fn``, no supported layer,
            integer labels outside ``[0, C)`` for cross-entropy (when concrete).
        TypeError: ``batch`` is not a pair, a function is not callable.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (3, 4, 2))
        >>> x = jnp.ones((1, 3)); y = jnp.array([1])
        >>> kf = gl.curvature.kfac(apply_fn, "softmax_cross_entropy", params, (x, y))
        >>> ggn = gl.curvature.ggn(apply_fn, "softmax_cross_entropy", params, (x, y))
        >>> block = gl.curvature.restrict(ggn, params, "Dense_1/kernel")  # one example: exact
        >>> v = jax.tree.map(jnp.zeros_like, block.like)
        >>> v["params"]["Dense_1"]["kernel"] = jnp.ones((4, 2))
        >>> kv = block.extract(kf.matvec(block.embed(v)))["params"]["Dense_1"]["kernel"]
        >>> bool(jnp.allclose(kv, block.matvec(v)["params"]["Dense_1"]["kernel"], atol=1e-6))
        True

    References:
        Martens, Grosse, "Optimizing neural networks with Kronecker-factored approximate
        curvature", ICML 2015, https://arxiv.org/abs/1503.05671. Grosse, Martens, "A
        Kronecker-factored approximate Fisher matrix for convolution layers", ICML 2016,
        https://arxiv.org/abs/1602.01407. Eschenhagen et al., "Kronecker-factored approximate
        curvature for modern neural network architectures", NeurIPS 2023,
        https://arxiv.org/abs/2311.00636.
    """
    return prepare(
        "kfac",
        model_fn,
        loss_fn,
        params,
        batch,
        fisher_type,
        key,
        kfac_approx,
        num_samples,
        finish_kfac,
    )


def finish_kfac(plan: Plan, rows: dict[str, Rows], diagonal: dict, reduce: Callable) -> KFAC:
    factors, diagonal = reduce((factors_of(plan, rows), diagonal))
    return KFAC(factors, diagonal, plan)
