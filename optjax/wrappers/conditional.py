"""Steps that depend on the step count or on the gradient: applying accumulated gradients every
k steps, running a transform at chosen steps only, and skipping large mini-batch gradients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_integer, check_nonnegative
from optjax.base import GradientTransformation, OptState, Params, StepCount, Updates
from optjax.core import _numbers_as_arrays, extra_args_filter
from optjax.flat import as_flat_ready, flat_ready, mark_flat_ready
from optjax.wrappers.accumulation import _zero_updates

__all__ = [
    "ApplyEvery",
    "ConditionFn",
    "ConditionallyMaskState",
    "ConditionallyTransformState",
    "apply_every",
    "conditionally_mask",
    "conditionally_transform",
    "skip_large_updates",
]


class ApplyEvery(NamedTuple):
    """The state of `apply_every` (optax's name for it)."""

    count: StepCount  # int32: calls since the last emitted update, in [0, k)
    grad_acc: Updates  # sum of the gradients of those calls (float32 at least)


@flat_ready
def apply_every(k: int = 1) -> GradientTransformation:
    r"""Sum the gradients of k calls and emit the sum on the k-th; emit zeros on the others.

        A_t = g_t + [(t - 1) mod k != 0] A_{t-1}    (t = 1, 2, ...; a new sum every k calls)
        u_t = A_t  when t mod k == 0,   u_t = 0  otherwise

    The sum is kept in float32 at least (bf16 or fp16 gradients would round small ones away),
    and each window's sum starts afresh, so a NaN or Inf gradient spoils its own window only
    (optax multiplies the old sum by 0, and 0 * Inf is NaN in every later window). Transforms
    chained before this one still step at every call; `optjax.MultiSteps` steps the whole
    optimizer once per k calls instead.

    Example:
        >>> tx = optjax.apply_every(k=2)
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([1.0]), state)   # accumulates: emits 0
        >>> tx.update(jnp.array([3.0]), state)[0]           # emits 1 + 3
        Array([4.], dtype=float32)
    """
    check_integer("k", k, low=1)

    def init(params):
        params = _numbers_as_arrays(params)  # Python numbers as leaves: float32 arrays
        return ApplyEvery(jnp.zeros([], jnp.int32), tree.wide_zeros_like(params))

    def update(updates, state, params=None):
        del params
        updates = _numbers_as_arrays(updates)
        position = state.count % k  # calls into the current window
        restart, emit = position == 0, position == k - 1

        def add(g, a):
            return jnp.where(restart, g.astype(a.dtype), a + g.astype(a.dtype))

        grad_acc = tree.map_like(add, updates, state.grad_acc, names=("updates", "state"))
        out = tree.map_like(
            lambda a, g: jnp.where(emit, a, jnp.zeros_like(a)).astype(g.dtype), grad_acc, updates
        )
        count = ((position + 1) % k).astype(jnp.int32)  # position + 1 <= k: no overflow
        return out, ApplyEvery(count, grad_acc)

    return GradientTransformation(init, update)


def _check_callable(name: str, value) -> None:
    if not callable(value):
        raise ValueError(f"{name} must be a function step -> bool, got {name}={value!r}")


def _should_transform(fn: Callable, step: jax.Array, extra_args: dict) -> jax.Array:
    """``fn(step, **extra_args)`` as a bool scalar, refusing what lax.cond could not branch on."""
    value = jnp.asarray(fn(step, **extra_args))
    if value.shape != () or not (
        value.dtype == jnp.bool_ or jnp.issubdtype(value.dtype, jnp.integer)
    ):
        raise ValueError(
            "should_transform_fn must return a bool scalar, got an array of dtype "
            f"{value.dtype} and shape {value.shape}"
        )
    return value.astype(jnp.bool_)


class ConditionFn(Protocol):
    """``should_transform_fn(step, **extra_args) -> bool``: the condition of
    `conditionally_transform` and `conditionally_mask` (the extras only where the wrapper
    forwards them)."""

    def __call__(self, step: jax.Array, **extra_args: Any) -> jax.Array: ...


class ConditionallyTransformState(NamedTuple):
    inner_state: OptState  # the inner transform's state (kept as it is at skipped steps)
    step: StepCount  # int32 scalar: calls so far


def conditionally_transform(
    inner: GradientTransformation,
    should_transform_fn: Callable[..., Any],
    forward_extra_args: bool = False,
) -> GradientTransformation:
    r"""Run ``inner`` at the steps where ``should_transform_fn(step)`` is True; at the others
    the updates pass through unchanged and ``inner``'s state is kept.

        u_t = inner(g_t)   if should_transform_fn(t - 1),   else   u_t = g_t

    ``step`` counts the calls before this one (0 at the first), an int32 scalar. With
    ``forward_extra_args`` the keyword extras given to ``update`` are passed to
    ``should_transform_fn`` too. To emit zeros at the other steps, see `conditionally_mask`.

    Example:
        >>> tx = optjax.conditionally_transform(optjax.scale(10.0), lambda step: step % 2 == 1)
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([1.0]), state)   # step 0: passed through
        >>> tx.update(jnp.array([1.0]), state)[0]           # step 1: scaled
        Array([10.], dtype=float32)
    """
    _check_callable("should_transform_fn", should_transform_fn)
    inner = as_flat_ready(inner)
    keep = extra_args_filter(inner.update)

    def init(params):
        return ConditionallyTransformState(inner.init(params), jnp.zeros([], jnp.int32))

    def update(updates, state, params=None, **extra_args):
        updates, params = _numbers_as_arrays(updates), _numbers_as_arrays(params)
        take = _should_transform(
            should_transform_fn, state.step, extra_args if forward_extra_args else {}
        )
        new_updates, inner_state = jax.lax.cond(
            take,
            lambda: inner.update(updates, state.inner_state, params, **keep(extra_args)),
            lambda: (updates, state.inner_state),
        )
        step = tree.safe_increment(state.step)
        return new_updates, ConditionallyTransformState(inner_state, step)

    return mark_flat_ready(GradientTransformation(init, update))


class ConditionallyMaskState(NamedTuple):
    step: StepCount  # int32 scalar: calls so far
    inner_state: OptState  # the inner transform's state (kept as it is at masked steps)


def conditionally_mask(
    inner: GradientTransformation,
    should_transform_fn: Callable[..., Any],
    forward_extra_args: bool = False,
) -> GradientTransformation:
    r"""Run ``inner`` at the steps where ``should_transform_fn(step)`` is True; at the others
    the updates are zero and ``inner``'s state is kept.

        u_t = inner(g_t)   if should_transform_fn(t - 1),   else   u_t = 0

    ``step`` counts the calls before this one (0 at the first), an int32 scalar. With
    ``forward_extra_args`` the keyword extras given to ``update`` are passed to
    ``should_transform_fn`` too. To pass the updates through instead, see
    `conditionally_transform`.

    Example:
        >>> tx = optjax.conditionally_mask(optjax.sgd(1.0), lambda step: step >= 1)
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([2.0]), state)   # step 0: masked
        >>> u, tx.update(jnp.array([2.0]), state)[0]
        (Array([0.], dtype=float32), Array([-2.], dtype=float32))
    """
    _check_callable("should_transform_fn", should_transform_fn)
    inner = as_flat_ready(inner)
    keep = extra_args_filter(inner.update)

    def init(params):
        return ConditionallyMaskState(jnp.zeros([], jnp.int32), inner.init(params))

    def update(updates, state, params=None, **extra_args):
        updates, params = _numbers_as_arrays(updates), _numbers_as_arrays(params)
        take = _should_transform(
            should_transform_fn, state.step, extra_args if forward_extra_args else {}
        )
        inner_args = keep(extra_args)
        zeros = _zero_updates(inner.update, updates, state.inner_state, params, inner_args)
        new_updates, inner_state = jax.lax.cond(
            take,
            lambda: inner.update(updates, state.inner_state, params, **inner_args),
            lambda: (zeros, state.inner_state),
        )
        return new_updates, ConditionallyMaskState(tree.safe_increment(state.step), inner_state)

    return mark_flat_ready(GradientTransformation(init, update))


def skip_large_updates(
    updates: Updates,
    gradient_step: jax.Array,
    params: Params | None,
    max_squared_norm: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    r"""A ``should_skip_update_fn`` for `optjax.MultiSteps`: skip a mini-batch whose gradient
    has a squared norm of ``max_squared_norm`` or more, or is NaN.

        skip = not (sum_i |g_i|^2 < max_squared_norm)

    The squared norm is formed in float32 at least (an fp16 square overflows to Inf above
    65504) and from |g|^2 for complex leaves. Bind the bound with ``functools.partial``. The
    skip state is ``{"should_skip": skip, "norm_squared": sum_i |g_i|^2}``.

    Example:
        >>> skip, info = optjax.skip_large_updates(jnp.array([3.0, 4.0]), 0, None, 20.0)
        >>> skip, info["norm_squared"]   # 25 >= 20: skipped
        (Array(True, dtype=bool), Array(25., dtype=float32))
    """
    del gradient_step, params
    check_nonnegative("max_squared_norm", max_squared_norm)
    norm_squared = tree.sum_of_squares(updates)
    bound = jnp.asarray(max_squared_norm).astype(norm_squared.dtype)
    should_skip = jnp.logical_not(norm_squared < bound)  # True for NaN as well
    return should_skip, {"should_skip": should_skip, "norm_squared": norm_squared}
