"""Restrict a curvature operator to a block of parameters (e.g. one layer)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradlab._src.errors import check_same_structure
from gradlab._src.typing import MatVec, Params, PyTree
from gradlab.curvature._checks import check_callable

__all__ = ["Block", "param_paths", "restrict"]


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _path_str(path: tuple[Any, ...]) -> str:
    return "/".join(_key_name(k) for k in path)


def param_paths(params: Params) -> list[str]:
    """The slash-joined key path of every leaf of ``params``, in leaf order.

    These are the strings that a predicate or pattern passed to :func:`restrict` sees, e.g.
    ``"params/Dense_1/kernel"`` for a flax linen model.

    Args:
        params: any pytree.

    Returns:
        A list of strings, one per leaf.

    Examples:
        >>> import jax.numpy as jnp, gradlab as gl
        >>> gl.curvature.param_paths({"params": {"Dense_0": {"bias": jnp.zeros(2),
        ...                                                  "kernel": jnp.zeros((3, 2))}}})
        ['params/Dense_0/bias', 'params/Dense_0/kernel']
    """
    return [_path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]


class Block(NamedTuple):
    """A curvature operator restricted to a sub-pytree of the params.

    The sub-pytree has the structure of the params with every unselected leaf replaced by
    ``None`` (an empty subtree), so it works with any pytree algorithm and its raveled order is
    the order of the selected leaves.

    Attributes:
        matvec: ``matvec(u) -> A_SS u`` on sub-pytrees shaped like ``like``.
        like: the selected part of the params (unselected leaves are ``None``).
        embed: ``embed(u) -> v``: a sub-pytree to a full params-shaped vector, zeros elsewhere.
        extract: ``extract(v) -> u``: the selected leaves of a params-shaped vector.

    Examples:
        >>> import jax.numpy as jnp, gradlab as gl
        >>> block = gl.curvature.restrict(lambda v: v, {"a": jnp.ones(2), "b": jnp.ones(3)}, "b")
        >>> block.like
        {'a': None, 'b': Array([1., 1., 1.], dtype=float32)}
        >>> block.embed({"a": None, "b": jnp.arange(3.0)})["a"]
        Array([0., 0.], dtype=float32)
    """

    matvec: MatVec
    like: PyTree
    embed: Callable[[PyTree], PyTree]
    extract: Callable[[PyTree], PyTree]


def _leaf_mask(params: Params, select: Any) -> list[bool]:
    paths = param_paths(params)
    if isinstance(select, str):
        pattern = re.compile(select)
        return [pattern.search(p) is not None for p in paths]
    if callable(select):
        return [bool(select(p)) for p in paths]
    # A boolean pytree with the structure of params (or a prefix of it).
    try:
        full = jax.tree_util.tree_map(
            lambda m, sub: jax.tree_util.tree_map(lambda _: m, sub), select, params
        )
    except ValueError as err:
        raise TypeError(
            "select must be a regex string matched against the leaf paths, a predicate "
            "path -> bool, or a pytree of bools with the structure of params (or a prefix of "
            f"it); the pytree given does not fit params: {err}"
        ) from None
    flags = jax.tree_util.tree_leaves(full)
    bad = [f for f in flags if not isinstance(f, (bool, np.bool_))]
    if bad:
        raise TypeError(f"select mask leaves must be Python bools, got {bad[0]!r}")
    return [bool(f) for f in flags]


def restrict(matvec: MatVec, params: Params, select: Any) -> Block:
    r"""Restrict an operator on the params to the block of a subset of them.

    With :math:`S` the selected coordinates and :math:`P_S` the matrix that picks them, the
    block operator is :math:`A_{SS} = P_S A P_S^\top`: embed ``u`` with zeros elsewhere,
    apply the full operator (one full product), and keep the selected leaves. Its spectrum is
    the per-layer spectrum, e.g. of the Hessian block of one layer's weights.

    Args:
        matvec: any operator on params-shaped pytrees.
        params: the params pytree (only its structure, shapes and dtypes are used).
        select: which leaves form the block, one of

            * a string: a regular expression searched (``re.search``) in each leaf's
              slash-joined path, e.g. ``"Dense_1/kernel"`` or ``"Dense_[01]/"``
              (see :func:`param_paths`);
            * a predicate ``select(path: str) -> bool`` on that path;
            * a pytree of Python bools with the structure of ``params``, or a prefix of it
              (``{"params": {"Dense_0": True, "Dense_1": False}}``).

    Returns:
        A :class:`Block` ``(matvec, like, embed, extract)``.

    Raises:
        ValueError: nothing is selected (the message lists the leaf paths).
        TypeError: ``select`` is none of the accepted kinds, or (first call) a block vector
            with the wrong structure.

    Examples:
        >>> import jax.numpy as jnp
        >>> import gradlab as gl
        >>> params = {"w1": jnp.ones(2), "w2": jnp.ones(1)}
        >>> def loss_fn(p, x):
        ...     return jnp.sum(x * p["w1"]) ** 2 * p["w2"][0]
        >>> hvp = gl.curvature.hessian(loss_fn, params, jnp.ones((1, 2)))
        >>> block = gl.curvature.restrict(hvp, params, "w1")
        >>> gl.curvature.dense(block.matvec, block.like)  # d^2 L / d w1^2 = 2 w2 x x^T
        Array([[2., 2.],
               [2., 2.]], dtype=float32)
    """
    check_callable("matvec", matvec)
    mask = _leaf_mask(params, select)
    paths = param_paths(params)
    if not any(mask):
        raise ValueError(
            f"select={select!r} selects no parameter: expected it to match at least one of "
            f"the leaf paths {paths}"
        )
    leaves, treedef = jax.tree_util.tree_flatten(params)

    def extract(v: PyTree) -> PyTree:
        v_leaves = treedef.flatten_up_to(v)
        return treedef.unflatten([x if m else None for x, m in zip(v_leaves, mask, strict=True)])

    like = extract(params)

    def embed(u: PyTree) -> PyTree:
        check_same_structure("u (block vector)", u, like)
        u_leaves = treedef.flatten_up_to(u)
        return treedef.unflatten(
            [
                jnp.asarray(x, jnp.result_type(p))
                if m
                else jnp.zeros(jnp.shape(p), jnp.result_type(p))
                for x, p, m in zip(u_leaves, leaves, mask, strict=True)
            ]
        )

    def block_matvec(u: PyTree) -> PyTree:
        return extract(matvec(embed(u)))

    return Block(block_matvec, like, embed, extract)
