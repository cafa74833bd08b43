"""Hessian alignment (HGP) penalty for domain generalisation (Hemati et al., ICCV 2023)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradlab._src.errors import check_leading_axis, check_real

__all__ = ["HessianAlignment", "hessian_alignment_penalty"]


class HessianAlignment(NamedTuple):
    r"""The output of :func:`hessian_alignment_penalty` (all scalars).

    Attributes:
        risk: :math:`\bar R = \frac1E \sum_e R_e`, the ERM objective over the domains.
        penalty: :math:`\alpha\, \text{hessian\_term} + \beta\, \text{gradient\_term}`; the
            training objective is ``risk + penalty``.
        hessian_term: :math:`\frac1E \sum_e \|H_e g_e - \bar H \bar g\|^2`.
        gradient_term: :math:`\frac1E \sum_e \|g_e - \bar g\|^2`.

    Examples:
        >>> from gradlab.transforms import HessianAlignment
        >>> HessianAlignment._fields
        ('risk', 'penalty', 'hessian_term', 'gradient_term')
    """

    risk: jax.Array
    penalty: jax.Array
    hessian_term: jax.Array
    gradient_term: jax.Array


def _sq_dist(a, b) -> jax.Array:
    return sum(
        jnp.sum((x - y) ** 2) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def hessian_alignment_penalty(
    loss_fn: Callable[[Any, Any], jax.Array],
    head_params: Any,
    domain_batches: Any,
    *,
    alpha: float | jax.Array = 1.0,
    beta: float | jax.Array = 1.0,
) -> HessianAlignment:
    r"""The Hessian-gradient-product (HGP) alignment penalty of the classifier head across domains.

    With :math:`R_e(\theta)` the risk of domain :math:`e` as a function of the classifier-head
    parameters :math:`\theta`, :math:`g_e = \nabla R_e`, :math:`H_e = \nabla^2 R_e` and
    :math:`\bar R = \frac1E \sum_e R_e` (:math:`\bar g`, :math:`\bar H` its gradient and
    Hessian),

    .. math::

        \text{penalty} = \frac{\alpha}{E} \sum_e \big\| H_e g_e - \operatorname{sg}(\bar H
        \bar g) \big\|^2 + \frac{\beta}{E} \sum_e \big\| g_e - \operatorname{sg}(\bar g)
        \big\|^2,

    where :math:`\operatorname{sg}` stops gradients (the authors' code detaches the mean
    terms). The paper shows that the spectral distance between the heads' Hessians bounds the
    transfer measure between domains, and that matching :math:`H_e g_e` and :math:`g_e`
    aligns the attributes CORAL, IRM, V-REx, Fish and Fishr each align in part. Every
    :math:`H_e g_e` is one forward-over-reverse Hessian-vector product (no Hessian is formed;
    the paper computes it as :math:`\|g_e\| \nabla \|g_e\|`, the same vector).

    **Why a loss helper, not a transform**: the penalty is a term of the *objective* whose
    gradient (third derivatives of the head's loss, and everything ``loss_fn`` closes over,
    e.g. the featurizer's output) must be back-propagated with the rest of the model; an optax
    transform only sees gradients. Add ``risk + penalty`` to the loss and use any optimizer.
    Only the paper's HGP variant is provided (not its Hutchinson-diagonal variant).

    Args:
        loss_fn: ``loss_fn(head_params, batch) -> scalar`` risk of one domain's batch (close
            over the featurizer's parameters or features so that gradients reach them).
        head_params: the classifier head's parameters :math:`\theta` (any pytree).
        domain_batches: the domains' batches stacked on a leading axis of size ``E >= 1``
            (every domain batch has the same shape); ``loss_fn`` is vmapped over it.
        alpha: weight of the Hessian-gradient term (``>= 0``; tuned per dataset in the paper).
        beta: weight of the gradient term (``>= 0``).

    Returns:
        :class:`HessianAlignment` of scalars (``risk``, ``penalty``, ``hessian_term``,
        ``gradient_term``), differentiable.

    Raises:
        ValueError: negative ``alpha`` or ``beta``; ``domain_batches`` without a common
            leading axis.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.transforms import hessian_alignment_penalty
        >>> x = jax.random.normal(jax.random.key(0), (2, 4, 3))  # 2 domains x 4 examples
        >>> y = jnp.array([[0, 1, 1, 0], [1, 1, 0, 0]])
        >>> def loss_fn(w, batch):
        ...     logp = jax.nn.log_softmax(batch[0] @ w)
        ...     return -jnp.mean(jnp.take_along_axis(logp, batch[1][:, None], axis=1))
        >>> @jax.jit
        ... def objective(w):  # ERM + penalty, differentiable
        ...     out = hessian_alignment_penalty(loss_fn, w, (x, y), alpha=0.1, beta=0.1)
        ...     return out.risk + out.penalty, out
        >>> (value, out), g = jax.value_and_grad(objective, has_aux=True)(jnp.zeros((3, 2)))
        >>> bool(out.penalty > 0), g.shape
        (True, (3, 2))

    References:
        Hemati, Zhang, Estiri & Chen, "Understanding Hessian Alignment for Domain
        Generalization", ICCV 2023. https://arxiv.org/abs/2308.11778
    """
    check_real("alpha", alpha, 0.0, None)
    check_real("beta", beta, 0.0, None)
    num_domains = check_leading_axis("domain_batches", domain_batches)

    grad_fn = jax.grad(loss_fn)

    def per_domain(batch):
        value = loss_fn(head_params, batch)
        g, hg = jax.jvp(lambda p: grad_fn(p, batch), (head_params,), (grad_fn(head_params, batch),))
        return value, g, hg

    values, grads, hgs = jax.vmap(per_domain)(domain_batches)

    def mean_risk(p):
        return jnp.mean(jax.vmap(lambda b: loss_fn(p, b))(domain_batches))

    mean_g = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
    mean_hg = jax.jvp(jax.grad(mean_risk), (head_params,), (mean_g,))[1]
    mean_g, mean_hg = jax.lax.stop_gradient((mean_g, mean_hg))

    def spread(stacked, mean):
        return _sq_dist(stacked, jax.tree.map(lambda m: m[None], mean)) / num_domains

    hessian_term = spread(hgs, mean_hg)
    gradient_term = spread(grads, mean_g)
    penalty = alpha * hessian_term + beta * gradient_term
    return HessianAlignment(jnp.mean(values), penalty, hessian_term, gradient_term)
