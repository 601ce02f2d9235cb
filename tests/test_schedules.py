"""Schedules against float64 oracles written from their formulas, against optax, under jit and
vmap, and every construction error."""

import bisect
import itertools
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optjax

# Steps around every boundary the cases below use, and far past their ends.
STEPS = sorted(set(range(41)) | {49, 50, 51, 84, 85, 86, 99, 100, 101, 150, 1000, 123_456})


# --- oracles: plain float64 Python, one formula each ---------------------------------------------


def linear_spec(t, init, end, steps, begin=0):
    if steps == 0:
        return init
    s = min(max(t - begin, 0), steps)
    return init + (end - init) * s / steps


def polynomial_spec(t, init, end, power, steps, begin=0):
    if steps == 0:
        return init
    s = min(max(t - begin, 0), steps)
    return (init - end) * (1 - s / steps) ** power + end


def exponential_spec(t, init, steps, rate, begin=0, staircase=False, end=None):
    if steps == 0:
        return init
    p = max(t - begin, 0) / steps
    if staircase:
        p = math.floor(p)
    try:
        value = init * rate**p
    except OverflowError:  # past float64's range, where only a cap (end) gives a number
        value = math.copysign(math.inf, init)
    if end is None or rate == 1 or init == 0:
        return value
    decreasing = (init > 0) == (rate < 1)
    return max(value, end) if decreasing else min(value, end)


def piecewise_constant_spec(t, init, boundaries_and_scales):
    value = init
    for boundary, scale in sorted((boundaries_and_scales or {}).items()):
        if t >= boundary:
            value *= scale
    return value


def cosine_spec(t, init, steps, alpha=0.0, exponent=1.0):
    c = 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps))
    return init * ((1 - alpha) * c**exponent + alpha)


def warmup_cosine_spec(t, init, peak, warmup, steps, end=0.0, exponent=1.0):
    if t < warmup:
        return init + (peak - init) * t / warmup
    length = steps - warmup
    c = 0.5 * (1 + math.cos(math.pi * min(t - warmup, length) / length))
    return end + (peak - end) * c**exponent


def warmup_exponential_spec(t, init, peak, warmup, steps, rate, begin=0, staircase=False, end=None):
    if t < warmup:
        return init + (peak - init) * t / warmup
    return exponential_spec(t - warmup, peak, steps, rate, begin, staircase, end)


def interpolate_spec(t, kind, points):
    """Through the points (x_k, v_k), linear or half-cosine between them, last value after."""
    for (x0, v0), (x1, v1) in itertools.pairwise(points):
        if x0 <= t < x1:
            f = (t - x0) / (x1 - x0)
            w = f if kind == "linear" else (1 - math.cos(math.pi * f)) / 2
            return v0 + (v1 - v0) * w
    return points[-1][1]


def piecewise_interpolate_spec(t, kind, init, boundaries_and_scales):
    points, value = [(0, init)], init
    for boundary, scale in sorted(boundaries_and_scales.items()):
        value *= scale
        points.append((boundary, value))
    return interpolate_spec(t, kind, points)


def linear_onecycle_spec(t, steps, peak, pct_start=0.3, pct_final=0.85, div=25.0, final_div=1e4):
    v0 = peak / div
    points = [(0, v0), (int(pct_start * steps), peak), (int(pct_final * steps), v0)]
    return interpolate_spec(t, "linear", [*points, (steps, v0 / final_div)])


def cosine_onecycle_spec(t, steps, peak, pct_start=0.3, div=25.0, final_div=1e4):
    v0 = peak / div
    points = [(0, v0), (int(pct_start * steps), peak), (steps, v0 / final_div)]
    return interpolate_spec(t, "cosine", points)


