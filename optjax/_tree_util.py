"""The pytree helpers that optjax's transforms share: moments, bias correction, norms, casting.

Private: they are re-exported with optax.tree's functions in ``optjax.tree``, where users and
transforms reach them (``from optjax import tree``; ``tree.ema``).

Numerics: decays, bias corrections and learning rates are applied in float32 at least (float64
under ``jax_enable_x64``: `scalar_dtype`), and each result is rounded once to the dtype of the
tree it is stored in, so a bf16 parameter never turns a hyperparameter like b2 = 0.999 into 1.0.

Per-leaf math: the helpers that reduce or broadcast over each leaf (`leaf_sum`, `leaf_mean`,
`map_with_leaf_values`, `where_leaves`) and over the whole tree (`sum_of_squares`, `global_norm`)
accept a pytree or optjax.flat.FlatBuffers alike, so a transform written with them is correct on
the flat layout (where padding stays out of every reduction) without a branch of its own. Their
per-leaf values are a tree of scalars shaped like the input for a tree, and one array per dtype
group for FlatBuffers: compute with them through ``jax.tree.map``, which treats both alike.
"""

from __future__ import annotations

import collections
import math
from typing import Any

import jax
import jax.numpy as jnp

from optjax.flat import FlatBuffers

__all__ = [
    "abs_square",
    "accumulate",
    "as_array_like",
    "check_same_shapes",
    "check_same_structure",
    "compute_dtype",
    "debias",
    "ema",
    "get_all_by_name",
    "get_by_name",
    "get_by_type",
    "global_norm",
    "global_norm_factors",
    "leaf_mean",
    "leaf_sum",
    "log_decay",
    "map_like",
    "map_with_leaf_values",
    "moment_dtype",
    "moment_zeros_like",
    "one_minus_power",
    "real_wide_dtype",
    "real_wide_full_like",
    "real_wide_zeros_like",
    "safe_increment",
    "scalar_dtype",
    "scaled",
    "set_by_name",
    "step_as_float",
    "sum_of_squares",
    "unzip",
    "where_leaves",
    "wide",
    "wide_dtype",
    "wide_full_like",
    "wide_zeros_like",
    "zeros_like",
]

_INT32_MAX = jnp.iinfo(jnp.int32).max


def _is_none(x) -> bool:
    return x is None


