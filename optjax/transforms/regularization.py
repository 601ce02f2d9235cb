"""Weight decay."""

from __future__ import annotations

from optjax import tree
from optjax._checks import check_nonnegative
from optjax.base import EmptyState, GradientTransformation
from optjax.core import stateless
from optjax.flat import as_tree, flat_ready

__all__ = [
    "AddDecayedWeightsState",
    "add_decayed_weights",
]

# optax's name for this stateless transform's state.
AddDecayedWeightsState = EmptyState


@flat_ready
def add_decayed_weights(weight_decay: float = 0.0, mask=None) -> GradientTransformation:
    r"""Add the decayed parameters to the updates: ``u_t = g_t + wd p_t``.

    Placed before an adaptive scaling this is L2 regularisation (coupled); placed after it and
    before the learning rate it is decoupled weight decay (AdamW). ``mask`` is a pytree of bools
    with the params' structure, or a function ``params -> that tree``: only leaves marked True
    are decayed (for example, to skip biases and norms).

    Example:
        >>> tx = optjax.add_decayed_weights(0.1)
        >>> p = jnp.array([10.0, -20.0])
        >>> tx.update(jnp.array([1.0, 1.0]), tx.init(p), p)[0]
        Array([ 2., -1.], dtype=float32)

    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """
    check_nonnegative("weight_decay", weight_decay)

    def decayed(updates, params):
        if params is None:
            raise ValueError("add_decayed_weights needs params: call update(g, state, params)")
        decay = tree.map_like(
            lambda g, p: (tree.wide(g) + weight_decay * tree.wide(p)).astype(g.dtype),
            updates,
            params,
            names=("updates", "params"),
        )
        if mask is None:
            return decay
        keep = mask(as_tree(params)) if callable(mask) else mask
        return tree.where_leaves(keep, decay, updates)

    return stateless(decayed)
