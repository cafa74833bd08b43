"""Annealed Gaussian gradient noise (Neelakantan et al.), with the per-leaf scaling optax lacks."""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradlab._src.errors import check_choice, check_real
from gradlab.transforms._common import require_extra_arg

__all__ = ["AnnealedNoiseState", "annealed_noise", "scale_by_annealed_noise"]

RelativeTo = Literal["grad_rms", "param_rms"]
_RELATIVE_TO = ("grad_rms", "param_rms")


class AnnealedNoiseState(NamedTuple):
    """State of :func:`scale_by_annealed_noise`.

    Attributes:
        count: int32 scalar, number of updates done so far (``t`` in the schedule).
        key: the PRNG key for the next step's noise (split once per step).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> tx = gl.transforms.scale_by_annealed_noise(0.01, key=jax.random.key(0))
        >>> _, state = tx.update(jnp.ones(3), tx.init(jnp.zeros(3)))
        >>> int(state.count)
        1
    """

    count: jax.Array
    key: jax.Array


def _rms(x):
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return jnp.sqrt(jnp.mean(x * x))


def scale_by_annealed_noise(
    eta: float | jax.Array = 0.01,
    gamma: float | jax.Array = 0.55,
    *,
    key: jax.Array,
    relative_to: RelativeTo = "grad_rms",
) -> optax.GradientTransformation:
    r"""Add annealed Gaussian noise to each leaf, scaled by that leaf's RMS.

    Neelakantan et al. add :math:`\mathcal N(0, \sigma_t^2)` noise to every gradient entry,

    .. math:: \sigma_t^2 = \frac{\eta}{(1 + t)^\gamma}, \qquad t = 0, 1, 2, \ldots,

    with :math:`\gamma = 0.55` and :math:`\eta \in \{0.01, 0.3, 1.0\}`. **That process is exactly
    ``optax.add_noise(eta, gamma, key)``** (optax uses ``count + 1 = 1 + t``), and
    ``optax.noisy_sgd`` is the paper's SGD recipe; gradlab does not duplicate it (see
    ``docs/transforms.md`` for the recipe with Adam and a test of the variance schedule).

    What optax lacks is noise on the scale of each leaf. A single :math:`\sigma_t` for all
    parameters is too large for layers with small gradients and negligible for layers with
    large ones; this transform uses, for every leaf :math:`\ell`,

    .. math:: g_\ell \leftarrow g_\ell + \sigma_t \, s_\ell \, z_\ell, \qquad
        z_\ell \sim \mathcal N(0, I),

    with :math:`s_\ell = \operatorname{RMS}(g_\ell)` (``relative_to="grad_rms"``, noise
    relative to the gradient: :math:`\eta` is a noise-to-signal ratio) or
    :math:`s_\ell = \operatorname{RMS}(\theta_\ell)` (``"param_rms"``, needs ``params``).

    Args:
        eta: base variance :math:`\eta \ge 0` (relative, squared, to :math:`s_\ell`).
        gamma: annealing exponent :math:`\gamma \ge 0`.
        key: PRNG key (required); it lives in the state and is split every step.
        relative_to: ``"grad_rms"`` or ``"param_rms"`` (static).

    Returns:
        An ``optax.GradientTransformation`` with state :class:`AnnealedNoiseState` (no
        parameter-sized buffer). ``update(grads, state, params)`` needs ``params`` for
        ``relative_to="param_rms"`` and raises ``ValueError`` naming ``params`` otherwise.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> tx = gl.transforms.scale_by_annealed_noise(0.3, key=jax.random.key(0))
        >>> grads = {"small": jnp.full(1000, 1e-3), "large": jnp.full(1000, 1e2)}
        >>> noisy, state = tx.update(grads, tx.init(grads))
        >>> # noise std is sqrt(0.3) times each leaf's gradient RMS
        >>> [round(float(jnp.std(noisy[k]) / grads[k][0]), 1) for k in ("small", "large")]
        [0.5, 0.5]

    References:
        Neelakantan et al., *Adding Gradient Noise Improves Learning for Very Deep Networks*,
        https://arxiv.org/abs/1511.06807
    """
    check_real("eta", eta, 0.0)
    check_real("gamma", gamma, 0.0)
    check_choice("relative_to", relative_to, _RELATIVE_TO)
    if key is None:
        raise ValueError(
            "scale_by_annealed_noise requires a PRNG key: pass key=jax.random.key(seed)"
        )
    key = jax.random.key(key) if isinstance(key, int) else key

    def init_fn(params):
        del params
        return AnnealedNoiseState(count=jnp.zeros([], jnp.int32), key=key)

    def update_fn(updates, state, params=None):
        if relative_to == "param_rms":
            require_extra_arg(
                params, "params", "scale_by_annealed_noise(relative_to='param_rms').update"
            )
            scale_from = params
        else:
            scale_from = updates
        count = optax.safe_increment(state.count)
        sigma = jnp.sqrt(eta / count.astype(jnp.result_type(float)) ** gamma)
        next_key, sample_key = jax.random.split(state.key)
        noise = optax.tree.random_like(sample_key, updates, jax.random.normal)

        def leaf(g, z, ref):
            return (g + (sigma * _rms(ref)).astype(g.dtype) * z).astype(g.dtype)

        return jax.tree.map(leaf, updates, noise, scale_from), AnnealedNoiseState(
            count=count, key=next_key
        )

    return optax.GradientTransformation(init_fn, update_fn)


def annealed_noise(
    learning_rate: optax.ScalarOrSchedule,
    eta: float | jax.Array = 0.01,
    gamma: float | jax.Array = 0.55,
    *,
    key: jax.Array,
    relative_to: RelativeTo = "grad_rms",
) -> optax.GradientTransformationExtraArgs:
    r"""SGD on gradients with per-leaf annealed noise (:func:`scale_by_annealed_noise`).

    ``optax.chain(scale_by_annealed_noise(eta, gamma, key=key, relative_to=...),
    optax.scale_by_learning_rate(learning_rate))``. For the paper's *global* noise use
    ``optax.noisy_sgd`` / ``optax.add_noise``; to add noise before another optimizer chain it
    first: ``optax.chain(scale_by_annealed_noise(...), optax.adam(lr))``.

    Args:
        learning_rate: a float or an ``optax`` schedule.
        eta: base (relative) variance, the paper uses 0.01, 0.3 or 1.0.
        gamma: annealing exponent, 0.55 in the paper.
        key: PRNG key (required).
        relative_to: ``"grad_rms"`` or ``"param_rms"``.

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> import gradlab as gl
        >>> loss = lambda p: jnp.sum((p - 3.0) ** 2)
        >>> opt = gl.transforms.annealed_noise(0.1, eta=0.3, key=jax.random.key(0))
        >>> params = jnp.zeros(2)
        >>> state = opt.init(params)
        >>> for _ in range(100):
        ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
        ...     params = optax.apply_updates(params, updates)
        >>> bool(loss(params) < 1e-2)
        True

    References:
        Neelakantan et al., https://arxiv.org/abs/1511.06807
    """
    return optax.chain(
        scale_by_annealed_noise(eta, gamma, key=key, relative_to=relative_to),
        optax.scale_by_learning_rate(learning_rate),
    )
