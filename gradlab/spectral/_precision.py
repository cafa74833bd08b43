"""The mixed-precision policy of the spectral algorithms: the ``matvec_dtype=`` option.

With ``matvec_dtype=None`` (the default) an algorithm works in the dtype of its ``like`` vector
and hands the operator vectors of that dtype, as before. With ``matvec_dtype`` set to
``"bfloat16"``, ``"float16"``, ``"float32"`` or ``"float64"`` the two precisions split:

- **matvec precision**: every vector handed to the operator has its leaves cast to
  ``matvec_dtype`` (the pytree structure and shapes of ``like`` are kept), and whatever the
  operator returns is cast to the working dtype;
- **working precision**: the Krylov recurrences, the reorthogonalisation, the probe
  statistics and the small dense eigensolves run in float32, or in float64 when the user has
  enabled ``jax_enable_x64`` (never switched on here).

An operator that casts its input to its own parameters' dtypes (all of
:mod:`gradlab.curvature` does) computes in *those* dtypes: to run a Hessian-vector product in
bfloat16, build the operator at bfloat16 parameters and batch and pass the float32 parameters
as ``like`` (see ``docs/spectral.md``, "Mixed precision").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradlab._src.tree import ravel

__all__ = ["MATVEC_DTYPES", "check_matvec_dtype", "cast_operator", "working_dtype"]

#: The dtypes ``matvec_dtype=`` accepts (as names; numpy/jnp dtype objects are accepted too).
MATVEC_DTYPES = ("bfloat16", "float16", "float32", "float64")


def check_matvec_dtype(value: Any) -> jnp.dtype | None:
    """Validate ``matvec_dtype`` and return it as a dtype (``None`` stays ``None``).

    Raises:
        ValueError: not one of :data:`MATVEC_DTYPES` (or their dtype objects), or
            ``"float64"`` while ``jax_enable_x64`` is off (JAX would silently give float32).
    """
    if value is None:
        return None
    listed = ", ".join(repr(d) for d in MATVEC_DTYPES)
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in MATVEC_DTYPES:
        raise ValueError(
            f"matvec_dtype={value!r} is not a valid choice: expected None or one of {listed}"
        )
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            f"matvec_dtype={value!r} needs 64-bit floats, but jax_enable_x64 is off: enable it "
            "with jax.config.update('jax_enable_x64', True) or pick one of 'bfloat16', "
            "'float16', 'float32'"
        )
    return dtype


def working_dtype(like_dtype: Any, matvec_dtype: jnp.dtype | None) -> jnp.dtype:
    """The dtype of the recurrences: ``like``'s dtype by default, else float32 or float64 (x64)."""
    if matvec_dtype is None:
        return jnp.dtype(like_dtype)
    return jnp.dtype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)


def cast_operator(
    matvec: Callable[[Any], Any], like: Any, matvec_dtype: jnp.dtype
) -> tuple[Callable[[jax.Array], jax.Array], Callable[[jax.Array], Any], Any]:
    """A flat operator that runs ``matvec`` on ``matvec_dtype`` vectors.

    Returns ``(mv, unravel_low, like_low)``: ``mv(x)`` casts the flat working-precision ``x``
    to ``matvec_dtype``, unravels it into a pytree whose leaves all have that dtype, applies
    ``matvec`` and returns the flat result (in the operator's output dtype; the caller casts
    it to the working dtype). ``like_low`` is ``like`` with its leaves cast, for shape checks.
    """
    like_low = jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(jnp.shape(leaf), matvec_dtype), like
    )
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), like_low)
    _, unravel_low = ravel(zeros)

    def mv(x: jax.Array) -> jax.Array:
        y, _ = ravel(matvec(unravel_low(x.astype(matvec_dtype))))
        return y

    return mv, unravel_low, like_low
