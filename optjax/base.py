"""The contract: ``GradientTransformation``, an ``(init, update)`` pair, and the names of what
it passes around. Everything else in optjax builds on these."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax

__all__ = [
    "EmptyState",
    "GradientTransformation",
    "MaskOrFn",
    "OptState",
    "Params",
    "ScalarOrSchedule",
    "Schedule",
    "StepCount",
    "TransformInitFn",
    "TransformUpdateExtraArgsFn",
    "TransformUpdateFn",
    "Updates",
]

Params = Any  # a pytree of arrays
Updates = Any  # a pytree with the structure of Params
OptState = Any  # a pytree of arrays (NamedTuples here)
Schedule = Callable[[jax.Array], jax.Array]  # step count -> value
# A state's step counter, an int32 scalar array. Typed Any: a NamedTuple field named ``count``
# shadows tuple.count, which a type checker refuses to see replaced by an Array.
StepCount = Any
ScalarOrSchedule = float | jax.Array | Schedule


class TransformInitFn(Protocol):
    def __call__(self, params: Params) -> OptState: ...


class TransformUpdateFn(Protocol):
    """``update(updates, state, params=None) -> (updates, state)``; it may take keyword extras."""

    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None
    ) -> tuple[Updates, OptState]: ...


class TransformUpdateExtraArgsFn(Protocol):
    """An update that takes keyword extras: ``update(updates, state, params=None, **extra_args)``
    (optax's name; every optjax update may take them, see `GradientTransformation`)."""

    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]: ...


# A mask: a tree of bools like the params (or a prefix of it), or a function params -> that tree.
MaskOrFn = Any | Callable[[Params], Any] | None


class GradientTransformation(NamedTuple):
    """A pure optimizer transform: ``init(params) -> state``, ``update(g, state, params)``.

    The same protocol as optax: any object with ``init`` and ``update`` of these signatures works
    wherever an optjax transform does, and the other way round. ``update`` may take keyword
    extras (e.g. ``value=``) where an algorithm needs them; ``chain`` forwards each extra only to
    the transforms whose ``update`` accepts it.
    """

    init: TransformInitFn
    update: TransformUpdateFn


class EmptyState(NamedTuple):
    """The state of a transform that keeps none."""
