"""optax.tree's reductions (sum, vdot, norm, max, min, size, allclose), with optax's names,
arguments and meanings; private, re-exported in ``optjax.tree`` (see its docstring for where optjax
differs). The sums accumulate in float32 at least; they accept optjax.flat.FlatBuffers, whose
padding stays out of them.
"""

from __future__ import annotations

import builtins
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from optjax._checks import check_nonnegative
from optjax._tree_math import _as, _promote, _real, _wide, _zip_map
from optjax._tree_util import abs_square, check_same_shapes, compute_dtype
from optjax.flat import FlatBuffers

__all__ = ["allclose", "max", "min", "norm", "size", "sum", "vdot"]


def _group_sums(f: Callable, tree, *rest) -> list[jax.Array]:
    """``sum(f(x, *ys))`` for each leaf (each buffer of FlatBuffers, padding left out)."""
    if isinstance(tree, FlatBuffers):
        return list(tree.layout.reduce(f, tree, *rest))
    names = ("tree_x", "tree_y") if rest else ("tree",)
    sums = _zip_map(lambda *xs: jnp.sum(f(*map(jnp.asarray, xs))), (tree, *rest), names)
    return jax.tree.leaves(sums)


def _leaf_wide(x: jax.Array) -> jax.Array:
    """A leaf in its compute dtype (float32 at least for floats), integers as they are."""
    return x.astype(_wide(x.dtype))


def _total(parts: list[jax.Array], associative: bool = False) -> jax.Array:
    """The sum of per-leaf scalars, in float32 at least when any is inexact."""
    if not parts:
        return jnp.asarray(0)
    dtypes = [p.dtype for p in parts]
    if any(jnp.issubdtype(d, jnp.inexact) for d in dtypes):
        dtype = compute_dtype(*dtypes)
    else:
        dtype = _promote(*dtypes)
    parts = [p.astype(dtype) for p in parts]
    if associative:  # a balanced tree of additions: shallower programs for many leaves
        while len(parts) > 1:
            pairs = [parts[i] + parts[i + 1] for i in range(0, len(parts) - 1, 2)]
            parts = pairs + parts[len(parts) - len(parts) % 2 :]
        return parts[0]
    return functools.reduce(jnp.add, parts)


def sum(tree: Any, associative_reduction: bool = False) -> jax.Array:
    """The sum of every element of every leaf, accumulated in float32 at least.

    ``associative_reduction=True`` adds the leaves' sums pairwise (a shallower program for
    trees of many leaves; the rounding differs in the last bits).

    Example:
        >>> optjax.tree.sum({"a": jnp.array([1.0, 2.0]), "b": 3.0, "c": None})
        Array(6., dtype=float32)
    """
    return _total(_group_sums(_leaf_wide, tree), associative_reduction)


def vdot(tree_x: Any, tree_y: Any) -> jax.Array:
    """The inner product ``sum_i <x_i, y_i>`` of two trees (the first conjugated when complex),
    accumulated in float32 at least. Leaves must match in shape (a ValueError names the first
    that does not).

    Example:
        >>> optjax.tree.vdot({"a": jnp.array([1.0, 2.0])}, {"a": jnp.array([3.0, -1.0])})
        Array(1., dtype=float32)
    """
    check_same_shapes(tree_x, tree_y, "tree_x", "tree_y")

    def product(x, y):
        wide = _wide(_promote(x, y))
        return jnp.conj(x.astype(wide)) * y.astype(wide)

    return _total(_group_sums(product, tree_x, tree_y))


def _check_ord(ord) -> None:
    allowed = ord is None or ord == 1 or ord == 2 or ord == math.inf or ord in ("inf", "infinity")
    if isinstance(ord, bool) or not allowed:
        raise ValueError(f"ord must be one of None, 1, 2, inf, 'inf', 'infinity', got ord={ord!r}")


