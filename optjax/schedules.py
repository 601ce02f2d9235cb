"""Schedules: functions ``step -> value`` for learning rates and other hyperparameters.

A schedule takes the step count ``t`` (an int32 array, usually a scalar; it may be traced under
``jit`` or batched under ``vmap``, and an array of steps is mapped elementwise) and returns a
float32 array of the same shape (float64 when JAX runs with ``jax_enable_x64``: see
optjax.tree.scalar_dtype). The arithmetic runs in that dtype whatever the dtypes of the
hyperparameters, and steps before 0 read as step 0.

Hyperparameters are checked when the schedule is built: a bad value raises ValueError naming the
argument, its value and the range allowed. Traced values (a schedule built under ``jit`` or
``vmap``) cannot be inspected then and are accepted unchecked. Durations (``transition_steps``,
``decay_steps``, ...) may be any finite number >= 0; boundaries between schedules are integers.

Names, argument names and defaults are optax's, so ``optax.x(...)`` becomes ``optjax.x(...)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from optjax._checks import check_choice, check_finite, check_value, concrete
from optjax.base import Schedule
from optjax.tree import scalar_dtype, step_as_float

# optax.schedules also holds the wrappers that turn hyperparameters into schedules.
from optjax.wrappers.hyperparams import InjectHyperparamsState as InjectHyperparamsState
from optjax.wrappers.hyperparams import inject_hyperparams as inject_hyperparams
from optjax.wrappers.stateful_hyperparams import (
    InjectStatefulHyperparamsState as InjectStatefulHyperparamsState,
)
from optjax.wrappers.stateful_hyperparams import StatefulSchedule as StatefulSchedule
from optjax.wrappers.stateful_hyperparams import WrappedSchedule as WrappedSchedule
from optjax.wrappers.stateful_hyperparams import (
    inject_stateful_hyperparams as inject_stateful_hyperparams,
)

__all__ = [
    "InjectHyperparamsState",
    "InjectStatefulHyperparamsState",
    "StatefulSchedule",
    "WrappedSchedule",
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_decay_with_warm_restarts",
    "cosine_onecycle_schedule",
    "exponential_decay",
    "inject_hyperparams",
    "inject_stateful_hyperparams",
    "join_schedules",
    "linear_onecycle_schedule",
    "linear_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "sgdr_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
]

_F32_EPS = float(np.finfo(np.float32).eps)


# --- helpers -------------------------------------------------------------------------------------


def _scalar(x) -> jax.Array:
    """``x`` as a schedule's number: float32 (float64 under ``jax_enable_x64``)."""
    return jnp.asarray(x, scalar_dtype())


def _step(count) -> jax.Array:
    """The step count as a schedule's number (float32 is exact below 2**24), steps before 0
    read as 0."""
    return jnp.maximum(step_as_float(count), 0.0)


def _div(a, b):
    """``a / b``: in float64 where both are known now (as Python would), else as `_scalar`."""
    ka, kb = concrete(a), concrete(b)
    return ka / kb if ka is not None and kb is not None else _scalar(a) / _scalar(b)


def _mul(a, b):
    """``a * b``: in float64 where both are known now (as Python would), else as `_scalar`."""
    ka, kb = concrete(a), concrete(b)
    return ka * kb if ka is not None and kb is not None else _scalar(a) * _scalar(b)


def _check_finite_nonnegative(name: str, value) -> None:  # durations, step counts, scales
    check_value(name, value, lambda x: np.isfinite(x) & (x >= 0), "a finite number >= 0")


def _check_finite_positive(name: str, value) -> None:  # durations, exponents, rates
    check_value(name, value, lambda x: np.isfinite(x) & (x > 0), "a finite number > 0")


def _check_open_unit(name: str, value) -> None:
    check_value(name, value, lambda x: (x > 0) & (x < 1), "in (0, 1)")


def _check_boundaries(name: str, boundaries: Sequence) -> None:
    """Boundaries are integers >= 0, strictly increasing; traced ones are accepted unchecked."""
    previous = None
    for i, b in enumerate(boundaries):
        if isinstance(b, jax.core.Tracer):
            continue
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 0:
            raise ValueError(f"{name} must hold integers >= 0, got {name}[{i}]={b!r}")
        if previous is not None and b <= previous:
            raise ValueError(f"{name} must be strictly increasing, got {name}={list(boundaries)!r}")
        previous = b