def compute_dtype(*dtypes) -> jnp.dtype:
    """The dtype arithmetic on leaves of these dtypes runs in: the widest precision among them,
    float32's at least, complex if any is (complex64 and float64 give complex128), chosen
    explicitly so that it holds under strict dtype promotion too. Integer and bool dtypes add
    nothing."""
    size, complex_ = 4, False  # bytes of a real component
    for dtype in map(jnp.dtype, dtypes):
        if jnp.issubdtype(dtype, jnp.complexfloating):
            size, complex_ = max(size, dtype.itemsize // 2), True
        elif jnp.issubdtype(dtype, jnp.floating):
            size = max(size, dtype.itemsize)
    if complex_:
        return jnp.dtype(jnp.complex128 if size > 4 else jnp.complex64)
    return jnp.dtype(jnp.float64 if size > 4 else jnp.float32)


def wide(x: jax.Array) -> jax.Array:
    """``x`` in the dtype its arithmetic runs in (`compute_dtype`): float32 for bf16 and fp16."""
    return x.astype(compute_dtype(x.dtype))


def abs_square(x: jax.Array) -> jax.Array:
    """``|x|^2`` elementwise in x's compute dtype, real even for complex x."""
    x = wide(x)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        return jnp.square(x.real) + jnp.square(x.imag)
    return jnp.square(x)


def check_same_structure(a, b, a_name: str, b_name: str) -> None:
    """Raise ValueError naming the first path where trees ``a`` and ``b`` differ.

    A None in either tree matches any subtree (it marks a leaf that is left out).
    """
    def_a: Any = jax.tree.structure(a, is_leaf=_is_none)  # a PyTreeDef (untyped in jaxlib)
    def_b: Any = jax.tree.structure(b, is_leaf=_is_none)
    if def_a == def_b:
        return
    paths_a, _ = jax.tree_util.tree_flatten_with_path(a, is_leaf=_is_none)
    paths_b, _ = jax.tree_util.tree_flatten_with_path(b, is_leaf=_is_none)
    keys_a = [path for path, _ in paths_a]
    keys_b = [path for path, _ in paths_b]
    set_a, set_b = set(keys_a), set(keys_b)
    only_a = [k for k in keys_a if k not in set_b]
    only_b = [k for k in keys_b if k not in set_a]
    if only_a or only_b:
        parts = [
            f"only {name} has {jax.tree_util.keystr(keys[0]) or '<root>'}"
            for name, keys in ((a_name, only_a), (b_name, only_b))
            if keys
        ]
        raise ValueError(f"tree structures of {a_name} and {b_name} differ: {'; '.join(parts)}")
    for ka, kb in zip(keys_a, keys_b):
        if ka != kb:
            at_a, at_b = jax.tree_util.keystr(ka) or "<root>", jax.tree_util.keystr(kb) or "<root>"
            where = f"{a_name} has {at_a} where {b_name} has {at_b}"
            break
    else:
        if len(keys_a) != len(keys_b):
            longer, name = (keys_a, a_name) if len(keys_a) > len(keys_b) else (keys_b, b_name)
            extra = longer[min(len(keys_a), len(keys_b))]
            where = f"only {name} has {jax.tree_util.keystr(extra) or '<root>'}"
        else:
            where = f"same paths but different containers: {def_a} vs {def_b}"
    raise ValueError(f"tree structures of {a_name} and {b_name} differ: {where}")


def check_same_shapes(a, b, a_name: str, b_name: str) -> None:
    """Raise ValueError naming the first path where trees ``a`` and ``b`` differ: in structure
    (see `check_same_structure`) or in a leaf's shape (a None in either tree matches anything).

    Example:
        >>> optjax.tree.check_same_shapes({"w": jnp.zeros(3)}, {"w": jnp.zeros((2, 3))}, "a", "b")
        Traceback (most recent call last):
        ValueError: a['w'] has shape (3,) but b['w'] has shape (2, 3)
    """
    check_same_structure(a, b, a_name, b_name)
    others = dict(jax.tree_util.tree_flatten_with_path(b, is_leaf=_is_none)[0])
    for path, x in jax.tree_util.tree_flatten_with_path(a, is_leaf=_is_none)[0]:
        y = others.get(path)  # None too under a subtree the other tree leaves out
        if x is None or y is None:
            continue
        if jnp.shape(x) != jnp.shape(y):
            at = jax.tree_util.keystr(path)
            raise ValueError(
                f"{a_name}{at} has shape {jnp.shape(x)} but {b_name}{at} has shape {jnp.shape(y)}"
            )


def map_like(f, tree, *rest, names: tuple[str, ...] = ()):
    """``jax.tree.map(f, tree, *rest)`` that first checks the trees match, naming the first
    differing path; leaves that are None in ``tree`` stay None."""
    names = names or tuple(f"tree {i}" for i in range(len(rest) + 1))
    for other, name in zip(rest, names[1:]):
        check_same_structure(tree, other, names[0], name)
    return jax.tree.map(
        lambda x, *ys: None if x is None else f(x, *ys), tree, *rest, is_leaf=_is_none
    )


def unzip(like, tuples, n: int) -> tuple:
    """Split a tree of n-tuples, shaped like ``like`` down to its leaves, into n trees."""
    treedef: Any = jax.tree.structure(like)
    flat = treedef.flatten_up_to(tuples)
    return tuple(treedef.unflatten([t[i] for t in flat]) for i in range(n))


def zeros_like(tree, dtype=None):
    """Zeros shaped like ``tree``; with ``dtype``, in that dtype instead of each leaf's own.

    Each leaf is built from the parameter itself, not from its shape, so it carries the
    parameter's sharding (and, under jit on a mesh with Explicit axes, its sharding type).
    """
    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype or jnp.result_type(x)), tree)


