"""Scaling by constants, learning rates and schedules."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_finite, check_learning_rate
from optjax.base import EmptyState, GradientTransformation, ScalarOrSchedule, StepCount
from optjax.core import stateless
from optjax.flat import flat_ready

__all__ = [
    "ScaleByScheduleState",
    "ScaleState",
    "scale",
    "scale_by_learning_rate",
    "scale_by_schedule",
]

# optax's name for this stateless transform's state.
ScaleState = EmptyState


class ScaleByScheduleState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far


def schedule_count_state(scheduled: bool) -> ScaleByScheduleState | EmptyState:
    """The state of a transform with a hyperparameter that may be a schedule: a step count if
    it is one, else nothing."""
    return ScaleByScheduleState(jnp.zeros([], jnp.int32)) if scheduled else EmptyState()


def next_count_state(state):
    """``state`` (from `schedule_count_state`) one step on."""
    if isinstance(state, ScaleByScheduleState):
        return ScaleByScheduleState(tree.safe_increment(state.count))
    return state


@flat_ready
def scale(step_size: float | jax.Array) -> GradientTransformation:
    r"""Multiply updates by a constant: ``u_t = s g_t``.

    Example:
        >>> optjax.scale(-0.5).update(jnp.array([2.0, -4.0]), optjax.EmptyState())[0]
        Array([-1.,  2.], dtype=float32)
    """
    check_finite("step_size", step_size)
    return stateless(lambda updates, params: tree.scaled(updates, step_size))


@flat_ready
def scale_by_schedule(step_size_fn) -> GradientTransformation:
    r"""Multiply updates by a schedule of the step count: ``u_t = s(t) g_t``, t = 0, 1, ...

    Example:
        >>> tx = optjax.scale_by_schedule(lambda t: jnp.where(t == 0, 1.0, 0.5))
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([6.0]), state)
        >>> tx.update(jnp.array([6.0]), state)[0]   # s(1) = 0.5
        Array([3.], dtype=float32)
    """
    if not callable(step_size_fn):
        raise ValueError(f"step_size_fn must be callable, got step_size_fn={step_size_fn!r}")

    def init(params):
        del params
        return ScaleByScheduleState(jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        del params
        step_size = jnp.asarray(step_size_fn(state.count), tree.scalar_dtype())
        return tree.scaled(updates, step_size), ScaleByScheduleState(
            tree.safe_increment(state.count)
        )

    return GradientTransformation(init, update)


@flat_ready
def scale_by_learning_rate(learning_rate: ScalarOrSchedule, *, flip_sign: bool = True):
    r"""Scale updates by a learning rate, negated by default so that the step descends:
    ``u_t = -lr g_t``, where lr may be a float or a schedule ``t -> lr(t)``.

    Example:
        >>> tx = optjax.scale_by_learning_rate(0.1)
        >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]
        Array([-0.2], dtype=float32)
    """
    check_learning_rate("learning_rate", learning_rate)
    sign = -1.0 if flip_sign else 1.0
    if callable(learning_rate):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    return scale(sign * learning_rate)
