"""Weight decay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_learning_rate, is_zero
from optjax.base import EmptyState, GradientTransformation, Params, ScalarOrSchedule
from optjax.flat import flat_ready
from optjax.transforms.layerwise import mask_tree
from optjax.transforms.scaling import next_count_state, schedule_count_state

__all__ = [
    "AddDecayedWeightsState",
    "add_decayed_weights",
]

# optax's name for its state with a constant weight decay (a schedule's is a step count).
AddDecayedWeightsState = EmptyState


@flat_ready
def add_decayed_weights(
    weight_decay: ScalarOrSchedule = 0.0, mask: Any | Callable[[Params], Any] | None = None
) -> GradientTransformation:
    r"""Add the decayed parameters to the updates: ``u_t = g_t + wd_t p_t``.

    Placed before an adaptive scaling this is L2 regularisation (coupled); placed after it and
    before the learning rate it is decoupled weight decay (AdamW). ``weight_decay`` is a number
    or a schedule ``step -> wd`` (the state then counts the steps, as optax's does). ``mask`` is
    a pytree of bools with the params' structure or a prefix of it (``True`` for a whole
    subtree), or a function ``params -> that tree``: only leaves marked True are decayed (for
    example, to skip biases and norms). Inside `partition` or `masked`, the mask is read
    against the whole tree, as optax reads it.

    Example:
        >>> tx = optjax.add_decayed_weights(0.1)
        >>> p = jnp.array([10.0, -20.0])
        >>> tx.update(jnp.array([1.0, 1.0]), tx.init(p), p)[0]
        Array([ 2., -1.], dtype=float32)

    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """
    check_learning_rate("weight_decay", weight_decay)  # a number >= 0 or a schedule
    scheduled = callable(weight_decay)

    def init(params):
        del params
        return schedule_count_state(scheduled)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("add_decayed_weights needs params: call update(g, state, params)")
        wd = weight_decay(state.count) if scheduled else weight_decay
        state = next_count_state(state)
        if is_zero(wd):  # known to be 0 now: no pass over the params
            return updates, state

        def decay(g, p):
            dtype = tree.compute_dtype(g.dtype)
            rate = wd if isinstance(wd, (int, float)) else jnp.asarray(wd).astype(dtype)
            return (tree.wide(g) + rate * tree.wide(p)).astype(g.dtype)

        decayed = tree.map_like(decay, updates, params, names=("updates", "params"))
        if mask is not None:
            decayed = tree.where_leaves(mask_tree(mask, params), decayed, updates)
        return decayed, state

    return GradientTransformation(init, update)
