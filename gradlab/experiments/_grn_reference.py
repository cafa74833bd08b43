r"""The authors' LogSumExp instance, bit for bit, for the fidelity check of approx_hessian_newton.

The reference notebook of Semenov, Jaggi & Doikov (``notebooks/examples.ipynb`` of
github.com/epfml/grad-norm-smooth, cell 6) draws its data with NumPy's legacy generator::

    np.random.seed(3124)
    A = np.random.rand(n, m) * 2 - 1     # columns are the m linear functions' a_i
    b = np.random.rand(m) * 2 - 1
    oracle = create_log_sum_exp_zero_oracle(A.T, b, mu)   # rows a_i - grad f(0): x* = 0
    x_0 = np.ones(n); B = A.dot(A.T)                       # B from the *unshifted* A

:func:`reference_lse_problem` rebuilds exactly that instance (same random stream, same shift,
same start) as a :class:`gradlab.experiments._grn.Problem`, with the Newton methods measured
in the norm of that ``B``: for ``A^T`` (the ``m x n`` matrix of rows) ``= Q R``, the
substitution ``x = R^{-1} y`` turns :math:`\|x\|_B` into :math:`\|y\|`, so the Newton methods
run on the data :math:`(A^\top - \mathbf 1 g^\top) R^{-1}` from :math:`y_0 = R \mathbf 1`.
The gradient method runs unwhitened (the notebook's "Gradient Method" has ``B=None``).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import scipy.linalg

from gradlab.experiments._grn import Problem
from gradlab.experiments._grn_problems import _lse_curvature, _lse_loss

__all__ = ["reference_lse_data", "reference_lse_problem"]


def reference_lse_data(seed: int, *, num_rows: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)``: the notebook's ``A.T`` (``num_rows x dim``) and ``b``, float64 NumPy.

    Examples:
        >>> import numpy as np
        >>> from gradlab.experiments._grn_reference import reference_lse_data
        >>> a, b = reference_lse_data(3124, num_rows=3, dim=2)
        >>> np.random.seed(3124); want = np.random.rand(2, 3) * 2 - 1
        >>> a.shape, bool(np.array_equal(a, want.T))
        ((3, 2), True)
    """
    rng = np.random.RandomState(seed)  # the stream np.random.seed(seed) starts
    a = rng.rand(dim, num_rows) * 2 - 1
    b = rng.rand(num_rows) * 2 - 1
    return a.T.copy(), b


def reference_lse_problem(
    seed: int, *, num_rows: int, dim: int, mu: float, whiten: bool = True
) -> Problem:
    r"""The notebook's LogSumExp instance (call inside ``jax.enable_x64``).

    Args:
        seed: NumPy legacy seed (the notebook's 3124).
        num_rows: number of linear functions ``m``.
        dim: dimension ``n``.
        mu: smoothing parameter.
        whiten: run in the norm of ``B = A A^T`` of the unshifted notebook ``A`` (the Newton
            methods), or in the Euclidean norm of ``x`` (the gradient method).

    Returns:
        A :class:`gradlab.experiments._grn.Problem` with ``f_star = f(0)``.

    Examples:
        >>> import jax
        >>> from gradlab.experiments._grn_reference import reference_lse_problem
        >>> with jax.enable_x64(True):
        ...     prob = reference_lse_problem(3124, num_rows=20, dim=5, mu=1.0)
        ...     g = jax.grad(prob.loss_fn)(0.0 * prob.x0, prob.batch)
        ...     print(float(abs(g).max()) < 1e-12)
        True
    """
    a0, b0 = reference_lse_data(seed, num_rows=num_rows, dim=dim)
    z = -b0 / mu
    pi = np.exp(z - z.max())
    pi /= pi.sum()
    a = a0 - (a0.T @ pi)[None, :]  # create_log_sum_exp_zero_oracle: A_new = A - grad f(0)
    x0 = np.ones(dim)
    if whiten:
        r = np.linalg.qr(a0, mode="r")  # B = a0^T a0 = R^T R
        a = scipy.linalg.solve_triangular(r, a.T, trans="T", lower=False).T  # a R^{-1}
        x0 = r @ x0
    batch = (jnp.asarray(a, jnp.float64), jnp.asarray(b0, jnp.float64))
    x0 = jnp.asarray(x0, jnp.float64)
    loss_fn = _lse_loss(mu)
    curvature = _lse_curvature(loss_fn, mu)

    f_star = float(loss_fn(jnp.zeros(dim, jnp.float64), batch))
    return Problem(loss_fn, batch, x0, curvature, f_star)
