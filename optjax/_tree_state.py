"""optax.tree's functions on optimizer states and random trees: finding and replacing values by
key name (get, set, get_all_with_path), mapping over the copies of the params in a state
(map_params), PRNG keys and random values shaped like a tree. optax's names, arguments and
meanings; private, re-exported in ``optjax.tree``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from optjax._tree_util import check_same_structure

__all__ = [
    "NamedTupleKey",
    "get",
    "get_all_with_path",
    "map_params",
    "random_like",
    "set",
    "split_key_like",
    "unwrap_random_key_data",
]


def split_key_like(rng_key: jax.Array, target_tree: Any) -> Any:
    """A tree of PRNG keys shaped like ``target_tree``'s leaves: ``rng_key`` split once per leaf.

    Example:
        >>> keys = optjax.tree.split_key_like(jax.random.key(0), {"a": 1.0, "b": jnp.zeros(3)})
        >>> sorted(keys)
        ['a', 'b']
    """
    treedef: Any = jax.tree.structure(target_tree)  # a PyTreeDef (untyped in jaxlib)
    keys = jax.random.split(rng_key, treedef.num_leaves)
    return jax.tree.unflatten(treedef, list(keys))


def random_like(
    rng_key: jax.Array,
    target_tree: Any,
    sampler: Callable = jax.random.normal,
    dtype: Any = None,
) -> Any:
    """Random arrays shaped (and sharded) like ``target_tree``'s leaves, each drawn by
    ``sampler(key, shape, dtype)`` with its own key from `split_key_like` (so the values are
    optax's); ``dtype`` None draws in each leaf's dtype. Python-number leaves are accepted
    (optax 0.2.8 fails on them).

    Example:
        >>> tree = optjax.tree.random_like(jax.random.key(0), {"a": jnp.zeros((2, 3))})
        >>> tree["a"].shape, tree["a"].dtype
        ((2, 3), dtype('float32'))
    """
    keys = split_key_like(rng_key, target_tree)
    try:
        takes_sharding = "out_sharding" in inspect.signature(sampler).parameters
    except (TypeError, ValueError):
        takes_sharding = False

    def draw(leaf, key):
        leaf = leaf if hasattr(leaf, "dtype") else jnp.asarray(leaf)
        leaf_dtype = dtype if dtype is not None else leaf.dtype
        if takes_sharding:
            return sampler(key, leaf.shape, leaf_dtype, out_sharding=jax.typeof(leaf).sharding)
        return sampler(key, leaf.shape, leaf_dtype)

    return jax.tree.map(draw, target_tree, keys)


def unwrap_random_key_data(input_tree: Any) -> Any:
    """The tree with each typed PRNG key replaced by its raw key data (for comparing states).

    Example:
        >>> optjax.tree.unwrap_random_key_data({"k": jax.random.key(0)})["k"].dtype
        dtype('uint32')
    """

    def unwrap(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(x)
        return x

    return jax.tree.map(unwrap, input_tree)


# Finding and replacing nodes by name.


@dataclasses.dataclass(frozen=True)
class NamedTupleKey:
    """A path entry: field ``name`` of a NamedTuple of class ``tuple_name``. `get_all_with_path`
    gives paths with these (as optax does), so a ``filtering`` function can tell apart fields of
    the same name in different states (``path[-1].tuple_name``)."""

    tuple_name: str
    name: str

    def __str__(self) -> str:
        return f"{self.tuple_name}.{self.name}"


class _KeyMatchError(KeyError, ValueError):
    """Raised where a key matches no node, or several where one is wanted: a KeyError, as optax
    raises, and a ValueError, as optjax raises for bad input."""

    def __str__(self) -> str:
        return str(self.args[0])


def _is_named_tuple(x) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _entries(node) -> list[tuple[Any, Any]]:
    """``[(path entry, child)]`` of a pytree node ([] for a leaf): a NamedTuple's fields as
    NamedTupleKeys, any other node's children as jax names them."""
    if _is_named_tuple(node):
        name = type(node).__name__
        return [(NamedTupleKey(name, field), getattr(node, field)) for field in node._fields]
    flat, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    if jax.tree_util.treedef_is_leaf(treedef):
        return []
    return [(path[0], child) for path, child in flat]


def _entry_name(node, entry) -> Any:
    """The key a child is reached by, if it is one optax matches (a NamedTuple field or a dict
    key), else None."""
    if isinstance(entry, NamedTupleKey):
        return entry.name
    if isinstance(node, dict) and isinstance(entry, jax.tree_util.DictKey):
        return entry.key
    return None


def _rebuild(node, children: list):
    if _is_named_tuple(node):
        return type(node)._make(children)
    treedef: Any = jax.tree.structure(node, is_leaf=lambda x: x is not node)
    return treedef.unflatten(children)


def _is_match(filtering, path, value) -> bool:
    return filtering is None or bool(filtering(path, value))


def get_all_with_path(
    tree: Any, key: Any, filtering: Callable[[tuple, Any], bool] | None = None
) -> list[tuple[tuple, Any]]:
    """Every ``(path, value)`` in ``tree`` reached by ``key``: a dict key, a NamedTuple field, or
    the class name of a NamedTuple (the value is then the NamedTuple itself), nested matches
    included; ``filtering(path, value)`` keeps only some. Paths name NamedTuple fields with
    `NamedTupleKey`; ``jax.tree_util.keystr(path)`` prints one.

    Example:
        >>> state = optjax.adam(0.1).init({"w": jnp.zeros(2)})
        >>> [(jax.tree_util.keystr(p), v) for p, v in optjax.tree.get_all_with_path(state, "count")]
        [('[0]ScaleByAdamState.count', Array(0, dtype=int32))]
    """
    found: list[tuple[tuple, Any]] = []

    def visit(path: tuple, node) -> None:
        if _is_named_tuple(node) and type(node).__name__ == key:
            found.append((path, node))
        for entry, child in _entries(node):
            child_path = (*path, entry)
            if _entry_name(node, entry) == key:
                found.append((child_path, child))
            visit(child_path, child)

    visit((), tree)
    return [(path, value) for path, value in found if _is_match(filtering, path, value)]


def get(
    tree: Any,
    key: Any,
    default: Any = None,
    filtering: Callable[[tuple, Any], bool] | None = None,
) -> Any:
    """The one value in ``tree`` reached by ``key`` (see `get_all_with_path`), or ``default`` if
    none is. Several matches raise a KeyError (also a ValueError) listing their paths: pick one
    with ``filtering(path, value)``.

    Example:
        >>> state = optjax.adam(0.1).init({"w": jnp.zeros(2)})
        >>> optjax.tree.get(state, "count")
        Array(0, dtype=int32)
        >>> optjax.tree.get(state, "ScaleByAdamState").nu
        {'w': Array([0., 0.], dtype=float32)}
    """
    found = get_all_with_path(tree, key, filtering)
    if len(found) > 1:
        paths = [jax.tree_util.keystr(path) for path, _ in found]
        raise _KeyMatchError(
            f"{len(found)} values match {key!r}, at {paths}; pick one with filtering=",
        )
    return found[0][1] if found else default


def set(tree: Any, filtering: Callable[[tuple, Any], bool] | None = None, /, **kwargs: Any) -> Any:
    """A copy of ``tree`` with every value reached by a key of ``kwargs`` (see
    `get_all_with_path`; the outermost, where matches nest) replaced by that keyword's value,
    as it is (optjax.tree.set_by_name instead stores a number in the node's dtype and shape).
    A key that matches nothing raises a KeyError (also a ValueError).

    Example:
        >>> state = optjax.adam(0.1).init({"w": jnp.zeros(2)})
        >>> optjax.tree.get(optjax.tree.set(state, count=jnp.int32(3)), "count")
        Array(3, dtype=int32)
    """
    for key in kwargs:
        if not get_all_with_path(tree, key, filtering):
            given = " given the filtering" if filtering is not None else ""
            raise _KeyMatchError(f"no value matches {key!r} in the tree{given}")

    def replace(path: tuple, node):
        name = type(node).__name__ if _is_named_tuple(node) else None
        if name in kwargs and _is_match(filtering, path, node):
            return kwargs[name]
        entries = _entries(node)
        if not entries:
            return node
        children = []
        for entry, child in entries:
            child_path, child_key = (*path, entry), _entry_name(node, entry)
            if isinstance(child_key, str) and child_key in kwargs:
                if _is_match(filtering, child_path, child):
                    children.append(kwargs[child_key])
                    continue
            children.append(replace(child_path, child))
        return _rebuild(node, children)

    return replace((), tree)


@jax.tree_util.register_pytree_node_class
class _ParamsPlaceholder:
    """Stands for the params in ``init(params)``: an empty pytree node, so each copy of the
    params in the state comes out as one of these."""

    def tree_flatten(self):
        return (), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        del aux, children
        return cls()


def _is_placeholder(x) -> bool:
    return isinstance(x, _ParamsPlaceholder)


def _state_mismatch(skeleton, state) -> str:
    """Where ``state`` differs from the state ``init`` builds (``skeleton``, with a placeholder
    where each copy of the params goes): the first path, as text."""
    expected = jax.tree_util.tree_flatten_with_path(skeleton, is_leaf=_is_placeholder)[0]
    got = [path for path, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    for path, node in expected:
        n = len(path)
        if _is_placeholder(node):
            ok = any(p[:n] == path for p in got)
        else:
            ok = path in got
        if not ok:
            return f"the state has nothing at {jax.tree_util.keystr(path) or '<root>'}"
    params_at = [path for path, node in expected if _is_placeholder(node)]
    plain = {path for path, node in expected if not _is_placeholder(node)}
    for p in got:
        if p not in plain and not any(p[: len(q)] == q for q in params_at):
            return f"the state has {jax.tree_util.keystr(p) or '<root>'}, which init does not make"
    return "its containers differ from those init makes"


def map_params(
    initable: Any,
    f: Callable[..., Any],
    state: Any,
    /,
    *rest: Any,
    transform_non_params: Callable[..., Any] | None = None,
    is_leaf: Callable[[Any], bool] | None = None,
) -> Any:
    """``f`` mapped over every copy of the params in an optimizer state (the moments of Adam, a
    momentum trace, ...), with the matching leaves of ``rest`` (trees shaped like the params) as
    further arguments; other state fields (counts, ...) go through ``transform_non_params`` if
    given, else stay as they are. ``initable`` is the transform (or its ``init``) that made the
    state: where its ``init`` puts the params is found by calling it on a placeholder. ``is_leaf``
    goes to the map over the params. Typical use: shardings of a state from those of the params.

    Example:
        >>> tx = optjax.adam(0.1)
        >>> state = tx.init({"w": jnp.zeros(2)})
        >>> specs = optjax.tree.map_params(
        ...     tx, lambda _, s: s, state, {"w": "spec"}, transform_non_params=lambda _: None)
        >>> specs[0].mu, specs[0].count
        ({'w': 'spec'}, None)
    """
    init = initable.init if hasattr(initable, "init") else initable
    skeleton = init(_ParamsPlaceholder())

    def on_node(node, value):
        if _is_placeholder(node):
            if is_leaf is None:
                for i, other in enumerate(rest):
                    check_same_structure(value, other, "the state's params", f"rest[{i}]")
            return jax.tree.map(f, value, *rest, is_leaf=is_leaf)
        return value if transform_non_params is None else transform_non_params(value)

    try:
        expected: Any = jax.tree.structure(skeleton, is_leaf=_is_placeholder)
        expected.flatten_up_to(state)
    except (ValueError, TypeError):
        raise ValueError(
            f"map_params: the state does not have the structure init gives: "
            f"{_state_mismatch(skeleton, state)}; was it made by another transform?"
        ) from None
    return jax.tree.map(on_node, skeleton, state, is_leaf=_is_placeholder)