def wide_dtype(x, dtype=None) -> jnp.dtype:
    """Where a second moment or a slow average of ``x`` is kept: ``dtype`` if given, else x's
    compute dtype for a floating x (float32 for bf16 and fp16, whose rounding would freeze a slow
    average and whose range would flush small squares to 0), else x's own dtype."""
    if dtype is not None:
        return jnp.dtype(dtype)
    own = jnp.result_type(x)
    return compute_dtype(own) if jnp.issubdtype(own, jnp.inexact) else own


def wide_zeros_like(tree, dtype=None):
    """Zeros shaped (and sharded) like ``tree``, each in `wide_dtype` of its leaf: the state of
    a second moment or a slow average (``dtype`` None: float32 for bf16 and fp16 leaves)."""
    return jax.tree.map(lambda x: jnp.zeros_like(x, wide_dtype(x, dtype)), tree)


def wide_full_like(tree, value, dtype=None):
    """Arrays filled with ``value``, shaped (and sharded) like ``tree``, in `wide_dtype`."""
    return jax.tree.map(lambda x: jnp.full_like(x, value, wide_dtype(x, dtype)), tree)


def moment_dtype(x, dtype=None) -> jnp.dtype:
    """Where a first moment of ``x`` is kept (a momentum, a moving average of x): ``dtype`` if
    given, else x's own; for a complex x, a real ``dtype`` means its complex counterpart
    (complex64 for float32, bf16 and fp16; complex128 for float64), since a momentum of complex
    gradients is complex (casting it to a real dtype would drop its imaginary part).

    Example:
        >>> z = jnp.zeros(2, jnp.complex64)
        >>> optjax.tree.moment_dtype(z, jnp.float32), optjax.tree.moment_dtype(jnp.zeros(2), None)
        (dtype('complex64'), dtype('float32'))
    """
    own = jnp.result_type(x)
    if dtype is None:
        return own
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(own, jnp.complexfloating) and jnp.issubdtype(dtype, jnp.floating):
        return jnp.dtype(jnp.complex128 if dtype.itemsize > 4 else jnp.complex64)
    return dtype


def moment_zeros_like(tree, dtype=None):
    """Zeros shaped (and sharded) like ``tree``, each in `moment_dtype` of its leaf: the state of
    a first moment (``dtype`` None: each leaf's own dtype)."""
    return jax.tree.map(lambda x: jnp.zeros_like(x, moment_dtype(x, dtype)), tree)


def real_wide_dtype(x, dtype=None) -> jnp.dtype:
    """Where a second moment of ``x`` is kept (an average or sum of |x|^2, a maximum of |x|):
    ``dtype`` if given, else the real counterpart of `wide_dtype` (float32 for bf16, fp16 and
    complex64 leaves, float64 for complex128 ones): |x|^2 is real, and a complex moment would
    spend twice the memory on an imaginary part that stays 0.

    Example:
        >>> z, b = jnp.zeros(2, jnp.complex64), jnp.zeros(2, jnp.bfloat16)
        >>> optjax.tree.real_wide_dtype(z), optjax.tree.real_wide_dtype(b)
        (dtype('float32'), dtype('float32'))
    """
    wide = wide_dtype(x, dtype)
    if dtype is None and jnp.issubdtype(wide, jnp.complexfloating):
        return jnp.dtype(jnp.finfo(wide).dtype)
    return wide


def real_wide_zeros_like(tree, dtype=None):
    """Zeros shaped (and sharded) like ``tree``, each in `real_wide_dtype` of its leaf: the state
    of a second moment (``dtype`` None: float32 for bf16, fp16 and complex64 leaves)."""
    return jax.tree.map(lambda x: jnp.zeros_like(x, real_wide_dtype(x, dtype)), tree)


