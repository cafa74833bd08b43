"""The K-FAC optimizer: EMA of Kronecker factors, a periodically refreshed damped inverse."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradlab._src.errors import check_choice, check_int, check_real
from gradlab.curvature import EKFAC, EigenFactors, param_paths
from gradlab.curvature import kfac as kfac_operator
from gradlab.transforms._common import require_extra_arg

__all__ = ["KFACState", "kfac", "scale_by_kfac"]

FISHER_TYPES = ("type2", "mc", "empirical")
KFAC_APPROX = ("expand", "reduce")


class KFACState(NamedTuple):
    """State of :func:`scale_by_kfac`; every buffer but ``count``/``key`` is a pytree like params.

    The state is allocated from the params alone (``init`` sees no batch): every leaf with at
    least two axes (a candidate kernel of shape ``(..., d_out)``) gets an input factor slot of
    shape ``(d_in, d_in)`` with ``d_in = prod(shape[:-1])`` and an output factor slot
    ``(d_out, d_out)``; a leaf whose path ends in ``embedding`` gets a diagonal ``(V,)`` input
    slot; other leaves get empty ``(0,)`` slots. Slots of leaves that no supported layer uses
    stay zero, and their curvature lives in ``diag``.

    Attributes:
        count: int32 scalar, number of updates done so far.
        key: PRNG key for the Monte-Carlo labels (split at every step).
        a: EMA of the input covariances ``A`` (see above).
        g: EMA of the output-gradient covariances ``G``.
        diag: EMA of the exact diagonal of the leaves K-FAC does not cover (leaf-shaped).
        qa: eigenvectors of ``a`` at the last refresh (same slots as ``a``).
        qg: eigenvectors of ``g`` at the last refresh.
        scales: eigenvalues of each block in its eigenbasis at the last refresh, leaf-shaped
            (``lambda_A lambda_G^T`` for a kernel, ``lambda_G`` for a bias, ``diag`` otherwise).

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (3, 4, 2))
        >>> tx = gl.transforms.scale_by_kfac(apply_fn, "mse", key=jax.random.key(1))
        >>> tx.init(params).a["params"]["Dense_0"]["kernel"].shape
        (3, 3)
    """

    count: jax.Array
    key: jax.Array
    a: Any
    g: Any
    diag: Any
    qa: Any
    qg: Any
    scales: Any


def _slots(path: str, leaf: Any) -> tuple[jax.Array, jax.Array]:
    """Empty input/output factor slots for one leaf (see :class:`KFACState`)."""
    dtype = jnp.promote_types(jnp.result_type(leaf), jnp.float32)
    shape = jnp.shape(leaf)
    if len(shape) < 2:
        return jnp.zeros((0,), dtype), jnp.zeros((0,), dtype)
    d_in, d_out = math.prod(shape[:-1]), shape[-1]
    a = jnp.zeros((d_in,) if path.endswith("embedding") else (d_in, d_in), dtype)
    return a, jnp.zeros((d_out, d_out), dtype)


def _eigh(m: jax.Array) -> tuple[jax.Array, jax.Array]:
    lam, q = jnp.linalg.eigh((m + m.T) / 2)
    return jnp.clip(lam, 0.0), q


def scale_by_kfac(
    model_fn: Callable[[Any, Any], Any],
    loss_fn: Callable[[Any, Any], jax.Array] | str,
    *,
    damping: float | jax.Array = 1e-3,
    decay: float | jax.Array = 0.95,
    update_interval: int = 10,
    fisher_type: Literal["type2", "mc", "empirical"] = "mc",
    kfac_approx: Literal["expand", "reduce"] = "expand",
    key: jax.Array,
) -> optax.GradientTransformationExtraArgs:
    r"""Precondition gradients by the damped inverse of a running K-FAC approximation.

    At every step the factors of :func:`gradlab.curvature.kfac` on the current ``batch`` are
    averaged into exponential moving averages (the first step takes them as they are),

    .. math:: \bar A \leftarrow \rho \bar A + (1 - \rho) A_t, \qquad
        \bar G \leftarrow \rho \bar G + (1 - \rho) G_t,

    and every ``update_interval`` steps (from the first) the eigendecompositions
    :math:`\bar A = Q_A \Lambda_A Q_A^\top`, :math:`\bar G = Q_G \Lambda_G Q_G^\top` are
    refreshed inside ``lax.cond`` (one compiled program: the refresh never recompiles). The
    update is the exact damped inverse of the Kronecker block,

    .. math:: u = Q_A \bigl[(Q_A^\top \nabla_W Q_G) \oslash
        (\lambda_A \lambda_G^\top + \delta)\bigr] Q_G^\top,

    with :math:`\delta` = ``damping`` applied at each step, so it can change between refreshes
    (``optax.inject_hyperparams``, schedules). Bias blocks use :math:`\bar G`; leaves no
    supported layer uses are divided by their running exact diagonal plus :math:`\delta`.

    Args:
        model_fn: ``model_fn(params, inputs) -> outputs``, a flax linen ``apply`` (see
            :func:`gradlab.curvature.kfac` for the supported layers).
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` or ``"softmax_cross_entropy"`` /
            ``"mse"`` (``"mc"`` needs one of the two).
        damping: ``delta >= 0``, a float or an array.
        decay: EMA decay ``rho`` in ``[0, 1)``.
        update_interval: steps between eigendecompositions (``>= 1``).
        fisher_type: ``"mc"`` (default), ``"type2"`` or ``"empirical"``.
        kfac_approx: ``"expand"`` or ``"reduce"``.
        key: PRNG key for the sampled labels (kept and split in the state).

    Returns:
        An ``optax.GradientTransformationExtraArgs``;
        ``update(grads, state, params, *, batch)`` with ``batch = (inputs, targets)``.
        State :class:`KFACState`: two factor slots and their eigenvectors per kernel, three
        leaf-shaped buffers.

    Raises:
        ValueError: bad option values at construction; at ``update``, a missing ``batch`` or
            ``params``, or a model whose layers do not fit the state's slots.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (3, 4, 2))
        >>> batch = (jnp.ones((5, 3)), jnp.array([0, 1, 1, 0, 1]))
        >>> tx = gl.transforms.scale_by_kfac(apply_fn, "softmax_cross_entropy",
        ...                                  key=jax.random.key(1))
        >>> grads = jax.tree.map(jnp.ones_like, params)
        >>> u, state = tx.update(grads, tx.init(params), params, batch=batch)
        >>> int(state.count), jax.tree.structure(u) == jax.tree.structure(params)
        (1, True)

    References:
        Martens, Grosse, "Optimizing neural networks with Kronecker-factored approximate
        curvature", ICML 2015, https://arxiv.org/abs/1503.05671.
    """
    check_real("damping", damping, 0.0)
    check_real("decay", decay, 0.0, 1.0, hi_open=True)
    update_interval = check_int("update_interval", update_interval, 1)
    check_choice("fisher_type", fisher_type, FISHER_TYPES)
    check_choice("kfac_approx", kfac_approx, KFAC_APPROX)
    if key is None:
        raise ValueError("scale_by_kfac requires the argument 'key' (a jax.random.key)")

    def init_fn(params: Any) -> KFACState:
        paths = param_paths(params)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        slots = [_slots(p, x) for p, x in zip(paths, leaves, strict=True)]
        a = treedef.unflatten([s[0] for s in slots])
        g = treedef.unflatten([s[1] for s in slots])
        diag = jax.tree.map(
            lambda x: jnp.zeros(jnp.shape(x), jnp.promote_types(jnp.result_type(x), jnp.float32)),
            params,
        )
        zeros_like = optax.tree.zeros_like
        return KFACState(
            count=jnp.zeros([], jnp.int32),
            key=key,
            a=a,
            g=g,
            diag=diag,
            qa=zeros_like(a),
            qg=zeros_like(g),
            scales=zeros_like(diag),
        )

    def update_fn(updates, state, params=None, *, batch=None, **extra):
        del extra
        batch = require_extra_arg(
            batch, "batch", "scale_by_kfac.update", "call update(grads, state, params, batch=...)"
        )
        params = require_extra_arg(params, "params", "scale_by_kfac.update")
        key, sub = jax.random.split(state.key)
        kf = kfac_operator(
            model_fn,
            loss_fn,
            params,
            batch,
            fisher_type=fisher_type,
            key=sub,
            kfac_approx=kfac_approx,
        )
        plan = kf.plan
        treedef = plan.treedef
        a, g, diag = (list(treedef.flatten_up_to(t)) for t in (state.a, state.g, state.diag))
        rho = jnp.where(state.count == 0, 0.0, decay)

        def ema(old, new):
            return (rho * old + (1 - rho) * new).astype(old.dtype)

        for grp in plan.groups:
            f = kf.factors[grp.name]
            k = grp.kernel
            if a[k].shape != f.a.shape or g[k].shape != f.g.shape:
                raise ValueError(
                    f"the layer of {plan.paths[k]} has factors of shapes {f.a.shape} and "
                    f"{f.g.shape}, but the K-FAC state allocated {a[k].shape} and {g[k].shape} "
                    "for this leaf: name Embed tables '.../embedding' and give Dense/Conv "
                    "kernels their flax layout (..., d_out)"
                )
            a[k], g[k] = ema(a[k], f.a), ema(g[k], f.g)
        for i in plan.uncovered:
            diag[i] = ema(diag[i], kf.diagonal[plan.paths[i]])
        count = optax.safe_increment(state.count)

        def refresh():
            qa, qg = list(treedef.flatten_up_to(state.qa)), list(treedef.flatten_up_to(state.qg))
            scales = list(diag)
            for grp in plan.groups:
                k = grp.kernel
                lam_g, qg[k] = _eigh(g[k])
                if grp.kind == "embed":
                    lam_a = a[k]
                else:
                    lam_a, qa[k] = _eigh(a[k])
                scales[k] = jnp.outer(lam_a, lam_g).reshape(plan.shapes[k])
                if grp.bias is not None:
                    scales[grp.bias] = lam_g
            return tuple(treedef.unflatten(t) for t in (qa, qg, scales))

        def keep():
            return state.qa, state.qg, state.scales

        qa, qg, scales = jax.lax.cond(state.count % update_interval == 0, refresh, keep)
        qa_l, qg_l, s_l = (treedef.flatten_up_to(t) for t in (qa, qg, scales))
        eig = {}
        for grp in plan.groups:
            k = grp.kernel
            eig[grp.name] = EigenFactors(
                None if grp.kind == "embed" else qa_l[k],
                qg_l[k],
                s_l[k].reshape(-1, plan.shapes[k][-1]),
                None if grp.bias is None else s_l[grp.bias],
            )
        diagonal = {plan.paths[i]: s_l[i] for i in plan.uncovered}
        new_updates = EKFAC(eig, diagonal, plan).inverse(damping)(updates)
        new_state = KFACState(
            count=count,
            key=key,
            a=treedef.unflatten(a),
            g=treedef.unflatten(g),
            diag=treedef.unflatten(diag),
            qa=qa,
            qg=qg,
            scales=scales,
        )
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def kfac(
    learning_rate: optax.ScalarOrSchedule,
    model_fn: Callable[[Any, Any], Any],
    loss_fn: Callable[[Any, Any], jax.Array] | str,
    *,
    damping: float | jax.Array = 1e-3,
    decay: float | jax.Array = 0.95,
    update_interval: int = 10,
    fisher_type: Literal["type2", "mc", "empirical"] = "mc",
    kfac_approx: Literal["expand", "reduce"] = "expand",
    key: jax.Array,
) -> optax.GradientTransformationExtraArgs:
    r"""The K-FAC optimizer: :func:`scale_by_kfac` then ``-learning_rate``.

    ``kfac(lr, model_fn, loss_fn, ...) == optax.chain(scale_by_kfac(model_fn, loss_fn, ...),
    optax.scale_by_learning_rate(lr))``; call ``update(grads, state, params, batch=batch)``.
    The curvature is :func:`gradlab.curvature.kfac` (one implementation).

    Args:
        learning_rate: a float or an ``optax`` schedule.
        model_fn: ``model_fn(params, inputs) -> outputs`` (a flax linen ``apply``).
        loss_fn: ``loss_fn(outputs, targets) -> scalar`` or a built-in loss name.
        damping: ``delta >= 0`` added to every block's eigenvalues.
        decay: EMA decay of the factors in ``[0, 1)``.
        update_interval: steps between eigendecompositions.
        fisher_type: ``"mc"`` (default), ``"type2"`` or ``"empirical"``.
        kfac_approx: ``"expand"`` or ``"reduce"``.
        key: PRNG key for the sampled labels.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose updates are added to the params.

    Examples:
        >>> import jax, jax.numpy as jnp, optax, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (3, 4, 2))
        >>> x = jax.random.normal(jax.random.key(1), (16, 3)); y = (x[:, 0] > 0).astype(int)
        >>> loss = lambda p: gl.curvature.softmax_cross_entropy(apply_fn(p, x), y)
        >>> opt = gl.transforms.kfac(0.1, apply_fn, "softmax_cross_entropy",
        ...                          damping=1e-2, key=jax.random.key(2))
        >>> state = opt.init(params)
        >>> step = jax.jit(lambda p, s: opt.update(jax.grad(loss)(p), s, p, batch=(x, y)))
        >>> before = loss(params)
        >>> for _ in range(20):
        ...     updates, state = step(params, state)
        ...     params = optax.apply_updates(params, updates)
        >>> bool(loss(params) < before / 10)
        True

    References:
        Martens, Grosse, https://arxiv.org/abs/1503.05671.
    """
    return optax.chain(
        scale_by_kfac(
            model_fn,
            loss_fn,
            damping=damping,
            decay=decay,
            update_interval=update_interval,
            fisher_type=fisher_type,
            kfac_approx=kfac_approx,
            key=key,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )
