"""The transform algebra: chaining transforms, the simplest ones, and applying updates."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from optjax import tree
from optjax.base import EmptyState, GradientTransformation, OptState, Params, Updates
from optjax.flat import (
    FlatBuffers,
    as_flat_ready,
    as_tree,
    flat_ready,
    is_flat_ready,
    mark_flat_ready,
)

__all__ = [
    "apply_updates",
    "chain",
    "extra_args_filter",
    "identity",
    "named_chain",
    "set_to_zero",
    "stateless",
    "stateless_with_tree_map",
]


def extra_args_filter(update: Callable) -> Callable[[dict], dict]:
    """``extra_args -> the ones update accepts``: which keyword extras (e.g. ``value=``) an
    ``update`` function takes, decided once from its signature. Combinators forward each extra
    only to the transforms that accept it."""
    try:
        parameters = inspect.signature(update).parameters.values()
    except (TypeError, ValueError):
        return lambda extra: {}
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return lambda extra: extra
    names = {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    names -= {"updates", "state", "params"}
    return lambda extra: {k: v for k, v in extra.items() if k in names}


def _number_as_array(x):
    """A Python number (a leaf optax accepts, as in ``{"w": 1.0}``) as an array of its kind's
    default dtype (float32 for a float, int32 for an int); anything else as it is."""
    return jnp.asarray(x, jnp.result_type(x)) if isinstance(x, (int, float, complex)) else x


def _numbers_as_arrays(tree_):
    """The tree with its Python-number leaves made arrays, so that every transform sees arrays;
    a tree with no such leaf is returned as it is."""
    leaves, treedef = jax.tree.flatten(tree_)
    if not any(isinstance(x, (int, float, complex)) for x in leaves):
        return tree_
    return treedef.unflatten([_number_as_array(x) for x in leaves])


_INTEGERS = (
    "Leave integer and bool leaves out of the optimized tree, or take gradients with "
    "jax.grad(..., allow_int=True) and send their float0 gradients to set_to_zero() with "
    "multi_transform: apply_updates leaves them as they are"
)


class _ExpectedState:
    """What a chain's ``init`` gives for parameters of each shape and dtype: found by tracing
    (``jax.eval_shape``), once per kind of parameters, and checked against the state an
    ``update`` is given, so a state made by another optimizer, or for other parameters, is
    refused naming the first leaf that differs rather than failing somewhere inside."""

    def __init__(self, who: str, init: Callable[[Params], OptState]):
        self.who, self.init = who, init
        self.seen: dict[tuple, OptState] = {}

    def check(self, updates: Updates, state: OptState, params: Params | None) -> None:
        like = updates if params is None else params  # init reads shapes and dtypes only
        if params is not None:
            tree.check_same_shapes(updates, params, "updates", "params")
        for path, g in jax.tree_util.tree_flatten_with_path(updates)[0]:
            if not jnp.issubdtype(jnp.result_type(g), jnp.inexact):
                raise ValueError(
                    f"{self.who}: updates{jax.tree_util.keystr(path)} is "
                    f"{jnp.result_type(g)}: optimizers compute in floating point, so an integer "
                    f"or bool gradient would be rounded into the state and the step. {_INTEGERS}"
                )
        leaves, treedef = jax.tree.flatten(like)
        key = (treedef, tuple((jnp.shape(x), jnp.result_type(x)) for x in leaves))
        if key not in self.seen:
            self.seen[key] = jax.eval_shape(self.init, like)
        expected = self.seen[key]
        hint = "was it made by another optimizer, or for other params?"
        try:
            tree.check_same_structure(state, expected, "the state", "init(params)'s")
        except ValueError as error:
            raise ValueError(f"{self.who}: {error}; {hint}") from None
        found = jax.tree_util.tree_flatten_with_path(state)[0]
        for (path, x), want in zip(found, jax.tree.leaves(expected)):
            dtype_differs = not isinstance(x, (int, float)) and jnp.result_type(x) != want.dtype
            if jnp.shape(x) != want.shape or dtype_differs:
                got = f"{jnp.result_type(x)}{list(jnp.shape(x))}"
                raise ValueError(
                    f"{self.who}: state{jax.tree_util.keystr(path)} is {got}, but init gives "
                    f"{want.dtype}{list(want.shape)} for these params; {hint}"
                )


def with_input_checks(who: str, tx: GradientTransformation) -> GradientTransformation:
    """``tx`` with the input handling every chain has: Python-number leaves taken as arrays, and
    integer or bool gradients, gradients shaped unlike the params, and a state unlike what
    ``init`` gives refused with an error naming ``who`` and the leaf. For a transform that is not
    a chain (a preset written as one loop, say); flat-ready if ``tx`` is."""

    def init(params):
        return tx.init(_numbers_as_arrays(params))

    @functools.wraps(tx.update)  # chain forwards only the keyword extras tx.update accepts
    def update(updates, state, params=None, **extra_args):
        updates, params = _numbers_as_arrays(updates), _numbers_as_arrays(params)
        expected.check(updates, state, params)
        return tx.update(updates, state, params, **extra_args)

    expected = _ExpectedState(who, init)
    out = GradientTransformation(init, update)
    return mark_flat_ready(out) if is_flat_ready(tx) else out


def named_chain(*transforms: tuple[str, GradientTransformation]) -> GradientTransformation:
    """Like `chain`, with each transform's state kept under its name in a dict.

    Example:
        >>> tx = optjax.named_chain(("clip", optjax.clip(1.0)), ("sgd", optjax.sgd(0.1)))
        >>> sorted(tx.init(jnp.zeros(2)))
        ['clip', 'sgd']
    """
    names = [name for name, _ in transforms]
    if len(set(names)) != len(names):
        raise ValueError(f"named_chain: names must be unique, got {names}")
    transforms = tuple((name, as_flat_ready(t)) for name, t in transforms)
    filters = [extra_args_filter(t.update) for _, t in transforms]

    def init(params):
        params = _numbers_as_arrays(params)
        return {name: t.init(params) for name, t in transforms}

    def update(updates, state, params=None, **extra_args):
        updates, params = _numbers_as_arrays(updates), _numbers_as_arrays(params)
        expected.check(updates, state, params)
        new_state = {}
        for (name, t), keep in zip(transforms, filters):
            updates, new_state[name] = t.update(updates, state[name], params, **keep(extra_args))
        return updates, new_state

    expected = _ExpectedState("named_chain", init)
    return mark_flat_ready(GradientTransformation(init, update))


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply transforms one after another; the state is the tuple of their states.

    ``u_t = f_n(... f_2(f_1(g_t)))``. Transforms from optax mix freely with optjax ones.

    Example:
        >>> tx = optjax.chain(optjax.scale(2.0), optjax.scale(-0.5))
        >>> tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))[0]
        Array([-3.], dtype=float32)
    """
    transforms = tuple(as_flat_ready(t) for t in transforms)  # others run on the flat views
    filters = [extra_args_filter(t.update) for t in transforms]

    def init(params):
        params = _numbers_as_arrays(params)
        return tuple(t.init(params) for t in transforms)

    def update(updates, state, params=None, **extra_args):
        if not isinstance(state, tuple) or len(state) != len(transforms):
            what = f"holds {len(state)} entries" if isinstance(state, tuple) else "is a "
            what += "" if isinstance(state, tuple) else type(state).__name__
            raise ValueError(
                f"chain: state {what} but the chain has {len(transforms)} transforms; "
                "was it made by another optimizer?"
            )
        updates, params = _numbers_as_arrays(updates), _numbers_as_arrays(params)
        expected.check(updates, state, params)
        new_state = []
        for t, s, keep in zip(transforms, state, filters):
            updates, s = t.update(updates, s, params, **keep(extra_args))
            new_state.append(s)
        return updates, tuple(new_state)

    expected = _ExpectedState("chain", init)
    return mark_flat_ready(GradientTransformation(init, update))


