"""Hyperparameter validation at construction time.

Each check raises ValueError naming the argument, the value received and the range allowed.
Traced values (a hyperparameter passed in under jit or vmap) and schedules cannot be inspected
when the transform is built, so they are accepted unchecked.
"""

from __future__ import annotations

import jax
import numpy as np


def concrete(value):
    """The value as a NumPy array, or None where it cannot be checked now."""
    if callable(value) or isinstance(value, jax.core.Tracer):
        return None
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None


def check_value(name, value, ok, allowed):
    x = concrete(value)
    if x is None:
        return
    if not np.all(ok(x)):
        raise ValueError(f"{name} must be {allowed}, got {name}={value!r}")


def check_nonnegative(name: str, value) -> None:
    check_value(name, value, lambda x: x >= 0, "a number >= 0")


def check_positive(name: str, value) -> None:
    check_value(name, value, lambda x: x > 0, "a number > 0")


def check_decay(name: str, value) -> None:
    """Decay rates of moving averages live in [0, 1)."""
    check_value(name, value, lambda x: (x >= 0) & (x < 1), "in [0, 1)")


def check_unit_interval(name: str, value) -> None:
    check_value(name, value, lambda x: (x >= 0) & (x <= 1), "in [0, 1]")


def check_finite(name: str, value) -> None:
    check_value(name, value, np.isfinite, "a finite number")


def check_learning_rate(name: str, value) -> None:
    """A learning rate (a float or a schedule) must be finite and >= 0."""
    check_value(
        name, value, lambda x: np.isfinite(x) & (x >= 0), "a finite number >= 0 or a schedule"
    )


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {name}={value!r}")