def real_wide_full_like(tree, value, dtype=None):
    """Arrays filled with ``value``, shaped (and sharded) like ``tree``, in `real_wide_dtype`."""
    return jax.tree.map(lambda x: jnp.full_like(x, value, real_wide_dtype(x, dtype)), tree)


def _abs_power(x: jax.Array, order: int, dtype) -> jax.Array:
    """``|x|**order`` in ``dtype``, formed in its real counterpart: a complex x's parts are cast
    first and its |x|^2 is re^2 + im^2 (no root to round, and no imaginary part to discard)."""
    real = jnp.finfo(dtype).dtype
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        square = jnp.square(x.real.astype(real)) + jnp.square(x.imag.astype(real))
        power = square if order == 2 else jnp.sqrt(square) ** order
    else:
        power = jnp.abs(x.astype(real)) ** order
    return power.astype(dtype)


def ema(new, old, decay, order: int = 1):
    """``decay * old + (1 - decay) * new**order``, in float32 at least, stored in old's dtype.

    For ``order`` other than 1 the power is of the modulus, |new|^order: real for a complex
    ``new`` (a second moment, kept in `real_wide_dtype`).

    Example:
        >>> optjax.tree.ema(jnp.array([3 + 4j], jnp.complex64), jnp.zeros(1), 0.5, order=2)
        Array([12.5], dtype=float32)
    """

    def step(g, m):
        wide = compute_dtype(m.dtype)
        g = g.astype(wide) if order == 1 else _abs_power(g, order, wide)
        return (decay * m.astype(wide) + (1 - decay) * g).astype(m.dtype)

    return map_like(step, new, old, names=("updates", "state"))


def accumulate(new, old, order: int = 2):
    """``old + |new|**order``: the running sum of powers of the modulus (Adagrad's accumulator),
    real for a complex ``new``."""

    def step(g, s):
        wide = compute_dtype(s.dtype)
        return (s.astype(wide) + _abs_power(g, order, wide)).astype(s.dtype)

    return map_like(step, new, old, names=("updates", "state"))


def scalar_dtype() -> jnp.dtype:
    """The dtype step-dependent scalars are formed in (bias corrections, decay rates, schedule
    values, step counts as numbers): float32, or float64 when JAX runs with ``jax_enable_x64``,
    so that float64 parameters get steps accurate to float64."""
    return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def step_as_float(count) -> jax.Array:
    """The int32 step count as a `scalar_dtype` number (so ``t + 1`` cannot wrap at the largest
    int32)."""
    return jnp.asarray(count).astype(scalar_dtype())


def log_decay(decay) -> jax.Array | float:
    """``log(decay)``: in double precision on the host for a Python number (float32 cannot hold
    0.999 closely enough: its 1 - b2 is off by 1e-5), in `scalar_dtype` for an array or tracer."""
    if isinstance(decay, (int, float)):
        return math.log(decay) if decay > 0 else -math.inf
    return jnp.log(jnp.asarray(decay, scalar_dtype()))


def one_minus_power(decay, count) -> jax.Array:
    """``1 - decay**count`` for count >= 1, as ``-expm1(count log decay)`` in `scalar_dtype`:
    accurate to its precision even for decay near 1, where the direct form loses 4 digits."""
    return -jnp.expm1(step_as_float(count) * log_decay(decay))


def debias(moment, decay, count):
    """``moment / (1 - decay**count)``, the correction formed in `scalar_dtype` (float32 at least,
    even for bf16 moments): the transforms' form of `bias_correction`, which checks its
    arguments where it can see them; this one takes them as the step gives them."""
    correction = one_minus_power(decay, count)
    return jax.tree.map(
        lambda t: (
            t.astype(compute_dtype(t.dtype)) / correction.astype(compute_dtype(t.dtype))
        ).astype(t.dtype),
        moment,
    )


