"""Measurements of the updates kept in the state, for debugging and logging: a snapshot of a
function of the updates, several measurements at once, and a measurement's moving average."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_decay
from optjax.base import EmptyState, GradientTransformation, OptState, Updates
from optjax.core import _numbers_as_arrays, extra_args_filter
from optjax.flat import as_tree
from optjax.transforms.momentum import EmaState
from optjax.wrappers.accumulation import _zeros_of

__all__ = [
    "MonitorState",
    "SnapshotState",
    "measure_with_ema",
    "monitor",
    "snapshot",
]

Measure = Callable[[Updates], Any]  # updates -> a pytree of arrays


def _measured(x):
    """What a measure is given: the tree of views of FlatBuffers, Python numbers as arrays."""
    return _numbers_as_arrays(as_tree(x))


class SnapshotState(NamedTuple):
    measurement: dict[str, Any]  # {measure_name: measure(updates)} of the last step


def snapshot(measure_name: str, measure: Measure) -> GradientTransformation:
    """Store ``measure(updates)`` in the state under ``measure_name``; updates pass through.

    In a chain, ``updates`` are the gradients as transformed by the transforms before this one.
    Read the value with ``optjax.tree.get_by_name(state, measure_name)``. ``init`` stores
    ``measure(params)``, so that the state has the same structure before and after a step.

    Example:
        >>> tx = optjax.chain(
        ...     optjax.snapshot("norm", optjax.tree.global_norm), optjax.clip_by_global_norm(1.0))
        >>> u, state = tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))
        >>> optjax.tree.get_by_name(state, "norm"), u   # the norm before clipping
        (Array(5., dtype=float32), Array([0.6, 0.8], dtype=float32))
    """
    _check_name("measure_name", measure_name)
    _check_measure("measure", measure)

    def init(params):
        return SnapshotState({measure_name: measure(_measured(params))})

    def update(updates, state, params=None):
        del state, params
        return updates, SnapshotState({measure_name: measure(_measured(updates))})

    return GradientTransformation(init, update)


def _check_name(what: str, name) -> None:
    if not isinstance(name, str):
        raise ValueError(f"{what} must be a string, got {what}={name!r}")


def _check_measure(what: str, measure) -> None:
    if not callable(measure):
        raise ValueError(
            f"{what} must be a function updates -> measurement, got {what}={measure!r}"
        )


def _is_transform(x) -> bool:
    return hasattr(x, "init") and hasattr(x, "update") and not callable(x)


class MonitorState(NamedTuple):
    measurements: dict[str, Any]  # name -> the measurement of the last step
    measure_states: tuple[OptState, ...]  # the state of each stateful measure, in order


def monitor(measures: Mapping[str, GradientTransformation | Measure]) -> GradientTransformation:
    """Keep several measurements of the updates in the state; updates pass through.

    Each measure is a function ``updates -> measurement`` (as in `snapshot`) or a transform
    whose ``update`` returns the measurement and keeps a state of its own (as
    `measure_with_ema` does); keyword extras given to ``update`` are forwarded to the transforms
    that accept them. ``state.measurements`` holds each measurement of the last step (zeros of
    its shape and dtype before the first), so the state keeps its structure across steps (optax
    starts it as an empty dict, so a jitted step is compiled again at step 2 and ``lax.scan``
    refuses it). Read a value with ``optjax.tree.get_by_name(state, name)``.

    Example:
        >>> tx = optjax.monitor({"norm": optjax.tree.global_norm,
        ...                      "norm_ema": optjax.measure_with_ema(optjax.tree.global_norm, 0.5)})
        >>> state = tx.init(jnp.zeros(2))
        >>> u, state = tx.update(jnp.array([3.0, 4.0]), state)
        >>> u, state = tx.update(jnp.array([0.6, 0.8]), state)
        >>> state.measurements   # the EMA, debiased: (0.25 * 5 + 0.5 * 1) / (1 - 0.25)
        {'norm': Array(1., dtype=float32), 'norm_ema': Array(2.3333333, dtype=float32)}
    """
    if not isinstance(measures, Mapping):
        raise ValueError(f"measures must be a dict name -> measure, got measures={measures!r}")
    transforms: dict[str, Any] = {}
    for name, measure in measures.items():
        _check_name("each name in measures", name)
        if _is_transform(measure):
            transforms[name] = measure
        else:
            _check_measure(f"measures[{name!r}]", measure)
            transforms[name] = _stateless_measure(cast(Measure, measure))
    names = tuple(transforms)
    filters = {name: extra_args_filter(transforms[name].update) for name in names}

    def measure_all(updates, states, params, extra_args):
        out = {}
        for name, state in zip(names, states):
            keep = filters[name](extra_args)
            out[name] = transforms[name].update(updates, state, params, **keep)
        return out

    def init(params):
        params = _measured(params)
        states = tuple(transforms[name].init(params) for name in names)
        shapes = jax.eval_shape(lambda: measure_all(params, states, params, {}))
        measurements = {name: jax.tree.map(_zeros_of, shapes[name][0]) for name in names}
        return MonitorState(measurements, states)

    def update(updates, state, params=None, **extra_args):
        views, params_views = _measured(updates), _measured(params)
        out = measure_all(views, state.measure_states, params_views, extra_args)
        measurements = {name: out[name][0] for name in names}
        return updates, MonitorState(measurements, tuple(out[name][1] for name in names))

    return GradientTransformation(init, update)


def _stateless_measure(measure: Measure) -> GradientTransformation:
    """A measure function as a transform whose update returns the measurement."""

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        del params
        return measure(updates), state

    return GradientTransformation(init, update)


def measure_with_ema(
    measure: Measure,
    decay: float,
    debias: bool = True,
    accumulator_dtype=None,
) -> GradientTransformation:
    r"""A measure for `monitor`: the exponential moving average of ``measure(updates)``.

        m_t = decay m_{t-1} + (1 - decay) measure(g_t)
        u_t = m_t / (1 - decay^t)   (debias)   or   u_t = m_t

    Its ``update`` returns the average (not updates): use it inside `monitor`. The average is
    kept in ``accumulator_dtype``, by default in float32 at least, also for a bool measurement
    such as ``norm > threshold`` (whose average is then the fraction of steps where it held;
    optax keeps that state as a bool at init and a float after the first step).

    Example:
        >>> tx = optjax.measure_with_ema(lambda u: jnp.max(u) > 1.0, decay=0.5, debias=False)
        >>> state = tx.init(jnp.zeros(1))
        >>> m, state = tx.update(jnp.array([2.0]), state)   # True: 0.5 * 0 + 0.5 * 1
        >>> m
        Array(0.5, dtype=float32)
    """
    _check_measure("measure", measure)
    check_decay("decay", decay)

    def as_float(measurement):
        def leaf(x):  # a bool or integer measurement is averaged as a float
            x = jnp.asarray(x)
            return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(jnp.float32)

        return jax.tree.map(leaf, measurement)

    def init(params):
        zeros = tree.wide_zeros_like(as_float(measure(_measured(params))), accumulator_dtype)
        return EmaState(jnp.zeros([], jnp.int32), zeros)

    def update(updates, state, params=None):
        del params
        value = as_float(measure(_measured(updates)))
        count = tree.safe_increment(state.count)
        m = tree.ema(value, state.ema, decay)
        out = tree.debias(m, decay, count) if debias else m
        return tree.cast_like(out, value), EmaState(count, m)

    return GradientTransformation(init, update)
