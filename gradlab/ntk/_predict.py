"""Kernel-regime predictions: linearised gradient flow on MSE, GP posteriors, linearisation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradlab._src.errors import check_real

__all__ = ["Gaussian", "gp_inference", "gradient_descent_mse", "linearize"]


def _flatten_kernel(k: jax.Array, name: str) -> jax.Array:
    k = jnp.asarray(k)
    if k.ndim == 2:
        return k
    if k.ndim == 4 and k.shape[2] == k.shape[3]:
        n1, n2, o, _ = k.shape
        return jnp.transpose(k, (0, 2, 1, 3)).reshape(n1 * o, n2 * o)
    raise ValueError(
        f"{name} has shape {k.shape}: expected (N1, N2) (outputs traced) or (N1, N2, O, O) "
        "(trace_axes=())"
    )


def gradient_descent_mse(
    k_train_train: jax.Array,
    y_train: jax.Array,
    *,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
) -> Callable[..., Any]:
    r"""Closed-form outputs of gradient flow on MSE for a model in the kernel regime.

    For the loss ``L = 0.5 / N sum_n ||f(x_n) - y_n||^2`` (:func:`gradlab.models.mse`;
    neural-tangents divides by ``y_train.size`` instead, i.e. by ``N O``), a linearised model
    trained by gradient flow with step size ``eta`` follows

    .. math::

        \dot f_{train} = -\frac{\eta}{N} \Theta (f_{train} - y), \qquad
        \dot f_{test} = -\frac{\eta}{N} \Theta_{test,train} (f_{train} - y),

    solved with the eigendecomposition ``Theta + diag_reg I = V diag(lambda) V^T`` (computed
    once): ``f_train(t) = y + V e^{-eta t lambda / N} V^T (f_0 - y)`` and
    ``f_test(t) = f_test(0) - Theta_{test,train} V diag((1 - e^{-eta t lambda / N}) / lambda)
    V^T (f_0 - y)``. Directions with ``lambda ~ 0`` do not move.

    ``k_train_train`` is either ``(N, N)`` (a kernel with the output axis traced, applied to
    every output independently) or ``(N, N, O, O)`` (``trace_axes=()``).

    Args:
        k_train_train: NTK on the training inputs.
        y_train: targets ``(N,)`` or ``(N, O)``.
        learning_rate: ``eta > 0``; time is measured in steps, ``eta t`` is what matters.
        diag_reg: ``>= 0`` added to the diagonal of the kernel.

    Returns:
        ``predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None)``: ``t`` is a
        time (``None`` for ``t -> infinity``); returns ``fx_train_t`` shaped like
        ``y_train``, or ``(fx_train_t, fx_test_t)`` when ``k_test_train`` (``(M, N)`` or
        ``(M, N, O, O)``) is given (``fx_test_0`` defaults to 0).

    Examples:
        >>> import jax.numpy as jnp, gradlab as gl
        >>> x = jnp.linspace(-1, 1, 5)[:, None]
        >>> k = gl.ntk.infinite_mlp(2)(x).ntk + 0.1 * jnp.eye(5)
        >>> y = jnp.sin(3 * x)
        >>> predict_fn = gl.ntk.gradient_descent_mse(k, y)
        >>> bool(jnp.allclose(predict_fn(None, jnp.zeros_like(y)), y, atol=1e-4))
        True

    References:
        Jacot et al. (2018), https://arxiv.org/abs/1806.07572; Lee et al. (2019),
        https://arxiv.org/abs/1902.06720
    """
    check_real("learning_rate", learning_rate, 0.0, lo_open=True)
    check_real("diag_reg", diag_reg, 0.0)
    y_train = jnp.asarray(y_train)
    k = _flatten_kernel(k_train_train, "k_train_train")
    n = y_train.shape[0]
    outputs_flat = k_train_train.ndim == 4
    if k.shape[0] != (y_train.size if outputs_flat else n):
        raise ValueError(
            f"k_train_train has shape {jnp.shape(k_train_train)} but y_train has shape "
            f"{y_train.shape}: their example (and output) sizes must agree"
        )
    k = k + diag_reg * jnp.eye(k.shape[0], dtype=k.dtype)
    lam, vecs = jnp.linalg.eigh(k)
    cutoff = jnp.finfo(k.dtype).eps * k.shape[0] * jnp.max(jnp.abs(lam))
    live = lam > cutoff
    rate = learning_rate / n

    def as_columns(a):
        a = jnp.asarray(a, k.dtype)
        a = jnp.broadcast_to(a, y_train.shape)
        return a.reshape(-1, 1) if outputs_flat else a.reshape(n, -1)

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        r0 = as_columns(fx_train_0) - as_columns(y_train)  # (K, C)
        coef = vecs.T @ r0
        if t is None:
            decay = jnp.where(live, 0.0, 1.0)
            gain = jnp.where(live, 1.0 / jnp.where(live, lam, 1.0), 0.0)
        else:
            s = rate * jnp.asarray(t, k.dtype)
            decay = jnp.where(live, jnp.exp(-s * lam), 1.0)
            gain = jnp.where(live, -jnp.expm1(-s * lam) / jnp.where(live, lam, 1.0), 0.0)
        fx_train = as_columns(y_train) + vecs @ (decay[:, None] * coef)
        fx_train = fx_train.reshape(y_train.shape)
        if k_test_train is None:
            return fx_train
        kt = _flatten_kernel(k_test_train, "k_test_train")
        delta = -(kt @ (vecs @ (gain[:, None] * coef)))
        m = kt.shape[0] // (y_train.size // n if outputs_flat else 1)
        shape = (m, *y_train.shape[1:])
        base = jnp.zeros(shape, k.dtype) if fx_test_0 is None else jnp.asarray(fx_test_0)
        return fx_train, base + delta.reshape(shape)

    return predict_fn


class Gaussian(NamedTuple):
    """A Gaussian over test outputs.

    Attributes:
        mean: ``(M,)`` or ``(M, O)`` posterior mean (shaped like the targets).
        covariance: ``(M, M)`` posterior covariance, shared by every output column.

    Examples:
        >>> import jax.numpy as jnp, gradlab as gl
        >>> g = gl.ntk.Gaussian(jnp.zeros((2, 1)), jnp.eye(2))
        >>> g.mean.shape, g.covariance.shape
        ((2, 1), (2, 2))
    """

    mean: jax.Array
    covariance: jax.Array


def gp_inference(
    k_train_train: jax.Array,
    y_train: jax.Array,
    *,
    diag_reg: float = 0.0,
) -> Callable[..., Gaussian]:
    r"""Exact Gaussian-process posterior with a given kernel (NNGP or NTK), by Cholesky.

    ``mean = K_{*,X} (K + diag_reg I)^{-1} y`` and
    ``cov = K_{*,*} - K_{*,X} (K + diag_reg I)^{-1} K_{X,*}``. With the NNGP kernel this is
    the Bayesian posterior of the infinitely wide network; with the NTK, the mean is the
    ``t -> infinity`` prediction of gradient descent from zero initial outputs and the
    covariance is that of a GP whose prior is the NTK (not the covariance of an ensemble of
    trained networks, which needs both kernels; see Lee et al. 2019, eq. 16).

    Args:
        k_train_train: ``(N, N)`` kernel on the training inputs.
        y_train: ``(N,)`` or ``(N, O)`` targets.
        diag_reg: ``>= 0`` observation noise variance added to the diagonal.

    Returns:
        ``predict_fn(k_test_train, k_test_test=None) -> Gaussian(mean, covariance)`` with
        ``k_test_train`` ``(M, N)`` and ``k_test_test`` ``(M, M)`` (covariance ``None`` when
        it is not given).

    Examples:
        >>> import jax.numpy as jnp, gradlab as gl
        >>> x = jnp.linspace(-1, 1, 4)[:, None]
        >>> xs = jnp.array([[0.1]])
        >>> kfn = gl.ntk.infinite_mlp(1, bias_std=0.5)
        >>> post = gl.ntk.gp_inference(kfn(x).nngp, jnp.sin(x), diag_reg=1e-3)
        >>> g = post(kfn(xs, x).nngp, kfn(xs).nngp)
        >>> g.mean.shape, g.covariance.shape
        ((1, 1), (1, 1))

    References:
        Lee et al. (2018), Deep neural networks as Gaussian processes,
        https://arxiv.org/abs/1711.00165; Lee et al. (2019), https://arxiv.org/abs/1902.06720
    """
    check_real("diag_reg", diag_reg, 0.0)
    k = jnp.asarray(k_train_train)
    y_train = jnp.asarray(y_train)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] != y_train.shape[0]:
        raise ValueError(
            f"k_train_train has shape {k.shape} and y_train {y_train.shape}: expected (N, N) "
            "with N the number of training targets"
        )
    chol = jax.scipy.linalg.cho_factor(k + diag_reg * jnp.eye(k.shape[0], dtype=k.dtype))
    alpha = jax.scipy.linalg.cho_solve(chol, y_train.astype(k.dtype))

    def predict_fn(k_test_train: jax.Array, k_test_test: jax.Array | None = None) -> Gaussian:
        kt = jnp.asarray(k_test_train)
        mean = kt @ alpha
        if k_test_test is None:
            return Gaussian(mean, None)
        cov = jnp.asarray(k_test_test) - kt @ jax.scipy.linalg.cho_solve(chol, kt.T)
        return Gaussian(mean, cov)

    return predict_fn


def linearize(apply_fn: Callable, params: Any) -> Callable[[Any, jax.Array], jax.Array]:
    r"""First-order Taylor expansion of ``apply_fn`` around ``params``.

    ``f_lin(p, x) = f(params, x) + J(params, x) (p - params)``, evaluated with one JVP (no
    Jacobian). Gradient descent on ``f_lin`` is exactly the kernel-regime dynamics that
    :func:`gradient_descent_mse` solves in closed form with the NTK at ``params``.

    Args:
        apply_fn: ``apply_fn(params, x) -> outputs``.
        params: the expansion point.

    Returns:
        ``f_lin(p, x)`` with the signature of ``apply_fn``.

    Examples:
        >>> import jax, jax.numpy as jnp, gradlab as gl
        >>> params, apply_fn = gl.models.init_mlp(jax.random.key(0), (2, 8, 1))
        >>> f_lin = gl.ntk.linearize(apply_fn, params)
        >>> x = jnp.ones((3, 2))
        >>> bool(jnp.allclose(f_lin(params, x), apply_fn(params, x)))
        True

    References:
        Lee et al. (2019), https://arxiv.org/abs/1902.06720
    """

    def f_lin(p: Any, x: jax.Array) -> jax.Array:
        dp = jax.tree_util.tree_map(jnp.subtract, p, params)
        out, tangent = jax.jvp(lambda q: apply_fn(q, x), (params,), (dp,))
        return out + tangent

    return f_lin