def scaled(tree, factor):
    """``factor * tree``, the product formed in float32 at least, each leaf keeping its dtype
    (`scale`, optax's, takes the scalar first and gives the promoted dtype)."""

    def mul(x):
        wide = compute_dtype(x.dtype)
        return (x.astype(wide) * jnp.asarray(factor).astype(wide)).astype(x.dtype)

    return jax.tree.map(mul, tree)


def safe_increment(count: jax.Array) -> jax.Array:
    """``count + 1`` for the int32 step counter, saturating at the largest int32 instead of
    wrapping to a negative number."""
    return jnp.where(count < _INT32_MAX, count + 1, _INT32_MAX).astype(jnp.int32)


def sum_of_squares(tree) -> jax.Array:
    """``sum_i ||x_i||^2`` over every leaf (padding left out on FlatBuffers), in float32 at
    least."""
    if isinstance(tree, FlatBuffers):
        parts = list(tree.layout.reduce(abs_square, tree))
    else:
        parts = [jnp.sum(abs_square(x)) for x in jax.tree.leaves(tree)]
    if not parts:
        return jnp.zeros([], jnp.float32)
    dtype = compute_dtype(*(p.dtype for p in parts))
    return sum((p.astype(dtype) for p in parts[1:]), parts[0].astype(dtype))


def normal_per_leaf(keys: jax.Array, leaves: list) -> list:
    """Standard normal noise shaped like each leaf, in its compute dtype, leaf i from
    ``keys[i]`` (``draw_per_leaf`` with ``jax.random.normal``)."""
    return draw_per_leaf(jax.random.normal, keys, leaves, compute_dtype)


def draw_per_leaf(sampler, keys: jax.Array, leaves: list, dtype_of=lambda d: d) -> list:
    """``sampler(keys[i], leaf.shape, dtype_of(leaf.dtype))`` for each leaf i. Leaves of one
    shape and dtype draw theirs in one batched call: the same numbers as a call per leaf, in one
    program op for all of them (a call per leaf makes the compile of thousands of leaves take
    minutes)."""
    groups = collections.defaultdict(list)
    for i, x in enumerate(leaves):
        groups[jnp.shape(x), jnp.result_type(x)].append(i)
    out: list = [None] * len(leaves)
    for (shape, dtype), where in groups.items():
        wide = dtype_of(dtype)
        draw = jax.vmap(lambda k, shape=shape, wide=wide: sampler(k, shape, wide))
        noise = draw(keys[jnp.asarray(where)])
        for j, i in enumerate(where):
            out[i] = noise[j]
    return out


def signed_once(total: jax.Array) -> jax.Array:
    """``total / (|total| + 1)``: a number with the sign of ``total`` (finite), for a comparison.

    Compare this, not ``total``, where ``total`` is reduced over every leaf and the comparison
    feeds each leaf's update: XLA copies a cheap expression of such a total (a comparison, the
    sum of the per-leaf parts itself) into every leaf's computation, which makes the program,
    and its compile, grow as the leaves squared; a division it computes once."""
    return total / (jnp.abs(total) + 1)


def _max_abs(tree) -> jax.Array:
    """``max |x|`` over every element (the flat layout's padding is zero: it changes nothing)."""
    leaves = tree.buffers if isinstance(tree, FlatBuffers) else jax.tree.leaves(tree)
    maxima = [jnp.max(jnp.abs(wide(x)), initial=0.0) for x in leaves if x is not None]
    if not maxima:
        return jnp.zeros([], jnp.float32)
    dtype = compute_dtype(*(m.dtype for m in maxima))
    return jnp.max(jnp.stack([m.astype(dtype) for m in maxima]))