def stateless(f: Callable[[Updates, Params | None], Updates]) -> GradientTransformation:
    """A transform with no state from a function ``f(updates, params) -> updates``.

    On flat buffers (optjax.flat), ``f`` sees the tree of per-leaf views, as on the tree path,
    unless the transform is declared flat-ready (``flat.mark_flat_ready``): then it sees the
    buffers themselves.

    Example:
        >>> tx = optjax.stateless(lambda u, p: jax.tree.map(jnp.sign, u))
        >>> tx.update(jnp.array([-3.0, 2.0]), tx.init(None))[0]
        Array([-1.,  1.], dtype=float32)
    """

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        if isinstance(updates, FlatBuffers) and not is_flat_ready(tx):
            layout = updates.layout  # f was written for trees: give it one
            return layout.flatten(f(layout.unflatten(updates), as_tree(params))), state
        return f(updates, params), state

    tx = GradientTransformation(init, update)
    return tx


@flat_ready
def identity() -> GradientTransformation:
    """Pass updates through unchanged: ``u_t = g_t``.

    Example:
        >>> optjax.identity().update(jnp.array([1.5]), optjax.EmptyState())[0]
        Array([1.5], dtype=float32)
    """
    return stateless(lambda updates, params: updates)


@flat_ready
def set_to_zero() -> GradientTransformation:
    """Replace every update by zeros: ``u_t = 0`` (freezes parameters, e.g. inside a mask).

    Example:
        >>> optjax.set_to_zero().update(jnp.array([1.5]), optjax.EmptyState())[0]
        Array([0.], dtype=float32)
    """
    return stateless(lambda updates, params: jax.tree.map(jnp.zeros_like, updates))


