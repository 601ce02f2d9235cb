"""optax's top-level numerics helpers: norms with gradients that stay finite at 0, saturating
counters, and the averages and periodic copies of parameters used for evaluation and target
networks. Same names, arguments and meanings as optax 0.2.8, re-exported at ``optjax.X``.

Where optjax differs (each function notes how): norms are formed in float32 at least, so an fp16
array's squares do not overflow at 256; Python numbers are accepted wherever arrays are; trees
that do not match raise a ValueError naming the first differing path.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optjax._checks import check_finite, check_integer, check_nonnegative
from optjax._tree_math import _if_scalar, _num, _real, _zip_map
from optjax._tree_reduce import norm
from optjax._tree_state import map_params as tree_map_params
from optjax._tree_util import abs_square, compute_dtype
from optjax.base import EmptyState, Params

__all__ = [
    "global_norm",
    "incremental_update",
    "init_empty_state",
    "periodic_update",
    "safe_increment",
    "safe_int32_increment",
    "safe_norm",
    "safe_root_mean_squares",
    "tree_map_params",
]


def global_norm(updates: Any) -> jax.Array:
    """The l2 norm of all leaves taken together, ``sqrt(sum_i ||x_i||^2)``, in float32 at least
    (optjax.tree.norm with its defaults). Unlike optax 0.2.8 it is not deprecated, and it accepts
    Python-number leaves (optjax.tree.global_norm does not).

    Example:
        >>> optjax.numerics.global_norm({"a": jnp.array([3.0]), "b": 4.0, "c": None})
        Array(5., dtype=float32)
    """
    return norm(updates)


def _out_dtype(x: jax.Array) -> np.dtype:
    """The dtype of a norm of ``x``: its real dtype, or the default float for integers."""
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return _real(x.dtype)
    return np.dtype(jnp.result_type(float))


def _safe(measure, x, floor, name: str) -> jax.Array:
    """``max(measure(x), floor)`` whose gradient is 0, not NaN, where ``measure(x) <= floor``:
    there x is replaced by ones before measuring, so no branch differentiates a norm at 0."""
    _if_scalar(check_nonnegative, name, floor)
    x = jnp.asarray(x)
    out = _out_dtype(x)
    x = x.astype(compute_dtype(x.dtype, out))
    value = measure(x)
    floor = _num(floor, value.dtype)
    small = value <= floor
    masked = measure(jnp.where(small, jnp.ones_like(x), x))
    return jnp.where(small, floor, masked).astype(out)


def safe_norm(
    x: Any,
    min_norm: Any,
    ord: int | float | str | None = None,
    axis: int | tuple[int, ...] | None = None,
    keepdims: bool = False,
) -> jax.Array:
    """``max(||x||, min_norm)`` (``jnp.linalg.norm``'s ``ord`` and ``axis``) with a gradient of 0,
    not NaN, where ``||x|| <= min_norm``, at x = 0 included.

    The norm is formed in float32 at least (an fp16 x may hold elements above 256) and returned in
    x's real dtype. ``min_norm`` is a number >= 0 (or an array broadcasting against the norm).

    Example:
        >>> optjax.numerics.safe_norm(jnp.array([3.0, 4.0]), 1.0)
        Array(5., dtype=float32)
        >>> jax.grad(lambda x: optjax.numerics.safe_norm(x, 0.0))(jnp.zeros(2))
        Array([0., 0.], dtype=float32)
    """

    def measure(y):
        return jnp.linalg.norm(y, ord=ord, axis=axis, keepdims=True)

    value = _safe(measure, x, min_norm, "min_norm")
    return value if keepdims else jnp.squeeze(value, axis=axis)


def safe_root_mean_squares(x: Any, min_rms: Any) -> jax.Array:
    """``max(sqrt(mean(|x|^2)), min_rms)`` with a gradient of 0, not NaN, where the root mean
    square is <= ``min_rms`` (a number >= 0), at x = 0 included.

    Formed in float32 at least and returned in x's real dtype. Unlike optax 0.2.8, a Python
    number is accepted, and an fp16 x's squares do not overflow.

    Example:
        >>> optjax.numerics.safe_root_mean_squares(jnp.array([3.0, -3.0]), 1.0)
        Array(3., dtype=float32)
    """
    return _safe(lambda y: jnp.sqrt(jnp.mean(abs_square(y))), x, min_rms, "min_rms")


def safe_increment(count: Any) -> jax.Array:
    """``count + 1``, saturating at the largest value of count's dtype (integer or floating)
    instead of wrapping around. A count of another dtype raises ValueError.

    Example:
        >>> optjax.numerics.safe_increment(jnp.array(2147483647, jnp.int32))
        Array(2147483647, dtype=int32)
    """
    count = jnp.asarray(count)
    top: Any
    if jnp.issubdtype(count.dtype, jnp.integer):
        top = jnp.iinfo(count.dtype).max
    elif jnp.issubdtype(count.dtype, jnp.floating):
        top = jnp.finfo(count.dtype).max
    else:
        raise ValueError(
            f"count must have an integer or floating dtype, got count of dtype {count.dtype}"
        )
    top = jnp.asarray(top, count.dtype)
    return jnp.where(count < top, count + jnp.asarray(1, count.dtype), top)


safe_int32_increment = safe_increment  # optax's older name for the same function


def incremental_update(new_tensors: Params, old_tensors: Params, step_size: Any) -> Params:
    """Polyak averaging: the moving average of the parameters, one step on:

        old_new = step_size * new + (1 - step_size) * old

    Formed in float32 at least and stored in old_tensors' dtype (the average keeps its dtype);
    None leaves stay None.

    Example:
        >>> optjax.numerics.incremental_update({"w": jnp.array(1.0)}, {"w": jnp.array(0.0)}, 0.1)
        {'w': Array(0.1, dtype=float32)}

    Reference: Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging", 1992.
    """
    _if_scalar(check_finite, "step_size", step_size)

    def average(new, old):
        new, old = jnp.asarray(new), jnp.asarray(old)
        wide = compute_dtype(new.dtype, old.dtype)
        s = _num(step_size, wide)
        return (s * new.astype(wide) + (1 - s) * old.astype(wide)).astype(old.dtype)

    return _zip_map(average, (new_tensors, old_tensors), ("new_tensors", "old_tensors"))


def periodic_update(
    new_tensors: Params, old_tensors: Params, steps: Any, update_period: Any
) -> Params:
    """A slow copy of the parameters: ``new_tensors`` when ``steps`` is a multiple of
    ``update_period`` (an integer >= 1), else ``old_tensors``, in old_tensors' dtypes.

    Example:
        >>> optjax.numerics.periodic_update({"w": jnp.array(1.0)}, {"w": jnp.array(0.0)}, 10, 5)
        {'w': Array(1., dtype=float32)}

    Reference: Mnih et al., "Human-level control through deep reinforcement learning", 2015
    (the target network).
    """
    check_integer("update_period", update_period, low=1)
    take = jnp.mod(steps, update_period) == 0

    def pick(new, old):
        old = jnp.asarray(old)
        return jnp.where(take, jnp.asarray(new).astype(old.dtype), old)

    return _zip_map(pick, (new_tensors, old_tensors), ("new_tensors", "old_tensors"))


def init_empty_state(params: Params) -> EmptyState:
    """The ``init`` of a transform that keeps no state: ``EmptyState()`` whatever the params.

    Example:
        >>> optjax.numerics.init_empty_state({"w": jnp.zeros(2)})
        EmptyState()
    """
    del params
    return EmptyState()
