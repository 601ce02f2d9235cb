"""Schedule-Free learning (schedule_free, schedule_free_sgd, schedule_free_adamw,
schedule_free_eval_params) against optax 0.2.8 step by step on the same gradients; where optax
is wrong (its averaging weights a step ahead of the rates, a bf16 state whose weight sum stalls
and whose b1 is rounded, an AttributeError for a state that is not schedule-free); the flat
layout; hyperparameter validation.
"""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax_compare import compare_with_optax, constant, problem, run
from test_flat import assert_close
from test_flat import trajectory as flat_trajectory

import optjax
from optjax import flat
from optjax.contrib._schedule_free import (
    ScheduleFreeState,
    schedule_free,
    schedule_free_adamw,
    schedule_free_eval_params,
    schedule_free_sgd,
)

CASES = {
    "sgd": (lambda: schedule_free_sgd(0.1), lambda: optax.contrib.schedule_free_sgd(0.1)),
    "sgd(b1,wd,power,schedule)": (
        lambda: schedule_free_sgd(constant(0.2), None, 0.5, 0.1, 1.0),
        lambda: optax.contrib.schedule_free_sgd(constant(0.2), None, 0.5, 0.1, 1.0),
    ),
    "adamw": (lambda: schedule_free_adamw(), lambda: optax.contrib.schedule_free_adamw()),
    "adamw(all)": (
        lambda: schedule_free_adamw(0.05, None, 0.8, 0.99, 1e-3, 0.1, 3.0),
        lambda: optax.contrib.schedule_free_adamw(0.05, None, 0.8, 0.99, 1e-3, 0.1, 3.0),
    ),
    "schedule_free(adam)": (
        lambda: schedule_free(optjax.adam(constant(0.1), b1=0.0), constant(0.1), b1=0.95),
        lambda: optax.contrib.schedule_free(
            optax.adam(constant(0.1), b1=0.0), constant(0.1), b1=0.95
        ),
    ),
}


# Two leaves (a 0-d one, which optax's code sometimes mishandles, and a matrix): the runs are
# eager, and each leaf shape compiles every operation once more.
SHAPES = {"scalar": (), "matrix": (4, 3)}


@pytest.mark.parametrize("name", CASES)
def test_matches_optax_step_by_step(name, standard_promotion):
    ours, theirs = CASES[name]
    compare_with_optax(ours, theirs, shapes=SHAPES)


def test_eval_params_match_optax_in_float64(standard_promotion):
    with jax.enable_x64(True):
        params, grads = problem(jnp.float64, shapes=SHAPES)
        (*_, (_, p, s)), (*_, (_, p_ref, s_ref)) = (
            run(make(0.2, b1=0.7), params, grads, states=True)
            for make in (schedule_free_sgd, optax.contrib.schedule_free_sgd)
        )
        got = schedule_free_eval_params(s, p)
        want = optax.contrib.schedule_free_eval_params(s_ref, p_ref)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=1e-6)


def _spec(params, grads, rates, b1, power=2.0):
    """The paper's Schedule-Free SGD in float64 NumPy: each z weighted by its own rate."""
    y = {k: np.asarray(v, np.float64) for k, v in params.items()}
    z, x, total, max_lr, out = dict(y), dict(y), 0.0, 0.0, []
    for g, lr in zip(grads, rates):
        max_lr = max(max_lr, lr)
        total += max_lr**power
        c = max_lr**power / total if total > 0 else 0.0
        for k in y:
            z[k] = z[k] - lr * np.asarray(g[k], np.float64)
            x[k] = (1 - c) * x[k] + c * z[k]
            y[k] = b1 * x[k] + (1 - b1) * z[k]
        out.append(dict(y))
    return out


