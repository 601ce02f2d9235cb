"""optax.tree's elementwise functions, casts and moment updates, with optax's names, arguments and
meanings; private, re-exported in ``optjax.tree`` (see its docstring for where optjax differs).

Also the helpers optax.tree's other functions here and optjax.numerics share: `_zip_map` (a map
over matching trees that names the first mismatch) and explicit dtype promotion.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optjax._checks import (
    check_decay,
    check_finite,
    check_integer,
    check_nonnegative,
    check_positive,
    check_unit_interval,
    concrete,
)
from optjax._tree_util import abs_square, check_same_structure, compute_dtype, moment_dtype

__all__ = [
    "add",
    "add_scale",
    "batch_shape",
    "bias_correction",
    "cast",
    "cast_like",
    "clip",
    "conj",
    "div",
    "dtype",
    "full_like",
    "mul",
    "ones_like",
    "real",
    "scale",
    "sub",
    "update_infinity_moment",
    "update_moment",
    "update_moment_per_elem_norm",
    "where",
]


# Helpers: matching trees, dtypes.


def _is_none(x) -> bool:
    return x is None


def _zip_map(f: Callable, trees: Sequence, names: Sequence[str]):
    """``f`` over the matching leaves of ``trees`` (the first tree's structure): a ValueError
    names the first path where the structures differ, or the leaf whose shapes do not broadcast;
    a None leaf in any tree gives None."""
    for other, name in zip(trees[1:], names[1:]):
        check_same_structure(trees[0], other, names[0], name)

    def leaf(path, *xs):
        if any(x is None for x in xs):
            return None
        shapes = [jnp.shape(x) for x in xs]
        try:
            jnp.broadcast_shapes(*shapes)
        except ValueError:
            at = jax.tree_util.keystr(path)
            got = ", ".join(f"{n}{at} has shape {s}" for n, s in zip(names, shapes))
            raise ValueError(f"leaf shapes do not broadcast: {got}") from None
        return f(*xs)

    return jax.tree_util.tree_map_with_path(leaf, *trees, is_leaf=_is_none)


def _promote(*xs) -> np.dtype:
    """The dtype JAX's standard promotion gives ``xs`` (Python numbers weakly typed), whatever
    promotion mode is in force."""
    with jax.numpy_dtype_promotion("standard"):
        return jnp.result_type(*xs)


def _wide(dtype) -> np.dtype:
    """Where arithmetic giving a ``dtype`` result runs: float32 at least for inexact dtypes."""
    return compute_dtype(dtype) if jnp.issubdtype(dtype, jnp.inexact) else np.dtype(dtype)


def _as(x, dtype) -> jax.Array:
    return jnp.asarray(x).astype(dtype)


def _num(value, dtype):
    """A scalar hyperparameter for arithmetic in ``dtype``: a Python number stays one (weakly
    typed), anything else is cast."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return jnp.asarray(value).astype(dtype)


def _real(dtype) -> np.dtype:
    return np.dtype(jnp.finfo(dtype).dtype) if jnp.issubdtype(dtype, jnp.inexact) else dtype


def _if_scalar(check: Callable[[str, Any], None], name: str, value) -> None:
    """Validate a hyperparameter that may also be an array: arrays with a shape pass unchecked."""
    if getattr(value, "ndim", 0) == 0:
        check(name, value)


# Elementwise arithmetic.


def add(tree_x: Any, tree_y: Any, *other_trees: Any) -> Any:
    """``tree_x + tree_y (+ other_trees...)``, leaf by leaf, the sum formed in float32 at least
    and rounded once.

    Example:
        >>> x, y = {"a": jnp.array(1.0), "b": None}, {"a": 2.0, "b": None}
        >>> optjax.tree.add(x, y, {"a": 0.5, "b": 1})
        {'a': Array(3.5, dtype=float32), 'b': None}
    """
    trees = (tree_x, tree_y, *other_trees)
    names = ("tree_x", "tree_y", *(f"other_trees[{i}]" for i in range(len(other_trees))))

    def total(*xs):
        dtype = _promote(*xs)
        wide = _wide(dtype)
        out = _as(xs[0], wide)
        for x in xs[1:]:
            out = out + _as(x, wide)
        return out.astype(dtype)

    return _zip_map(total, trees, names)


def _binary(op: Callable, tree_x, tree_y, inexact: bool = False):
    def f(x, y):
        dtype = _promote(x, y)
        if inexact and not jnp.issubdtype(dtype, jnp.inexact):
            dtype = _promote(dtype, 1.0)  # true division of integers gives floats
        wide = _wide(dtype)
        return op(_as(x, wide), _as(y, wide)).astype(dtype)

    return _zip_map(f, (tree_x, tree_y), ("tree_x", "tree_y"))


def sub(tree_x: Any, tree_y: Any) -> Any:
    """``tree_x - tree_y``, leaf by leaf.

    Example:
        >>> optjax.tree.sub({"a": jnp.array([3.0, 1.0])}, {"a": jnp.array([1.0, 1.0])})
        {'a': Array([2., 0.], dtype=float32)}
    """
    return _binary(jnp.subtract, tree_x, tree_y)


def mul(tree_x: Any, tree_y: Any) -> Any:
    """``tree_x * tree_y``, leaf by leaf.

    Example:
        >>> optjax.tree.mul({"a": jnp.array([3.0, 1.0])}, {"a": jnp.array([2.0, -1.0])})
        {'a': Array([ 6., -1.], dtype=float32)}
    """
    return _binary(jnp.multiply, tree_x, tree_y)


def div(tree_x: Any, tree_y: Any) -> Any:
    """``tree_x / tree_y``, leaf by leaf (true division: integers give floats).

    Example:
        >>> optjax.tree.div({"a": jnp.array([3, 1])}, {"a": jnp.array([2, 4])})
        {'a': Array([1.5 , 0.25], dtype=float32)}
    """
    return _binary(jnp.true_divide, tree_x, tree_y, inexact=True)


def scale(scalar: Any, tree: Any) -> Any:
    """``scalar * tree``, leaf by leaf (optax's argument order: the scalar first).

    Example:
        >>> optjax.tree.scale(0.5, {"a": jnp.array([2.0, 4.0], jnp.bfloat16)})
        {'a': Array([1, 2], dtype=bfloat16)}
    """
    _if_scalar(check_finite, "scalar", scalar)

    def f(x):
        dtype = _promote(scalar, x)
        wide = _wide(dtype)
        return (_num(scalar, wide) * _as(x, wide)).astype(dtype)

    return _zip_map(f, (tree,), ("tree",))


def add_scale(tree_x: Any, scalar: Any, tree_y: Any) -> Any:
    """``tree_x + scalar * tree_y``, leaf by leaf, formed in float32 at least and rounded once.

    Example:
        >>> optjax.tree.add_scale({"a": jnp.array(1.0)}, 0.5, {"a": jnp.array(4.0)})
        {'a': Array(3., dtype=float32)}
    """
    _if_scalar(check_finite, "scalar", scalar)

    def f(x, y):
        dtype = _promote(x, y, scalar)
        wide = _wide(dtype)
        return (_as(x, wide) + _num(scalar, wide) * _as(y, wide)).astype(dtype)

    return _zip_map(f, (tree_x, tree_y), ("tree_x", "tree_y"))


def where(condition: Any, tree_x: Any, tree_y: Any) -> Any:
    """``tree_x`` where ``condition`` (a boolean, or an array broadcasting against every leaf)
    holds, else ``tree_y``, leaf by leaf.

    Example:
        >>> optjax.tree.where(jnp.array(False), {"a": jnp.array(1.0)}, {"a": jnp.array(2.0)})
        {'a': Array(2., dtype=float32)}
    """

    def f(x, y):
        dtype = _promote(x, y)
        return jnp.where(condition, _as(x, dtype), _as(y, dtype))

    return _zip_map(f, (tree_x, tree_y), ("tree_x", "tree_y"))


def clip(tree: Any, min_value: Any = None, max_value: Any = None) -> Any:
    """Every leaf clipped to ``[min_value, max_value]`` (a None bound is no bound).

    Example:
        >>> optjax.tree.clip({"a": jnp.array([-2.0, 0.5, 3.0])}, -1.0, 1.0)
        {'a': Array([-1. ,  0.5,  1. ], dtype=float32)}
    """
    low, high = concrete(min_value), concrete(max_value)
    if low is not None and high is not None and low.ndim == high.ndim == 0 and low > high:
        raise ValueError(
            f"min_value must be <= max_value, got min_value={min_value!r}, max_value={max_value!r}"
        )
    bounds = [b for b in (min_value, max_value) if b is not None]

    def f(x):
        dtype = _promote(x, *bounds)
        lo = None if min_value is None else _as(min_value, dtype)
        hi = None if max_value is None else _as(max_value, dtype)
        return jnp.clip(_as(x, dtype), lo, hi)

    return _zip_map(f, (tree,), ("tree",))


def conj(tree: Any) -> Any:
    """The complex conjugate of every leaf (real leaves unchanged).

    Example:
        >>> optjax.tree.conj({"a": jnp.complex64(1.0 + 2.0j)})
        {'a': Array(1.-2.j, dtype=complex64)}
    """
    return _zip_map(jnp.conj, (tree,), ("tree",))


def real(tree: Any) -> Any:
    """The real part of every leaf.

    Example:
        >>> optjax.tree.real({"a": jnp.complex64(1.0 + 2.0j)})
        {'a': Array(1., dtype=float32)}
    """
    return _zip_map(jnp.real, (tree,), ("tree",))


def batch_shape(tree: Any, shape: tuple[int, ...] = ()) -> Any:
    """Every leaf broadcast to leading batch dimensions ``shape``.

    Example:
        >>> optjax.tree.batch_shape({"a": jnp.zeros(3)}, (2,))["a"].shape
        (2, 3)
    """
    return _zip_map(lambda x: jnp.broadcast_to(x, (*shape, *jnp.shape(x))), (tree,), ("tree",))


# Making trees like another.


def ones_like(tree: Any, dtype: Any = None) -> Any:
    """Ones shaped (and sharded) like ``tree``; with ``dtype``, in that dtype.

    Example:
        >>> optjax.tree.ones_like({"a": jnp.zeros(2)})
        {'a': Array([1., 1.], dtype=float32)}
    """
    return jax.tree.map(lambda x: jnp.ones_like(x, dtype=dtype), tree)


def full_like(tree: Any, fill_value: Any, dtype: Any = None) -> Any:
    """Arrays filled with ``fill_value``, shaped (and sharded) like ``tree``; with ``dtype``, in
    that dtype.

    Example:
        >>> optjax.tree.full_like({"a": jnp.zeros(2)}, fill_value=3.0)
        {'a': Array([3., 3.], dtype=float32)}
    """
    return jax.tree.map(lambda x: jnp.full_like(x, fill_value, dtype=dtype), tree)


def cast(tree: Any, dtype: Any) -> Any:
    """Every leaf cast to ``dtype``; None leaves the tree as it is. Python-number leaves become
    arrays (optax 0.2.8 fails on them).

    Example:
        >>> optjax.tree.cast({"a": jnp.array(1.5), "b": 2.0}, jnp.bfloat16)
        {'a': Array(1.5, dtype=bfloat16), 'b': Array(2, dtype=bfloat16)}
    """
    if dtype is None:
        return tree
    return jax.tree.map(lambda x: x.astype(dtype) if hasattr(x, "astype") else _as(x, dtype), tree)


def cast_like(tree: Any, other_tree: Any) -> Any:
    """Each leaf of ``tree`` cast to the dtype of the matching leaf of ``other_tree`` (left as it
    is where that leaf has no dtype, a Python number).

    Example:
        >>> optjax.tree.cast_like({"a": jnp.array(1.0)}, {"a": jnp.zeros(3, jnp.float16)})
        {'a': Array(1., dtype=float16)}
    """

    def f(x, like):
        if not hasattr(like, "dtype"):
            return x
        return x.astype(like.dtype) if hasattr(x, "astype") else _as(x, like.dtype)

    return _zip_map(f, (tree, other_tree), ("tree", "other_tree"))


def _lower_dtype(a, b):
    if _promote(a, b) == a:
        return b
    if _promote(a, b) == b:
        return a
    raise ValueError(f"cannot order dtypes {a} and {b}: neither promotes to the other")


def dtype(tree: Any, mixed_dtype_handler: str | None = None) -> Any:
    """The dtype of the tree's leaves (JAX's default float dtype for an empty tree).

    ``mixed_dtype_handler``: None (all leaves must share a dtype, else ValueError naming the
    leaves that differ), ``"promote"`` (their promoted dtype), ``"highest"`` or ``"lowest"``
    (the leaf dtype every other promotes to, or that promotes to every other).

    Example:
        >>> tree = {"a": jnp.zeros(2, jnp.bfloat16), "b": jnp.zeros(2)}
        >>> optjax.tree.dtype(tree, "lowest"), optjax.tree.dtype(tree, "promote")
        (dtype(bfloat16), dtype('float32'))
    """
    if mixed_dtype_handler not in (None, "promote", "highest", "lowest"):
        raise ValueError(
            "mixed_dtype_handler must be None, 'promote', 'highest' or 'lowest', got "
            f"mixed_dtype_handler={mixed_dtype_handler!r}"
        )
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if not leaves:
        return jnp.asarray([]).dtype
    dtypes = [jnp.result_type(x) for _, x in leaves]
    if mixed_dtype_handler is None:
        others = [
            f"{jax.tree_util.keystr(path)} is {d}"
            for (path, _), d in zip(leaves, dtypes)
            if d != dtypes[0]
        ]
        if others:
            first = jax.tree_util.keystr(leaves[0][0]) or "<root>"
            raise ValueError(
                f"the tree's leaves have several dtypes ({first} is {dtypes[0]}, but "
                f"{'; '.join(others)}); pass mixed_dtype_handler='promote', 'highest' or 'lowest'"
            )
        return dtypes[0]
    if mixed_dtype_handler == "promote":
        return _promote(*dtypes)
    if mixed_dtype_handler == "lowest":
        return functools.reduce(_lower_dtype, dtypes)
    return functools.reduce(lambda a, b: b if _lower_dtype(a, b) == a else a, dtypes)


# Moments.


def _moment_update(f: Callable, updates, moments):
    """``f(g, t, wide)`` on each leaf, with g and t in ``wide`` (float32 at least, the wider of
    their dtypes; t stays real if it is real), stored in the moment's dtype; a complex result
    for a real moment (complex updates) in its complex counterpart, as casting it to the real
    dtype would drop its imaginary part."""

    def step(g, t):
        g, t = jnp.asarray(g), jnp.asarray(t)
        out_dtype = moment_dtype(g, t.dtype)  # a real t: complex for a complex g^order
        wide = compute_dtype(g.dtype, t.dtype, out_dtype)
        t_wide = t.astype(wide if jnp.iscomplexobj(t) else _real(wide))
        out = f(g.astype(wide), t_wide, wide)
        return out.astype(out_dtype if jnp.iscomplexobj(out) else t.dtype)

    return _zip_map(step, (updates, moments), ("updates", "moments"))


def update_moment(updates: Any, moments: Any, decay: Any, order: Any) -> Any:
    """The exponential moving average of the ``order``-th power of the updates:

        t_new = (1 - decay) g^order + decay t

    Computed in float32 at least and stored in the moments' dtype (optax 0.2.8 gives the promoted
    dtype of updates and moments). Complex updates and real moments give complex moments, as in
    optax: complex64 for float32, bf16 and fp16 moments, complex128 for float64 ones.

    Example:
        >>> optjax.tree.update_moment({"a": jnp.array(2.0)}, {"a": jnp.array(1.0)}, 0.9, 2)
        {'a': Array(1.3, dtype=float32)}

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2014 (its m_t and v_t).
    """
    check_unit_interval("decay", decay)
    check_positive("order", order)

    def f(g, t, wide):
        d = _num(decay, wide)
        return (1 - d) * g ** _num(order, wide) + d * t

    return _moment_update(f, updates, moments)


def update_moment_per_elem_norm(updates: Any, moments: Any, decay: Any, order: Any) -> Any:
    """The exponential moving average of the ``order``-th power of each element's modulus:

        t_new = (1 - decay) |g|^order + decay t

    For complex g, ``|g|^order = (re(g)^2 + im(g)^2)^(order / 2)``. Unlike optax 0.2.8, which
    raises a real g to the power unsigned (a negative EMA of a norm for odd orders, NaN for
    fractional ones), the modulus is taken for real g too.

    Example:
        >>> optjax.tree.update_moment_per_elem_norm(
        ...     {"a": jnp.array(-2.0)}, {"a": jnp.array(0.0)}, 0.5, 1)
        {'a': Array(1., dtype=float32)}

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2014 (v_t for order 2).
    """
    check_unit_interval("decay", decay)
    check_positive("order", order)

    def power(g, wide):
        if jnp.issubdtype(g.dtype, jnp.complexfloating):
            half = order / 2
            half = int(half) if isinstance(half, float) and half.is_integer() else half
            return abs_square(g) ** _num(half, _real(wide))
        return jnp.abs(g) ** _num(order, wide)

    def f(g, t, wide):
        d = _num(decay, t.dtype)
        return (1 - d) * power(g, wide) + d * t

    return _moment_update(f, updates, moments)


def update_infinity_moment(updates: Any, moments: Any, decay: Any, eps: Any) -> Any:
    """The exponentially weighted infinity norm of the updates (Adamax's u_t):

        t_new = max(|g| + eps, decay t)

    Computed in float32 at least and stored in the moments' dtype.

    Example:
        >>> optjax.tree.update_infinity_moment(
        ...     {"a": jnp.array(-3.0)}, {"a": jnp.array(4.0)}, 0.5, 0.0)
        {'a': Array(3., dtype=float32)}

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2014, Section 7.1.
    """
    check_unit_interval("decay", decay)
    check_nonnegative("eps", eps)

    def f(g, t, wide):
        real = _real(wide)
        return jnp.maximum(jnp.abs(g) + _num(eps, real), _num(decay, real) * t)

    return _moment_update(f, updates, moments)


def _log_decay(decay, dtype):
    """``log(decay)`` for ``decay**count = exp(count log decay)``: on the host in double
    precision for a Python number, else in ``dtype``."""
    if isinstance(decay, (int, float)):
        return math.log(decay) if decay > 0 else -math.inf
    return jnp.log(jnp.asarray(decay).astype(dtype))


def bias_correction(moment: Any, decay: Any, count: Any) -> Any:
    """The moment divided by the weight its zero start took from it:

        t / (1 - decay^count)

    The correction ``1 - decay^count = -expm1(count log decay)`` is formed in float32 at least
    (float64 for float64 moments), accurate even for decay near 1, where optax's float32
    ``1 - decay**count`` loses 4 digits. Each leaf keeps its dtype. The count may be a Python int;
    an int32 count saturated at its maximum gives the moment itself.

    Example:
        >>> optjax.tree.bias_correction({"a": jnp.array(0.1)}, 0.9, 1)
        {'a': Array(1., dtype=float32)}

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2014, Section 3.
    """
    check_decay("decay", decay)
    check_integer("count", count, low=1)
    count = jnp.asarray(count)
    corrections: dict = {}  # one per real compute dtype, not one per leaf

    def correct(t):
        t = jnp.asarray(t)
        wide = _real(compute_dtype(t.dtype))
        if wide not in corrections:
            corrections[wide] = -jnp.expm1(count.astype(wide) * _log_decay(decay, wide))
        return (t.astype(compute_dtype(t.dtype)) / corrections[wide]).astype(t.dtype)

    return _zip_map(correct, (moment,), ("moment",))
