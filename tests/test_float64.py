"""float64 is float64-accurate: under ``jax_enable_x64`` the step-dependent scalars (bias
corrections, decay rates, schedule values) are formed in float64, so a float64 run agrees with a
float64 oracle to ~1e-13, not to float32's ~1e-7.

Where optax matches the formula in float64, tests/test_optimizers.py compares with it at rtol
1e-10; here are the oracles for the rest: NumPy loops of the papers' formulas, and the schedules'
own formulas. Every conformance row also runs in float64 and keeps float64 throughout.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_conformance import ROWS
from test_schedules import CASE_IDS, CASES, STEPS
from test_transforms_factored import adafactor_spec

import optjax

STEPS_RUN = 6


def _grads(shape, n=STEPS_RUN, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape) for _ in range(n)]


def _updates(tx, grads):
    """The updates of ``tx`` for each gradient (float64 arrays), jitted once."""
    params = jnp.zeros(grads[0].shape, jnp.float64)
    state, update, out = tx.init(params), jax.jit(tx.update), []
    for g in grads:
        u, state = update(jnp.asarray(g, jnp.float64), state, params)
        assert u.dtype == jnp.float64
        out.append(np.asarray(u))
    return out


def _worst_relative_error(got, want):
    return max(float(np.max(np.abs(g - w) / np.abs(w))) for g, w in zip(got, want, strict=True))


def _adam_spec(grads, b1=0.9, b2=0.999, eps=1e-8):
    m = v = np.zeros_like(grads[0])
    for t, g in enumerate(grads, start=1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        yield (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)


def test_adam_in_float64_is_float64_accurate():
    grads = _grads((50,))
    with jax.enable_x64(True):
        got = _updates(optjax.scale_by_adam(), grads)
    assert _worst_relative_error(got, list(_adam_spec(grads))) < 1e-13


@pytest.mark.parametrize("shape, axes", [((6, 5), (0, 1)), ((7,), None)], ids=["factored", "full"])
def test_adafactor_second_moment_in_float64_matches_the_paper(shape, axes, standard_promotion):
    """Its decay rate 1 - t^(-0.8) is formed in float64 here. optax 0.2.8 forms it in float32
    even under x64 (its _decay_rate_pow casts t to float32), so its float64 steps are only
    float32-accurate: shown here against the same oracle."""
    grads = _grads(shape)
    want = [u for u, _ in adafactor_spec(grads, axes)]
    with jax.enable_x64(True):
        ours = _updates(optjax.scale_by_factored_rms(min_dim_size_to_factor=2), grads)
        theirs = _updates(optax.scale_by_factored_rms(min_dim_size_to_factor=2), grads)
    assert _worst_relative_error(ours, want) < 1e-13
    assert _worst_relative_error(theirs, want) > 1e-10  # optax's float32 decay rate


@pytest.mark.parametrize("name, args, spec, same_as_optax", CASES, ids=CASE_IDS)
def test_schedules_in_float64(name, args, spec, same_as_optax):
    del same_as_optax
    with jax.enable_x64(True):
        values = jax.jit(getattr(optjax, name)(*args))(jnp.asarray(STEPS, jnp.int32))
    assert values.dtype == jnp.float64
    np.testing.assert_allclose(values, [spec(t) for t in STEPS], rtol=1e-12, atol=1e-15)


def test_a_scheduled_learning_rate_reaches_the_step_in_float64():
    schedule = optjax.cosine_decay_schedule(0.1, 10)
    grads = _grads((4,), n=8)
    with jax.enable_x64(True):
        got = _updates(optjax.sgd(schedule), grads)
    want = [-g * 0.1 * 0.5 * (1 + np.cos(np.pi * t / 10)) for t, g in enumerate(grads)]
    np.testing.assert_allclose(np.stack(got), np.stack(want), rtol=1e-14)


@pytest.mark.parametrize("name", ROWS)
def test_every_row_under_x64_keeps_the_params_dtypes_and_steps_finitely(name):
    """float64 params stay float64; float32 params beside them stay float32 (the float64
    scalars are cast to each leaf's dtype, never promoted)."""
    with jax.enable_x64(True):
        params = {"w": jnp.ones((4, 3), jnp.float64), "s": jnp.ones((), jnp.float64)}
        params |= {"f": jnp.ones((3, 2), jnp.float32)}
        tx = ROWS[name].make(1e-2)
        state = tx.init(params)
        update = tx.update  # op by op: two steps cost less than a compile
        for _ in range(2):
            grads = jax.tree.map(lambda p: p * 0.3 + 0.1, params)
            updates, state = update(grads, state, params)
            params = optjax.apply_updates(params, updates)
        for tree in (updates, params):
            assert {k: x.dtype for k, x in tree.items()} == {
                "w": jnp.float64,
                "s": jnp.float64,
                "f": jnp.float32,
            }
            assert all(bool(jnp.all(jnp.isfinite(x))) for x in tree.values())
