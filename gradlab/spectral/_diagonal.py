"""Randomized estimation of the diagonal of an operator: Hutchinson (Bekas) and XDiag."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp

from gradlab._src.errors import check_choice, check_int
from gradlab._src.programs import compile_once
from gradlab._src.random import rademacher
from gradlab.distributed._context import follow_operator_mesh
from gradlab.spectral._common import chunked_mean_var, prepare
from gradlab.spectral._trace import Estimate, check_budget, sketch

__all__ = ["diagonal"]

_DIAG_ESTIMATORS = ("hutchinson", "xdiag")


@follow_operator_mesh
@compile_once
def diagonal(
    matvec: Callable[[Any], Any],
    like: Any,
    *,
    key: jax.Array,
    num_matvecs: int,
    estimator: Literal["hutchinson", "xdiag"] = "hutchinson",
    chunk_size: int = 1,
    matvec_dtype: str | None = None,
) -> Estimate:
    r"""Randomized estimate of :math:`\operatorname{diag}(A)` as a pytree like the params.

    - ``"hutchinson"`` (Bekas, Kokiopoulou & Saad): :math:`\frac1N \sum_i z_i \odot A z_i` with
      Rademacher :math:`z_i`; exact for diagonal ``A``. ``sem`` is the per-entry sample standard
      deviation over :math:`\sqrt N`. Probes run in chunks of ``chunk_size`` (vmapped),
      scanned, so peak memory is ``chunk_size`` matvecs.
    - ``"xdiag"`` (Epperly, Tropp & Webber): ``s = N // 2`` probes; the mean of the ``s``
      leave-one-out estimates
      :math:`\operatorname{diag}(Q_{(i)} Q_{(i)}^\top A) + \omega_i \odot (I - Q_{(i)}Q_{(i)}^\top) A \omega_i`
      from a single sketch (``A Omega``, ``A Q``). With :math:`B_i = (I - Q_{(i)}Q_{(i)}^\top) A`,
      entry ``k`` of estimate ``i`` has error variance (given :math:`Q_{(i)}`) at most
      :math:`\|(B_i)_{k,:}\|^2`, estimated without bias by :math:`(B_i\omega_i)_k^2`; ``sem`` is
      ``sqrt(mean_i (B_i omega_i)_k^2 / s)`` (the per-entry spread of the leave-one-out
      estimates underestimates the error because they are positively correlated). Much more
      accurate than Hutchinson when the spectrum decays; ``O(N n)`` memory.

    Args:
        matvec: symmetric operator on pytrees shaped like ``like``.
        like: a pytree with the structure, shapes and dtypes of the vectors.
        key: PRNG key for the probes.
        num_matvecs: total matvec budget ``N`` (at least 2 for Hutchinson, 4 for XDiag).
        estimator: ``"hutchinson"`` or ``"xdiag"``.
        chunk_size: matvecs evaluated at once (vmapped).
        matvec_dtype: mixed precision. ``None`` (default): the operator gets vectors of
            ``like``'s dtype and everything runs in it. ``"bfloat16"``, ``"float16"``,
            ``"float32"`` or ``"float64"``: the vectors handed to ``matvec`` are cast to that
            dtype, its output is cast back, and the probes, sketches and statistics run in float32 (float64 when
            ``jax_enable_x64`` is on). See ``docs/spectral.md``, "Mixed precision".

    Returns:
        :class:`Estimate` whose ``value`` and ``sem`` are pytrees like ``like``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> d = {"w": jnp.array([1.0, 2.0]), "b": jnp.array([3.0])}
        >>> est = gl.spectral.diagonal(lambda v: jax.tree.map(jnp.multiply, d, v), d,
        ...                            key=jax.random.key(0), num_matvecs=3)
        >>> est.value
        {'b': Array([3.], dtype=float32), 'w': Array([1., 2.], dtype=float32)}

    References:
        Bekas, Kokiopoulou & Saad, "An estimator for the diagonal of a matrix", Appl. Numer.
        Math. 2007. Epperly, Tropp & Webber, "XTrace: making the most of every sample in
        stochastic trace estimation", SIAM J. Matrix Anal. Appl. 2024,
        https://arxiv.org/abs/2301.07825.
    """
    mv, n, dtype, unravel = prepare(matvec, like, matvec_dtype=matvec_dtype)
    check_choice("estimator", estimator, _DIAG_ESTIMATORS)
    budget = check_budget(estimator, num_matvecs)
    chunk_size = check_int("chunk_size", chunk_size, 1, None)

    if estimator == "hutchinson":

        def sample(k):
            z = rademacher(k, (n,), dtype)
            return z * mv(z)

        mean, var = chunked_mean_var(sample, jax.random.split(key, budget), chunk_size)
        return Estimate(unravel(mean), unravel(jnp.sqrt(var / budget)))

    s = min(budget // 2, n)
    omega, y, q, z, s_mat = sketch(mv, key, n, s, dtype, chunk_size)
    t = z @ omega.T  # T[:, i] = Q^T A omega_i
    d = jnp.sum(s_mat * t, axis=0)  # s_i^T T_i
    qs = s_mat.T @ q
    zs = s_mat.T @ z
    dqz = jnp.sum(q * z, axis=0)  # diag(Q Q^T A)
    b_omega = y - t.T @ q + d[:, None] * qs  # (I - P_i) A omega_i
    ests = dqz[None, :] - qs * zs + omega * b_omega
    mean = jnp.mean(ests, axis=0)
    sem = jnp.sqrt(jnp.mean(b_omega * b_omega, axis=0) / s)
    return Estimate(unravel(mean), unravel(sem))