def sgdr_simulation(n_steps, init, first_period, t_mul=2.0, m_mul=1.0, alpha=0.0):
    """SGDR step by step: T_cur counts the steps since the last restart; at T_cur >= T_i the
    schedule restarts with a period t_mul times longer and an amplitude m_mul times smaller."""
    t_cur, period, amplitude, values = 0.0, float(first_period), init, []
    for _ in range(n_steps):
        while t_cur >= period:
            t_cur, period, amplitude = t_cur - period, period * t_mul, amplitude * m_mul
        c = 0.5 * (1 + math.cos(math.pi * t_cur / period))
        values.append(amplitude * (alpha + (1 - alpha) * c))
        t_cur += 1
    return values


# --- the cases: (name, arguments, oracle, same as optax?) ----------------------------------------

# fmt: off
CASES = [
    ("constant_schedule", (0.3,), lambda t: 0.3, True),
    ("linear_schedule", (1.0, 0.01, 100), lambda t: linear_spec(t, 1.0, 0.01, 100), True),
    ("linear_schedule", (0.5, 2.0, 30, 10), lambda t: linear_spec(t, 0.5, 2.0, 30, 10), True),
    ("linear_schedule", (1.0, 0.0, 0, 5), lambda t: 1.0, True),  # no transition: init_value
    ("polynomial_schedule", (1.0, 0.01, 2, 100, 5),
     lambda t: polynomial_spec(t, 1.0, 0.01, 2, 100, 5), True),
    ("polynomial_schedule", (0.1, 1.0, 0.5, 50),
     lambda t: polynomial_spec(t, 0.1, 1.0, 0.5, 50), True),
    ("exponential_decay", (1.0, 10, 0.9), lambda t: exponential_spec(t, 1.0, 10, 0.9), True),
    ("exponential_decay", (1.0, 10, 0.5, 5, True),
     lambda t: exponential_spec(t, 1.0, 10, 0.5, 5, True), True),
    ("exponential_decay", (0.1, 20, 1.1, 0, False, 0.5),  # growing, capped at end_value
     lambda t: exponential_spec(t, 0.1, 20, 1.1, end=0.5), True),
    ("exponential_decay", (1.0, 7, 0.96, 3, False, 0.2),  # decaying, floored at end_value
     lambda t: exponential_spec(t, 1.0, 7, 0.96, 3, end=0.2), True),
    ("exponential_decay", (2.0, 0, 0.5), lambda t: 2.0, True),  # no transition: init_value
    ("exponential_decay", (-1.0, 10, 0.5, 0, False, -0.3),  # negative, rising to a cap of -0.3
     lambda t: exponential_spec(t, -1.0, 10, 0.5, end=-0.3), False),
    ("exponential_decay", (0.7, 10, 1.0, 0, False, 0.1), lambda t: 0.7, False),  # r = 1: constant
    ("piecewise_constant_schedule", (1.0, {10: 0.1, 20: 0.5, 100: 0.0}),
     lambda t: piecewise_constant_spec(t, 1.0, {10: 0.1, 20: 0.5, 100: 0.0}), True),
    ("piecewise_constant_schedule", (0.5, None), lambda t: 0.5, True),
    ("cosine_decay_schedule", (1.0, 100), lambda t: cosine_spec(t, 1.0, 100), True),
    ("cosine_decay_schedule", (0.5, 50, 0.1, 2.0),
     lambda t: cosine_spec(t, 0.5, 50, 0.1, 2.0), True),
    ("warmup_cosine_decay_schedule", (0.0, 1.0, 10, 100),
     lambda t: warmup_cosine_spec(t, 0.0, 1.0, 10, 100), True),
    ("warmup_cosine_decay_schedule", (0.1, 1.0, 0, 50, 0.05, 1.5),
     lambda t: warmup_cosine_spec(t, 0.1, 1.0, 0, 50, 0.05, 1.5), True),
    ("warmup_exponential_decay_schedule", (0.0, 1.0, 10, 20, 0.5, 5, True, 0.1),
     lambda t: warmup_exponential_spec(t, 0.0, 1.0, 10, 20, 0.5, 5, True, 0.1), True),
    ("warmup_exponential_decay_schedule", (0.0, 1.0, 10, 20, 0.9),
     lambda t: warmup_exponential_spec(t, 0.0, 1.0, 10, 20, 0.9), True),
    ("warmup_constant_schedule", (0.0, 1.0, 10), lambda t: linear_spec(t, 0.0, 1.0, 10), True),
    ("piecewise_interpolate_schedule", ("linear", 1.0, {10: 0.5, 30: 0.1}),
     lambda t: piecewise_interpolate_spec(t, "linear", 1.0, {10: 0.5, 30: 0.1}), True),
    ("piecewise_interpolate_schedule", ("cosine", 2.0, {0: 0.5, 25: 4.0, 40: 0.5}),
     lambda t: piecewise_interpolate_spec(t, "cosine", 2.0, {0: 0.5, 25: 4.0, 40: 0.5}), True),
    ("linear_onecycle_schedule", (100, 1.0), lambda t: linear_onecycle_spec(t, 100, 1.0), True),
    ("linear_onecycle_schedule", (37, 0.5, 0.25, 0.9, 10.0, 100.0),
     lambda t: linear_onecycle_spec(t, 37, 0.5, 0.25, 0.9, 10.0, 100.0), True),
    ("cosine_onecycle_schedule", (100, 1.0), lambda t: cosine_onecycle_spec(t, 100, 1.0), True),
    ("cosine_onecycle_schedule", (37, 0.5, 0.2, 10.0, 100.0),
     lambda t: cosine_onecycle_spec(t, 37, 0.5, 0.2, 10.0, 100.0), True),
]
# fmt: on
CASE_IDS = [f"{name}{args}" for name, args, _, _ in CASES]


