"""Steps taken conditionally: gradient accumulation (MultiSteps) and skipping non-finite steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_positive_int
from optjax.base import GradientTransformation, OptState, Params, Updates
from optjax.core import extra_args_filter
from optjax.flat import as_flat_ready, mark_flat_ready

__all__ = [
    "ApplyIfFiniteState",
    "MultiSteps",
    "MultiStepsState",
    "ShouldSkipUpdateFunction",
    "apply_if_finite",
    "skip_not_finite",
]


def _zero_updates(inner_update, updates, state, params, extra_args):
    """Zeros shaped and typed like what ``inner_update`` returns (both branches of a cond must
    agree, and the inner transform may change the updates' dtype)."""
    shapes, _ = jax.eval_shape(lambda: inner_update(updates, state, params, **extra_args))
    return jax.tree.map(_zeros_of, shapes)


def _zeros_of(s: jax.ShapeDtypeStruct) -> jax.Array:
    """Zeros of an abstract value, with its sharding where it has one (a mesh's Explicit axes)."""
    return jnp.zeros(s.shape, s.dtype, out_sharding=getattr(s, "sharding", None))


def _all_finite(updates) -> jax.Array:
    leaves = jax.tree.leaves(updates)
    return (
        jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
        if leaves
        else jnp.array(True)
    )


class MultiStepsState(NamedTuple):
    mini_step: jax.Array  # int32: gradients accumulated since the last inner step
    gradient_step: jax.Array  # int32: inner steps taken so far
    inner_opt_state: OptState
    acc_grads: Updates  # sum of the gradients accumulated since the last inner step
    skip_state: Any = ()  # what should_skip_update_fn returned last


class ShouldSkipUpdateFunction(Protocol):
    """``should_skip_update_fn(updates, gradient_step, params) -> (skip, skip_state)``: what
    `MultiSteps` calls on each mini-step's gradient (``skip`` a boolean scalar; ``skip_state``
    any tree, kept in the state for inspection)."""

    def __call__(
        self, updates: Updates, gradient_step: jax.Array, params: Params | None
    ) -> tuple[jax.Array, Any]: ...


def skip_not_finite(updates: Updates, gradient_step: jax.Array, params: Params | None):
    """A ``should_skip_update_fn`` for MultiSteps: skip a mini-step with a NaN or Inf gradient.
    Its state, as optax's: ``should_skip`` and ``num_not_finite`` (the NaN and Inf elements in the
    gradient, int32).

    Example:
        >>> skip, info = optjax.skip_not_finite({"a": jnp.array([1.0, jnp.nan, jnp.inf])}, 0, None)
        >>> bool(skip), int(info["num_not_finite"])
        (True, 2)
    """
    del gradient_step, params
    counts = [jnp.sum(~jnp.isfinite(x), dtype=jnp.int32) for x in jax.tree.leaves(updates)]
    num_not_finite = sum(counts[1:], counts[0]) if counts else jnp.zeros([], jnp.int32)
    skip = num_not_finite > 0
    return skip, {"should_skip": skip, "num_not_finite": num_not_finite}


class MultiSteps:
    r"""Gradient accumulation: one step of ``opt`` every k calls, on the mean (or sum) of the k
    gradients, so that k mini-batches of size b step like one batch of size kb.

        G = sum_{j=1..k} g_j;   on the k-th call  u = opt(G / k)  (or opt(G)),   otherwise u = 0

    k may be a schedule of the number of inner steps taken. The accumulator has the params' dtype
    in float32 at least (bf16 or fp16 gradients are summed in float32, where small gradients do
    not round away), unless ``accumulator_dtype`` is given. With
    ``should_skip_update_fn(updates, gradient_step, params) -> (skip, skip_state)`` a mini-step
    whose skip is True changes nothing but skip_state. Usable directly as a transform (``init``,
    ``update``) or through ``gradient_transformation()``.

    Example:
        >>> tx = optjax.MultiSteps(optjax.sgd(1.0), every_k_schedule=2)
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([1.0]), state)   # accumulates, updates 0
        >>> tx.update(jnp.array([3.0]), state)[0]           # mean of 1 and 3
        Array([-2.], dtype=float32)
    """

    def __init__(
        self,
        opt: GradientTransformation,
        every_k_schedule: int | Callable[[jax.Array], jax.Array],
        use_grad_mean: bool = True,
        should_skip_update_fn: Callable | None = None,
        accumulator_dtype=None,
    ):
        if not callable(every_k_schedule):
            check_positive_int("every_k_schedule", every_k_schedule)
        self.opt = as_flat_ready(opt)
        self.every_k_schedule = every_k_schedule
        self.use_grad_mean = use_grad_mean
        self.should_skip_update_fn = should_skip_update_fn
        self.accumulator_dtype = accumulator_dtype
        self._keep = extra_args_filter(opt.update)
        mark_flat_ready(self)  # the sums are elementwise; the inner transform is flat-ready

    def _k(self, gradient_step):
        k = self.every_k_schedule
        return jnp.asarray(k(gradient_step) if callable(k) else k).astype(jnp.int32)

    def init(self, params: Params) -> MultiStepsState:
        skip_state = ()
        if self.should_skip_update_fn is not None:
            zero = jnp.zeros([], jnp.int32)
            _, skip_state = jax.eval_shape(self.should_skip_update_fn, params, zero, params)
            skip_state = jax.tree.map(_zeros_of, skip_state)
        return MultiStepsState(
            jnp.zeros([], jnp.int32),
            jnp.zeros([], jnp.int32),
            self.opt.init(params),
            self._zero_accumulator(params),
            skip_state,
        )

    def _zero_accumulator(self, params: Params) -> Updates:
        """Zeros for the gradient sum: in ``accumulator_dtype``, else float32 at least."""
        if self.accumulator_dtype is not None:
            return tree.zeros_like(params, self.accumulator_dtype)
        return jax.tree.map(lambda p: jnp.zeros_like(p, tree.compute_dtype(p.dtype)), params)

    def update(
        self, updates: Updates, state: MultiStepsState, params: Params | None = None, **extra_args
    ):
        extra_args = self._keep(extra_args)
        if params is not None:  # before the gradients are added up: nothing broadcasts
            tree.check_same_shapes(updates, params, "updates", "params")
        tree.check_same_shapes(updates, state.acc_grads, "updates", "state.acc_grads")
        acc = tree.map_like(
            lambda a, g: (
                a.astype(tree.compute_dtype(a.dtype)) + g.astype(tree.compute_dtype(a.dtype))
            ).astype(a.dtype),
            state.acc_grads,
            updates,
            names=("state.acc_grads", "updates"),
        )
        mini_step = state.mini_step + 1
        zeros = _zero_updates(self.opt.update, updates, state.inner_opt_state, params, extra_args)

        def step(_):
            def total(a, g):
                wide = a.astype(tree.compute_dtype(a.dtype))
                return (wide / mini_step.astype(wide.dtype) if self.use_grad_mean else wide).astype(
                    g.dtype
                )

            grads = tree.map_like(total, acc, updates)
            new_updates, inner_state = self.opt.update(
                grads, state.inner_opt_state, params, **extra_args
            )
            return new_updates, MultiStepsState(
                jnp.zeros([], jnp.int32),
                tree.safe_increment(state.gradient_step),
                inner_state,
                tree.zeros_like(acc),
                state.skip_state,
            )

        def wait(_):
            return zeros, MultiStepsState(
                mini_step, state.gradient_step, state.inner_opt_state, acc, state.skip_state
            )

        new_updates, new_state = jax.lax.cond(
            mini_step >= self._k(state.gradient_step), step, wait, None
        )
        if self.should_skip_update_fn is None:
            return new_updates, new_state
        skip, skip_state = self.should_skip_update_fn(updates, state.gradient_step, params)
        new_updates, new_state = jax.tree.map(
            lambda old, new: jnp.where(skip, old, new), (zeros, state), (new_updates, new_state)
        )
        return new_updates, new_state._replace(skip_state=skip_state)

    def has_updated(self, state: MultiStepsState) -> jax.Array:
        """Whether the last call took an inner step."""
        return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)

    def gradient_transformation(self) -> GradientTransformation:
        return GradientTransformation(self.init, self.update)


