"""Schedule-Free learning: a wrapper that replaces an optimizer's momentum (and its learning-rate
decay) by interpolation and averaging, and its SGD and AdamW forms.

The params the optimizer steps are the gradient points y; the evaluation point x is not stored
but recomputed from y and the base iterate z (``schedule_free_eval_params``), so the memory is
that of the base optimizer plus z. The averaging weights and b1 are kept in float32 at least
(float64 for float64 params), and z in float32 for bf16 and fp16 params: in bf16 a running sum
of equal weights stops growing at 256 of them (so the average would become an EMA), and b1 = 0.9
would round to 0.8984.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import (
    check_decay,
    check_integer,
    check_learning_rate,
    check_nonnegative,
    check_value,
)
from optjax.base import GradientTransformation, OptState, Params, ScalarOrSchedule, StepCount
from optjax.contrib._parameter_free import _as_optimizer
from optjax.core import _numbers_as_arrays, chain, extra_args_filter
from optjax.flat import as_flat_ready, flat_ready
from optjax.optimizers.classic import sgd
from optjax.schedules import warmup_constant_schedule
from optjax.transforms.adaptive import scale_by_rms
from optjax.transforms.regularization import add_decayed_weights
from optjax.transforms.scaling import scale_by_learning_rate

__all__ = [
    "ScheduleFreeState",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
]


class ScheduleFreeState(NamedTuple):
    b1: jax.Array  # the interpolation weight b1 (float32 at least), for schedule_free_eval_params
    weight_sum: jax.Array  # sum_{i<=t} w_i of the averaging weights w_i = max_lr_i^power
    step_count: StepCount  # int32 scalar: 1 + steps taken so far (as optax counts)
    max_lr: jax.Array  # the largest learning rate seen so far
    base_optimizer_state: OptState
    z: Params  # the base optimizer's iterate z_t


def _scalar_dtype(params) -> jnp.dtype:
    """The real dtype the weights and b1 are kept in: the params' widest, float32 at least."""
    wide = tree.compute_dtype(*(jnp.result_type(p) for p in jax.tree.leaves(params)))
    return jnp.dtype(jnp.finfo(wide).dtype)


def _as(value, dtype):
    """A hyperparameter in ``dtype``: a Python number stays one (so that 1 - b1 is formed in
    double precision, as in the float64 run), an array is cast."""
    return value if isinstance(value, (int, float)) else jnp.asarray(value).astype(dtype)


def _check_b1(b1) -> None:
    check_value("b1", b1, lambda x: 0 < x <= 1, "in (0, 1]")