def global_norm_factors(tree) -> tuple[jax.Array, jax.Array]:
    """``(m, r)`` with ``m r`` the global norm of ``tree``: m = 1 and r the norm, unless the
    squares overflow (float32 above ~1.8e19); then m is the largest |x| and r the norm of
    ``tree / m`` (a second pass, only then). ``max_norm / m / r`` is finite even where the norm
    itself is past the dtype's range."""
    norm = jnp.sqrt(sum_of_squares(tree))

    def rescaled():  # the norm is inf: m > 0, and m is finite unless a leaf holds an inf
        m = _max_abs(tree).astype(norm.dtype)
        safe = jnp.where(jnp.isfinite(m), m, 1.0)
        scaled = jax.tree.map(lambda x: wide(x) / safe.astype(compute_dtype(x.dtype)), tree)
        r = jnp.sqrt(sum_of_squares(scaled)).astype(norm.dtype)
        # m itself, not an expression of it: one (even where(m == 0, 1, m)) makes XLA copy the
        # reduction over all leaves into each leaf's consumer (test_overflow_and_integers.py's
        # test_the_overflow_branch_keeps_the_program_linear_in_the_leaves).
        return m, r

    return jax.lax.cond(jnp.isinf(norm), rescaled, lambda: (jnp.ones_like(norm), norm))


def global_norm(tree) -> jax.Array:
    """The l2 norm of all leaves taken together, ``sqrt(sum_i ||x_i||^2)``, finite for a finite
    tree whose norm is in range (squares that overflow are rescaled: `global_norm_factors`).

    Example:
        >>> optjax.tree.global_norm({"a": jnp.array([3e30]), "b": jnp.array([4e30])})
        Array(5.e+30, dtype=float32)
    """
    m, r = global_norm_factors(tree)
    return m * r


def leaf_sum(f, tree, *rest):
    """``sum(f(x, *ys))`` over each leaf's elements: per-leaf values (see the module doc).

    ``f`` is elementwise; ``rest`` are trees (or FlatBuffers) shaped like ``tree``.
    """
    if isinstance(tree, FlatBuffers):
        return tree.layout.leaf_reduce(f, tree, *rest)
    return jax.tree.map(lambda *xs: jnp.sum(f(*xs)), tree, *rest)


def leaf_mean(f, tree, *rest):
    """``mean(f(x, *ys))`` over each leaf's elements: per-leaf values (see the module doc)."""
    if isinstance(tree, FlatBuffers):
        sums = tree.layout.leaf_reduce(f, tree, *rest)
        return tuple(s / jnp.asarray(n, s.dtype) for s, n in zip(sums, tree.layout.leaf_sizes()))
    return jax.tree.map(lambda *xs: jnp.mean(f(*xs)), tree, *rest)


def map_with_leaf_values(f, tree, values, *rest):
    """``f(x, v, *ys)`` on each leaf ``x`` of ``tree``, with ``v`` its leaf's entry of the per-leaf
    ``values`` (from `leaf_sum` or `leaf_mean`, mapped as needed) and ``ys`` the matching leaves
    of ``rest``. ``f`` is elementwise in x and ys."""
    if isinstance(tree, FlatBuffers):
        return tree.layout.map_leaves(f, tree, values, *rest)
    return map_like(f, tree, values, *rest)


def where_leaves(keep, on_true, on_false):
    """Each leaf of ``on_true`` where ``keep`` (a tree of Python bools shaped like the params, e.g.
    a weight-decay mask) says True, else ``on_false``'s."""
    if isinstance(on_true, FlatBuffers):
        return on_true.layout.where_leaves(keep, on_true, on_false)
    check_same_structure(on_true, keep, "updates", "mask")
    return map_like(lambda a, b, k: a if k else b, on_true, on_false, keep)


def get_by_type(tree: Any, leaf_type: type):
    """Every node of type ``leaf_type`` in ``tree``, in order (e.g. a state class of a chain).

    Example:
        >>> state = optjax.adam(0.1).init({"w": jnp.zeros(2)})
        >>> [type(s).__name__ for s in optjax.tree.get_by_type(state, optjax.ScaleByAdamState)]
        ['ScaleByAdamState']
    """
    found = []

    def visit(x):
        if isinstance(x, leaf_type):
            found.append(x)
            return True
        return False

    jax.tree_util.tree_flatten(tree, is_leaf=visit)
    return found


