"""Hyperparameters driven by stateful schedules: schedules that keep a state of their own in the
optimizer state and may read the keyword extras of each step (a loss, a validation metric)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from optjax import tree
from optjax.base import GradientTransformation, OptState, Schedule, StepCount
from optjax.core import extra_args_filter
from optjax.flat import as_flat_ready, mark_flat_ready
from optjax.wrappers.hyperparams import (
    Hyperparams,
    _branched_on,
    _is_injectable_number,
    _is_schedule,
)

__all__ = [
    "InjectStatefulHyperparamsState",
    "StatefulSchedule",
    "WrappedSchedule",
    "WrappedScheduleState",
    "inject_stateful_hyperparams",
]


@runtime_checkable
class StatefulSchedule(Protocol):
    """A schedule with a state: ``init() -> state``, ``update(state, **extra_args) -> state``,
    and ``__call__(state, **extra_args) -> value`` (the value at the current step)."""

    def init(self) -> Any: ...

    def update(self, state: Any, **extra_args: Any) -> Any: ...

    def __call__(self, state: Any, **extra_args: Any) -> jax.Array: ...


class WrappedScheduleState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far


class WrappedSchedule:
    """A schedule ``step -> value`` as a `StatefulSchedule` whose state counts the steps."""

    def __init__(self, schedule_fn: Schedule):
        self.schedule_fn = schedule_fn

    def init(self) -> WrappedScheduleState:
        return WrappedScheduleState(jnp.zeros([], jnp.int32))

    def update(self, state: WrappedScheduleState, **extra_args: Any) -> WrappedScheduleState:
        del extra_args
        return WrappedScheduleState(tree.safe_increment(state.count))

    def __call__(self, state: WrappedScheduleState, **extra_args: Any) -> jax.Array:
        del extra_args
        return self.schedule_fn(state.count)


class InjectStatefulHyperparamsState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
    hyperparams: Hyperparams  # name -> value used by the last step
    hyperparams_states: dict[str, Any]  # name -> the state of that hyperparameter's schedule
    inner_state: OptState


def inject_stateful_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype=None,
) -> Callable[..., GradientTransformation]:
    """`inject_hyperparams` whose schedules may be stateful (`StatefulSchedule`).

    ``inject_stateful_hyperparams(optjax.sgd)(learning_rate=schedule)``: a stateful schedule's
    state lives in ``state.hyperparams_states``; at each step the value it gives, called with
    the step's keyword extras (``update(g, state, params, loss=...)``), is the hyperparameter,
    and then its ``update`` advances the state with the same extras. A schedule ``step -> value``
    is wrapped in `WrappedSchedule`. Float arguments are stored in ``state.hyperparams`` and can
    be changed between steps, as with `inject_hyperparams`; every value is a float32 array (or
    ``hyperparam_dtype``), whatever the params' dtype (optax stores them in the params' dtype,
    where a bf16 b2 = 0.999 becomes 1 and Adam divides 0 by 0). optax 0.2.8 deprecates this
    name in favour of its inject_hyperparams, which now takes stateful schedules too; optjax's
    inject_hyperparams keeps its smaller state, and this is the wrapper for stateful schedules.

    Example:
        >>> class Halving:   # a stateful schedule: halves the rate after each step with loss > 1
        ...     def init(self):
        ...         return jnp.array(1.0)
        ...     def update(self, rate, loss):
        ...         return jnp.where(loss > 1.0, rate / 2, rate)
        ...     def __call__(self, rate, **extra_args):
        ...         return rate
        >>> tx = optjax.inject_stateful_hyperparams(optjax.sgd)(learning_rate=Halving())
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([1.0]), state, loss=jnp.array(2.0))
        >>> u, tx.update(jnp.array([1.0]), state, loss=jnp.array(2.0))[0]
        (Array([-1.], dtype=float32), Array([-0.5], dtype=float32))
    """
    static_names = {static_args} if isinstance(static_args, str) else set(static_args)
    dtype = jnp.dtype(hyperparam_dtype if hyperparam_dtype is not None else jnp.float32)
    if not jnp.issubdtype(dtype, jnp.floating) or dtype.itemsize < 4:
        raise ValueError(
            f"hyperparam_dtype must be float32 or wider, got hyperparam_dtype={hyperparam_dtype!r}"
        )
    signature = inspect.signature(inner_factory)
    unknown = static_names - set(signature.parameters)
    if unknown:
        raise ValueError(
            f"static_args must name parameters of {getattr(inner_factory, '__name__', 'it')}, "
            f"got {sorted(unknown)}; its parameters are {list(signature.parameters)}"
        )

    @functools.wraps(inner_factory)
    def wrapped(*args, **kwargs) -> GradientTransformation:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        variadic = {
            n
            for n, p in signature.parameters.items()
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
        numeric: dict[str, Any] = {}
        schedules: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            if name in static_names or name in variadic:
                continue
            if isinstance(value, StatefulSchedule):
                schedules[name] = value
            elif _is_schedule(value):
                schedules[name] = WrappedSchedule(value)
            elif _is_injectable_number(value):
                numeric[name] = value

        def build(values):
            call = signature.bind(*bound.args, **bound.kwargs)
            call.arguments.update(values)
            return as_flat_ready(inner_factory(*call.args, **call.kwargs))

        def scheduled(states, extra_args):
            return {
                name: jnp.asarray(schedule(states[name], **extra_args)).astype(dtype)
                for name, schedule in schedules.items()
            }

        # Checks the concrete values, the schedules' first ones included: a bad one raises here.
        first = scheduled({name: schedule.init() for name, schedule in schedules.items()}, {})
        build(first)
        for name in _branched_on(lambda values: build(first | values), numeric, dtype):
            del numeric[name]

        def init(params):
            states = {name: schedule.init() for name, schedule in schedules.items()}
            values = {name: jnp.asarray(v).astype(dtype) for name, v in numeric.items()}
            values |= scheduled(states, {})  # each schedule's value at its initial state
            return InjectStatefulHyperparamsState(
                jnp.zeros([], jnp.int32),
                Hyperparams(values),
                states,
                build(values).init(params),
            )

        def update(updates, state, params=None, **extra_args):
            values = {
                name: jnp.asarray(v).astype(dtype)
                for name, v in state.hyperparams.items()
                if name in numeric
            }
            values |= scheduled(state.hyperparams_states, extra_args)
            states = {
                name: schedule.update(state.hyperparams_states[name], **extra_args)
                for name, schedule in schedules.items()
            }
            inner = build(values)
            updates, inner_state = inner.update(
                updates, state.inner_state, params, **extra_args_filter(inner.update)(extra_args)
            )
            return updates, InjectStatefulHyperparamsState(
                tree.safe_increment(state.count), Hyperparams(values), states, inner_state
            )

        return mark_flat_ready(GradientTransformation(init, update))

    return wrapped
