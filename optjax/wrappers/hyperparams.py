"""Hyperparameters held in the optimizer state: readable and changeable between jitted steps."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optjax import tree
from optjax.base import GradientTransformation, OptState, StepCount
from optjax.core import extra_args_filter
from optjax.flat import as_flat_ready, mark_flat_ready

__all__ = [
    "Hyperparams",
    "InjectHyperparamsState",
    "inject_hyperparams",
]

_TRACE_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerArrayConversionError,
)


class Hyperparams(dict):
    """``name -> array`` of injected hyperparameters (a dict, and a pytree like one).

    Assigning a number to an entry stores it as an array of that entry's dtype and shape, so a
    jitted step sees the same input type as before and is not compiled again.
    """

    def __setitem__(self, name, value) -> None:
        if name not in self:
            raise ValueError(
                f"{name!r} is not an injected hyperparameter; the injected ones are {sorted(self)}"
            )
        old = dict.__getitem__(self, name)
        if hasattr(old, "dtype") and hasattr(old, "shape"):
            value = tree.as_array_like(value, old, f"hyperparameter {name!r}")
        dict.__setitem__(self, name, value)

    def __reduce__(self):
        return Hyperparams, (dict(self),)


jax.tree_util.register_pytree_with_keys(
    Hyperparams,
    lambda h: (tuple((jax.tree_util.DictKey(k), h[k]) for k in sorted(h)), tuple(sorted(h))),
    lambda names, values: Hyperparams(zip(names, values)),
    flatten_func=lambda h: (tuple(h[k] for k in sorted(h)), tuple(sorted(h))),
)


class InjectHyperparamsState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
    hyperparams: Hyperparams  # name -> value used by the last step (schedules: at that step)
    inner_state: OptState


def _is_schedule(value) -> bool:
    """A callable that maps an int32 step to a number (a mask function or a dtype does not)."""
    if isinstance(value, (type, np.dtype)) or not callable(value):
        return False
    try:
        out = jax.eval_shape(value, jax.ShapeDtypeStruct((), jnp.int32))
    except Exception:  # noqa: BLE001 -- anything that cannot take a step is not a schedule
        return False
    return (
        isinstance(out, jax.ShapeDtypeStruct)
        and out.shape == ()
        and (jnp.issubdtype(out.dtype, jnp.floating) or jnp.issubdtype(out.dtype, jnp.integer))
    )


def _is_injectable_number(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return True
    return isinstance(value, (np.ndarray, np.generic, jax.Array)) and jnp.issubdtype(
        value.dtype, jnp.floating
    )


def inject_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype=None,
) -> Callable[..., GradientTransformation]:
    """Wrap an optimizer factory so that its hyperparameters live in the state.

    ``inject_hyperparams(optjax.adam)(learning_rate=1e-3)`` is adam whose state is
    ``InjectHyperparamsState(count, hyperparams, inner_state)``. Each float argument (given or
    default) becomes a float32 array in ``state.hyperparams``, even for bf16 or fp16 params, and
    can be read or changed between steps, ``state.hyperparams['learning_rate'] = 1e-4``, without
    compiling the jitted step again. A schedule ``step -> value`` is evaluated at each step's
    count and its value stored there. Other arguments (ints such as sizes and offsets, bools,
    None, dtypes, mask functions, names in ``static_args``) are passed through unchanged, as are
    floats the factory branches on in Python (e.g. a weight decay of 0.0 that removes a step).

    Each step rebuilds the inner transform from the stored values inside the trace. The factory
    is also called once at construction, so a bad concrete value raises there.

    Example:
        >>> tx = optjax.inject_hyperparams(optjax.sgd)(learning_rate=0.1)
        >>> state = tx.init(jnp.zeros(1))
        >>> state.hyperparams["learning_rate"] = 0.5
        >>> tx.update(jnp.array([2.0]), state)[0]
        Array([-1.], dtype=float32)
    """
    static_names = {static_args} if isinstance(static_args, str) else set(static_args)
    dtype = jnp.dtype(hyperparam_dtype if hyperparam_dtype is not None else jnp.float32)
    if not jnp.issubdtype(dtype, jnp.floating) or dtype.itemsize < 4:
        raise ValueError(
            f"hyperparam_dtype must be float32 or wider, got hyperparam_dtype={hyperparam_dtype!r}"
        )
    signature = inspect.signature(inner_factory)

    @functools.wraps(inner_factory)
    def wrapped(*args, **kwargs) -> GradientTransformation:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        variadic = {
            n
            for n, p in signature.parameters.items()
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
        numeric, schedules = {}, {}
        for name, value in bound.arguments.items():
            if name in static_names or name in variadic:
                continue
            if _is_injectable_number(value):
                numeric[name] = value
            elif _is_schedule(value):
                schedules[name] = value

        def build(values):
            call = signature.bind(*bound.args, **bound.kwargs)
            call.arguments.update(values)
            return as_flat_ready(inner_factory(*call.args, **call.kwargs))

        build({})  # checks the concrete values: a bad one raises here, naming its argument
        for name in _branched_on(build, numeric, dtype):
            del numeric[name]

        def values_at(count, stored):
            values = {
                name: jnp.asarray(v).astype(dtype) for name, v in stored.items() if name in numeric
            }
            for name, schedule in schedules.items():
                values[name] = jnp.asarray(schedule(count)).astype(dtype)
            return values

        def init(params):
            count = jnp.zeros([], jnp.int32)
            values = values_at(count, numeric)
            return InjectHyperparamsState(count, Hyperparams(values), build(values).init(params))

        def update(updates, state, params=None, **extra_args):
            values = values_at(state.count, state.hyperparams)
            inner = build(values)
            updates, inner_state = inner.update(
                updates, state.inner_state, params, **extra_args_filter(inner.update)(extra_args)
            )
            count = tree.safe_increment(state.count)
            return updates, InjectHyperparamsState(count, Hyperparams(values), inner_state)

        return mark_flat_ready(GradientTransformation(init, update))

    return wrapped


def _branched_on(build, numeric: dict, dtype) -> list[str]:
    """The hyperparameters the factory uses in Python control flow, which cannot be traced."""

    def traces(names) -> bool:
        abstract = {n: jax.ShapeDtypeStruct(jnp.shape(numeric[n]), dtype) for n in names}
        try:
            jax.eval_shape(lambda values: (build(values), 0)[1], abstract)
        except _TRACE_ERRORS:
            return False
        return True

    if traces(list(numeric)):
        return []
    return [name for name in numeric if not traces([name])]
