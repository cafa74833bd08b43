"""Directions in parameter space for loss-landscape slices: random, normalised, eigenvectors."""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp

from gradlab._src.errors import check_choice, check_int, check_same_structure
from gradlab._src.tree import tree_random_like

__all__ = ["eigen_direction", "normalize_direction", "random_direction"]

_NORMALIZE = ("filter", "layer", None)
_BIASES = ("zero", "params")


def _safe_scale(target: jax.Array, current: jax.Array) -> jax.Array:
    """``target / current``, and 0 where ``current`` is 0 (a zero direction stays zero)."""
    ok = current > 0
    return jnp.where(ok, target / jnp.where(ok, current, 1.0), 0.0)


def _normalize_leaf(d: jax.Array, w: jax.Array, normalize: str, biases: str) -> jax.Array:
    d = jnp.asarray(d)
    w = jnp.asarray(w)
    if d.ndim <= 1:  # biases, norm scales/shifts, any per-unit scalar
        return jnp.zeros_like(d) if biases == "zero" else w.astype(d.dtype)
    if normalize == "layer":
        return d * _safe_scale(jnp.linalg.norm(w), jnp.linalg.norm(d)).astype(d.dtype)
    # "filter": one filter per entry of the last (output-feature) axis.
    axes = tuple(range(d.ndim - 1))
    d_norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes))
    w_norm = jnp.sqrt(jnp.sum(jnp.square(w), axis=axes))
    return d * _safe_scale(w_norm, d_norm).astype(d.dtype)


def normalize_direction(
    direction: Any,
    params: Any,
    *,
    normalize: Literal["filter", "layer"] | None = "filter",
    biases: Literal["zero", "params"] = "zero",
) -> Any:
    r"""Rescale a direction filter by filter (or layer by layer) to the size of ``params``.

    Loss curves along a raw direction are not comparable across networks: a ReLU network is
    invariant to rescaling a unit's incoming weights, so a step of fixed length moves a
    small-norm filter far more than a large one. Li et al. remove this by giving every filter
    :math:`d_{ij}` of the direction the norm of the matching filter :math:`\theta_{ij}` of the
    params: :math:`d_{ij} \leftarrow d_{ij}\, \|\theta_{ij}\| / \|d_{ij}\|`.

    What a *filter* is, leaf by leaf (flax puts the output features on the last axis):

    - a leaf with two or more axes has one filter per entry of its **last axis**: for a
      ``Dense`` kernel ``(in, out)`` that is the column ``kernel[:, j]``, the weights into output
      unit ``j`` (the paper's "weights that generate one neuron"); for a ``Conv`` kernel in HWIO
      layout ``(h, w, in, out)`` it is ``kernel[..., j]``, the whole ``h x w x in`` filter of
      output channel ``j`` (PyTorch's ``weight[j]``). An ``Embed`` table ``(vocab, features)``
      gets one "filter" per feature column.
    - a leaf with at most one axis (biases, batch/layer-norm scales and shifts) is not
      normalised. ``biases="zero"`` (default) sets the direction to zero there, so those
      parameters stay at their values along the slice: the setting of every published command
      of the authors' code (``--xignore biasbn``, "fill the corresponding entries in the random
      vector with zeros"); ``biases="params"`` copies the params into the direction instead,
      the other branch of that code (one value per unit, kept at its own scale).

    ``normalize="layer"`` rescales each leaf with two or more axes as a whole to the norm of
    the params' leaf (same rule for 1-D leaves); ``normalize=None`` returns ``direction``
    unchanged. A filter whose direction or params norm is zero gets a zero direction.

    Args:
        direction: a pytree with the structure and leaf shapes of ``params``.
        params: the point the slice is centred on.
        normalize: ``"filter"``, ``"layer"`` or ``None``.
        biases: rule for leaves with at most one axis: ``"zero"`` or ``"params"``.

    Returns:
        A pytree like ``params``: the normalised direction (leaf dtypes of ``direction``).

    Raises:
        ValueError: unknown ``normalize`` or ``biases``, or a leaf of ``direction`` whose shape
            differs from the params' (``TypeError`` if the tree structures differ).

    Examples:
        >>> import jax.numpy as jnp
        >>> from gradlab.landscape import normalize_direction
        >>> params = {"w": jnp.array([[3.0, 0.0], [4.0, 1.0]]), "b": jnp.ones(2)}
        >>> d = normalize_direction({"w": jnp.ones((2, 2)), "b": jnp.ones(2)}, params)
        >>> jnp.round(jnp.linalg.norm(d["w"], axis=0), 4), d["b"]
        (Array([5., 1.], dtype=float32), Array([0., 0.], dtype=float32))

    References:
        Li, Xu, Taylor, Studer, Goldstein, "Visualizing the Loss Landscape of Neural Nets",
        NeurIPS 2018, section 4, https://arxiv.org/abs/1712.09913.
    """
    check_choice("normalize", normalize, _NORMALIZE)
    check_choice("biases", biases, _BIASES)
    check_same_structure("direction", direction, params)
    if normalize is None:
        return direction
    return jax.tree_util.tree_map(
        lambda d, w: _normalize_leaf(d, w, normalize, biases), direction, params
    )