class ApplyIfFiniteState(NamedTuple):
    notfinite_count: jax.Array  # int32: consecutive steps with a NaN or Inf gradient
    last_finite: jax.Array  # bool: whether the last gradient was finite
    total_notfinite: jax.Array  # int32: steps skipped in all
    inner_state: OptState


def apply_if_finite(
    inner: GradientTransformation, max_consecutive_errors: int
) -> GradientTransformation:
    """Skip a step whose gradient holds a NaN or Inf: the updates are zero, the inner state is
    kept, and the step is counted. After more than ``max_consecutive_errors`` such steps in a row
    the step is taken anyway, so that a run that cannot recover fails visibly.

    Example:
        >>> tx = optjax.apply_if_finite(optjax.sgd(1.0), max_consecutive_errors=3)
        >>> u, state = tx.update(jnp.array([jnp.nan]), tx.init(jnp.zeros(1)))
        >>> u, int(state.total_notfinite)
        (Array([0.], dtype=float32), 1)
    """
    check_positive_int("max_consecutive_errors", max_consecutive_errors)
    inner = as_flat_ready(inner)
    keep = extra_args_filter(inner.update)

    def init(params):
        zero = jnp.zeros([], jnp.int32)
        return ApplyIfFiniteState(zero, jnp.array(True), zero, inner.init(params))

    def update(updates, state, params=None, **extra_args):
        extra_args = keep(extra_args)
        finite = _all_finite(updates)
        notfinite_count = jnp.where(finite, 0, tree.safe_increment(state.notfinite_count)).astype(
            jnp.int32
        )
        take = finite | (notfinite_count > max_consecutive_errors)
        zeros = _zero_updates(inner.update, updates, state.inner_state, params, extra_args)
        new_updates, inner_state = jax.lax.cond(
            take,
            lambda: inner.update(updates, state.inner_state, params, **extra_args),
            lambda: (zeros, state.inner_state),
        )
        total = jnp.where(finite, state.total_notfinite, tree.safe_increment(state.total_notfinite))
        return new_updates, ApplyIfFiniteState(notfinite_count, finite, total, inner_state)

    return mark_flat_ready(GradientTransformation(init, update))