def test_optax_weights_each_iterate_by_the_next_steps_rate(standard_promotion):
    # The paper weights z_{t+1} by gamma_t^2, the square of the rate it was reached with. optax
    # evaluates the rate for the weight at its step_count, which starts at 1, while the base
    # optimizer's schedule starts at 0: during warmup each iterate is weighted by the next
    # step's rate (the first, a step of rate 0, gets weight (lr / warmup)^2 instead of 0).
    with jax.enable_x64(True):
        params, grads = problem(jnp.float64, steps=6, shapes=SHAPES)
        want = _spec(params, grads, [0.0, 0.1, 0.2, 0.3, 0.3, 0.3], b1=0.9)
        ours = run(schedule_free_sgd(0.3, warmup_steps=3), params, grads)
        theirs = run(optax.contrib.schedule_free_sgd(0.3, warmup_steps=3), params, grads)
    for t, ((_, p), (_, p_ref), y) in enumerate(zip(ours, theirs, want)):
        for k in y:
            np.testing.assert_allclose(p[k], y[k], rtol=1e-9, atol=1e-12)
            if t >= 1:  # optax's first step moves nothing either; from the second it is off
                assert not np.allclose(p_ref[k], y[k], rtol=1e-3)


def test_optax_bf16_state_stalls_the_weight_sum_and_rounds_b1(standard_promotion):
    # optax keeps b1, max_lr and weight_sum in the params' lowest dtype. In bf16 a sum of
    # equal weights stops at 256 (256 + 1 rounds back to 256), so from there on each iterate
    # gets weight 1/256 instead of 1/t: the average becomes an EMA. And b1 = 0.9 is stored as
    # 0.8984, which schedule_free_eval_params uses where the update used 0.9.
    params = jnp.ones(2, jnp.bfloat16)
    g = jnp.full(2, 0.5, jnp.bfloat16)
    sums = {}
    for lib, make in [("optjax", schedule_free_sgd), ("optax", optax.contrib.schedule_free_sgd)]:
        state = make(1.0).init(params)
        sums[lib + ".b1"] = float(state.b1)
        state = state._replace(weight_sum=jnp.asarray(256, state.weight_sum.dtype))
        sums[lib] = float(jax.jit(make(1.0).update)(g, state, params)[1].weight_sum)
    assert sums == {
        "optjax.b1": pytest.approx(0.9),
        "optjax": 257.0,
        "optax.b1": 0.8984375,
        "optax": 256.0,
    }


def test_bf16_params_keep_z_and_weights_in_float32():
    params, grads = problem(jnp.bfloat16, steps=2, shapes=SHAPES)
    tx = schedule_free_adamw(0.1)
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = optjax.apply_updates(params, updates)
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
    assert all(z.dtype == jnp.float32 for z in jax.tree.leaves(state.z))
    assert {state.b1.dtype, state.weight_sum.dtype, state.max_lr.dtype} == {jnp.dtype("float32")}
    x = schedule_free_eval_params(state, params)
    assert all(v.dtype == jnp.bfloat16 for v in jax.tree.leaves(x))
    z16 = schedule_free_adamw(0.1, state_dtype=jnp.bfloat16).init(params).z
    assert all(z.dtype == jnp.bfloat16 for z in jax.tree.leaves(z16))


def test_eval_params_of_other_states(standard_promotion):
    params = jnp.array([1.0, -2.0])
    adam_state = optax.adam(0.1).init(params)
    with pytest.raises(AttributeError):  # optax: an AttributeError, not its documented ValueError
        optax.contrib.schedule_free_eval_params(adam_state, params)
    with pytest.raises(ValueError, match="needs the state of a schedule_free optimizer"):
        schedule_free_eval_params(adam_state, params)
    # A schedule-free state inside a chain (or a wrapper) is found.
    tx = optjax.chain(optjax.clip_by_global_norm(1.0), schedule_free_sgd(0.5))
    state = tx.update(jnp.array([3.0, 4.0]), tx.init(params), params)[1]
    assert isinstance(state[1], ScheduleFreeState)
    np.testing.assert_array_equal(
        schedule_free_eval_params(state, params), schedule_free_eval_params(state[1], params)
    )
    with pytest.raises(ValueError, match="holding 2 of them"):
        schedule_free_eval_params((state[1], state[1]), params)


