"""Mechanic: a learning-rate tuner that wraps any optimizer and learns the scale of its steps.

Its scalars (the n betting states r, m, v, s and the inner products and norms they are built
from) are formed and kept in `tree.scalar_dtype` (float32 at least), so bf16 parameters never
round the betas 1 - 10^-k to 1; the step is formed in float32 at least from x_0 and x_t and
rounded once. Sums over all leaves keep the flat layout's padding out (optjax.flat).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_nonnegative, check_positive, check_positive_int
from optjax.base import GradientTransformation, OptState, Params, StepCount, Updates
from optjax.contrib._parameter_free import (
    _as_optimizer,
    _copy,
    _needs_params,
    _re_dot,
    _scalar,
    _total,
)
from optjax.core import extra_args_filter
from optjax.flat import as_flat_ready, flat_ready

__all__ = ["MechanicState", "mechanize"]


class MechanicState(NamedTuple):
    base_optimizer_state: OptState  # the wrapped optimizer's state
    count: StepCount  # int32 scalar: steps taken so far
    r: jax.Array  # (n,) rewards, one per beta (scalar_dtype)
    m: jax.Array  # (n,) running maxima of |h|
    v: jax.Array  # (n,) discounted sums of h^2
    s: jax.Array  # (n,) scales; the step applied is sum(s) times the base optimizer's
    x0: Params  # the reference point x_0
    delta: Updates  # E_t, the base optimizer's steps summed (float32 for bf16 params)


@flat_ready
def mechanize(
    base_optimizer: Any,
    weight_decay: float = 1e-2,
    eps: float = 1e-8,
    s_init: float = 1e-6,
    num_betas: int = 6,
) -> GradientTransformation:
    r"""Mechanic: learn the scale S_t = sum_i s_{t,i} of another optimizer's steps.

    With u_t the base optimizer's update (given g_t), b_i = 1 - 10^-i for i = 1..num_betas,
    E_1 = 0 and c_t = S_t / (S_t + eps):

        g'_t = g_t + weight_decay S_t ||g_t|| / (||x_t|| + eps) x_t
        h_t = -c_t <g'_t, E_t>
        m_{t,i} = max(b_i m_{t-1,i}, |h_t| + eps)         v_{t,i} = b_i^2 v_{t-1,i} + h_t^2
        r_{t,i} = b_i r_{t-1,i} + clip(h_t, -m_{t-1,i}, m_{t-1,i}) s_{t,i}
        s_{t+1,i} = (s_init / n m_{t,i} + max(r_{t,i}, 0)) / (sqrt(v_{t,i}) + eps)
        E_{t+1} = c_t E_t + u_t                 x_{t+1} = x_0 + S_{t+1} E_{t+1}

    as the authors' code (optax's) steps; the update returned is x_{t+1} - x_t, and x_0 the
    params of the first ``update``. The first step is s_init times the base optimizer's.

    E_t, the base steps summed, is kept in the state (float32 for bf16 params) where optax
    recovers it as (x_t - x_0) / S_t: in float32 that difference is 0 while the steps are below
    half an ulp of x (s_init = 1e-6 times Adam's 1e-3 is), h_t stays 0 and S_t never grows, so
    optax's Mechanic never moves. It costs one more buffer the size of the params.
    ``update`` needs the params; keyword extras (e.g. ``value=``) go to the base optimizer.

    Example:
        >>> tx = optjax.contrib.mechanize(optjax.sgd(0.5))
        >>> p = jnp.array([1.0])
        >>> u, state = tx.update(jnp.array([2.0]), tx.init(p), p)
        >>> (u / 1e-6).round(4)                          # s_init times sgd's step -0.5 * 2
        Array([-1.], dtype=float32)

    Reference: Cutkosky, Defazio & Mehta, "Mechanic: A Learning Rate Tuner", NeurIPS 2023
    (Algorithm 1).
    """
    if not (hasattr(base_optimizer, "init") and hasattr(base_optimizer, "update")):
        raise ValueError(
            "base_optimizer must be a GradientTransformation (with init and update), got "
            f"base_optimizer={base_optimizer!r}"
        )
    check_nonnegative("weight_decay", weight_decay)
    check_positive("eps", eps)  # 0 would divide 0 by 0 at the first step
    check_positive("s_init", s_init)
    check_positive_int("num_betas", num_betas)
    base = as_flat_ready(base_optimizer)
    keep = extra_args_filter(base.update)

    def betas() -> jax.Array:
        return _scalar([1.0 - 0.1**i for i in range(1, num_betas + 1)])

    def init(params):
        zeros = jnp.zeros_like(betas())
        return MechanicState(
            base.init(params),
            jnp.zeros([], jnp.int32),
            zeros,
            zeros,
            zeros,
            jnp.full_like(zeros, s_init),
            _copy(params),
            tree.wide_zeros_like(params),
        )

    def update(updates, state, params=None, **extra_args):
        _needs_params("mechanize", params)
        base_updates, base_state = base.update(
            updates, state.base_optimizer_state, params, **keep(extra_args)
        )
        first = state.count == 0  # x_0: the params of the first update (a select XLA fuses)
        x0 = jax.tree.map(lambda x, x_ref: jnp.where(first, x, x_ref), params, state.x0)
        beta, eps_ = betas(), _scalar(eps)
        scale = jnp.sum(state.s)
        shrink = scale / (scale + eps_)  # Delta_t = -shrink E_t
        grad_norm = jnp.sqrt(_scalar(tree.sum_of_squares(updates)))
        param_norm = jnp.sqrt(_scalar(tree.sum_of_squares(params)))
        decay = _scalar(weight_decay) * scale * grad_norm / (param_norm + eps_)

        def h_terms(g, x, e):
            wide = tree.compute_dtype(g.dtype, x.dtype, e.dtype)
            g, x = g.astype(wide), x.astype(wide)
            return _re_dot(g + decay.astype(wide) * x, e.astype(wide))

        h = -shrink * _total(h_terms, updates, params, state.delta)
        clipped = jnp.clip(h, -state.m, state.m)
        m = jnp.maximum(beta * state.m, jnp.abs(h) + eps_)
        v = beta**2 * state.v + h**2
        r = beta * state.r + clipped * state.s
        wealth = _scalar(s_init / num_betas) * m + jnp.maximum(r, 0)
        s = wealth / (jnp.sqrt(v) + eps_)
        new_scale = jnp.sum(s)

        def step(g, u, x, x_ref, e):
            # E_{t+1} = shrink E_t + u_t;  x_{t+1} - x_t = x_0 + S_{t+1} E_{t+1} - x_t
            wide = tree.compute_dtype(g.dtype, u.dtype, x.dtype, e.dtype)
            e_new = shrink.astype(wide) * e.astype(wide) + u.astype(wide)
            back = x_ref.astype(wide) - x.astype(wide)  # 0 but for rounding and x_0's first step
            return (back + new_scale.astype(wide) * e_new).astype(g.dtype), e_new.astype(e.dtype)

        out = tree.map_like(step, updates, base_updates, params, x0, state.delta)
        new_updates, delta = tree.unzip(updates, out, 2)
        count = tree.safe_increment(state.count)
        return new_updates, MechanicState(base_state, count, r, m, v, s, x0, delta)

    return _as_optimizer("mechanize", GradientTransformation(init, update))
