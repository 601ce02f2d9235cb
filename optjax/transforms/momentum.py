"""Momentum: heavy-ball and Nesterov traces, and exponential moving averages."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_decay, check_unit_interval
from optjax.base import GradientTransformation, StepCount, Updates
from optjax.flat import flat_ready

__all__ = [
    "EmaState",
    "TraceState",
    "ema",
    "trace",
]


class TraceState(NamedTuple):
    trace: Updates  # momentum buffer v_t


class EmaState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
    ema: Updates  # moving average m_t


@flat_ready
def trace(
    decay: float = 0.9,
    nesterov: bool = False,
    accumulator_dtype=None,
) -> GradientTransformation:
    r"""Heavy-ball momentum, optionally Nesterov's.

        v_t = g_t + decay v_{t-1}
        u_t = v_t                  (heavy ball)
        u_t = g_t + decay v_t      (nesterov)

    This is the form of Sutskever et al., and of torch.optim.SGD without dampening.

    Example:
        >>> tx = optjax.trace(decay=0.5)
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([1.0]), state)
        >>> tx.update(jnp.array([1.0]), state)[0]   # 1 + 0.5 * 1
        Array([1.5], dtype=float32)

    Reference: Polyak, "Some methods of speeding up the convergence of iteration methods", 1964;
    Sutskever et al., "On the importance of initialization and momentum in deep learning", 2013.
    """
    check_unit_interval("decay", decay)

    def init(params):
        return TraceState(tree.moment_zeros_like(params, accumulator_dtype))

    def update(updates, state, params=None):
        del params

        def step(g, v):
            wide = tree.compute_dtype(v.dtype)
            g_w, v_w = g.astype(wide), v.astype(wide)
            v_new = g_w + decay * v_w
            out = g_w + decay * v_new if nesterov else v_new
            return out.astype(g.dtype), v_new.astype(v.dtype)

        pairs = tree.map_like(step, updates, state.trace, names=("updates", "state.trace"))
        new_updates, new_trace = tree.unzip(updates, pairs, 2)
        return new_updates, TraceState(new_trace)

    return GradientTransformation(init, update)


@flat_ready
def ema(decay: float, debias: bool = True, accumulator_dtype=None) -> GradientTransformation:
    r"""Exponential moving average of the updates.

        m_t = decay m_{t-1} + (1 - decay) g_t
        u_t = m_t / (1 - decay^t)   (debias)   or   u_t = m_t

    Example:
        >>> tx = optjax.ema(0.9)
        >>> tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))[0]   # debiased: exactly g_1
        Array([3.], dtype=float32)
    """
    check_decay("decay", decay)

    def init(params):
        return EmaState(jnp.zeros([], jnp.int32), tree.moment_zeros_like(params, accumulator_dtype))

    def update(updates, state, params=None):
        del params
        count = tree.safe_increment(state.count)
        m = tree.ema(updates, state.ema, decay)
        out = tree.debias(m, decay, count) if debias else m
        return tree.cast_like(out, updates), EmaState(count, m)

    return GradientTransformation(init, update)