def _steps_and_scales(boundaries_and_scales) -> tuple[list, list]:
    """The ``{step: scale}`` entries sorted by step, checked: integer steps >= 0, scales >= 0."""
    items = sorted((boundaries_and_scales or {}).items())
    _check_boundaries("boundaries_and_scales keys", [b for b, _ in items])
    for b, scale in items:
        name = f"boundaries_and_scales[{b}]"
        _check_finite_nonnegative(name, scale)
    return [b for b, _ in items], [scale for _, scale in items]


def _warmup_then(init_value, peak_value, warmup_steps, decay: Schedule) -> Schedule:
    """Linear warmup from ``init_value`` to ``peak_value`` over ``warmup_steps`` steps, then
    ``decay`` counted from the end of the warmup."""
    warmup = linear_schedule(init_value, peak_value, warmup_steps)
    return lambda count: jnp.where(
        _step(count) < _scalar(warmup_steps),
        warmup(count),
        decay(_step(count) - _scalar(warmup_steps)),
    )


def _half_cosine(remaining, total) -> jax.Array:
    """``(1 + cos(pi (total - remaining) / total)) / 2``, written as ``sin(pi r / (2 T))**2`` so
    that it keeps full relative precision as it approaches 0 at the end of the decay."""
    return jnp.sin(jnp.pi * remaining / (2.0 * total)) ** 2


def _blend(a, b, w, w_b=None) -> jax.Array:
    """``w a + (1 - w) b``, exact at both ends (``w_b``, when given, is ``1 - w`` computed
    without cancellation)."""
    return _scalar(a) * w + _scalar(b) * (1.0 - w if w_b is None else w_b)


def _progress(t, begin, steps) -> tuple[jax.Array, jax.Array]:
    """``(f, 1 - f)`` for ``f = clip((t - begin) / steps, 0, 1)``, the fraction of a transition
    done at step t (``f = 0`` throughout when ``steps == 0``). Both come from differences of
    counts, so they are exact at the ends and keep their relative precision."""
    steps = _scalar(steps)
    done = jnp.clip(t - _scalar(begin), 0.0, steps)
    span = jnp.where(steps > 0, steps, 1.0)
    return done / span, (steps - done) / span + jnp.where(steps > 0, 0.0, 1.0)


# --- simple schedules ----------------------------------------------------------------------------


def constant_schedule(value: float | jax.Array) -> Schedule:
    """A schedule that is ``value`` at every step.

    Example:
        >>> optjax.constant_schedule(0.5)(100)
        Array(0.5, dtype=float32)
    """
    check_finite("value", value)
    return lambda count: jnp.full(jnp.shape(count), value, scalar_dtype())


def polynomial_schedule(
    init_value: float | jax.Array,
    end_value: float | jax.Array,
    power: float | jax.Array,
    transition_steps: float,
    transition_begin: float = 0,
) -> Schedule:
    r"""Polynomial transition from ``init_value`` (I) to ``end_value`` (E) over
    ``transition_steps`` (T) steps, starting at step ``transition_begin`` (B):

        v(t) = E + (I - E) (1 - s / T)^power,    s = clip(t - B, 0, T)

    so v = I up to step B and v = E from step B + T on. With T == 0 there is no transition and
    the schedule stays at I.

    Example:
        >>> sched = optjax.polynomial_schedule(1.0, 0.0, power=2, transition_steps=10)
        >>> sched(5)   # (1 - 5/10)^2
        Array(0.25, dtype=float32)
    """
    check_finite("init_value", init_value)
    check_finite("end_value", end_value)
    _check_finite_positive("power", power)
    _check_finite_nonnegative("transition_steps", transition_steps)
    _check_finite_nonnegative("transition_begin", transition_begin)

    def schedule(count):
        _, remaining = _progress(_step(count), transition_begin, transition_steps)
        return _blend(init_value, end_value, remaining ** _scalar(power))

    return schedule