@flat_ready
def schedule_free(
    base_optimizer: GradientTransformation,
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    weight_lr_power: float = 2.0,
    state_dtype=None,
) -> GradientTransformation:
    r"""Make ``base_optimizer`` schedule-free: its steps move z, the params are an interpolation
    between z and the running weighted average x of the z's.

        y_t = params,   x_t = (y_t - (1 - b1) z_t) / b1
        z_{t+1} = z_t + base(g_t)                         (g_t is the gradient at y_t)
        w_t = max_{i<=t} lr_i ^ weight_lr_power,          c_t = w_t / sum_{i<=t} w_i
        x_{t+1} = (1 - c_t) x_t + c_t z_{t+1}
        y_{t+1} = b1 x_{t+1} + (1 - b1) z_{t+1},          u_t = y_{t+1} - y_t

    lr_t is ``learning_rate`` at the step being taken (a schedule is evaluated at the count the
    base optimizer's own schedule sees, 0 on the first step), so that each z is weighted by the
    square of the rate it was reached with, as in the paper; c_t = 0 while every rate so far is
    0. The base optimizer should have no momentum (b1 = 0 for Adam). Evaluate the model at x:
    ``schedule_free_eval_params(state, params)``.

    z has ``state_dtype``, by default the params' dtype widened to float32 for bf16 and fp16;
    the weights and b1 are float32 at least (see the module doc).

    Example:
        >>> tx = optjax.contrib.schedule_free(optjax.sgd(0.5), 0.5, b1=0.5)
        >>> p = jnp.array([2.0])
        >>> u, state = tx.update(jnp.array([1.0]), tx.init(p), p)   # z: 2 - 0.5; x = z
        >>> p + u, optjax.contrib.schedule_free_eval_params(state, p + u)
        (Array([1.5], dtype=float32), Array([1.5], dtype=float32))

    Reference: Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less Scheduled",
    2024, Algorithm 1.
    """
    check_learning_rate("learning_rate", learning_rate)
    _check_b1(b1)
    check_nonnegative("weight_lr_power", weight_lr_power)
    base_optimizer = as_flat_ready(base_optimizer)
    keep = extra_args_filter(base_optimizer.update)

    def init(params):
        params = _numbers_as_arrays(params)
        dtype = _scalar_dtype(params)
        z = jax.tree.map(  # a copy, so that params and state can both be donated
            lambda p: jnp.array(
                p, tree.moment_dtype(p, tree.wide_dtype(p, state_dtype)), copy=True
            ),
            params,
        )
        return ScheduleFreeState(
            b1=jnp.asarray(b1, dtype),
            weight_sum=jnp.zeros([], dtype),
            step_count=jnp.ones([], jnp.int32),
            max_lr=jnp.zeros([], dtype),
            base_optimizer_state=base_optimizer.init(params),
            z=z,
        )

    def update(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("schedule_free needs params: call update(g, state, params)")
        updates, params = _numbers_as_arrays(updates), _numbers_as_arrays(params)
        dtype = state.max_lr.dtype
        lr = learning_rate(state.step_count - 1) if callable(learning_rate) else learning_rate
        max_lr = jnp.maximum(state.max_lr, jnp.asarray(lr).astype(dtype))
        weight = max_lr ** jnp.asarray(weight_lr_power).astype(dtype)
        weight_sum = state.weight_sum + weight
        positive = weight_sum != 0  # 0 / 0 while every rate so far is 0: no averaging yet
        c = jnp.where(positive, weight / jnp.where(positive, weight_sum, 1), 0)

        base_updates, base_state = base_optimizer.update(
            updates, state.base_optimizer_state, params, **keep(extra_args)
        )

        def moved(u, z):  # z_{t+1} = z_t + u_t, in z's dtype
            wide = tree.compute_dtype(u.dtype, z.dtype)
            return (z.astype(wide) + u.astype(wide)).astype(z.dtype)

        def leaf(y, z, z_new):
            wide = tree.compute_dtype(y.dtype, z.dtype)  # float32 for bf16 params
            b, c_w = _as(b1, wide), c.astype(wide)
            z_w, z_new_w = z.astype(wide), z_new.astype(wide)
            x = (y.astype(wide) - (1 - b) * z_w) / b
            # y_{t+1} - y_t = b (x_{t+1} - x_t) + (1 - b) (z_{t+1} - z_t), formed directly:
            # subtracting y_t from y_{t+1} would cancel all but the step's last few digits.
            # z_{t+1} - z_t is the step z took as stored: exact where z_{t+1} is within a
            # factor 2 of z_t (Sterbenz's lemma), and no cancellation where it is not.
            step = b * c_w * (z_new_w - x) + (1 - b) * (z_new_w - z_w)
            return step.astype(y.dtype)

        z = tree.map_like(moved, base_updates, state.z, names=("updates", "z"))
        new_updates = tree.map_like(leaf, params, state.z, z, names=("params", "z", "z"))
        new_state = ScheduleFreeState(
            state.b1, weight_sum, tree.safe_increment(state.step_count), max_lr, base_state, z
        )
        return new_updates, new_state

    # A state made by another optimizer or for other params is refused naming the leaf.
    return _as_optimizer("schedule_free", GradientTransformation(init, update))


def _find_state(state) -> ScheduleFreeState:
    if isinstance(state, ScheduleFreeState):
        return state
    found = tree.get_by_type(state, ScheduleFreeState)
    if len(found) != 1:
        raise ValueError(
            "schedule_free_eval_params needs the state of a schedule_free optimizer (a "
            f"ScheduleFreeState, alone or inside a chain or wrapper); got a "
            f"{type(state).__name__} holding {len(found)} of them"
        )
    return found[0]


def schedule_free_eval_params(state: OptState, params: Params) -> Params:
    """The evaluation point x of a schedule-free optimizer, ``x = (y - (1 - b1) z) / b1``, from
    its state and the params y; each leaf in its param's dtype.

    ``state`` is a ScheduleFreeState or a state holding exactly one (a chain's, a wrapper's);
    any other state raises ValueError (optax's raises AttributeError).

    Example:
        >>> tx = optjax.contrib.schedule_free_sgd(1.0, b1=0.5)
        >>> state = tx.init(jnp.array([1.0]))
        >>> optjax.contrib.schedule_free_eval_params(state, jnp.array([3.0]))  # (3 - 0.5) / 0.5
        Array([5.], dtype=float32)
    """
    sf = _find_state(state)
    params = _numbers_as_arrays(params)

    def leaf(y, z):
        wide = tree.compute_dtype(y.dtype, z.dtype)
        b = jnp.asarray(sf.b1).astype(wide)
        return ((y.astype(wide) - (1 - b) * z.astype(wide)) / b).astype(y.dtype)

    return tree.map_like(leaf, params, sf.z, names=("params", "z"))


def _warmup(learning_rate, warmup_steps):
    if warmup_steps is None:
        return learning_rate
    check_integer("warmup_steps", warmup_steps, low=1)
    return warmup_constant_schedule(0.0, learning_rate, warmup_steps)


def schedule_free_sgd(
    learning_rate: float = 1.0,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    weight_decay: float | None = None,
    weight_lr_power: float = 2.0,
    state_dtype=None,
) -> GradientTransformation:
    """Schedule-Free SGD: schedule_free around sgd (after add_decayed_weights, coupled, when
    ``weight_decay`` is given); the update rule is on schedule_free.

    With ``warmup_steps`` the rate rises linearly from 0 (at the first step) to
    ``learning_rate``, as optax's warmup_constant_schedule does.

    Example:
        >>> tx = optjax.contrib.schedule_free_sgd(0.1)
        >>> p = jnp.array([1.0])
        >>> tx.update(jnp.array([2.0]), tx.init(p), p)[0]   # the first step is z's: -0.1 * 2
        Array([-0.2], dtype=float32)
    """
    check_learning_rate("learning_rate", learning_rate)
    learning_rate = _warmup(learning_rate, warmup_steps)
    base = sgd(learning_rate)
    if weight_decay is not None:
        base = chain(add_decayed_weights(weight_decay), base)
    return schedule_free(base, learning_rate, b1, weight_lr_power, state_dtype)


def schedule_free_adamw(
    learning_rate: float = 0.0025,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_lr_power: float = 2.0,
    state_dtype=None,
) -> GradientTransformation:
    """Schedule-Free AdamW: schedule_free around Adam without momentum (scale_by_rms with the
    bias correction and eps outside the root), decoupled weight decay (at y), then the
    learning rate; the update rule is on schedule_free.

    Example:
        >>> tx = optjax.contrib.schedule_free_adamw(0.1)
        >>> p = jnp.array([1.0])
        >>> tx.update(jnp.array([2.0]), tx.init(p), p)[0].round(4)   # Adam's first step: -lr
        Array([-0.1], dtype=float32)
    """
    check_learning_rate("learning_rate", learning_rate)
    check_decay("b2", b2)  # named here: scale_by_rms would call it decay
    learning_rate = _warmup(learning_rate, warmup_steps)
    base = chain(
        scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction=True),
        add_decayed_weights(weight_decay),
        scale_by_learning_rate(learning_rate),
    )
    return schedule_free(base, learning_rate, b1, weight_lr_power, state_dtype)
