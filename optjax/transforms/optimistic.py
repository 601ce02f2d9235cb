"""Steps that look ahead or at the loss: optimistic gradients and Polyak's step size."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_choice, check_finite, check_learning_rate, check_nonnegative
from optjax._tree_util import signed_once
from optjax.base import EmptyState, GradientTransformation, ScalarOrSchedule, StepCount, Updates
from optjax.flat import flat_ready

__all__ = [
    "ScaleByOptimisticGradientState",
    "scale_by_optimistic_gradient",
    "scale_by_polyak",
]


class ScaleByOptimisticGradientState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far (0: g_{t-1} does not exist yet)
    previous_gradient: Updates  # g_{t-1}, in the params' dtype


def _at(value: ScalarOrSchedule, count: jax.Array):
    """A coefficient at this step: a schedule is called with the zero-based step count."""
    return value(count) if callable(value) else value


@flat_ready
def scale_by_optimistic_gradient(
    alpha: ScalarOrSchedule = 1.0, beta: ScalarOrSchedule = 1.0
) -> GradientTransformation:
    r"""Generalized optimistic gradient: the gradient plus ``beta`` times its last change.

        u_t = (alpha_t + beta_t) g_t - beta_t g_{t-1}     with g_0 standing in for g_{-1}
            = alpha_t g_t + beta_t (g_t - g_{t-1})

    so the first step is ``alpha g_0``. With alpha = beta = 1 and a learning rate this is
    optimistic gradient descent, ``x_{t+1} = x_t - lr (2 g_t - g_{t-1})``. ``alpha`` and
    ``beta`` are numbers >= 0 or schedules of the zero-based step count.

    Example:
        >>> tx = optjax.scale_by_optimistic_gradient()
        >>> u, state = tx.update(jnp.array([1.0]), tx.init(jnp.zeros(1)))     # alpha g_0
        >>> tx.update(jnp.array([3.0]), state)[0]                             # 2 * 3 - 1
        Array([5.], dtype=float32)

    Reference: Mokhtari, Ozdaglar & Pattathil, "A Unified Analysis of Extra-gradient and
    Optimistic Gradient Methods for Saddle Point Problems: Proximal Point Approach", AISTATS
    2020, eq. 5 (generalized OGDA); Daskalakis et al., "Training GANs with Optimism", ICLR 2018.
    """
    check_learning_rate("alpha", alpha)
    check_learning_rate("beta", beta)

    def init(params):
        return ScaleByOptimisticGradientState(jnp.zeros([], jnp.int32), tree.zeros_like(params))

    def update(updates, state, params=None):
        del params
        a, b = _at(alpha, state.count), _at(beta, state.count)
        first = state.count == 0

        def step(g, previous):
            wide = tree.compute_dtype(g.dtype)
            g_now = g.astype(wide)
            g_before = jnp.where(first, g_now, previous.astype(wide))
            a_, b_ = jnp.asarray(a).astype(wide), jnp.asarray(b).astype(wide)
            return ((a_ + b_) * g_now - b_ * g_before).astype(g.dtype)

        new_updates = tree.map_like(
            step, updates, state.previous_gradient, names=("updates", "previous_gradient")
        )
        previous = tree.cast_like(updates, state.previous_gradient)
        return new_updates, ScaleByOptimisticGradientState(
            tree.safe_increment(state.count), previous
        )

    return GradientTransformation(init, update)


@flat_ready
def scale_by_polyak(
    f_min: float = 0.0,
    max_learning_rate: float = 1.0,
    eps: float = 0.0,
    variant: str = "sps",
) -> GradientTransformation:
    r"""Scale by Polyak's step size, from the loss and the gradient's norm.

        gamma_t = min((f(x_t) - f_min) / (||g_t||^2 + eps), max_learning_rate)
        u_t = gamma_t g_t

    ``update`` takes the loss at the params as ``value=`` (``chain`` passes it on):
    ``tx.update(g, state, params, value=loss)``. With ``variant="sps+"`` the gap f - f_min is
    replaced by max(f - f_min, 0). A zero gradient (with eps = 0) gives a zero step, whatever
    the gap. The step is a descent step only after a negative learning rate (see polyak_sgd).

    Example:
        >>> tx = optjax.scale_by_polyak(max_learning_rate=10.0)
        >>> u, _ = tx.update(jnp.array([1.0, 2.0]), tx.init(None), value=2.5)
        >>> u                                       # gamma = 2.5 / 5
        Array([0.5, 1. ], dtype=float32)

    Reference: Loizou, Vaswani, Laradji & Lacoste-Julien, "Stochastic Polyak Step-size for SGD:
    An Adaptive Learning Rate for Fast Convergence", AISTATS 2021, eq. 5 (SPS_max); Garrigos,
    Gower & Schaipp, "Function Value Learning: Adaptive Learning Rates Based on the Polyak
    Stepsize and Function Splitting in ERM", 2023 (sps+).
    """
    check_finite("f_min", f_min)
    check_nonnegative("max_learning_rate", max_learning_rate)
    check_nonnegative("eps", eps)
    check_choice("variant", variant, {"sps", "sps+"})

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, *, value=None):
        del params
        if value is None:
            raise ValueError(
                "scale_by_polyak needs the loss at the params: call "
                "update(g, state, params, value=loss)"
            )
        squared_norm = tree.sum_of_squares(updates)
        dtype = squared_norm.dtype
        gap = jnp.asarray(value).astype(dtype) - jnp.asarray(f_min, dtype)
        if variant == "sps+":
            gap = jnp.maximum(gap, 0)
        denominator = squared_norm + jnp.asarray(eps, dtype)
        positive = signed_once(denominator) > 0  # denominator > 0, computed once
        step = jnp.minimum(
            gap / jnp.where(positive, denominator, 1), jnp.asarray(max_learning_rate, dtype)
        )
        return tree.scaled(updates, jnp.where(positive, step, 0)), state

    return GradientTransformation(init, update)