def random_direction(
    key: jax.Array,
    params: Any,
    *,
    normalize: Literal["filter", "layer"] | None = "filter",
    biases: Literal["zero", "params"] = "zero",
) -> Any:
    r"""A Gaussian random direction shaped like ``params``, filter-normalised by default.

    Draws :math:`d \sim \mathcal N(0, I)` leaf by leaf (in each leaf's dtype) and applies
    :func:`normalize_direction`: with the default ``normalize="filter"`` every filter of
    :math:`d` has the norm of the matching filter of ``params`` and the directions of biases
    and other 1-D leaves are zero (Li et al.'s setting). Two independent keys give two nearly
    orthogonal directions for :func:`gradlab.landscape.plane` (in high dimension).

    Args:
        key: PRNG key.
        params: the point the slice is centred on (a pytree of arrays).
        normalize: ``"filter"`` (default), ``"layer"`` or ``None`` (raw Gaussian).
        biases: rule for leaves with at most one axis when normalising: ``"zero"`` or
            ``"params"`` (see :func:`normalize_direction`).

    Returns:
        A pytree with the structure, shapes and dtypes of ``params``.

    Raises:
        ValueError: unknown ``normalize`` or ``biases``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from gradlab.landscape import random_direction
        >>> params = {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}
        >>> d = random_direction(jax.random.key(0), params)
        >>> jnp.round(jnp.linalg.norm(d["kernel"], axis=0), 4), d["bias"]
        (Array([1.7321, 1.7321], dtype=float32), Array([0., 0.], dtype=float32))

    References:
        Li, Xu, Taylor, Studer, Goldstein, "Visualizing the Loss Landscape of Neural Nets",
        NeurIPS 2018, https://arxiv.org/abs/1712.09913.
    """
    check_choice("normalize", normalize, _NORMALIZE)
    check_choice("biases", biases, _BIASES)
    direction = tree_random_like(key, params, distribution="normal")
    return normalize_direction(direction, params, normalize=normalize, biases=biases)


def eigen_direction(eigen: Any, index: int = 0) -> Any:
    r"""The ``index``-th eigenvector of a :func:`gradlab.spectral.eigsh` result, as a direction.

    ``eigsh`` returns its ``k`` eigenvectors as one pytree with a leading axis ``k``; this
    slices out one of them (unit norm in the flattened parameter space). Along the top Hessian
    eigenvector the loss rises fastest to second order, so the plane of the top two
    eigenvectors is the usual curvature-aligned slice (Yao et al., PyHessian). Eigenvectors
    have unit norm and no natural scale: pass the result through :func:`normalize_direction`
    to compare networks, or choose ``alphas`` in units of ``1 / sqrt(eigenvalue)``.

    Args:
        eigen: an :class:`gradlab.spectral.Eigen` (or anything with an ``eigenvectors`` pytree
            whose leaves share a leading axis ``k``).
        index: which eigenvector, ``0 <= index < k`` (ordered as ``eigsh`` returns them).

    Returns:
        A pytree shaped like the operator's vectors (the params).

    Raises:
        ValueError: ``index`` out of range.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import gradlab as gl
        >>> a = jnp.diag(jnp.array([3.0, 2.0, 1.0, 0.5]))
        >>> eig = gl.spectral.eigsh(lambda v: a @ v, jnp.zeros(4), k=2, key=jax.random.key(0))
        >>> jnp.round(jnp.abs(gl.landscape.eigen_direction(eig, 0)), 4)
        Array([1., 0., 0., 0.], dtype=float32)

    References:
        Yao, Gholami, Keutzer, Mahoney, "PyHessian: Neural Networks Through the Lens of the
        Hessian", 2020, https://arxiv.org/abs/1912.07145.
    """
    leaves = jax.tree_util.tree_leaves(eigen.eigenvectors)
    k = int(leaves[0].shape[0]) if leaves else 0
    index = check_int("index", index, 0, k - 1)
    return jax.tree_util.tree_map(lambda x: x[index], eigen.eigenvectors)
