"""Kronecker-factored operators in eigen form: ``(Q_A (x) Q_G) diag(s) (Q_A (x) Q_G)^T``.

Both K-FAC (scales ``lambda_A lambda_G^T``) and EK-FAC (scales replaced by projected
second moments) are this operator; products and damped inverses cost two small matrix
products per side and layer, and never form a Kronecker product.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradlab._src.errors import check_real, check_same_structure
from gradlab.curvature._kfac_capture import Plan

__all__ = [
    "EKFAC",
    "EigenFactors",
    "FactoredOperator",
    "apply_blocks",
    "check_damping",
    "like_of",
    "vector_leaves",
]


class EigenFactors(NamedTuple):
    """One layer in eigen form (EK-FAC's ``factors`` entries).

    Attributes:
        qa: ``(d_in, d_in)`` eigenvectors of the input covariance ``A`` (``None`` for an
            ``Embed``, whose ``A`` is diagonal: the basis is the identity).
        qg: ``(d_out, d_out)`` eigenvectors of the output-gradient covariance ``G``.
        scales: ``(d_in, d_out)`` the kernel block's eigenvalues in the basis
            ``qa (x) qg`` (``d_in`` is the flattened fan-in, e.g. ``kh * kw * c_in``).
        bias_scales: ``(d_out,)`` the bias block's eigenvalues in the basis ``qg``, or
            ``None`` if the layer has no bias.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (3, 4, 2))
        >>> batch = (jnp.ones((5, 3)), jnp.zeros((5, 2)))
        >>> f = gl.curvature.ekfac(apply_fn, "mse", params, batch).factors["params/Dense_1"]
        >>> f.qa.shape, f.qg.shape, f.scales.shape, f.bias_scales.shape
        ((4, 4), (2, 2), (4, 2), (2,))
    """

    qa: jax.Array | None
    qg: jax.Array
    scales: jax.Array
    bias_scales: jax.Array | None


def like_of(plan: Plan) -> Any:
    """The params pytree of ``plan`` as shape/dtype structs."""
    return jax.tree_util.tree_unflatten(
        plan.treedef,
        [jax.ShapeDtypeStruct(s, d) for s, d in zip(plan.shapes, plan.dtypes, strict=False)],
    )


def vector_leaves(plan: Plan, v: Any, name: str = "v") -> list:
    """Check ``v`` against the params of ``plan``; return its leaves."""
    check_same_structure(name, v, like_of(plan))
    return [jnp.asarray(x) for x in plan.treedef.flatten_up_to(v)]


def check_damping(damping: Any) -> Any:
    """``damping >= 0`` (Python numbers checked here, arrays passed through)."""
    return check_real("damping", damping, 0.0)


def apply_blocks(
    plan: Plan,
    v: Any,
    kernel_fn: Callable[[Any, Any, jax.Array], jax.Array],
    bias_fn: Callable[[Any, Any, jax.Array], jax.Array],
    diag_fn: Callable[[str, jax.Array], jax.Array],
    factors: dict,
) -> Any:
    """Apply a per-layer map to the leaves of ``v`` (kernels as ``(d_in, d_out)`` matrices)."""
    leaves = vector_leaves(plan, v)
    out: list = [None] * len(leaves)
    for g in plan.groups:
        f = factors[g.name]
        shape, dtype = plan.shapes[g.kernel], plan.dtypes[g.kernel]
        w = leaves[g.kernel].reshape(-1, shape[-1])
        out[g.kernel] = kernel_fn(g, f, w).reshape(shape).astype(dtype)
        if g.bias is not None:
            out[g.bias] = bias_fn(g, f, leaves[g.bias]).astype(plan.dtypes[g.bias])
    for i in plan.uncovered:
        out[i] = diag_fn(plan.paths[i], leaves[i]).astype(plan.dtypes[i])
    return jax.tree_util.tree_unflatten(plan.treedef, out)


def _rotate(f: EigenFactors, w: jax.Array) -> jax.Array:
    """``Q_A^T W Q_G`` (``Q_A = I`` for an Embed)."""
    w = w.astype(f.qg.dtype) @ f.qg
    return w if f.qa is None else f.qa.T @ w


def _unrotate(f: EigenFactors, w: jax.Array) -> jax.Array:
    w = w @ f.qg.T
    return w if f.qa is None else f.qa @ w


class FactoredOperator:
    """Pytree plumbing shared by :class:`EKFAC` and ``KFAC``: the per-layer ``factors`` and the
    ``diagonal`` of uncovered leaves are children, the capture ``plan`` is static. Subclasses
    register themselves with ``jax.tree_util.register_pytree_node_class``."""

    def __init__(self, factors: dict, diagonal: dict, plan: Plan):
        self.factors = factors
        self.diagonal = diagonal
        self.plan = plan

    def tree_flatten(self) -> tuple[tuple, Plan]:
        return (self.factors, self.diagonal), self.plan

    @classmethod
    def tree_unflatten(cls, plan: Plan, children: tuple) -> FactoredOperator:
        return cls(*children, plan)


@jax.tree_util.register_pytree_node_class
class EKFAC(FactoredOperator):
    r"""A Kronecker-factored operator in eigen form (what :func:`ekfac` returns).

    Per covered layer, the kernel block is :math:`(Q_A \otimes Q_G)\,\mathrm{diag}(s)\,
    (Q_A \otimes Q_G)^\top` and the bias block :math:`Q_G \mathrm{diag}(s_b) Q_G^\top`;
    leaves not used by a supported layer carry a diagonal. A registered pytree: it can be
    returned from ``jit`` and passed through ``vmap`` / ``lax`` loops.

    Attributes:
        factors: ``{layer name: EigenFactors(qa, qg, scales, bias_scales)}``, the layer name
            being the kernel's path without its last component (``"params/Dense_0"``).
        diagonal: ``{leaf path: array shaped like the leaf}`` for the uncovered leaves.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (3, 4, 2))
        >>> x, y = jnp.ones((5, 3)), jnp.zeros(5, jnp.int32)
        >>> ek = gl.curvature.ekfac(apply_fn, "softmax_cross_entropy", params, (x, y))
        >>> v = jax.tree.map(jnp.ones_like, params)
        >>> w = ek.inverse(0.1)(ek.matvec(v))  # (E + 0.1 I)^{-1} E v
        >>> jax.tree.structure(w) == jax.tree.structure(params)
        True
    """

    def matvec(self, v: Any) -> Any:
        """The operator times ``v`` (a pytree like the params)."""

        def kernel(g, f, w):
            return _unrotate(f, _rotate(f, w) * f.scales)

        def bias(g, f, b):
            return f.qg @ ((f.qg.T @ b.astype(f.qg.dtype)) * f.bias_scales)

        return apply_blocks(
            self.plan, v, kernel, bias, lambda p, x: self.diagonal[p] * x, self.factors
        )

    def inverse(self, damping: Any) -> Callable[[Any], Any]:
        r"""``v -> (E + damping I)^{-1} v``, exact for this operator.

        Args:
            damping: a real ``>= 0`` (an array is accepted, e.g. a traced hyperparameter).

        Returns:
            A function on params-shaped pytrees.
        """
        damping = check_damping(damping)

        def kernel(g, f, w):
            return _unrotate(f, _rotate(f, w) / (f.scales + damping))

        def bias(g, f, b):
            return f.qg @ ((f.qg.T @ b.astype(f.qg.dtype)) / (f.bias_scales + damping))

        def diag(p, x):
            return x / (self.diagonal[p] + damping)

        return lambda v: apply_blocks(self.plan, v, kernel, bias, diag, self.factors)
