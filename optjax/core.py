"""The transform algebra: chaining transforms, the simplest ones, and applying updates."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp

from optjax import tree
from optjax.base import EmptyState, GradientTransformation, Params, Updates
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
        return {name: t.init(params) for name, t in transforms}

    def update(updates, state, params=None, **extra_args):
        new_state = {}
        for (name, t), keep in zip(transforms, filters):
            updates, new_state[name] = t.update(updates, state[name], params, **keep(extra_args))
        return updates, new_state

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
        return tuple(t.init(params) for t in transforms)

    def update(updates, state, params=None, **extra_args):
        if len(state) != len(transforms):
            raise ValueError(
                f"chain: state holds {len(state)} entries but the chain has {len(transforms)} "
                "transforms; was the state made by another optimizer?"
            )
        new_state = []
        for t, s, keep in zip(transforms, state, filters):
            updates, s = t.update(updates, s, params, **keep(extra_args))
            new_state.append(s)
        return updates, tuple(new_state)

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


def apply_updates(params: Params, updates: Updates) -> Params:
    """Return ``params + updates``, each leaf keeping its parameter's dtype.

    The sum is formed in the wider of the two dtypes and rounded once to the parameter's dtype.
    Leaves that are None in ``updates`` leave their parameter as it is.

    Example:
        >>> optjax.apply_updates(jnp.ones(2, jnp.bfloat16), jnp.full(2, 0.5))
        Array([1.5, 1.5], dtype=bfloat16)
    """
    tree.check_same_structure(params, updates, "params", "updates")

    def add(p, u):
        if u is None:
            return p
        p = jnp.asarray(p)
        wide = tree.compute_dtype(p.dtype, u.dtype)
        return (p.astype(wide) + u.astype(wide)).astype(p.dtype)

    return jax.tree.map(add, params, updates, is_leaf=lambda x: x is None)