def linear_schedule(
    init_value: float | jax.Array,
    end_value: float | jax.Array,
    transition_steps: float,
    transition_begin: float = 0,
) -> Schedule:
    r"""Linear transition from ``init_value`` (I) to ``end_value`` (E) over ``transition_steps``
    (T) steps, starting at step ``transition_begin`` (B): polynomial_schedule with power 1,

        v(t) = E + (I - E) (1 - s / T),    s = clip(t - B, 0, T)

    I up to step B, E from step B + T on; with T == 0 the schedule stays at I.

    Example:
        >>> sched = optjax.linear_schedule(1.0, 0.0, transition_steps=4, transition_begin=2)
        >>> sched(jnp.arange(8))
        Array([1.  , 1.  , 1.  , 0.75, 0.5 , 0.25, 0.  , 0.  ], dtype=float32)
    """
    check_finite("init_value", init_value)
    check_finite("end_value", end_value)
    _check_finite_nonnegative("transition_steps", transition_steps)
    _check_finite_nonnegative("transition_begin", transition_begin)

    def schedule(count):
        done, remaining = _progress(_step(count), transition_begin, transition_steps)
        return _blend(init_value, end_value, remaining, done)

    return schedule


def warmup_constant_schedule(
    init_value: float | jax.Array, peak_value: float | jax.Array, warmup_steps: float
) -> Schedule:
    """Linear warmup from ``init_value`` to ``peak_value`` over ``warmup_steps`` steps, then
    constant: linear_schedule(init_value, peak_value, warmup_steps).

    Example:
        >>> optjax.warmup_constant_schedule(0.0, 1.0, warmup_steps=4)(1)
        Array(0.25, dtype=float32)
    """
    check_finite("init_value", init_value)
    check_finite("peak_value", peak_value)
    _check_finite_nonnegative("warmup_steps", warmup_steps)
    return linear_schedule(init_value, peak_value, warmup_steps)


def exponential_decay(
    init_value: float | jax.Array,
    transition_steps: float,
    decay_rate: float | jax.Array,
    transition_begin: float = 0,
    staircase: bool = False,
    end_value: float | jax.Array | None = None,
) -> Schedule:
    r"""Exponential decay (or growth) of ``init_value`` (I) by ``decay_rate`` (r) every
    ``transition_steps`` (T) steps, starting at step ``transition_begin`` (B):

        v(t) = I r^p,    p = max(t - B, 0) / T     (p = floor(max(t - B, 0) / T) with staircase)

    With T == 0 or r == 1 the schedule stays at I. ``end_value`` stops the schedule where it gets
    there: it is a floor while the values decrease (I > 0 and r < 1, or I < 0 and r > 1) and a cap
    while they increase; it must lie on the side the values move toward.

    Example:
        >>> sched = optjax.exponential_decay(1.0, transition_steps=10, decay_rate=0.5)
        >>> sched(20)   # two halvings
        Array(0.25, dtype=float32)
        >>> optjax.exponential_decay(1.0, 10, 0.5, end_value=0.3)(20)   # floored at 0.3
        Array(0.3, dtype=float32)
    """
    check_finite("init_value", init_value)
    _check_finite_nonnegative("transition_steps", transition_steps)
    _check_finite_positive("decay_rate", decay_rate)
    _check_finite_nonnegative("transition_begin", transition_begin)
    if end_value is not None:
        check_finite("end_value", end_value)
        init, rate, end = (concrete(x) for x in (init_value, decay_rate, end_value))
        if init is not None and rate is not None and end is not None:
            direction = np.sign(init) * np.sign(rate - 1.0)
            if np.any((direction < 0) & (end > init)) or np.any((direction > 0) & (end < init)):
                side = "<=" if np.all(direction <= 0) else ">="
                raise ValueError(
                    f"end_value must be {side} init_value={init_value!r} when decay_rate="
                    f"{decay_rate!r} (the side the values move toward), got end_value={end_value!r}"
                )
    # r^p: with pow where r is a float32 number (exact for r = 0.5, ...); otherwise as
    # exp(p log r) with log r taken in float64 now, which stays accurate in float32 for large p.
    rate_known = concrete(decay_rate)
    log_rate = np.log(rate_known) if rate_known is not None else None
    use_pow = rate_known is not None and bool(np.all(np.float32(rate_known) == rate_known))

    def schedule(count):
        t = _step(count)
        steps = _scalar(transition_steps)
        elapsed = jnp.maximum(t - _scalar(transition_begin), 0.0)
        p = jnp.where(steps > 0, elapsed / jnp.where(steps > 0, steps, 1.0), 0.0)
        if staircase:
            p = jnp.floor(p)
        log_r = _scalar(log_rate) if log_rate is not None else jnp.log(_scalar(decay_rate))
        init = _scalar(init_value)
        value = init * (jnp.power(_scalar(decay_rate), p) if use_pow else jnp.exp(p * log_r))
        if end_value is None:
            return value
        end = _scalar(end_value)
        direction = jnp.sign(init) * jnp.sign(log_r)  # -1 decreasing, +1 increasing, 0 constant
        clipped = jnp.where(direction < 0, jnp.maximum(value, end), jnp.minimum(value, end))
        return jnp.where(direction == 0, value, clipped)

    return schedule


