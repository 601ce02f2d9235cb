"""Freezing part of the parameters, with no optimizer state kept for the frozen ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from optjax.base import GradientTransformation, Params
from optjax.core import set_to_zero
from optjax.wrappers.masking import mask_leaves, partition

__all__ = ["selective_transform"]


def selective_transform(
    optimizer: GradientTransformation,
    *,
    freeze_mask: Any | Callable[[Params], Any],
) -> GradientTransformation:
    """Update the leaves where ``freeze_mask`` is False with ``optimizer``; zero the updates of
    the others (frozen), for which ``optimizer`` keeps no state.

        u_t^i = 0   where freeze_mask^i,      u_t^i = optimizer(g_t)^i   elsewhere

    ``freeze_mask`` is a bool, a tree of bools with the params' structure (or a prefix of it),
    or a function ``params -> that tree``. It is `partition` with the groups ``"train"`` and
    ``"freeze"`` (``set_to_zero``), so the state is optax's. Compare `freeze`, which zeroes the
    updates of the frozen leaves but leaves the optimizer's state for every leaf.

    Example:
        >>> tx = optjax.selective_transform(optjax.sgd(0.1), freeze_mask={"w": False, "b": True})
        >>> g = {"w": jnp.array([1.0]), "b": jnp.array([1.0])}
        >>> tx.update(g, tx.init(g))[0]
        {'b': Array([0.], dtype=float32), 'w': Array([-0.1], dtype=float32)}
    """

    def labels(params):
        frozen = mask_leaves(freeze_mask, params)
        return jax.tree.structure(params).unflatten(["freeze" if f else "train" for f in frozen])

    return partition({"train": optimizer, "freeze": set_to_zero()}, labels)