def test_first_step_with_warmup_is_zero_and_no_nan():
    # The warmup starts at rate 0 (as optax's): no averaging weight yet, and no 0 / 0.
    tx = schedule_free_sgd(1.0, warmup_steps=2)
    p, update = jnp.array([1.0]), jax.jit(tx.update)
    u, state = update(jnp.array([1.0]), tx.init(p), p)
    assert float(u[0]) == 0.0 and float(state.weight_sum) == 0.0
    u, state = update(jnp.array([1.0]), state, p)
    np.testing.assert_allclose(u, [-0.5], rtol=1e-6)  # z = 1 - 0.5 and x = z (c = 1): y = z
    assert state.step_count.dtype == jnp.int32


def test_flat_layout_matches_tree_path():
    rng = np.random.default_rng(5)
    shapes = {"w": ((7, 5), jnp.float32), "h": ((3, 4), jnp.bfloat16)}
    params = {k: jnp.asarray(rng.normal(size=s), d) for k, (s, d) in shapes.items()}
    grads = [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        for _ in range(2)
    ]
    make = lambda: schedule_free_adamw(0.1, weight_decay=0.1)
    assert flat.is_flat_ready(make())
    want = flat_trajectory(make(), params, grads)
    got = flat_trajectory(make(), params, grads, pack=flat.FlatLayout.of(params).flatten)
    for w, g in zip(want, got):
        assert_close(g, w, ulps=4)


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (schedule_free, optax.contrib.schedule_free),
        (schedule_free_sgd, optax.contrib.schedule_free_sgd),
        (schedule_free_adamw, optax.contrib.schedule_free_adamw),
        (schedule_free_eval_params, optax.contrib.schedule_free_eval_params),
    ],
    ids=lambda f: f.__name__,
)
def test_arguments_and_defaults_are_optax(ours, theirs):
    defaults = lambda f: [(k, p.default) for k, p in inspect.signature(f).parameters.items()]
    assert defaults(ours) == defaults(theirs)
    assert ScheduleFreeState._fields == optax.contrib.ScheduleFreeState._fields


NOT_NUMBERS = [math.inf, math.nan, 1e39, "0.1", [0.1], True, None]
BAD = {
    ">= 0": [*NOT_NUMBERS, -1.0, -1e-30],
    ">= 0 or None": [math.inf, math.nan, 1e39, "0.1", [0.1], True, -1.0],
    "(0, 1]": [*NOT_NUMBERS, 0.0, 1.5, -0.1],
    "[0, 1)": [*NOT_NUMBERS, 1.0, -0.1],
    "rate": [math.inf, math.nan, "0.1", True, None, -1.0],  # a schedule is allowed
    "int >= 1": [0, -3, 2.5, True, "3"],
}
COMMON = {"learning_rate": "rate", "b1": "(0, 1]", "weight_lr_power": ">= 0"}
HYPERPARAMETERS = [
    (schedule_free_sgd, {}, {**COMMON, "weight_decay": ">= 0 or None", "warmup_steps": "int >= 1"}),
    (
        schedule_free_adamw,
        {},
        {
            **COMMON,
            "b2": "[0, 1)",
            "eps": ">= 0",
            "weight_decay": ">= 0",
            "warmup_steps": "int >= 1",
        },
    ),
    (lambda **kw: schedule_free(optjax.sgd(0.1), **kw), {"learning_rate": 0.1}, COMMON),
]


@pytest.mark.parametrize("make,base,ranges", HYPERPARAMETERS, ids=["sgd", "adamw", "wrapper"])
def test_bad_hyperparameters_raise_naming_the_argument(make, base, ranges):
    for name, kind in ranges.items():
        for bad in BAD[kind]:
            with pytest.raises(ValueError, match=rf"^{name} must be .*got {name}="):
                make(**{**base, name: bad})
    # Traced values (a constructor called under jit, vmap or inject_hyperparams) are accepted.
    floats = [k for k in ranges if k != "warmup_steps"]
    jax.make_jaxpr(lambda x: (make(**{**base, **dict.fromkeys(floats, x)}), x)[1])(0.5)
