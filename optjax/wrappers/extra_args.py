"""Keyword extras passed to ``update``: optax's names for the transforms that accept them.

optjax has one transformation type. Whether an ``update`` accepts keyword extras (``value=``,
``loss=``, ...) is a property of the function, read from its signature (``**extra_args`` takes
any; named keyword parameters take those), and every combinator forwards each extra only to the
transforms that accept it. optax has a second type for this, GradientTransformationExtraArgs;
here it is another name for GradientTransformation, so that code written for optax runs as it is.
"""

from __future__ import annotations

import inspect

from optjax.base import GradientTransformation
from optjax.core import extra_args_filter
from optjax.flat import is_flat_ready, mark_flat_ready

__all__ = [
    "GradientTransformationExtraArgs",
    "with_extra_args_support",
]

# optax's subclass for transforms whose update takes keyword extras. In optjax every transform
# may (see the module doc), so the name is an alias: GradientTransformationExtraArgs(init,
# update) builds a GradientTransformation, and every optjax transform is an instance of it.
GradientTransformationExtraArgs = GradientTransformation


def _takes_any_keyword(update) -> bool:
    try:
        parameters = inspect.signature(update).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD for p in parameters)


def with_extra_args_support(tx: GradientTransformation) -> GradientTransformation:
    """``tx`` with an ``update`` that accepts any keyword extras.

    Extras that ``tx.update`` names are passed to it; the others are dropped. A transform whose
    ``update`` already takes ``**extra_args`` is returned as it is (optax's transforms of type
    GradientTransformationExtraArgs too). optjax's combinators (``chain``, ``masked``, ...)
    already filter extras this way, so the wrapper is only needed where ``update`` is called
    directly with extras it may not know.

    Example:
        >>> tx = optjax.with_extra_args_support(optjax.scale(2.0))
        >>> tx.update(jnp.array([1.0]), tx.init(jnp.zeros(1)), value=jnp.array(3.0))[0]
        Array([2.], dtype=float32)
    """
    if _takes_any_keyword(tx.update):
        return tx
    keep = extra_args_filter(tx.update)

    def update(updates, state, params=None, **extra_args):
        return tx.update(updates, state, params, **keep(extra_args))

    wrapped = GradientTransformation(tx.init, update)
    return mark_flat_ready(wrapped) if is_flat_ready(tx) else wrapped
