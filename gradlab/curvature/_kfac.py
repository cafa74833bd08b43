"""K-FAC: a block-diagonal Kronecker-factored approximation of the GGN / Fisher."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gradlab._src.errors import check_choice, check_int
from gradlab._src.typing import Batch, Params, PRNGKey
from gradlab.curvature._checks import (
    check_callable,
    check_labels,
    check_scalar_loss,
    num_examples,
    split_supervised_batch,
)
from gradlab.curvature._fisher import _check_key
from gradlab.curvature._ggn import resolve_loss
from gradlab.curvature._kfac_capture import (
    SUPPORTED_LAYERS,
    Plan,
    discover,
    layer_inputs,
    make_forward,
)
from gradlab.curvature._kfac_columns import likelihood_of, output_columns
from gradlab.curvature._kfac_eigen import (
    EKFAC,
    EigenFactors,
    FactoredOperator,
    apply_blocks,
    check_damping,
)

__all__ = ["KFAC", "Factors", "kfac"]

FISHER_TYPES = ("type2", "mc", "empirical")
KFAC_APPROX = ("expand", "reduce")


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


class Rows(NamedTuple):
    """Per-layer statistics: inputs ``(N, T, d_in)`` and cotangents ``(K, N, T, d_out)``."""

    a: jax.Array
    g: jax.Array


def prepare(
    where: str,
    model_fn: Callable,
    loss_fn: Any,
    params: Params,
    batch: Batch,
    fisher_type: str,
    key: PRNGKey | None,
    kfac_approx: str,
    num_samples: int,
    finish: Callable[[Plan, dict[str, Rows], dict[str, jax.Array]], Any],
) -> Any:
    """Check the arguments, capture every covered layer, return ``finish(plan, rows, diag)``.

    ``finish`` must be a module-level function (it is a static argument of the compiled
    construction).
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
    inputs, targets = split_supervised_batch("batch", batch)
    n = num_examples("batch", batch)
    try:
        outputs = jax.eval_shape(model_fn, params, inputs)
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
    check_scalar_loss("loss_fn", loss_fn, outputs, targets)
    if likelihood_of(loss_fn) == "categorical":
        check_labels("batch targets", outputs.shape, targets)
    one = jax.tree_util.tree_map(lambda a: a[:1], inputs)
    plan = discover(model_fn, params, one)
    if not plan.groups:
        raise ValueError(
            f"{where} found no supported layer in model_fn: it needs flax linen layers "
            f"({', '.join(SUPPORTED_LAYERS)}) called through __call__ whose parameters are "
            "leaves of params (pass the variables dict that module.apply receives)"
        )
    static = (model_fn, loss_fn, n, plan, fisher_type, num_samples, kfac_approx, finish)
    try:
        hash(static)
    except TypeError:  # an unhashable callable: run op by op (or inside the caller's jit)
        return _build(params, inputs, targets, key, static=static)
    return _build_jit(params, inputs, targets, key, static=static)


def _build(params: Params, inputs: Any, targets: Any, key: Any, *, static: tuple) -> Any:
    model_fn, loss_fn, n, plan, fisher_type, num_samples, kfac_approx, finish = static
    rows, diagonal = _capture(
        model_fn,
        loss_fn,
        params,
        inputs,
        targets,
        n,
        plan,
        fisher_type,
        key,
        num_samples,
        kfac_approx,
    )
    return finish(plan, rows, diagonal)


# One compiled program per (model, loss, plan, options): eager calls do not dispatch op by op.
_build_jit = jax.jit(_build, static_argnames=("static",))


def _capture(
    model_fn, loss_fn, params, inputs, targets, n, plan, fisher_type, key, num_samples, kfac_approx
):
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
    cols = output_columns(loss_fn, fisher_type, outputs, targets, key, num_samples)
    cot = cols.reshape(cols.shape[0], *out.shape).astype(out.dtype)
    d_unc, d_eps = jax.vmap(vjp_fn)(cot)
    diagonal = {}
    for i, d in zip(plan.uncovered, d_unc, strict=True):
        dt = jnp.promote_types(plan.dtypes[i], jnp.float32)
        diagonal[plan.paths[i]] = jnp.sum(jnp.square(d.astype(dt)), axis=(0, 1))
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
        rows[g.name] = Rows(jax.lax.stop_gradient(a), jax.lax.stop_gradient(gg))
    return rows, diagonal


def factors_of(plan: Plan, rows: dict[str, Rows]) -> dict[str, Factors]:
    """``A = mean over (n, t) of a a^T``, ``G = sum over (k, n, t) of g g^T`` per layer."""
    out = {}
    for grp in plan.groups:
        a, g = rows[grp.name]
        count = a.shape[0] * a.shape[1]
        if grp.kind == "embed":
            num = plan.shapes[grp.kernel][0]
            ca = jnp.zeros(num, g.dtype).at[a.reshape(-1)].add(1.0) / count
        else:
            ca = jnp.einsum("nti,ntj->ij", a, a) / count
        out[grp.name] = Factors(ca, jnp.einsum("knto,kntp->op", g, g))
    return out


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

    Args:
        model_fn: ``model_fn(params, inputs) -> outputs`` (a flax linen ``apply``).
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, or ``"softmax_cross_entropy"`` /
            ``"mse"``.
        params: the variables ``model_fn`` takes.
        batch: ``(inputs, targets)`` sharing a leading example axis.
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


def finish_kfac(plan: Plan, rows: dict[str, Rows], diagonal: dict) -> KFAC:
    return KFAC(factors_of(plan, rows), diagonal, plan)