def norm(tree: Any, ord: int | str | float | None = None, squared: bool = False) -> jax.Array:
    """The vector norm of all leaves taken together, in float32 at least: ``ord`` None or 2 (the
    l2 norm ``sqrt(sum_i |x_i|^2)``), 1 (``sum_i |x_i|``) or inf (``max_i |x_i|``); ``squared``
    gives its square.

    Unlike optax 0.2.8: the squares of an fp16 tree do not overflow at 256, and the inf-norm of a
    tree without elements is 0, not -inf.

    Example:
        >>> optjax.tree.norm({"a": jnp.array([3.0]), "b": jnp.array(-4.0)})
        Array(5., dtype=float32)
        >>> optjax.tree.norm({"a": jnp.array([3.0]), "b": jnp.array(-4.0)}, ord="inf")
        Array(4., dtype=float32)
    """
    _check_ord(ord)
    if ord is None or ord == 2:
        sq = _total(_group_sums(abs_square, tree))
        return _as_norm(sq if squared else jnp.sqrt(sq))
    if ord == 1:
        out = _total(_group_sums(lambda x: jnp.abs(_leaf_wide(x)), tree))
    else:
        tops = [jnp.max(jnp.abs(_leaf_wide(jnp.asarray(x)))) for x in _elements(tree)]
        dtype = _real(compute_dtype(*(t.dtype for t in tops)))
        out = functools.reduce(jnp.maximum, [t.astype(dtype) for t in tops], jnp.zeros([], dtype))
    return _as_norm(jnp.square(out) if squared else out)


def _as_norm(x: jax.Array) -> jax.Array:
    """A norm in a real floating dtype (float32 for integer leaves or an empty tree)."""
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _elements(tree) -> list:
    """The leaves, a FlatBuffers' as views of its buffers (so padding is left out)."""
    if isinstance(tree, FlatBuffers):
        tree = tree.unflatten()
    return [x for x in jax.tree.leaves(tree) if jnp.size(x)]


def _extreme(reduce: Callable, combine: Callable, empty: float, tree) -> jax.Array:
    leaves = _elements(tree)
    if not leaves:
        return jnp.asarray(empty, jnp.float32)
    dtype = _promote(*leaves)
    return functools.reduce(combine, [reduce(_as(x, dtype)) for x in leaves])


def max(tree: Any) -> jax.Array:
    """The largest element of all leaves (-inf for a tree without elements), exact in the
    leaves' promoted dtype (optax 0.2.8 rounds an integer tree's maximum to float32).

    Example:
        >>> optjax.tree.max({"a": jnp.array([1.0, 5.0]), "b": jnp.array(-2.0)})
        Array(5., dtype=float32)
    """
    return _extreme(jnp.max, jnp.maximum, -math.inf, tree)


def min(tree: Any) -> jax.Array:
    """The smallest element of all leaves (inf for a tree without elements), exact in the
    leaves' promoted dtype.

    Example:
        >>> optjax.tree.min({"a": jnp.array([1.0, 5.0]), "b": jnp.array(-2.0)})
        Array(-2., dtype=float32)
    """
    return _extreme(jnp.min, jnp.minimum, math.inf, tree)


def size(tree: Any) -> int:
    """The number of elements of all leaves (a FlatBuffers' parameters, padding left out).

    Example:
        >>> optjax.tree.size({"a": jnp.zeros((2, 3)), "b": 1.0, "c": None})
        7
    """
    if isinstance(tree, FlatBuffers):
        return tree.layout.num_params
    return builtins.sum(int(jnp.size(x)) for x in jax.tree.leaves(tree))


def allclose(
    a: Any, b: Any, rtol: Any = 1e-05, atol: Any = 1e-08, equal_nan: bool = False
) -> jax.Array:
    """Whether every leaf of ``a`` is close to the matching leaf of ``b``:
    ``|a - b| <= atol + rtol |b|`` elementwise, as ``jnp.allclose``.

    Example:
        >>> optjax.tree.allclose({"a": jnp.array(1.0)}, {"a": jnp.array(1.0 + 1e-7)})
        Array(True, dtype=bool)
    """
    check_nonnegative("rtol", rtol)
    check_nonnegative("atol", atol)

    def close(x, y):
        dtype = _promote(x, y)
        return jnp.allclose(_as(x, dtype), _as(y, dtype), rtol, atol, equal_nan=equal_nan)

    flags = jax.tree.leaves(_zip_map(close, (a, b), ("a", "b")))
    return functools.reduce(jnp.logical_and, flags, jnp.asarray(True))
