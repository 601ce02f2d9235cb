"""Transforms applied to part of the parameters: masked, parameter groups, freezing."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from optjax import tree
from optjax.base import GradientTransformation, OptState, Params
from optjax.core import extra_args_filter, set_to_zero
from optjax.flat import per_leaf

__all__ = [
    "MaskedNode",
    "MaskedState",
    "MultiTransformState",
    "PartitionState",
    "freeze",
    "mask_leaves",
    "masked",
    "multi_transform",
    "partition",
    "prefix_leaves",
]


class MaskedNode(NamedTuple):
    """Stands where a masked-out leaf was: an empty pytree, so the inner transform's state holds
    nothing for that leaf (no parameter-sized buffers for frozen or excluded parameters)."""


class MaskedState(NamedTuple):
    inner_state: OptState  # the inner transform's state over the masked-in leaves only


class MultiTransformState(NamedTuple):
    inner_states: dict  # label -> MaskedState of that label's transform


def _is_masked_node(x) -> bool:
    return isinstance(x, MaskedNode)


def _as_bool(value, where: str) -> bool:
    if isinstance(value, jax.core.Tracer):
        raise ValueError(
            f"mask{where} must be a Python bool fixed when the step is traced, got a traced "
            "value; build the mask from shapes or names, not from parameter values"
        )
    array = np.asarray(value)
    if array.shape != () or array.dtype != np.bool_:
        raise ValueError(f"mask{where} must be a single bool, got {value!r}")
    return bool(array)


def prefix_leaves(prefix, full, what: str, full_name: str = "params") -> list:
    """One entry of ``prefix`` per leaf of ``full``: ``prefix`` has ``full``'s structure, or a
    prefix of it whose leaves stand for whole subtrees (``{'encoder': False, 'head': True}``)."""
    entries, treedef_ = jax.tree_util.tree_flatten_with_path(prefix)
    treedef: Any = treedef_  # a PyTreeDef (untyped in jaxlib)
    try:
        subtrees = treedef.flatten_up_to(full)
    except (ValueError, TypeError):
        tree.check_same_structure(full, prefix, full_name, what)
        raise ValueError(
            f"{what} must have the structure of {full_name} or a prefix of it; got {treedef} "
            f"for {full_name} {jax.tree.structure(full)}"
        ) from None
    out = []
    for (path, entry), sub in zip(entries, subtrees):
        out.extend([(jax.tree_util.keystr(path), entry)] * len(jax.tree.leaves(sub)))
    return out


def mask_leaves(mask, like) -> list[bool]:
    """The mask as one Python bool per leaf of ``like`` (mask: a tree or a function of it)."""
    mask_tree = mask(like) if callable(mask) else mask
    return [
        _as_bool(m, f" at {path or '<root>'}") for path, m in prefix_leaves(mask_tree, like, "mask")
    ]


def _select(x, keep: list[bool]):
    """``x`` with each leaf not kept replaced by MaskedNode()."""
    leaves, treedef_ = jax.tree.flatten(x)
    treedef: Any = treedef_  # a PyTreeDef (untyped in jaxlib)
    return treedef.unflatten([leaf if k else MaskedNode() for leaf, k in zip(leaves, keep)])


def _masked_step(inner, keep, updates, inner_state, params, extra_args):
    """Run ``inner`` on the kept leaves: (its updates, one per leaf or None, its new state)."""
    extra_args = extra_args_filter(inner.update)(extra_args)
    new, inner_state = inner.update(
        _select(updates, keep),
        inner_state,
        None if params is None else _select(params, keep),
        **extra_args,
    )
    flat = jax.tree.leaves(new, is_leaf=_is_masked_node)
    if len(flat) != len(keep):
        raise ValueError(
            f"the inner transform returned {len(flat)} leaves for {len(keep)} parameters; it "
            "must return updates with the structure of the updates it was given"
        )
    return [u if k else None for u, k in zip(flat, keep)], inner_state


def masked(
    inner: GradientTransformation, mask: Any | Callable[[Params], Any]
) -> GradientTransformation:
    r"""Apply ``inner`` to the leaves where ``mask`` is True; other updates pass through unchanged.

        u_t^i = inner(g_t)^i   where mask^i,      u_t^i = g_t^i   elsewhere

    ``mask`` is a pytree of bools with the params' structure (or a prefix of it: one bool for a
    whole subtree), or a function ``params -> that tree``. ``inner`` sees, and keeps state for,
    the masked-in leaves only: masked-out leaves are replaced by empty ``MaskedNode()``\s.

    Example:
        >>> tx = optjax.masked(optjax.sgd(0.1), {"w": True, "b": False})
        >>> g = {"w": jnp.array([1.0]), "b": jnp.array([1.0])}
        >>> tx.update(g, tx.init(g))[0]
        {'b': Array([1.], dtype=float32), 'w': Array([-0.1], dtype=float32)}
    """

    def init(params):
        return MaskedState(inner.init(_select(params, mask_leaves(mask, params))))

    def update(updates, state, params=None, **extra_args):
        keep = mask_leaves(mask, params if params is not None else updates)
        new, inner_state = _masked_step(inner, keep, updates, state.inner_state, params, extra_args)
        leaves, treedef = jax.tree.flatten(updates)
        merged = [u if k else g for u, g, k in zip(new, leaves, keep)]
        return treedef.unflatten(merged), MaskedState(inner_state)

    # A mask is per leaf: on the flat layout (optjax.flat) this runs on the tree of views.
    return per_leaf(GradientTransformation(init, update))


def freeze(mask: Any | Callable[[Params], Any]) -> GradientTransformation:
    """Zero the updates of the leaves where ``mask`` is True (frozen); others pass through.

    Put it last in a chain, ``chain(optimizer, freeze(mask))``, so that nothing moves a frozen
    leaf (placed first it zeroes only the gradient, and decoupled weight decay still moves the
    parameter). To also keep no optimizer state for frozen leaves, use
    ``multi_transform({"train": optimizer, "frozen": set_to_zero()}, labels)``.

    Example:
        >>> tx = optjax.freeze({"w": True, "b": False})
        >>> g = {"w": jnp.array([1.0]), "b": jnp.array([1.0])}
        >>> tx.update(g, tx.init(g))[0]
        {'b': Array([1.], dtype=float32), 'w': Array([0.], dtype=float32)}
    """
    return masked(set_to_zero(), mask)


def multi_transform(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: Any | Callable[[Params], Any],
) -> GradientTransformation:
    """Parameter groups: each leaf is updated by the transform of its label.

    ``param_labels`` is a pytree of labels with the params' structure (or a prefix of it), or a
    function ``params -> that tree``. Each transform keeps state for its own leaves only.

    Example:
        >>> tx = optjax.multi_transform(
        ...     {"fast": optjax.sgd(1.0), "slow": optjax.sgd(0.1)}, {"w": "fast", "b": "slow"})
        >>> g = {"w": jnp.array([1.0]), "b": jnp.array([1.0])}
        >>> tx.update(g, tx.init(g))[0]
        {'b': Array([-0.1], dtype=float32), 'w': Array([-1.], dtype=float32)}
    """
    transforms = dict(transforms)

    def labels_of(like) -> list:
        labels_tree = param_labels(like) if callable(param_labels) else param_labels
        labels = prefix_leaves(labels_tree, like, "param_labels")
        for path, label in labels:
            if not isinstance(label, Hashable) or label not in transforms:
                raise ValueError(
                    f"param_labels has label {label!r} at {path or '<root>'} with no transform; "
                    f"transforms has labels {sorted(map(repr, transforms))}"
                )
        return [label for _, label in labels]

    def init(params):
        labels = labels_of(params)
        return MultiTransformState(
            {
                name: MaskedState(t.init(_select(params, [lab == name for lab in labels])))
                for name, t in transforms.items()
            }
        )

    def update(updates, state, params=None, **extra_args):
        groups = getattr(state, "inner_states", None)
        if not isinstance(state, MultiTransformState) or set(groups) != set(transforms):
            found = f"groups {sorted(map(repr, groups))}" if isinstance(groups, dict) else "a "
            found += "" if isinstance(groups, dict) else type(state).__name__
            raise ValueError(
                f"multi_transform: the state holds {found}, but the transforms are for groups "
                f"{sorted(map(repr, transforms))}; was it made by another optimizer?"
            )
        labels = labels_of(params if params is not None else updates)
        out = [None] * len(labels)
        new_states = {}
        for name, t in transforms.items():
            keep = [lab == name for lab in labels]
            new, inner_state = _masked_step(
                t, keep, updates, state.inner_states[name].inner_state, params, extra_args
            )
            new_states[name] = MaskedState(inner_state)
            out = [u if k else o for u, o, k in zip(new, out, keep)]
        return jax.tree.structure(updates).unflatten(out), MultiTransformState(new_states)

    # Labels are per leaf: on the flat layout (optjax.flat) this runs on the tree of views.
    return per_leaf(GradientTransformation(init, update))


PartitionState = MultiTransformState  # optax's current name for the state of partition


def partition(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: Any | Callable[[Params], Any],
    *,
    mask_compatible_extra_args: bool = False,
) -> GradientTransformation:
    """optax's current name for `multi_transform`: parameter groups, each leaf updated by the
    transform of its label (see there).

    With ``mask_compatible_extra_args``, a keyword extra passed to ``update`` that has the
    structure of the updates (e.g. a tree of per-parameter tags) is masked like them: each
    group's transform sees its own leaves of it. Other extras reach every transform as they are.

    Example:
        >>> tx = optjax.partition({"sgd": optjax.sgd(0.1), "frozen": optjax.set_to_zero()},
        ...                       {"w": "sgd", "b": "frozen"})
        >>> g = {"w": jnp.array([1.0]), "b": jnp.array([1.0])}
        >>> tx.update(g, tx.init(g))[0]
        {'b': Array([0.], dtype=float32), 'w': Array([-0.1], dtype=float32)}
    """
    if mask_compatible_extra_args:
        transforms = {label: _masking_extra_args(t) for label, t in transforms.items()}
    return multi_transform(transforms, param_labels)


def _masking_extra_args(tx: GradientTransformation) -> GradientTransformation:
    """``tx`` run inside a group of `multi_transform`, whose keyword extras shaped like the
    updates are masked as the updates it is given are (MaskedNode() at the other groups' leaves)."""
    keep = extra_args_filter(tx.update)

    def update(updates, state, params=None, **extra_args):
        flags, treedef = jax.tree.flatten(updates, is_leaf=_is_masked_node)

        def mask(value):
            if jax.tree.structure(value) != treedef:
                return value
            leaves = jax.tree.leaves(value)
            return treedef.unflatten(
                [MaskedNode() if _is_masked_node(u) else v for u, v in zip(flags, leaves)]
            )

        masked_args = {name: mask(value) for name, value in keep(extra_args).items()}
        return tx.update(updates, state, params, **masked_args)

    return GradientTransformation(tx.init, update)
