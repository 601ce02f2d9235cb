"""Hyperparameter validation at construction time: one layer for every public constructor.

A hyperparameter is a number: a Python or NumPy scalar, or a 0-d array, of an integer or
floating dtype (a bool, a string, a list or None is not one, unless a constructor documents
None). It must be finite in float32, the precision the transforms compute in, and lie in the
documented range. A bad value raises ValueError naming the argument, the range allowed and the
value received: ``NAME must be <range>, got NAME=<value>``.

Traced values (a constructor called under jit or vmap, or rebuilt by inject_hyperparams) cannot
be inspected when the transform is built, so they are accepted unchecked; so are schedules
``step -> value`` where the argument may be one (learning rates).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

_F32_MAX = float(np.finfo(np.float32).max)
_INT32 = np.iinfo(np.int32)


def is_traced(value) -> bool:
    """Whether ``value`` is a jax tracer (under jit, vmap, grad, ...): it cannot be inspected."""
    return isinstance(value, jax.core.Tracer)


def is_zero(value) -> bool:
    """Whether ``value`` is known now to be 0 (a traced value is not), for Python branches that
    leave out a step whose hyperparameter is 0 without concretizing a traced one."""
    return not is_traced(value) and not callable(value) and value == 0


def as_number(value) -> float | None:
    """The real number ``value`` holds as a float (inf where it overflows), or None where it is
    not a number: bools, strings, sequences, None, arrays with a shape, complex numbers."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        if value.shape != () or not (
            jnp.issubdtype(value.dtype, jnp.integer) or jnp.issubdtype(value.dtype, jnp.floating)
        ):
            return None
        return float(value)
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:  # an int beyond float64
            return math.copysign(math.inf, value)
    return None


def concrete(value):
    """The value as a NumPy float64 array, or None where it cannot be inspected now."""
    if callable(value) or is_traced(value):
        return None
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None


def _fail(name: str, value, allowed: str, x: float | None = None):
    note = ""
    if x is not None and not abs(x) <= _F32_MAX and "finite" not in allowed:  # inf, nan, 1e39
        note = " (it must be finite in float32)"
    raise ValueError(f"{name} must be {allowed}, got {name}={value!r}{note}")


def check_value(
    name: str, value, ok: Callable[[float], bool], allowed: str, *, schedule: bool = False
) -> None:
    """Raise unless ``value`` is a number, finite in float32, for which ``ok`` holds; traced
    values (and schedules, where ``schedule``) are accepted unchecked."""
    if is_traced(value) or (schedule and callable(value)):
        return
    x = as_number(value)
    if x is None or not abs(x) <= _F32_MAX or not ok(x):
        _fail(name, value, allowed, x)


def check_finite(name: str, value) -> None:
    check_value(name, value, lambda x: True, "a finite number")


def check_nonnegative(name: str, value) -> None:
    check_value(name, value, lambda x: x >= 0, "a number >= 0")


def check_positive(name: str, value) -> None:
    check_value(name, value, lambda x: x > 0, "a number > 0")


def check_at_most(name: str, value, high: float) -> None:
    check_value(name, value, lambda x: x <= high, f"a number <= {high:g}")


def check_at_least(name: str, value, low: float) -> None:
    check_value(name, value, lambda x: x >= low, f"a number >= {low:g}")


def check_decay(name: str, value) -> None:
    """Decay rates of moving averages live in [0, 1)."""
    check_value(name, value, lambda x: 0 <= x < 1, "in [0, 1)")


def check_unit_interval(name: str, value) -> None:
    check_value(name, value, lambda x: 0 <= x <= 1, "in [0, 1]")


def check_learning_rate(name: str, value) -> None:
    """A learning rate is a finite number >= 0, or a schedule ``step -> learning rate``."""
    check_value(name, value, lambda x: x >= 0, "a finite number >= 0 or a schedule", schedule=True)


def check_integer(name: str, value, low: int = _INT32.min, high: int = _INT32.max) -> None:
    """An int32 integer in [low, high] (not a bool); a traced one is accepted unchecked."""
    if is_traced(value):
        return
    x = value
    if isinstance(value, (np.ndarray, jax.Array)) and value.shape == ():
        x = value.item()
    if (
        isinstance(x, (bool, np.bool_))
        or not isinstance(x, (int, np.integer))
        or not (low <= x <= high)
    ):
        words = {
            (False, False): "an int32 integer",
            (True, False): f"an integer >= {low}",
            (False, True): f"an integer <= {high}",
            (True, True): f"an integer in [{low}, {high}]",
        }[(low != _INT32.min, high != _INT32.max)]
        raise ValueError(f"{name} must be {words}, got {name}={value!r}")


def check_positive_int(name: str, value) -> None:
    """A count or size: a Python or NumPy integer >= 1 (used in Python, so never traced)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {name}={value!r}")
