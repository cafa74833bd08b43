"""Noise-adaptive layerwise learning rates on top of a Muon/Scion-style LMO (Hao et al., LANTON)."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
import optax.contrib

from gradlab._src.errors import check_choice, check_int, check_real

__all__ = ["LantonState", "lanton", "scale_by_lanton"]

Lmo = Literal["newton_schulz", "svd"]
_LMOS = ("newton_schulz", "svd")


class LantonState(NamedTuple):
    """State of :func:`scale_by_lanton`.

    Attributes:
        count: int32 scalar, number of updates done so far.
        momentum: EMA of the gradients :math:`M_t`, a pytree like the params.
        noise: per-layer EMA of the squared dual norm of :math:`G_t - M_{t-1}`, a pytree with
            the params' structure and one scalar per leaf (float32, float64 for float64 params).

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> state = gl.transforms.scale_by_lanton().init({"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)})
        >>> state.noise
        {'b': Array(0., dtype=float32), 'w': Array(0., dtype=float32)}
    """

    count: jax.Array
    momentum: Any
    noise: Any


def _as_matrix(x):
    """Flax layout: the last axis is the output, all others are the input (reduction) axes."""
    return x.reshape(-1, x.shape[-1]) if x.ndim > 2 else x


def _polar(x2d, lmo, ns_steps, eps):
    """Orthogonal polar factor U V^T of a matrix (exact SVD or optax's Muon Newton-Schulz)."""
    if lmo == "svd":
        u, _, vt = jnp.linalg.svd(x2d, full_matrices=False)
        return u @ vt
    ns = optax.contrib.scale_by_muon(ns_steps=ns_steps, beta=0.0, eps=eps, nesterov=False)
    out, _ = ns.update(x2d, ns.init(x2d))  # beta = 0: no momentum, only the orthogonalisation
    return out


def _direction(x, lmo, ns_steps, eps):
    """The unit-ball LMO direction D(x) (update = -lr * D), in float32 or wider.

    Matrices (ndim >= 2): spectral geometry in Muon's RMS->RMS scaling,
    D = sqrt(max(1, d_out / d_in)) * U V^T. Vectors and scalars: RMS-norm ball, D = x / RMS(x).
    The dual norm of x in the same geometry is <x, D(x)>.
    """
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if x.ndim >= 2:
        m = _as_matrix(x)
        scale = max(1.0, m.shape[1] / m.shape[0]) ** 0.5
        return (scale * _polar(m, lmo, ns_steps, eps)).reshape(x.shape)
    rms = jnp.sqrt(jnp.mean(x * x))
    return x / jnp.maximum(rms, jnp.finfo(x.dtype).tiny)


def _dual_norm(x, lmo, ns_steps, eps):
    d = _direction(x, lmo, ns_steps, eps)
    return jnp.sum(x.astype(d.dtype) * d)


def scale_by_lanton(
    b1: float | jax.Array = 0.95,
    b2: float | jax.Array = 0.99,
    *,
    ns_steps: int = 5,
    lmo: Lmo = "newton_schulz",
    eps: float | jax.Array = 1e-8,
) -> optax.GradientTransformation:
    r"""LMO step (Muon for matrices, normalised step for vectors) with noise-adaptive layer rates.

    For every layer (leaf) :math:`\ell` with gradient :math:`G_t^\ell`:

    .. math::
        M_t^\ell &= \beta_1 M_{t-1}^\ell + (1-\beta_1) G_t^\ell, \\
        \nu_t^\ell &= \beta_2 \nu_{t-1}^\ell + (1-\beta_2)
            \|G_t^\ell - M_{t-1}^\ell\|_{\ell,*}^2, \qquad
            \hat\sigma_t^\ell = \sqrt{\nu_t^\ell / (1-\beta_2^t)}, \\
        u_t^\ell &= \alpha_t^\ell \, D_\ell(M_t^\ell), \qquad
            \alpha_t^\ell = \frac{\operatorname{mean}_{k \in \mathcal G(\ell)} \hat\sigma_t^k}
                                 {\hat\sigma_t^\ell},

    where :math:`D_\ell` is the unit-ball linear-minimisation-oracle direction of the layer's
    norm and :math:`\|X\|_{\ell,*} = \langle X, D_\ell(X)\rangle` its dual norm:

    * matrices (``ndim >= 2``, flax layout, last axis = output): the spectral norm in Muon's
      RMS-to-RMS scaling, :math:`D(X) = \sqrt{\max(1, d_{out}/d_{in})}\, U V^\top` (polar factor
      from ``optax.contrib.scale_by_muon``'s Newton–Schulz, or exact with ``lmo="svd"``); the
      dual norm is the scaled nuclear norm;
    * vectors and scalars: the RMS norm, :math:`D(x) = x / \operatorname{RMS}(x)`, dual norm
      :math:`\sqrt{n}\|x\|_2`.

    Layers are grouped by geometry (all matrices, all vectors). Within a group, a layer whose
    gradient noise (in its dual norm) is below the group average gets a proportionally larger
    rate and a noisier layer a smaller one; the harmonic mean of a group's rates is the base rate,
    and a group with a single layer is plain Muon/normalised SGD with momentum (tested against
    ``optax.contrib.scale_by_muon``).

    **Reading of the paper.** The abstract states the method (estimate the gradient noise in
    the dual norm of each layer's LMO geometry on the fly; use it for time-varying layerwise
    rates within each group). The paper's exact estimator was not available to us; the noise
    proxy :math:`\|G_t - M_{t-1}\|_*^2` (deviation of the fresh gradient from the running mean)
    and the inverse-proportional, group-normalised rate above are our best-justified reading.

    Args:
        b1: momentum decay, in ``[0, 1)`` (Muon's 0.95).
        b2: decay of the noise EMA, in ``[0, 1)``.
        ns_steps: Newton–Schulz iterations, ``>= 1`` (static).
        lmo: ``"newton_schulz"`` (default, optax's Muon iteration) or ``"svd"`` (exact polar
            factor; for small layers and tests). Static.
        eps: numerical floor for the Newton–Schulz normalisation and the noise ratio.

    Returns:
        An ``optax.GradientTransformation`` with state :class:`LantonState` (one
        parameter-sized buffer plus one scalar per layer). Cost per step: two polar factors per
        matrix (one for the step, one for the noise's dual norm).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
        >>> tx = gl.transforms.scale_by_lanton(lmo="svd")
        >>> grads = {"w": jnp.eye(4, 3), "b": jnp.array([3.0, 0.0, 0.0])}
        >>> updates, state = tx.update(grads, tx.init(params))
        >>> print(jnp.round(updates["w"], 3))  # polar factor of the momentum (= eye here)
        [[1. 0. 0.]
         [0. 1. 0.]
         [0. 0. 1.]
         [0. 0. 0.]]
        >>> print(jnp.round(updates["b"], 3))  # x / RMS(x)
        [1.732 0.    0.   ]

    References:
        Hao, Gong, Xu, Wang & Liu, *Noise-Adaptive Layerwise Learning Rates: Accelerating
        Geometry-Aware Optimization for Deep Neural Network Training*,
        https://arxiv.org/abs/2510.14009.
        Jordan et al., Muon, https://kellerjordan.github.io/posts/muon/;
        Pethick et al., *Training Deep Learning Models with Norm-Constrained LMOs* (Scion),
        https://arxiv.org/abs/2502.07529
    """
    check_real("b1", b1, 0.0, 1.0, hi_open=True)
    check_real("b2", b2, 0.0, 1.0, hi_open=True)
    check_real("eps", eps, 0.0)
    ns_steps = check_int("ns_steps", ns_steps, 1, 100)
    check_choice("lmo", lmo, _LMOS)

    def init_fn(params):
        return LantonState(
            count=jnp.zeros([], jnp.int32),
            momentum=optax.tree.zeros_like(params),
            noise=jax.tree.map(
                lambda x: jnp.zeros([], jnp.promote_types(x.dtype, jnp.float32)), params
            ),
        )

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        dev = jax.tree.map(
            lambda g, m, n: g.astype(n.dtype) - m.astype(n.dtype),
            updates,
            state.momentum,
            state.noise,
        )
        sq_dual = jax.tree.map(lambda x: _dual_norm(x, lmo, ns_steps, eps) ** 2, dev)
        noise = jax.tree.map(
            lambda n, s: (b2 * n + (1.0 - b2) * s).astype(n.dtype), state.noise, sq_dual
        )
        sigma = jax.tree.map(
            lambda n: jnp.sqrt(n / (1.0 - jnp.asarray(b2, n.dtype) ** count.astype(n.dtype))), noise
        )
        momentum = optax.tree.update_moment(updates, state.momentum, b1, 1)

        leaves, treedef = jax.tree.flatten(updates)
        sig_leaves = treedef.flatten_up_to(sigma)
        groups = [
            tuple(i for i, x in enumerate(leaves) if (x.ndim >= 2) == is_matrix)
            for is_matrix in (True, False)
        ]
        alpha = [None] * len(leaves)
        for group in groups:
            if not group:
                continue
            mean = sum(sig_leaves[i] for i in group) / len(group)
            for i in group:
                alpha[i] = (mean + eps) / (sig_leaves[i] + eps)
        mom_leaves = treedef.flatten_up_to(momentum)
        out = [
            (a * _direction(m, lmo, ns_steps, eps)).astype(g.dtype)
            for a, m, g in zip(alpha, mom_leaves, leaves, strict=True)
        ]
        new_state = LantonState(
            count=count,
            momentum=optax.tree.cast_like(momentum, state.momentum),
            noise=noise,
        )
        return jax.tree.unflatten(treedef, out), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def lanton(
    learning_rate: optax.ScalarOrSchedule = 0.02,
    b1: float | jax.Array = 0.95,
    b2: float | jax.Array = 0.99,
    *,
    ns_steps: int = 5,
    lmo: Lmo = "newton_schulz",
    eps: float | jax.Array = 1e-8,
    weight_decay: float | jax.Array = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""Noise-adaptive layerwise LMO optimizer: :func:`scale_by_lanton`, weight decay, ``-lr``.

    ``optax.chain(scale_by_lanton(b1, b2, ...), optax.add_decayed_weights(weight_decay),
    optax.scale_by_learning_rate(learning_rate))``. The default rate 0.02 is Muon's.

    Args:
        learning_rate: base rate (harmonic mean over a group's layers), a float or schedule.
        b1: momentum decay.
        b2: noise-EMA decay.
        ns_steps: Newton–Schulz iterations.
        lmo: ``"newton_schulz"`` or ``"svd"``.
        eps: numerical floor.
        weight_decay: decoupled weight decay, ``>= 0``.

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> import gradlab as gl
        >>> target = jnp.arange(6.0).reshape(3, 2) / 6
        >>> loss = lambda p: jnp.sum((p["w"] - target) ** 2) + jnp.sum((p["b"] - 1.0) ** 2)
        >>> opt = gl.transforms.lanton(optax.linear_schedule(0.05, 0.0, 200))
        >>> @jax.jit
        ... def step(params, state):
        ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
        ...     return optax.apply_updates(params, updates), state
        >>> params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
        >>> state = opt.init(params)
        >>> for _ in range(200):
        ...     params, state = step(params, state)
        >>> bool(loss(params) < 1e-2)
        True

    References:
        Hao et al., https://arxiv.org/abs/2510.14009
    """
    check_real("weight_decay", weight_decay, 0.0)
    return optax.chain(
        scale_by_lanton(b1, b2, ns_steps=ns_steps, lmo=lmo, eps=eps),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