def _key_name(key):
    """The name a path entry gives its node: a field, attribute or dict key (None for an index)."""
    for attr in ("name", "key"):
        if hasattr(key, attr):
            return getattr(key, attr)
    return None


def _named(name):
    """``(path, node) -> bool``: whether the node is reached by a key named ``name``."""
    return lambda path, node=None: bool(path) and _key_name(path[-1]) == name


def _named_nodes(tree, name):
    """``[(path, node)]`` for each outermost node of ``tree`` reached by a key named ``name``."""
    is_match = _named(name)
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_match, is_leaf_takes_path=True)
    return [(path, node) for path, node in flat if is_match(path)]


def _field_names(tree) -> list[str]:
    names: set[str] = set()
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names.update(str(n) for n in map(_key_name, path) if n is not None)
    return sorted(names)


def get_all_by_name(tree: Any, name: str) -> dict[str, Any]:
    """Every node named ``name`` (a NamedTuple field, attribute or dict key) in ``tree``, by path.

    Example:
        >>> state = optjax.adam(0.1).init({"w": jnp.zeros(2)})
        >>> list(optjax.tree.get_all_by_name(state, "count"))
        ['[0].count']
    """
    return {jax.tree_util.keystr(path): node for path, node in _named_nodes(tree, name)}


def get_by_name(tree: Any, name: str) -> Any:
    """The node named ``name`` in a nested state, e.g. ``count`` or an injected ``learning_rate``.

    Raises ValueError if no node has that name, or if several do (listing their paths; use
    `get_all_by_name` to see them all).

    Example:
        >>> tx = optjax.inject_hyperparams(optjax.adam)(learning_rate=0.1)
        >>> optjax.tree.get_by_name(tx.init(jnp.zeros(2)), "learning_rate")
        Array(0.1, dtype=float32)
    """
    matches = _named_nodes(tree, name)
    if not matches:
        raise ValueError(f"no node named {name!r} in the tree; its names are {_field_names(tree)}")
    if len(matches) > 1:
        paths = [jax.tree_util.keystr(path) for path, _ in matches]
        raise ValueError(
            f"{len(matches)} nodes are named {name!r}, at {paths}; pick one with get_all_by_name"
        )
    return matches[0][1]


def as_array_like(value, like, what: str = "value"):
    """``value`` as an array with ``like``'s dtype, shape and placement (committed to its
    sharding only if ``like`` is), so that a jitted function taking it in place of ``like`` sees
    the same input type and is not compiled again."""
    new = jnp.asarray(value, dtype=like.dtype)
    if new.shape != tuple(like.shape):
        raise ValueError(f"{what} has shape {tuple(like.shape)}; got a value of shape {new.shape}")
    if getattr(like, "committed", False):
        new = jax.device_put(new, like.sharding)
    return new


def set_by_name(tree: Any, name: str, value: Any) -> Any:
    """A copy of ``tree`` with every node named ``name`` replaced by ``value``.

    Where that node is an array, the value is stored in its dtype and must have its shape, so a
    jitted step taking the new tree is not compiled again. Raises ValueError if no node has
    that name.

    Example:
        >>> tx = optjax.inject_hyperparams(optjax.sgd)(learning_rate=0.1)
        >>> state = optjax.tree.set_by_name(tx.init(jnp.zeros(2)), "learning_rate", 0.5)
        >>> state.hyperparams["learning_rate"]
        Array(0.5, dtype=float32)
    """
    if not _named_nodes(tree, name):
        raise ValueError(f"no node named {name!r} in the tree; its names are {_field_names(tree)}")

    is_match = _named(name)

    def replace(path, node):
        if not is_match(path):
            return node
        if hasattr(node, "dtype") and hasattr(node, "shape"):
            return as_array_like(value, node, jax.tree_util.keystr(path))
        return value

    return jax.tree_util.tree_map_with_path(
        replace, tree, is_leaf=is_match, is_leaf_takes_path=True
    )
