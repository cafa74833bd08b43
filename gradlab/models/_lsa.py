"""A single linear self-attention layer for in-context regression prompts.

One head, no softmax, merged key-query and projection-value matrices, the queries' own tokens
excluded from the keys: the layer studied by von Oswald et al. (2212.07677), Ahn et al.
(2306.00297) and Mahankali et al. (2307.03576).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from gradlab._src.errors import check_int

__all__ = ["LinearSelfAttention", "init_lsa"]


class LinearSelfAttention(nn.Module):
    r"""One linear self-attention layer with a residual connection; the last token is the query.

    For tokens :math:`z_1, \dots, z_{n+1} \in \mathbb{R}^D` (rows of the input, the last one
    the query) the layer returns

    .. math::

        z_j + \frac{1}{n} \sum_{i=1}^{n} W^{PV} z_i \, (z_i^\top W^{KQ} z_j),

    i.e. linear attention whose keys and values are the first :math:`n` (context) tokens only.
    With in-context regression prompts :math:`z_i = (x_i, y_i)`, :math:`z_{n+1} = (x_q, 0)`,
    the prediction is the last entry of the last output token,
    :math:`\hat y = x_q^\top \Gamma \frac1n \sum_i y_i x_i + \dots` with
    :math:`\Gamma = p_y A^\top`, :math:`A = W^{KQ}_{:d,:d}` and :math:`p_y = W^{PV}_{D,D}`; the
    omitted terms vanish when the last row of :math:`W^{PV}` is :math:`(0, p_y)` and
    :math:`W^{KQ}_{D,:d} = 0`: one step of preconditioned gradient descent from zero.

    Attributes:
        init_scale: standard deviation of the normal initialisation of both matrices.
        dtype: parameter and computation dtype.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> model = gl.models.LinearSelfAttention()
        >>> z = jnp.ones((2, 11, 5))  # 2 prompts, 10 context tokens + 1 query, D = 5
        >>> params = model.init(jax.random.key(0), z)
        >>> model.apply(params, z).shape
        (2, 11, 5)
        >>> params["params"]["w_kq"].shape
        (5, 5)

    References:
        J. von Oswald et al., "Transformers learn in-context by gradient descent",
        https://arxiv.org/abs/2212.07677; A. Mahankali, T. Hashimoto, T. Ma, "One Step of
        Gradient Descent is Provably the Optimal In-Context Learner with One Layer of Linear
        Self-Attention", https://arxiv.org/abs/2307.03576.
    """

    init_scale: float = 0.02
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        if z.ndim < 2 or z.shape[-2] < 2:
            raise ValueError(
                f"z.shape={z.shape!r} is not a prompt: expected (..., n + 1, D) with n >= 1 "
                "context tokens followed by the query token"
            )
        dim = z.shape[-1]
        init = nn.initializers.normal(self.init_scale)
        w_kq = self.param("w_kq", init, (dim, dim), self.dtype)
        w_pv = self.param("w_pv", init, (dim, dim), self.dtype)
        z = z.astype(self.dtype)
        context = z[..., :-1, :]
        scores = jnp.einsum("...id,de,...je->...ij", context, w_kq, z)  # (..., n, n + 1)
        values = context @ w_pv.T  # (..., n, D)
        return z + jnp.einsum("...ij,...id->...jd", scores, values) / context.shape[-2]


def init_lsa(
    key: jax.Array,
    dim: int,
    num_context: int,
    *,
    init_scale: float = 0.02,
    dtype: jnp.dtype = jnp.float32,
) -> tuple[dict, Callable[[dict, jax.Array], jax.Array]]:
    """Initialise a :class:`LinearSelfAttention` layer; ``apply_fn`` returns the query prediction.

    Args:
        key: PRNG key for the normal initialisation.
        dim: input dimension ``d`` of the regression; tokens have ``D = d + 1`` entries.
        num_context: number ``n`` of context pairs in a prompt.
        init_scale: standard deviation of the initial weights.
        dtype: parameter dtype.

    Returns:
        ``params`` and ``apply_fn(params, z) -> y_hat``: for prompts ``z`` of shape
        ``(..., n + 1, d + 1)`` the last entry of the last output token, shape ``(...,)``.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, predict = gl.models.init_lsa(jax.random.key(0), 3, 4)
        >>> predict(params, jnp.ones((7, 5, 4))).shape
        (7,)
    """
    check_int("dim", dim, 1)
    check_int("num_context", num_context, 1)
    model = LinearSelfAttention(init_scale=init_scale, dtype=dtype)
    params = model.init(key, jnp.zeros((1, num_context + 1, dim + 1), dtype))

    def apply_fn(p, z):
        return model.apply(p, z)[..., -1, -1]

    return params, apply_fn
