"""Layer-wise adaptive optimizers: LAMB, LARS and Fromage, each step scaled per leaf by a trust
ratio (see optjax.transforms.layerwise for the update rules)."""

from __future__ import annotations

import math

import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_learning_rate, check_nonnegative, check_unit_interval, is_zero
from optjax.base import GradientTransformation, ScalarOrSchedule
from optjax.core import chain, identity
from optjax.flat import flat_ready
from optjax.transforms.adaptive import scale_by_adam
from optjax.transforms.layerwise import (
    Mask,
    check_weight_decay,
    scale_by_lars,
    scale_by_trust_ratio,
)
from optjax.transforms.momentum import trace
from optjax.transforms.regularization import add_decayed_weights
from optjax.transforms.scaling import (
    next_count_state,
    scale_by_learning_rate,
    schedule_count_state,
)

__all__ = [
    "fromage",
    "lamb",
    "lars",
]


@flat_ready
def lamb(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
) -> GradientTransformation:
    """LAMB (You et al. 2020): scale_by_adam, weight decay (on the leaves ``mask`` selects), then
    scale_by_trust_ratio and the learning rate. ``weight_decay`` may be a schedule.

    Example:
        >>> tx = optjax.lamb(0.1)
        >>> p = jnp.array([3.0, 4.0])                       # ||p|| = 5; Adam's first step: sign(g)
        >>> tx.update(jnp.array([1.0, 1.0]), tx.init(p), p)[0].round(4)   # -0.1 * 5 / sqrt(2)
        Array([-0.3536, -0.3536], dtype=float32)
    """
    check_weight_decay(weight_decay)
    return chain(
        scale_by_adam(b1, b2, eps, eps_root),
        identity() if is_zero(weight_decay) else add_decayed_weights(weight_decay, mask),
        scale_by_trust_ratio(),
        scale_by_learning_rate(learning_rate),
    )


def lars(
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: Mask = True,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    trust_ratio_mask: Mask = True,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> GradientTransformation:
    """LARS (You, Gitman & Ginsburg 2017): scale_by_lars (weight decay and the paper's trust
    ratio, each on the leaves its mask selects), the learning rate, then a momentum trace.

    With weight decay the trust ratio is the paper's, ``||p|| / (||g|| + wd ||p||)``, where
    optax.lars uses ``||p|| / ||g + wd p||`` (see scale_by_lars); without, the two agree.

    Example:
        >>> tx = optjax.lars(1.0, trust_coefficient=0.01)
        >>> p = jnp.array([3.0, 4.0])                             # ||p|| = 5
        >>> tx.update(jnp.array([0.0, 2.0]), tx.init(p), p)[0]    # ||g|| = 2: r = 0.01 * 5 / 2
        Array([ 0.  , -0.05], dtype=float32)
    """
    check_unit_interval("momentum", momentum)
    return chain(
        scale_by_lars(weight_decay, weight_decay_mask, trust_coefficient, eps, trust_ratio_mask),
        scale_by_learning_rate(learning_rate),
        trace(decay=momentum, nesterov=nesterov),
    )


def _fromage_factors(learning_rate):
    """``(c lr, c - 1)`` with ``c = 1 / sqrt(1 + lr^2)``; c - 1 is written
    ``-lr^2 c / (1 + sqrt(1 + lr^2))``, without the cancellation of 1 - c for a small lr. In
    double precision on the host for a Python number, in float32 at least for an array."""
    if isinstance(learning_rate, (int, float)):
        root = math.sqrt(1 + learning_rate**2)
        return learning_rate / root, -(learning_rate**2) / (root * (1 + root))
    lr = jnp.asarray(learning_rate)
    lr = lr.astype(tree.compute_dtype(lr.dtype))
    root = jnp.sqrt(1 + lr * lr)
    return lr / root, -(lr * lr) / (root * (1 + root))


@flat_ready
def _fromage_step(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    """``u_t = -c lr d_t + (c - 1) p_t``, ``c = 1 / sqrt(1 + lr^2)``: so that
    ``p_t + u_t = (p_t - lr d_t) / sqrt(1 + lr^2)``, Fromage's step from the direction d_t."""
    scheduled = callable(learning_rate)

    def init(params):
        del params
        return schedule_count_state(scheduled)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("fromage needs params: call update(g, state, params)")
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        step, shrink = _fromage_factors(lr)

        def move(d, p):
            wide = tree.compute_dtype(d.dtype, p.dtype)
            a, b = (jnp.asarray(x).astype(wide) for x in (step, shrink))
            return (b * p.astype(wide) - a * d.astype(wide)).astype(d.dtype)

        moved = tree.map_like(move, updates, params, names=("updates", "params"))
        return moved, next_count_state(state)

    return GradientTransformation(init, update)


def fromage(learning_rate: ScalarOrSchedule, min_norm: float = 1e-6) -> GradientTransformation:
    r"""Fromage (Bernstein et al. 2020): scale_by_trust_ratio(min_norm), then the step

        r_t = max(||p_t||, min_norm) / max(||g_t||, min_norm)
        p_{t+1} = (p_t - lr r_t g_t) / sqrt(1 + lr^2)

    per leaf: a step of relative size lr, then a shrink that keeps the norms from growing.

    Example:
        >>> tx = optjax.fromage(0.75)                    # 1 / sqrt(1 + 0.75^2) = 0.8
        >>> p = jnp.array([3.0, 4.0])
        >>> u, _ = tx.update(jnp.array([0.0, 1.0]), tx.init(p), p)   # r = 5
        >>> (p + u).round(1)                             # 0.8 (p - 0.75 * 5 g)
        Array([2.4, 0.2], dtype=float32)

    Reference: Bernstein, Vahdat, Yue & Liu, "On the distance between two neural networks and the
    stability of learning", NeurIPS 2020, Algorithm 1.
    """
    check_learning_rate("learning_rate", learning_rate)
    check_nonnegative("min_norm", min_norm)
    return chain(scale_by_trust_ratio(min_norm), _fromage_step(learning_rate))
