"""The ntk_width reproduction's closed-form pieces: target, held-out inputs, kernel statistics.

Split from :mod:`gradlab.experiments.ntk_width` (which re-exports every public name here) so
the experiment module holds the runs, checks and figure; these are the functions the checks and
the tests compare against.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["function_distance", "held_out_inputs", "kernel_stats", "linearised_loss", "target"]


def target(x: jax.Array) -> jax.Array:
    """The regression target :math:`f^*(x) = x_1 x_2`, shape ``(N, 1)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.experiments.ntk_width import target
        >>> target(jnp.array([[0.6, 0.8]])).tolist()
        [[0.48000001907348633]]
    """
    return (x[:, 0] * x[:, 1])[:, None]


def held_out_inputs(num_test: int) -> jax.Array:
    """``num_test`` unit-circle inputs at the angles ``(k + 1/2) 2 pi / num_test``, shape ``(M, 2)``.

    Half a grid step off :func:`gradlab.data.unit_circle`'s angles, so when ``num_test`` is a
    multiple of the number of training points none of them is a training input.

    Examples:
        >>> import numpy as np
        >>> from gradlab.experiments.ntk_width import held_out_inputs
        >>> x = held_out_inputs(4)
        >>> np.round(np.degrees(np.arctan2(x[:, 1], x[:, 0])), 3).tolist()
        [45.0, 135.0, -135.0, -45.0]
    """
    angles = (jnp.arange(num_test, dtype=jnp.float32) + 0.5) * (2 * jnp.pi / num_test)
    return jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)


def function_distance(
    f0_train, f0_test, ft_test, ntk_train, ntk_test_train, y, *, learning_rate, num_steps
) -> jax.Array:
    r"""Relative RMS distance between trained outputs and the limiting-NTK prediction.

    :math:`\hat f_T = ` :func:`gradlab.ntk.gradient_descent_mse` ``(ntk_train, y)`` at time
    ``num_steps`` from the network's own initial outputs ``(f0_train, f0_test)``; returns
    :math:`\|f_T - \hat f_T\|_2 / \|\hat f_T\|_2` on the held-out inputs (an RMS ratio).

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.experiments.ntk_width import function_distance
        >>> k, y = jnp.eye(2), jnp.zeros((2, 1))
        >>> f0 = jnp.ones((2, 1))  # t = 0: the prediction is the initial function itself
        >>> float(function_distance(f0, f0, 2 * f0, k, k, y, learning_rate=1.0, num_steps=0))
        1.0
    """
    from gradlab.ntk import gradient_descent_mse

    predict = gradient_descent_mse(ntk_train, y, learning_rate=learning_rate)
    _, pred_test = predict(
        num_steps, fx_train_0=f0_train, fx_test_0=f0_test, k_test_train=ntk_test_train
    )
    return _rel(ft_test, pred_test.reshape(ft_test.shape))


def _rel(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.linalg.norm(a - b) / jnp.linalg.norm(b)


def kernel_stats(theta0, theta_t, theta_inf) -> tuple[jax.Array, jax.Array]:
    r"""``(||Theta_0 - Theta_inf||_F / ||Theta_inf||_F, ||Theta_T - Theta_0||_F / ||Theta_0||_F)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.experiments.ntk_width import kernel_stats
        >>> err, drift = kernel_stats(2 * jnp.eye(2), 3 * jnp.eye(2), jnp.eye(2))
        >>> float(err), float(drift)
        (1.0, 0.5)
    """
    return _rel(theta0, theta_inf), _rel(theta_t, theta0)


def linearised_loss(ntk, nngp, y, *, learning_rate: float, num_steps: int) -> float:
    r"""Expected loss after ``num_steps`` of GD on the infinite-width linearised network.

    In the kernel limit, GD on :math:`\tfrac{1}{2N}\|f - y\|^2` moves the training residual
    as :math:`r_{t+1} = (I - \eta \Theta / N) r_t`, and at initialisation
    :math:`f_0 \sim \mathcal N(0, K)` (the NNGP kernel). With :math:`A = (I - \eta\Theta/N)^T`,
    :math:`\mathbb E\,L_T = \tfrac{1}{2N}(y^\top A^2 y + \operatorname{tr}(A K A))`.

    Examples:
        >>> import numpy as np
        >>> from gradlab.experiments.ntk_width import linearised_loss
        >>> eye, y = np.eye(2), np.array([1.0, 1.0])
        >>> linearised_loss(eye, 0 * eye, y, learning_rate=1.0, num_steps=0)
        0.5
        >>> linearised_loss(eye, eye, y, learning_rate=1.0, num_steps=1)  # r -> r / 2
        0.25
    """
    ntk = np.asarray(ntk, np.float64)
    n = ntk.shape[0]
    a = np.linalg.matrix_power(np.eye(n) - learning_rate * ntk / n, num_steps)
    y = np.asarray(y, np.float64).reshape(n)
    k = np.asarray(nngp, np.float64)
    return float((y @ a @ a @ y + np.trace(a @ k @ a)) / (2 * n))