def evaluate(schedule, steps=STEPS, atol=None):
    """The schedule's values at ``steps`` (int32), checked to be float32 and the same, up to
    float32 rounding at the schedule's scale, jitted on the array of steps, vmapped under jit,
    and called op by op on single steps (8 of them, to keep the file fast)."""
    steps = jnp.asarray(steps, jnp.int32)
    values = jax.jit(schedule)(steps)
    batched = jax.jit(jax.vmap(schedule))(steps)
    some = np.unique(np.linspace(0, len(steps) - 1, 8).astype(int))
    eager = [schedule(steps[i]) for i in some]
    assert values.dtype == batched.dtype == jnp.float32 and values.shape == steps.shape
    assert all(v.dtype == jnp.float32 and v.shape == () for v in eager)
    # XLA may fold constants differently under jit than op by op: allow an ulp of the scale.
    ulp = 1.2e-7 * float(np.max(np.abs(values))) if atol is None else atol
    np.testing.assert_allclose(batched, values, rtol=1e-6, atol=ulp)
    np.testing.assert_allclose(np.array(eager), values[some], rtol=1e-6, atol=ulp)
    return np.asarray(values, np.float64)


@pytest.mark.parametrize("name, args, spec, same_as_optax", CASES, ids=CASE_IDS)
def test_matches_formula_and_optax(name, args, spec, same_as_optax):
    got = evaluate(getattr(optjax, name)(*args))
    np.testing.assert_allclose(got, [spec(t) for t in STEPS], rtol=1e-6, atol=1e-9)
    if same_as_optax:
        # op by op: under jit, XLA turns optax's count / T into count * (1 / T), which misses
        # the end of a transition (optax's polynomial_schedule with power 0.5 then ends at 0.99987
        # instead of 1). optax forms (1 + cos) / 2 directly, which loses digits near 0: hence atol.
        with jax.numpy_dtype_promotion("standard"):
            expected = jax.vmap(getattr(optax, name)(*args))(jnp.asarray(STEPS, jnp.int32))
        expected = np.broadcast_to(np.asarray(expected, np.float64), got.shape)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=2e-7)


def test_python_int_and_scalar_steps_give_float32_scalars():
    for name, args, spec, _ in CASES:
        value = getattr(optjax, name)(*args)(7)
        assert value.dtype == jnp.float32 and value.shape == (), name
        assert math.isclose(float(value), spec(7), rel_tol=1e-6, abs_tol=1e-9), name