def piecewise_constant_schedule(
    init_value: float | jax.Array, boundaries_and_scales: Mapping[int, float] | None = None
) -> Schedule:
    r"""Step decay: ``init_value`` multiplied by ``scale_b`` from each step ``b`` on, for the
    ``{b: scale_b}`` in ``boundaries_and_scales``:

        v(t) = init_value * prod_{b <= t} scale_b

    Example:
        >>> sched = optjax.piecewise_constant_schedule(1.0, {10: 0.5, 20: 0.5})
        >>> sched(jnp.array([9, 10, 19, 20, 100]))
        Array([1.  , 0.5 , 0.5 , 0.25, 0.25], dtype=float32)
    """
    check_finite("init_value", init_value)
    steps, scales = _steps_and_scales(boundaries_and_scales)
    bounds = np.array(steps, np.float64)

    def schedule(count):
        t = _step(count)
        passed = t[..., None] >= _scalar(bounds)
        factor = jnp.prod(jnp.where(passed, _scalar(scales), 1.0), axis=-1)
        return _scalar(init_value) * factor

    return schedule


# --- cosine schedules ----------------------------------------------------------------------------


def _cosine_to(init_value, end_value, decay_steps, exponent) -> Schedule:
    """``c^exponent I + (1 - c^exponent) E`` with ``c = (1 + cos(pi min(t, D) / D)) / 2``."""

    def schedule(count):
        steps = _scalar(decay_steps)
        remaining = steps - jnp.minimum(_step(count), steps)
        return _blend(init_value, end_value, _half_cosine(remaining, steps) ** _scalar(exponent))

    return schedule