def stateless_with_tree_map(f: Callable[[Any, Any], Any]) -> GradientTransformation:
    """`stateless` with ``f`` applied leaf by leaf: ``u = f(g, p)`` for each gradient leaf and
    its parameter (``p`` is None when the update has no params).

    Example:
        >>> tx = optjax.stateless_with_tree_map(lambda g, p: g * p)
        >>> p = jnp.array([2.0, 3.0])
        >>> tx.update(jnp.array([1.0, -1.0]), tx.init(p), p)[0]
        Array([ 2., -3.], dtype=float32)
    """

    def per_leaf(updates, params):
        if params is None:
            return jax.tree.map(lambda g: f(g, None), updates)
        return jax.tree.map(f, updates, params)

    return stateless(per_leaf)


def apply_updates(params: Params, updates: Updates) -> Params:
    """Return ``params + updates``, each leaf keeping its parameter's dtype.

    The sum is formed in the wider of the two dtypes and rounded once to the parameter's dtype.
    Leaves that are None in ``updates`` leave their parameter as it is. An integer or bool
    parameter with a floating update is refused (ValueError naming it): the step would be
    truncated every time. A float0 update (the gradient of an integer leaf) leaves its parameter
    as it is. Python numbers are
    accepted as leaves of either tree, as arrays of their default dtype (float32 for a float).

    Example:
        >>> optjax.apply_updates(jnp.ones(2, jnp.bfloat16), jnp.full(2, 0.5))
        Array([1.5, 1.5], dtype=bfloat16)
    """
    tree.check_same_shapes(params, updates, "params", "updates")

    def add(path, p, u):
        if u is None:
            return p
        p, u = jnp.asarray(_number_as_array(p)), _number_as_array(u)
        u_dtype = jnp.result_type(u)
        if u_dtype == jax.dtypes.float0:  # the tangent of an integer: no step
            return p
        if not jnp.issubdtype(p.dtype, jnp.inexact) and jnp.issubdtype(u_dtype, jnp.inexact):
            raise ValueError(
                f"apply_updates: params{jax.tree_util.keystr(path)} is {p.dtype} and its update "
                f"is {u_dtype}: the step would be truncated to an integer every time. {_INTEGERS}"
            )
        wide = tree.compute_dtype(p.dtype, u_dtype)
        return (p.astype(wide) + u.astype(wide)).astype(p.dtype)

    return jax.tree_util.tree_map_with_path(add, params, updates, is_leaf=lambda x: x is None)