def test_steps_array_of_any_shape_is_mapped_elementwise():
    sched = optjax.warmup_cosine_decay_schedule(0.0, 1.0, 5, 20)
    steps = jnp.arange(24, dtype=jnp.int32).reshape(2, 3, 4)
    got = sched(steps)
    assert got.shape == (2, 3, 4) and got.dtype == jnp.float32
    expected = [warmup_cosine_spec(t, 0.0, 1.0, 5, 20) for t in range(24)]
    np.testing.assert_allclose(got.ravel(), expected, rtol=1e-6, atol=1e-9)


def test_negative_steps_read_as_step_zero():
    before, zero = jnp.array([-5, -1], jnp.int32), jnp.zeros(2, jnp.int32)
    for name, args, _, _ in CASES:
        sched = jax.jit(getattr(optjax, name)(*args))
        np.testing.assert_array_equal(sched(before), sched(zero), err_msg=name)
    sgdr = optjax.cosine_decay_with_warm_restarts(1.0, 10)
    np.testing.assert_array_equal(sgdr(before), [1.0, 1.0])


def test_exponential_decay_stays_accurate_far_out():
    # 0.96 is not a float32 number; r^p for p = 200 still matches float64 to 1e-6.
    sched = optjax.exponential_decay(1.0, 1, 0.96)
    steps = [0, 1, 50, 100, 200]
    np.testing.assert_allclose(evaluate(sched, steps), [0.96**t for t in steps], rtol=1e-6)


def test_cosine_decay_keeps_relative_precision_near_its_end():
    sched = optjax.cosine_decay_schedule(1.0, 10_000)
    steps = [9_990, 9_999, 10_000]
    np.testing.assert_allclose(
        evaluate(sched, steps), [cosine_spec(t, 1.0, 10_000) for t in steps], rtol=1e-5
    )


# --- join_schedules ------------------------------------------------------------------------------


def test_join_schedules_counts_each_later_schedule_from_its_boundary():
    def counter(offset):
        return lambda count: offset + count.astype(jnp.float32)

    sched = optjax.join_schedules([counter(-100.0), counter(0.0), counter(100.0)], [3, 7])
    expected = [-100, -99, -98, 0, 1, 2, 3, 100, 101, 102]
    np.testing.assert_array_equal(evaluate(sched, range(10)), expected)


def test_join_schedules_casts_each_part_to_float32():
    parts = [lambda c: jnp.bfloat16(0.5), lambda c: 2, optjax.linear_schedule(1.0, 0.0, 4)]
    sched = optjax.join_schedules(parts, [1, 2])
    np.testing.assert_array_equal(evaluate(sched, range(5)), [0.5, 2.0, 1.0, 0.75, 0.5])


def test_join_schedules_takes_numpy_boundaries():
    parts = [optjax.constant_schedule(1.0), lambda count: count.astype(jnp.float32)]
    sched = optjax.join_schedules(parts, np.array([2]))
    np.testing.assert_array_equal(evaluate(sched, range(4)), [1.0, 1.0, 0.0, 1.0])


def test_join_schedules_of_one_schedule_is_that_schedule():
    sched = optjax.join_schedules([optjax.linear_schedule(1.0, 0.0, 4)], [])
    np.testing.assert_array_equal(evaluate(sched, range(6)), [1.0, 0.75, 0.5, 0.25, 0.0, 0.0])


# --- warm restarts -------------------------------------------------------------------------------

SGDR_CASES = [  # (init_value, first_period, t_mul, m_mul, alpha)
    (1.0, 10, 2.0, 1.0, 0.0),
    (1.0, 10, 1.0, 0.5, 0.1),
    (0.3, 7, 1.5, 0.8, 0.05),
    (1.0, 3, 3.0, 0.9, 0.0),
    (1.0, 1, 2.0, 1.0, 0.0),
    (2.0, 0.5, 1.0, 1.0, 0.2),
]