def cosine_decay_schedule(
    init_value: float | jax.Array,
    decay_steps: float,
    alpha: float | jax.Array = 0.0,
    exponent: float | jax.Array = 1.0,
) -> Schedule:
    r"""Cosine decay of ``init_value`` (I) over ``decay_steps`` (D) steps down to ``alpha * I``:

        v(t) = I ((1 - alpha) c^exponent + alpha),    c = (1 + cos(pi min(t, D) / D)) / 2

    so v(0) = I, v(D / 2) = I (1 + alpha) / 2 (with exponent 1) and v = alpha I from step D on.

    Example:
        >>> sched = optjax.cosine_decay_schedule(1.0, decay_steps=10, alpha=0.2)
        >>> sched(5)   # halfway: 0.8 * 0.5 + 0.2
        Array(0.6, dtype=float32)

    Reference: Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", 2017.
    """
    check_finite("init_value", init_value)
    _check_finite_positive("decay_steps", decay_steps)
    check_value("alpha", alpha, lambda x: (x >= 0) & (x <= 1), "in [0, 1]")
    _check_finite_positive("exponent", exponent)
    cosine = _cosine_to(1.0, alpha, decay_steps, exponent)
    return lambda count: _scalar(init_value) * cosine(count)


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Run ``schedules[0]`` until step ``boundaries[0]``, then ``schedules[1]`` until
    ``boundaries[1]``, and so on; each later schedule sees the steps counted from its boundary:

        v(t) = schedules[k](t - boundaries[k-1])    for boundaries[k-1] <= t < boundaries[k]

    Example:
        >>> sched = optjax.join_schedules(
        ...     [optjax.constant_schedule(1.0), optjax.linear_schedule(0.5, 0.0, 10)], [5])
        >>> sched(jnp.array([4, 5, 10]))   # the linear part starts its count at step 5
        Array([1.  , 0.5 , 0.25], dtype=float32)
    """
    schedules, boundaries = list(schedules), list(boundaries)
    if not schedules:
        raise ValueError("schedules must hold at least one schedule, got schedules=[]")
    for i, s in enumerate(schedules):
        if not callable(s):
            raise ValueError(f"schedules[{i}] must be callable, got schedules[{i}]={s!r}")
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"boundaries must hold len(schedules) - 1 = {len(schedules) - 1} entries, got "
            f"{len(boundaries)}: boundaries={boundaries!r}"
        )
    _check_boundaries("boundaries", boundaries)
    boundaries = [b if isinstance(b, jax.core.Tracer) else int(b) for b in boundaries]

    def schedule(count):
        count = jnp.asarray(count)
        value = _scalar(schedules[0](count))
        for boundary, later in zip(boundaries, schedules[1:]):
            value = jnp.where(count < boundary, value, _scalar(later(count - boundary)))
        return value

    return schedule


def warmup_cosine_decay_schedule(
    init_value: float | jax.Array,
    peak_value: float | jax.Array,
    warmup_steps: float,
    decay_steps: float,
    end_value: float | jax.Array = 0.0,
    exponent: float | jax.Array = 1.0,
) -> Schedule:
    r"""Linear warmup from ``init_value`` (I) to ``peak_value`` (P) over ``warmup_steps`` (W)
    steps, then cosine decay to ``end_value`` (E); ``decay_steps`` (D) counts the warmup too:

        v(t) = I + (P - I) t / W                  t < W
        v(t) = E + (P - E) c^exponent,            c = (1 + cos(pi min(t - W, D - W) / (D - W))) / 2

    Example:
        >>> sched = optjax.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=2, decay_steps=12)
        >>> sched(jnp.array([1, 2, 7, 12])).round(4)   # half warm, peak, halfway down, end
        Array([0.5, 1. , 0.5, 0. ], dtype=float32)
    """
    check_finite("init_value", init_value)
    check_finite("peak_value", peak_value)
    check_finite("end_value", end_value)
    _check_finite_nonnegative("warmup_steps", warmup_steps)
    _check_finite_positive("decay_steps", decay_steps)
    _check_finite_positive("exponent", exponent)
    w, d = concrete(warmup_steps), concrete(decay_steps)
    if w is not None and d is not None and not d > w:
        raise ValueError(
            f"decay_steps must be > warmup_steps={warmup_steps!r} (it counts the warmup too), "
            f"got decay_steps={decay_steps!r}"
        )
    decay = _cosine_to(peak_value, end_value, decay_steps - warmup_steps, exponent)
    return _warmup_then(init_value, peak_value, warmup_steps, decay)


def warmup_exponential_decay_schedule(
    init_value: float | jax.Array,
    peak_value: float | jax.Array,
    warmup_steps: float,
    transition_steps: float,
    decay_rate: float | jax.Array,
    transition_begin: float = 0,
    staircase: bool = False,
    end_value: float | jax.Array | None = None,
) -> Schedule:
    r"""Linear warmup from ``init_value`` to ``peak_value`` over ``warmup_steps`` (W) steps, then
    exponential_decay(peak_value, transition_steps, decay_rate, transition_begin, staircase,
    end_value) counted from step W:

        v(t) = I + (P - I) t / W          t < W
        v(t) = P r^p,  p = max(t - W - B, 0) / T (floored with staircase), clipped at end_value

    Example:
        >>> sched = optjax.warmup_exponential_decay_schedule(0.0, 1.0, 2, 10, 0.5)
        >>> sched(jnp.array([1, 2, 12, 22]))
        Array([0.5 , 1.  , 0.5 , 0.25], dtype=float32)
    """
    check_finite("init_value", init_value)
    check_finite("peak_value", peak_value)
    _check_finite_nonnegative("warmup_steps", warmup_steps)
    _check_finite_nonnegative("transition_steps", transition_steps)
    _check_finite_positive("decay_rate", decay_rate)
    _check_finite_nonnegative("transition_begin", transition_begin)
    if end_value is not None:
        check_finite("end_value", end_value)
    decay = exponential_decay(
        peak_value, transition_steps, decay_rate, transition_begin, staircase, end_value
    )
    return _warmup_then(init_value, peak_value, warmup_steps, decay)


def cosine_decay_with_warm_restarts(
    init_value: float | jax.Array,
    first_period: float,
    t_mul: float = 2.0,
    m_mul: float = 1.0,
    alpha: float = 0.0,
) -> Schedule:
    r"""SGDR: cosine decay that restarts, each period ``t_mul`` times longer than the last and
    each amplitude ``m_mul`` times the last. Cycle i (from 0) lasts T_i = T_0 t_mul^i steps,
    ``T_0 = first_period``, and starts at step

        S_i = T_0 i                                 (t_mul == 1)
        S_i = T_0 (t_mul^i - 1) / (t_mul - 1)       (t_mul > 1)

    Within it the schedule is cosine_decay_schedule(init_value * m_mul^i, T_i, alpha):

        v(t) = I m_mul^i ((1 - alpha) c + alpha),    c = (1 + cos(pi (t - S_i) / T_i)) / 2

    The restart index i of step t has a closed form, floor(t / T_0) or
    floor(log(1 + (t_mul - 1) t / T_0) / log(t_mul)), corrected for float32 rounding by comparing
    t with S_i and S_{i+1} (a boundary within a few float32 ulps of t counts as passed). In
    float32 the position within a cycle, t - S_i, is exact for integer S_i (t_mul = 1, 2, 3, ...
    and integer first_period) and otherwise carries an error of a few ulps of S_i.
    Unlike Keras' CosineDecayRestarts, the floor ``alpha I`` shrinks with the amplitude.

    Example:
        >>> sched = optjax.cosine_decay_with_warm_restarts(1.0, first_period=4, m_mul=0.5)
        >>> sched(jnp.array([0, 2, 4, 8, 12])).round(4)   # restarts at 4 (length 8) and 12
        Array([1.  , 0.5 , 0.5 , 0.25, 0.25], dtype=float32)

    Reference: Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", 2017,
    eq. 5.
    """
    check_finite("init_value", init_value)
    _check_finite_positive("first_period", first_period)
    check_value("t_mul", t_mul, lambda x: np.isfinite(x) & (x >= 1), "a finite number >= 1")
    _check_finite_nonnegative("m_mul", m_mul)
    check_value("alpha", alpha, lambda x: (x >= 0) & (x <= 1), "in [0, 1]")

    # t_mul^i is taken with pow where t_mul is a float32 number (exact for 2, 3, 1.5, 1.25, ...),
    # else (1.1, 1.01, ...) as exp(i log t_mul) from float64 log t_mul, with expm1 for
    # t_mul^i - 1 so that it stays precise near 0.
    known = concrete(t_mul)
    use_pow = known is None or bool(np.float32(known) == known)
    log_known = None if known is None else np.log(known)

    def schedule(count):
        t, period, tm = _step(count), _scalar(first_period), _scalar(t_mul)
        growth = tm - 1.0 if known is None else _scalar(known - 1.0)  # t_mul - 1
        geometric = growth > 0
        growth = jnp.where(geometric, growth, 1.0)
        log_tm = jnp.where(geometric, jnp.log(tm) if known is None else _scalar(log_known), 1.0)

        def power(i):  # (t_mul^i, t_mul^i - 1)
            if use_pow:
                return jnp.power(tm, i), jnp.power(tm, i) - 1.0
            return jnp.exp(i * log_tm), jnp.expm1(i * log_tm)

        def start(i):  # S_i, exactly 0 and T_0 for i = 0, 1
            return period * jnp.where(geometric & (i > 1), power(i)[1] / growth, i)

        def passed(i):  # has step t reached S_i? (a few ulps of slack, under half a step)
            s = start(i)
            return t >= s - jnp.minimum(4 * _F32_EPS * s, 0.5)

        guess = jnp.floor(jnp.where(geometric, jnp.log1p(growth * t / period) / log_tm, t / period))
        guess = jnp.maximum(guess, 0.0)
        i = guess - jnp.where(passed(guess), 0.0, 1.0) + jnp.where(passed(guess + 1.0), 1.0, 0.0)
        i = jnp.maximum(i, 0.0)
        length = period * jnp.where(geometric, power(i)[0], 1.0)
        remaining = jnp.clip(start(i + 1.0) - t, 0.0, length)
        cosine = (1.0 - _scalar(alpha)) * _half_cosine(remaining, length) + _scalar(alpha)
        return _scalar(init_value) * jnp.power(_scalar(m_mul), i) * cosine

    return schedule


def sgdr_schedule(cosine_kwargs: Iterable[Mapping[str, float]]) -> Schedule:
    """Warm restarts as optax writes them: one warmup_cosine_decay_schedule per entry of
    ``cosine_kwargs`` (the keyword arguments of each cycle), joined one after another, each
    lasting its ``decay_steps``. See cosine_decay_with_warm_restarts for the geometric form.

    Example:
        >>> cycle = dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=6)
        >>> optjax.sgdr_schedule([cycle, cycle])(jnp.array([2, 7, 8]))   # restart at 6
        Array([1. , 0.5, 1. ], dtype=float32)
    """
    cosine_kwargs = [dict(kwargs) for kwargs in cosine_kwargs]
    if not cosine_kwargs:
        raise ValueError("cosine_kwargs must hold at least one cycle, got cosine_kwargs=[]")
    boundaries: list[int] = []
    end = 0
    for i, kwargs in enumerate(cosine_kwargs):
        steps = kwargs.get("decay_steps")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(
                f"cosine_kwargs[{i}]['decay_steps'] must be an integer >= 1, got {steps!r}"
            )
        end += int(steps)
        boundaries.append(end)
    schedules = [warmup_cosine_decay_schedule(**kwargs) for kwargs in cosine_kwargs]
    return join_schedules(schedules, boundaries[:-1])


# --- piecewise interpolation and one-cycle -------------------------------------------------------


def _interpolate(kind: str, bounds: Sequence, values: Sequence) -> Schedule:
    """Interpolate from ``values[k]`` at ``bounds[k]`` to ``values[k+1]`` at ``bounds[k+1]``
    (``bounds`` non-decreasing, ``bounds[0] == 0``); ``values[-1]`` after the last bound."""

    def schedule(count):
        t = _step(count)
        b, v = jnp.stack([_scalar(x) for x in bounds]), jnp.stack([_scalar(x) for x in values])
        last = len(bounds) - 1
        k = jnp.sum(t[..., None] >= b[1:], axis=-1)  # the segment t lies in: b[k] <= t < b[k+1]
        k_next = jnp.minimum(k + 1, last)
        done, remaining = _progress(t, b[k], b[k_next] - b[k])
        if kind == "cosine":  # cos^2(pi f / 2) and sin^2(pi f / 2), each without cancellation
            done, remaining = _half_cosine(done, 1.0), _half_cosine(remaining, 1.0)
        return _blend(v[k], v[k_next], remaining, done)

    return schedule


def piecewise_interpolate_schedule(
    interpolate_type: str,
    init_value: float | jax.Array,
    boundaries_and_scales: Mapping[int, float] | None = None,
) -> Schedule:
    r"""Like piecewise_constant_schedule, but moving from each value to the next between the
    boundaries instead of jumping. With ``b_0 = 0``, ``v_0 = init_value`` and
    ``v_k = v_{k-1} scale_k`` at boundary ``b_k``, for ``b_k <= t < b_{k+1}``:

        linear: v(t) = v_k + (v_{k+1} - v_k) f,     f = (t - b_k) / (b_{k+1} - b_k)
        cosine: v(t) = v_{k+1} + (v_k - v_{k+1}) (1 + cos(pi f)) / 2

    and v(t) = v_n after the last boundary.

    Example:
        >>> sched = optjax.piecewise_interpolate_schedule("linear", 1.0, {4: 0.5, 8: 0.5})
        >>> sched(jnp.array([2, 4, 6, 8, 9]))
        Array([0.75 , 0.5  , 0.375, 0.25 , 0.25 ], dtype=float32)
    """
    check_choice("interpolate_type", interpolate_type, {"linear", "cosine"})
    check_finite("init_value", init_value)
    steps, scales = _steps_and_scales(boundaries_and_scales)
    values = [init_value]
    for scale in scales:
        values.append(_mul(values[-1], scale))
    return _interpolate(interpolate_type, [0, *steps], values)


def _onecycle_bound(pct, steps):
    """``floor(pct * steps)``: in float64 where both are known, so it agrees with optax's int()."""
    p, s = concrete(pct), concrete(steps)
    if p is not None and s is not None:
        return math.floor(float(p) * float(s))
    return jnp.floor(_scalar(pct) * _scalar(steps))


