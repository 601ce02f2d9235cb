"""Averages of the parameter iterates: lookahead's slow weights, and EMA or Polyak/SWA averages
kept for evaluation."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_decay, check_positive_int, check_unit_interval
from optjax.base import GradientTransformation, OptState, Params, StepCount
from optjax.core import extra_args_filter
from optjax.flat import as_flat_ready, mark_flat_ready

__all__ = [
    "AverageParamsState",
    "LookaheadState",
    "average_params",
    "lookahead",
]


def _copy(params):
    """A copy of params in new buffers, so that state and params can both be donated."""
    return jax.tree.map(lambda p: jnp.array(p, copy=True), params)


def _need_params(name: str, params) -> None:
    if params is None:
        raise ValueError(f"{name} needs params: call update(g, state, params)")


def _stored_iterate(u, p, wide):
    """``p + u`` as apply_updates stores it (rounded to p's dtype), in the dtype ``wide``."""
    return (p.astype(wide) + u.astype(wide)).astype(p.dtype).astype(wide)


class LookaheadState(NamedTuple):
    fast_state: OptState  # the fast optimizer's state
    steps_since_sync: jax.Array  # int32: fast steps since the last synchronisation
    slow_params: Params  # the slow weights phi (evaluate on these)


def lookahead(
    fast_optimizer: GradientTransformation,
    sync_period: int,
    slow_step_size: float,
    reset_state: bool = False,
) -> GradientTransformation:
    r"""Lookahead: k steps of the fast optimizer, then the slow weights move part way towards
    the fast ones and the fast weights restart from them.

        theta_t = theta_{t-1} + fast(g_t)
        every k-th step:  phi <- phi + alpha (theta_t - phi),   theta_t <- phi

    The params are the fast weights theta; the slow weights phi live in ``state.slow_params``
    (unlike optax's, the params need no special container). On a synchronising step the update
    is ``phi - theta_{t-1}``, so the params land on phi (up to one rounding). With
    ``reset_state`` the fast optimizer's state restarts at each synchronisation.

    Example:
        >>> tx = optjax.lookahead(optjax.sgd(1.0), sync_period=2, slow_step_size=0.5)
        >>> p = jnp.zeros(1)
        >>> u, state = tx.update(jnp.array([-1.0]), tx.init(p), p)   # fast: 0 -> 1
        >>> p = p + u
        >>> tx.update(jnp.array([-1.0]), state, p)[1].slow_params   # fast 2, slow 0 + 0.5 * 2
        Array([1.], dtype=float32)

    Reference: Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step back",
    NeurIPS 2019, Algorithm 1.
    """
    check_positive_int("sync_period", sync_period)
    check_unit_interval("slow_step_size", slow_step_size)
    fast_optimizer = as_flat_ready(fast_optimizer)
    keep = extra_args_filter(fast_optimizer.update)

    def init(params):
        return LookaheadState(fast_optimizer.init(params), jnp.zeros([], jnp.int32), _copy(params))

    def update(updates, state, params=None, **extra_args):
        _need_params("lookahead", params)
        fast, fast_state = fast_optimizer.update(
            updates, state.fast_state, params, **keep(extra_args)
        )
        sync = state.steps_since_sync + 1 >= sync_period

        def leaf(u, p, s):
            wide = tree.compute_dtype(u.dtype, p.dtype, s.dtype)
            s_w = s.astype(wide)
            slow = s_w + slow_step_size * (_stored_iterate(u, p, wide) - s_w)
            slow = jnp.where(sync, slow.astype(s.dtype), s)
            u = jnp.where(sync, (slow.astype(wide) - p.astype(wide)).astype(u.dtype), u)
            return u, slow

        out = tree.map_like(
            leaf, fast, params, state.slow_params, names=("updates", "params", "slow_params")
        )
        new_updates, slow = tree.unzip(fast, out, 2)
        if reset_state:
            fresh = fast_optimizer.init(slow)
            fast_state = jax.tree.map(lambda a, b: jnp.where(sync, a, b), fresh, fast_state)
        steps = jnp.where(sync, 0, state.steps_since_sync + 1).astype(jnp.int32)
        return new_updates, LookaheadState(fast_state, steps, slow)

    return mark_flat_ready(GradientTransformation(init, update))


class AverageParamsState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
    num_averaged: jax.Array  # int32: iterates in the average so far
    average: Params  # the averaged parameters (evaluate on these)
    inner_state: OptState


def average_params(
    inner: GradientTransformation,
    decay: float | None = None,
    *,
    start_step: int = 0,
    every_k: int = 1,
    average_dtype=None,
) -> GradientTransformation:
    r"""Keep an average of the parameter iterates in the state, for evaluation; the updates (and
    so the training) are those of ``inner`` unchanged.

    The iterate after step t = 1, 2, ... is x_t = p_{t-1} + u_t; it enters the average when
    t >= start_step and (t - start_step) is a multiple of every_k:

        uniform (decay=None; Polyak-Ruppert, SWA):  a_n = a_{n-1} + (x_t - a_{n-1}) / n,  a_1 = x_t
        exponential (EMA, decay given):             a_n = decay a_{n-1} + (1 - decay) x_t, a_1 = x_t

    Until the first iterate enters, ``state.average`` follows the params. The average has
    ``average_dtype``, by default the params' dtype widened to float32 for bf16 and fp16 params
    (2 bytes more per parameter): in bf16 an EMA with decay 0.999 would never move (its step is
    below half an ulp), and a uniform average would stop moving after a few hundred iterates.
    The average of a complex parameter is complex (a real ``average_dtype`` means its complex
    counterpart: tree.moment_dtype).

    Example:
        >>> tx = optjax.average_params(optjax.sgd(1.0))
        >>> p = jnp.zeros(1)
        >>> u, state = tx.update(jnp.array([-2.0]), tx.init(p), p)   # x_1 = 2
        >>> tx.update(jnp.array([-2.0]), state, p + u)[1].average   # x_2 = 4: mean 3
        Array([3.], dtype=float32)

    Reference: Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging", 1992;
    Izmailov et al., "Averaging Weights Leads to Wider Optima and Better Generalization", 2018.
    """
    if decay is not None:
        check_decay("decay", decay)
    if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
        raise ValueError(f"start_step must be an integer >= 0, got start_step={start_step!r}")
    check_positive_int("every_k", every_k)
    inner = as_flat_ready(inner)
    keep = extra_args_filter(inner.update)

    def init(params):
        zero = jnp.zeros([], jnp.int32)
        average = jax.tree.map(  # complex for a complex parameter, whatever average_dtype says
            lambda p: jnp.array(
                p, tree.moment_dtype(p, tree.wide_dtype(p, average_dtype)), copy=True
            ),
            params,
        )
        return AverageParamsState(zero, zero, average, inner.init(params))

    def update(updates, state, params=None, **extra_args):
        _need_params("average_params", params)
        updates, inner_state = inner.update(updates, state.inner_state, params, **keep(extra_args))
        count = tree.safe_increment(state.count)
        take = (count >= start_step) & ((count - start_step) % every_k == 0)
        first = state.num_averaged == 0

        def leaf(u, p, a):
            wide = tree.compute_dtype(u.dtype, p.dtype, a.dtype)
            x, a_w = _stored_iterate(u, p, wide), a.astype(wide)
            if decay is None:
                mixed = a_w + (x - a_w) / (state.num_averaged + 1).astype(wide)
            else:
                mixed = decay * a_w + (1 - decay) * x
            return jnp.where(first, x, jnp.where(take, mixed, a_w)).astype(a.dtype)

        average = tree.map_like(
            leaf, updates, params, state.average, names=("updates", "params", "average")
        )
        num_averaged = jnp.where(take, tree.safe_increment(state.num_averaged), state.num_averaged)
        return updates, AverageParamsState(count, num_averaged, average, inner_state)

    return mark_flat_ready(GradientTransformation(init, update))