@pytest.mark.parametrize("args", SGDR_CASES, ids=str)
def test_warm_restarts_match_step_by_step_simulation(args):
    # Periods that are integers (or halves) in binary: restarts fall exactly on steps, and
    # float64 simulation and float32 closed form agree to float32 precision.
    got = evaluate(optjax.cosine_decay_with_warm_restarts(*args), range(2_000))
    np.testing.assert_allclose(got, sgdr_simulation(2_000, *args), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize(
    "args",
    [
        (1.0, 100, 1.1, 1.0, 0.0),
        (1.0, 10, 1.3, 0.9, 0.1),
        (1.0, 100, 1.7, 1.0, 0.0),
        (0.5, 50, 1.6, 1.0, 0.0),
        (1.0, 2.5, 1.3, 0.9, 0.1),
        (1.0, 100, 1.01, 1.0, 0.0),
    ],
    ids=str,
)
def test_warm_restarts_with_decimal_t_mul_restart_where_exact_arithmetic_says(args):
    # With t_mul = 1.1 a restart falls on step 210 = 100 + 110 exactly, which float64 itself
    # misses (100 * 1.1 > 110); the oracle uses exact rationals. Likewise 23 = 10 + 13,
    # 559 = 100 + 170 + 289, 258 = 50 + 80 + 128. The position within a cycle carries a float32
    # rounding error of a few ulps of the restart step: hence atol.
    init, first, t_mul, m_mul, alpha = args
    starts, lengths = [Fraction(0)], [Fraction(str(first))]
    while starts[-1] <= 3_000:
        starts.append(starts[-1] + lengths[-1])
        lengths.append(lengths[-1] * Fraction(str(t_mul)))
    expected = []
    for t in range(3_000):
        i = bisect.bisect_right(starts, t) - 1
        c = 0.5 * (1 + math.cos(math.pi * float((t - starts[i]) / lengths[i])))
        expected.append(init * m_mul**i * (alpha + (1 - alpha) * c))
    got = evaluate(optjax.cosine_decay_with_warm_restarts(*args), range(3_000), atol=2e-5)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("first_period, t_mul", [(10, 2), (7, 3), (1, 2), (7, 1)])
def test_warm_restarts_find_far_restarts_exactly(first_period, t_mul):
    # Steps just before, on and after restarts up to 2**23, where float32 still counts steps.
    if t_mul == 1:
        starts = list(range(0, 2**23, first_period * 29_989))  # every 29_989th restart
    else:
        starts = [first_period * (t_mul**i - 1) // (t_mul - 1) for i in range(40)]
    starts = [s for s in starts if s < 2**23]
    steps = sorted({t for s in starts for t in (s - 1, s, s + 1) if t >= 0})
    expected = []
    for t in steps:  # S_i <= t < S_{i+1}, found by walking the cycles in integers
        start, period = 0, first_period
        while start + period <= t and t_mul > 1:
            start, period = start + period, period * t_mul
        if t_mul == 1:
            start = t - t % first_period
        expected.append(0.5 * (1 + math.cos(math.pi * (t - start) / period)))
    got = evaluate(optjax.cosine_decay_with_warm_restarts(1.0, first_period, t_mul), steps)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_warm_restarts_equal_optax_sgdr_with_the_same_cycles():
    cycles = [
        {
            "init_value": 0.8**i,
            "peak_value": 0.8**i,
            "warmup_steps": 0,
            "decay_steps": 5 * 2**i,
            "end_value": 0.1 * 0.8**i,
        }
        for i in range(5)
    ]
    steps = jnp.arange(5 * (2**5 - 1), dtype=jnp.int32)
    with jax.numpy_dtype_promotion("standard"):
        expected = jax.vmap(optax.sgdr_schedule(cycles))(steps)
    restarts = optjax.cosine_decay_with_warm_restarts(1.0, 5, 2.0, 0.8, 0.1)
    np.testing.assert_allclose(restarts(steps), expected, rtol=1e-6, atol=2e-7)
    np.testing.assert_allclose(optjax.sgdr_schedule(cycles)(steps), expected, rtol=1e-6, atol=2e-7)


def test_sgdr_schedule_joins_warmup_cosine_cycles():
    cycles = [
        {"init_value": 0.0, "peak_value": 1.0, "warmup_steps": 4, "decay_steps": 20},
        {
            "init_value": 0.1,
            "peak_value": 0.5,
            "warmup_steps": 0,
            "decay_steps": 10,
            "end_value": 0.05,
        },
    ]
    expected = [
        warmup_cosine_spec(t, 0.0, 1.0, 4, 20)
        if t < 20
        else warmup_cosine_spec(t - 20, 0.1, 0.5, 0, 10, 0.05)
        for t in range(40)
    ]
    got = evaluate(optjax.sgdr_schedule(cycles), range(40))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


# --- traced hyperparameters, and use inside an optimizer -----------------------------------------


def test_traced_hyperparameters_are_accepted():
    peaks = jnp.array([0.5, 1.0, 2.0])
    onecycle = jax.vmap(lambda peak: optjax.cosine_onecycle_schedule(100, peak)(30))(peaks)
    np.testing.assert_allclose(onecycle, peaks, rtol=1e-6)
    linear = jax.jit(lambda steps: optjax.linear_schedule(1.0, 0.0, steps)(5))(10.0)
    np.testing.assert_allclose(linear, 0.5, rtol=1e-6)
    decay = jax.jit(lambda r: optjax.exponential_decay(1.0, 1, r, end_value=0.3)(3))(0.5)
    np.testing.assert_allclose(decay, 0.3, rtol=1e-6)
    restarts = jax.jit(lambda tm: optjax.cosine_decay_with_warm_restarts(1.0, 4, tm)(12))(2.0)
    np.testing.assert_allclose(restarts, 1.0, rtol=1e-6)  # 12 = 4 + 8: a restart


def test_hyperparameters_of_other_dtypes_are_computed_in_float32():
    sched = optjax.linear_schedule(jnp.bfloat16(1.0), np.float64(0.0), 4)
    value = sched(jnp.int32(1))
    assert value.dtype == jnp.float32 and float(value) == 0.75


def test_schedule_drives_the_learning_rate_of_sgd():
    tx = optjax.sgd(optjax.linear_schedule(1.0, 0.0, 4))
    update = jax.jit(tx.update)
    state, steps = tx.init(jnp.zeros(1)), []
    for _ in range(6):
        u, state = update(jnp.ones(1), state)
        steps.append(float(u[0]))
    np.testing.assert_allclose(steps, [-1.0, -0.75, -0.5, -0.25, 0.0, 0.0])


# --- errors --------------------------------------------------------------------------------------

# fmt: off
ERRORS = [
    (optjax.constant_schedule, (float("nan"),), r"value must be a finite number, got value=nan"),
    (optjax.linear_schedule, (1.0, 0.0, -1),
     r"transition_steps must be a finite number >= 0, got transition_steps=-1"),
    (optjax.linear_schedule, (1.0, 0.0, 10, -2),
     r"transition_begin must be a finite number >= 0, got transition_begin=-2"),
    (optjax.linear_schedule, (float("inf"), 0.0, 10),
     r"init_value must be a finite number, got init_value=inf"),
    (optjax.polynomial_schedule, (1.0, 0.0, 0.0, 10),
     r"power must be a finite number > 0, got power=0.0"),
    (optjax.polynomial_schedule, (1.0, float("nan"), 2, 10),
     r"end_value must be a finite number, got end_value=nan"),
    (optjax.exponential_decay, (1.0, 10, 0.0),
     r"decay_rate must be a finite number > 0, got decay_rate=0.0"),
    (optjax.exponential_decay, (1.0, 10, -0.5),
     r"decay_rate must be a finite number > 0, got decay_rate=-0.5"),
    (optjax.exponential_decay, (1.0, -10, 0.5),
     r"transition_steps must be a finite number >= 0, got transition_steps=-10"),
    (optjax.exponential_decay, (1.0, 10, 0.5, -1),
     r"transition_begin must be a finite number >= 0, got transition_begin=-1"),
    (optjax.exponential_decay, (1.0, 10, 0.5, 0, False, 2.0),
     r"end_value must be <= init_value=1.0 when decay_rate=0.5 .*got end_value=2.0"),
    (optjax.exponential_decay, (1.0, 10, 2.0, 0, False, 0.5),
     r"end_value must be >= init_value=1.0 when decay_rate=2.0 .*got end_value=0.5"),
    (optjax.exponential_decay, (-1.0, 10, 0.5, 0, False, -2.0),
     r"end_value must be >= init_value=-1.0 .*got end_value=-2.0"),
    (optjax.piecewise_constant_schedule, (1.0, {10: -0.1}),
     r"boundaries_and_scales\[10\] must be a finite number >= 0, got .*\[10\]=-0.1"),
    (optjax.piecewise_constant_schedule, (1.0, {-1: 0.5}),
     r"boundaries_and_scales keys must hold integers >= 0, got .*=-1"),
    (optjax.piecewise_constant_schedule, (1.0, {2.5: 0.5}),
     r"boundaries_and_scales keys must hold integers >= 0, got .*=2.5"),
    (optjax.cosine_decay_schedule, (1.0, 0),
     r"decay_steps must be a finite number > 0, got decay_steps=0"),
    (optjax.cosine_decay_schedule, (1.0, 10, 1.5), r"alpha must be in \[0, 1\], got alpha=1.5"),
    (optjax.cosine_decay_schedule, (1.0, 10, 0.0, 0.0),
     r"exponent must be a finite number > 0, got exponent=0.0"),
    (optjax.warmup_cosine_decay_schedule, (0.0, 1.0, 10, 10),
     r"decay_steps must be > warmup_steps=10 .*got decay_steps=10"),
    (optjax.warmup_cosine_decay_schedule, (0.0, 1.0, -1, 10),
     r"warmup_steps must be a finite number >= 0, got warmup_steps=-1"),
    (optjax.warmup_cosine_decay_schedule, (0.0, float("nan"), 1, 10),
     r"peak_value must be a finite number, got peak_value=nan"),
    (optjax.warmup_cosine_decay_schedule, (0.0, 1.0, 1, 10, 0.0, -1.0),
     r"exponent must be a finite number > 0, got exponent=-1.0"),
    (optjax.warmup_exponential_decay_schedule, (0.0, 1.0, -1, 10, 0.5),
     r"warmup_steps must be a finite number >= 0, got warmup_steps=-1"),
    (optjax.warmup_exponential_decay_schedule, (0.0, 1.0, 1, 10, 0.0),
     r"decay_rate must be a finite number > 0, got decay_rate=0.0"),
    (optjax.cosine_decay_with_warm_restarts, (1.0, 0),
     r"first_period must be a finite number > 0, got first_period=0"),
    (optjax.cosine_decay_with_warm_restarts, (1.0, 10, 0.5),
     r"t_mul must be a finite number >= 1, got t_mul=0.5"),
    (optjax.cosine_decay_with_warm_restarts, (1.0, 10, 2.0, -1.0),
     r"m_mul must be a finite number >= 0, got m_mul=-1.0"),
    (optjax.cosine_decay_with_warm_restarts, (1.0, 10, 2.0, 1.0, 2.0),
     r"alpha must be in \[0, 1\], got alpha=2.0"),
    (optjax.sgdr_schedule, ([],),
     r"cosine_kwargs must hold at least one cycle, got cosine_kwargs=\[\]"),
    (optjax.sgdr_schedule, ([{"init_value": 0.0, "peak_value": 1.0, "decay_steps": 0}],),
     r"cosine_kwargs\[0\]\['decay_steps'\] must be an integer >= 1, got 0"),
    (optjax.sgdr_schedule, ([{"init_value": 0.0, "peak_value": 1.0}],),
     r"cosine_kwargs\[0\]\['decay_steps'\] must be an integer >= 1, got None"),
    (optjax.join_schedules, ([], []),
     r"schedules must hold at least one schedule, got schedules=\[\]"),
    (optjax.join_schedules, ([abs, 0.1], [5]),
     r"schedules\[1\] must be callable, got schedules\[1\]=0.1"),
    (optjax.join_schedules, ([abs, abs], [5, 10]),
     r"boundaries must hold len\(schedules\) - 1 = 1 entries, got 2: boundaries=\[5, 10\]"),
    (optjax.join_schedules, ([abs, abs, abs], [5, 5]),
     r"boundaries must be strictly increasing, got boundaries=\[5, 5\]"),
    (optjax.join_schedules, ([abs, abs, abs], [5, 3]),
     r"boundaries must be strictly increasing, got boundaries=\[5, 3\]"),
    (optjax.join_schedules, ([abs, abs], [-1]),
     r"boundaries must hold integers >= 0, got boundaries\[0\]=-1"),
    (optjax.join_schedules, ([abs, abs], [2.5]),
     r"boundaries must hold integers >= 0, got boundaries\[0\]=2.5"),
    (optjax.piecewise_interpolate_schedule, ("quadratic", 1.0),
     r"interpolate_type must be one of \['cosine', 'linear'\], got interpolate_type='quadratic'"),
    (optjax.piecewise_interpolate_schedule, ("linear", 1.0, {5: -1.0}),
     r"boundaries_and_scales\[5\] must be a finite number >= 0"),
    (optjax.linear_onecycle_schedule, (0, 1.0),
     r"transition_steps must be a finite number > 0, got transition_steps=0"),
    (optjax.linear_onecycle_schedule, (100, 1.0, 0.0),
     r"pct_start must be in \(0, 1\), got pct_start=0.0"),
    (optjax.linear_onecycle_schedule, (100, 1.0, 1.0),
     r"pct_start must be in \(0, 1\), got pct_start=1.0"),
    (optjax.linear_onecycle_schedule, (100, 1.0, 0.5, 0.5),
     r"pct_final must be in \(pct_start, 1\] = \(0.5, 1\], got pct_final=0.5"),
    (optjax.linear_onecycle_schedule, (100, 1.0, 0.3, 1.2),
     r"pct_final must be in \(0, 1\], got pct_final=1.2"),
    (optjax.linear_onecycle_schedule, (100, 1.0, 0.3, 0.85, 0.0),
     r"div_factor must be a finite number > 0, got div_factor=0.0"),
    (optjax.cosine_onecycle_schedule, (100, 1.0, 0.3, 25.0, -1.0),
     r"final_div_factor must be a finite number > 0, got final_div_factor=-1.0"),
    (optjax.cosine_onecycle_schedule, (100, float("nan")),
     r"peak_value must be a finite number, got peak_value=nan"),
    (optjax.cosine_onecycle_schedule, (100, 1.0, 1.5),
     r"pct_start must be in \(0, 1\), got pct_start=1.5"),
    (optjax.cosine_onecycle_schedule, (-5, 1.0),
     r"transition_steps must be a finite number > 0, got transition_steps=-5"),
]
# fmt: on


@pytest.mark.parametrize("fn, args, message", ERRORS, ids=lambda x: getattr(x, "__name__", None))
def test_bad_hyperparameters_raise_naming_argument_value_and_range(fn, args, message):
    with pytest.raises(ValueError, match=message):
        fn(*args)


def test_every_schedule_is_exported():
    names = {name for name, *_ in CASES} | {
        "join_schedules",
        "sgdr_schedule",
        "cosine_decay_with_warm_restarts",
    }
    for name in names:
        assert getattr(optjax, name) is getattr(optjax.schedules, name)
