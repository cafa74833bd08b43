"""EK-FAC: K-FAC's eigenbasis with the eigenvalues replaced by exact projected moments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp

from gradlab._src.typing import Batch, Params, PRNGKey
from gradlab.curvature._kfac import eigen_of, factors_of
from gradlab.curvature._kfac_build import Rows, per_example, prepare
from gradlab.curvature._kfac_capture import Plan
from gradlab.curvature._kfac_eigen import EKFAC, EigenFactors

__all__ = ["ekfac"]


def corrected(plan: Plan, rows: dict[str, Rows], eig: EKFAC) -> dict[str, EigenFactors]:
    r"""One shard's scales :math:`\sum_n w_n \sum_{t,k} (Q_A^\top a)^2 (Q_G^\top g)^\top{}^2`."""
    out = {}
    for grp in plan.groups:
        a, g, w = rows[grp.name]
        f = eig.factors[grp.name]
        pg2 = jnp.sum(jnp.square(g @ f.qg), axis=0)  # (n, T, d_out), summed over columns
        pg2 = pg2 * per_example(w, pg2.ndim)
        if grp.kind == "embed":
            num = plan.shapes[grp.kernel][0]
            scales = jnp.zeros((num, pg2.shape[-1]), pg2.dtype)
            scales = scales.at[a.reshape(-1)].add(pg2.reshape(-1, pg2.shape[-1]))
        else:
            pa2 = jnp.square(a @ f.qa)
            scales = jnp.einsum("nti,nto->io", pa2, pg2)
        bias = jnp.sum(pg2, axis=(0, 1)) if grp.bias is not None else None
        out[grp.name] = EigenFactors(f.qa, f.qg, scales, bias)
    return out


def ekfac(
    model_fn: Callable[[Params, Any], Any],
    loss_fn: Callable[[Any, Any], jax.Array] | str,
    params: Params,
    batch: Batch,
    *,
    fisher_type: Literal["type2", "mc", "empirical"] = "type2",
    key: PRNGKey | None = None,
    kfac_approx: Literal["expand", "reduce"] = "expand",
    num_samples: int = 1,
) -> EKFAC:
    r"""Eigenvalue-corrected K-FAC (EK-FAC): exact second moments in K-FAC's eigenbasis.

    With :func:`kfac`'s factors :math:`A = Q_A \Lambda_A Q_A^\top` and
    :math:`G = Q_G \Lambda_G Q_G^\top`, EK-FAC keeps the basis :math:`Q_A \otimes Q_G` and
    replaces the K-FAC eigenvalues :math:`\lambda_A \lambda_G^\top` by the second moments of
    the per-example gradients :math:`a_{nt} g_{ntk}^\top` projected onto it:

    .. math:: s_{ij} = \sum_{n,t,k} \bigl(Q_A^\top a_{nt}\bigr)_i^2
        \bigl(Q_G^\top g_{ntk}\bigr)_j^2,

    which is the diagonal of the operator's layer block in that basis (for a layer applied once
    per example; with weight sharing, positions count as examples under ``"expand"`` and the
    reduced :math:`(\bar a_n, \bar g_{nk})` are the examples under ``"reduce"``). Where K-FAC is
    exact the two coincide; otherwise EK-FAC is the better diagonal in the same basis
    (George et al. 2018). Bias blocks: :math:`s_j = \sum (Q_G^\top g)_j^2`; uncovered leaves:
    the exact diagonal, as in :func:`kfac`. Same arguments, loss, scale and layer rules as
    :func:`kfac`; the eigendecompositions run at construction (float32, float64 under x64).

    **Data parallel.** With the example axis of ``batch`` split over a device mesh (or a
    :class:`gradlab.distributed.MaskedBatch`), the factors are summed across shards as in
    :func:`kfac`, every device takes the same eigenbasis of the summed factors, and a second
    pass over its own shard's statistics gives projected moments that are ``psum``-ed in turn:
    the single-device result, one shard's activations per device.

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
        num_samples: labels sampled per position for ``"mc"``.

    Returns:
        An :class:`EKFAC` pytree with ``matvec(v)``, ``inverse(damping)(v)``, ``factors``
        (``{layer: EigenFactors(qa, qg, scales, bias_scales)}``) and ``diagonal``.

    Raises:
        ValueError, TypeError: as :func:`kfac`.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (3, 4, 2))
        >>> batch = (jnp.ones((5, 3)), jnp.array([0, 1, 1, 0, 1]))
        >>> ek = gl.curvature.ekfac(apply_fn, "softmax_cross_entropy", params, batch)
        >>> ek.factors["params/Dense_1"].scales.shape
        (4, 2)

    References:
        George, Laurent, Bouthillier, Ballas, Vincent, "Fast approximate natural gradient
        descent in a Kronecker-factored eigenbasis", NeurIPS 2018,
        https://arxiv.org/abs/1806.03884. Grosse et al., "Studying large language model
        generalization with influence functions", 2023, https://arxiv.org/abs/2308.03296.
    """
    return prepare(
        "ekfac",
        model_fn,
        loss_fn,
        params,
        batch,
        fisher_type,
        key,
        kfac_approx,
        num_samples,
        finish_ekfac,
    )


def finish_ekfac(plan: Plan, rows: dict[str, Rows], diagonal: dict, reduce: Callable) -> EKFAC:
    # Two passes over this shard's rows: the eigenbasis of the factors summed over all shards
    # (the same on every device), then the projected second moments, summed in turn.
    factors, diagonal = reduce((factors_of(plan, rows), diagonal))
    eig = eigen_of(plan, factors, diagonal)
    local = corrected(plan, rows, eig)
    moments = reduce({k: (f.scales, f.bias_scales) for k, f in local.items()})
    out = {k: EigenFactors(f.qa, f.qg, *moments[k]) for k, f in local.items()}
    return EKFAC(out, eig.diagonal, plan)
