"""Step counters at the end of int32: every optimizer, preset, wrapper and schedule stays finite
with its count at 2^31 - 1, and the count saturates there instead of wrapping to a negative
number (a wrapped count would restart bias corrections and schedules, or divide by zero).

Each state's step counts (fields named ``count``; MultiSteps' ``gradient_step``) are set to the
largest int32 and one more step is taken.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_conformance import ROWS
from test_conformance_wrappers import WRAPPERS
from test_schedules import CASE_IDS, CASES

import optjax

INT32_MAX = int(np.iinfo(np.int32).max)
COUNT_NAMES = ("count", "gradient_step", "step_count", "count_m2", "t")

TABLE = {name: row.make for name, row in ROWS.items()}
TABLE |= {
    f"{name}[{wrapper}]": (lambda lr, w=WRAPPERS[wrapper], m=ROWS[name].make: w(m, lr))
    for wrapper in WRAPPERS
    for name in ("adam", "adafactor", "radam", "torch.NAdam")
}
TABLE |= {
    "add_noise": lambda lr: optjax.chain(optjax.add_noise(0.1, 0.55, seed=0), optjax.sgd(lr)),
    "scheduled_sgd": lambda lr: optjax.sgd(optjax.cosine_decay_schedule(lr, 100)),
    "scale_by_schedule": lambda lr: optjax.scale_by_schedule(optjax.linear_schedule(lr, 0, 10)),
    "ema_debiased": lambda lr: optjax.chain(optjax.ema(0.9, debias=True), optjax.sgd(lr)),
    "average_params": lambda lr: optjax.average_params(optjax.adam(lr), 0.99),
    "lookahead": lambda lr: optjax.lookahead(optjax.adam(lr), 5, 0.5),
    "apply_if_finite": lambda lr: optjax.apply_if_finite(optjax.adam(lr), 3),
    "adafactor_relative_step": lambda lr: optjax.adafactor(),
}


def _at_the_last_count(state):
    """``state`` with every step count set to the largest int32."""

    def set_count(path, x):
        names = [getattr(k, "name", getattr(k, "key", None)) for k in path]
        if names and names[-1] in COUNT_NAMES:
            return jnp.full_like(x, INT32_MAX)
        return x

    return jax.tree_util.tree_map_with_path(set_count, state)


def _counts(state):
    return [
        int(x)
        for path, x in jax.tree_util.tree_flatten_with_path(state)[0]
        if getattr(path[-1], "name", getattr(path[-1], "key", None)) in COUNT_NAMES
    ]


@pytest.mark.parametrize("name", TABLE)
def test_a_step_at_the_largest_count_is_finite_and_the_count_saturates(name):
    params = {"w": jnp.full((4, 3), 0.5), "s": jnp.ones(())}
    tx = TABLE[name](1e-2)
    state = _at_the_last_count(tx.init(params))
    if INT32_MAX not in _counts(state):
        pytest.skip("its state keeps no step count")
    grads = jax.tree.map(lambda p: p * 0.3 + 0.1, params)
    step = tx.update  # op by op: two steps cost less than a compile
    for _ in range(2):
        updates, state = step(grads, state, params)
        assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates)), updates
        assert all(c >= 0 for c in _counts(state)), _counts(state)


@pytest.mark.parametrize("name, args, spec, same_as_optax", CASES, ids=CASE_IDS)
def test_schedules_are_finite_at_the_largest_count(name, args, spec, same_as_optax):
    del same_as_optax
    steps = jnp.array([INT32_MAX - 1, INT32_MAX], jnp.int32)
    values = jax.jit(getattr(optjax, name)(*args))(steps)
    assert bool(jnp.all(jnp.isfinite(values))), values
    # The float32 step count is 2^31 there: the schedule's value at its (finite) end.
    np.testing.assert_allclose(values, [spec(2.0**31)] * 2, rtol=1e-5, atol=1e-7)


def test_sgdr_and_warm_restarts_are_finite_at_the_largest_count():
    schedules = [
        optjax.sgdr_schedule([dict(init_value=0.0, peak_value=1.0, warmup_steps=5,
                                   decay_steps=20, end_value=0.1)] * 3),
        optjax.cosine_decay_with_warm_restarts(1.0, 10, t_mul=2.0, m_mul=0.9),
    ]  # fmt: skip
    for schedule in schedules:
        values = jax.jit(schedule)(jnp.array([INT32_MAX - 1, INT32_MAX], jnp.int32))
        assert bool(jnp.all(jnp.isfinite(values))), values