def _check_onecycle(transition_steps, peak_value, pct_start, div_factor, final_div_factor):
    _check_finite_positive("transition_steps", transition_steps)
    check_finite("peak_value", peak_value)
    _check_open_unit("pct_start", pct_start)
    _check_finite_positive("div_factor", div_factor)
    _check_finite_positive("final_div_factor", final_div_factor)


def linear_onecycle_schedule(
    transition_steps: float,
    peak_value: float | jax.Array,
    pct_start: float = 0.3,
    pct_final: float = 0.85,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    r"""One-cycle policy with linear phases over ``transition_steps`` (T) steps. With
    ``v_0 = peak_value / div_factor``, piecewise linear through the points

        (0, v_0),  (floor(pct_start T), peak_value),  (floor(pct_final T), v_0),
        (T, v_0 / final_div_factor)

    and v_0 / final_div_factor after step T.

    Example:
        >>> sched = optjax.linear_onecycle_schedule(100, 1.0, div_factor=10.0)
        >>> sched(jnp.array([0, 15, 30, 85]))   # 0.1 -> 1.0 at step 30 -> 0.1 at step 85
        Array([0.1 , 0.55, 1.  , 0.1 ], dtype=float32)

    Reference: Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks Using
    Large Learning Rates", 2017.
    """
    _check_onecycle(transition_steps, peak_value, pct_start, div_factor, final_div_factor)
    check_value("pct_final", pct_final, lambda x: (x > 0) & (x <= 1), "in (0, 1]")
    start, final = concrete(pct_start), concrete(pct_final)
    if start is not None and final is not None and not final > start:
        raise ValueError(
            f"pct_final must be in (pct_start, 1] = ({pct_start!r}, 1], got pct_final={pct_final!r}"
        )
    v0 = _div(peak_value, div_factor)
    bounds = [
        0,
        _onecycle_bound(pct_start, transition_steps),
        _onecycle_bound(pct_final, transition_steps),
        transition_steps,
    ]
    return _interpolate("linear", bounds, [v0, peak_value, v0, _div(v0, final_div_factor)])


def cosine_onecycle_schedule(
    transition_steps: float,
    peak_value: float | jax.Array,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    r"""One-cycle policy with cosine phases over ``transition_steps`` (T) steps: from
    ``v_0 = peak_value / div_factor`` up to ``peak_value`` at step ``S = floor(pct_start T)``,
    then down to ``v_0 / final_div_factor`` at step T (and after):

        v(t) = peak + (v_0 - peak) (1 + cos(pi t / S)) / 2                       t < S
        v(t) = v_end + (peak - v_end) (1 + cos(pi (t - S) / (T - S))) / 2         S <= t < T

    Example:
        >>> sched = optjax.cosine_onecycle_schedule(100, 1.0, div_factor=10.0)
        >>> sched(jnp.array([0, 15, 30]))   # halfway up at step 15: (0.1 + 1) / 2
        Array([0.1 , 0.55, 1.  ], dtype=float32)

    Reference: Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks Using
    Large Learning Rates", 2017.
    """
    _check_onecycle(transition_steps, peak_value, pct_start, div_factor, final_div_factor)
    v0 = _div(peak_value, div_factor)
    bounds = [0, _onecycle_bound(pct_start, transition_steps), transition_steps]
    return _interpolate("cosine", bounds, [v0, peak_value, _div(v0, final_div_factor)])
