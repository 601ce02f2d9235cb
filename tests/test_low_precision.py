"""Optimizers on bf16 and fp16 parameters take float32's steps, within the precision's noise.

Two traps, run for every optimizer and preset of the conformance table:

- bf16 cannot forget: a decay of 0.1% per step is below half a bf16 ulp, so a second moment kept
  in bf16 never decays (b2 = 0.999 acts as 1). After the gradients shrink tenfold, Adam's bf16
  step falls to 0.7x float32's within a thousand steps.
- fp16 underflows: (1 - b2) g^2 is below fp16's smallest number for |g| < ~8e-3, v_t is 0 and
  Adam's first step is m / eps, inf in fp16.

Second moments and slow averages are therefore held in float32 for bf16 and fp16 parameters;
the state dtypes are asserted here too. The parameters stay fixed (the updates are compared,
not applied), so each step is a function of the gradients alone in both precisions.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_conformance import ROWS

import optjax

BF16, FP16, F32 = jnp.bfloat16, jnp.float16, jnp.float32

# The state fields that hold second moments (averages and sums of g^2, Adamax's norm).
SECOND_MOMENTS = ("nu", "nu_max", "e_g", "e_x", "sum_of_squares", "v_row", "v_col", "v")

# torch.LBFGS's inner iterations take their gradients from the objective at the points its line
# search tries, not from the gradients passed: in bf16 a trial step below the params' ulp leaves
# the loss unchanged and ends the search (as in torch). The premise here, a step that is a
# function of the gradients passed, does not hold for it.
OWN_GRADIENTS = {"torch.LBFGS_strong_wolfe"}
GRADIENT_DRIVEN = [name for name in ROWS if name not in OWN_GRADIENTS]

SHAPES = {"w": (2, 3), "b": (4,)}  # torch.Adafactor factors w; optjax's Adafactor keeps it whole


def _params(dtype):
    return {name: jnp.ones(shape, dtype) for name, shape in SHAPES.items()}


def _directions(seed):
    """Fixed gradient directions (NumPy) with magnitudes in [0.5, 2], signs mixed."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape)
        for name, shape in SHAPES.items()
    }


def _steps(tx, params, grads):
    """Every step's updates (as float32) for the stacked gradients ``grads`` (leading axis: the
    step), the params held fixed; and the final state."""

    def step(state, g):
        u, state = tx.update(g, state, params)
        return state, jax.tree.map(lambda x: x.astype(F32), u)

    state, updates = jax.lax.scan(step, tx.init(params), grads)
    return updates, state


def _assert_second_moments_are_float32(state):
    found = 0
    for name in SECOND_MOMENTS:
        for leaf in jax.tree.leaves(optjax.tree.get_all_by_name(state, name)):
            assert leaf.dtype == F32, (name, leaf.dtype)
            found += 1
    return found


def _forgetting_run(make, dtype, first=200, then=800):
    """``first`` steps of gradients about g, then ``then`` steps about g / 10 (each step's
    gradient jittered by up to 50%, rounded to bf16 for both runs: the same numbers)."""
    rng = np.random.default_rng(0)
    steps = first + then
    scales = np.concatenate([np.ones(first), np.full(then, 0.1)])
    grads = {
        name: jnp.asarray(
            scales.reshape(-1, *[1] * len(shape)) * rng.uniform(0.5, 1.5, (steps, *shape)) * d,
            BF16,
        ).astype(dtype)
        for (name, shape), d in zip(SHAPES.items(), _directions(0).values())
    }
    return _steps(make(), _params(dtype), grads)


@pytest.mark.parametrize("name", GRADIENT_DRIVEN)
def test_bf16_second_moment_forgets_like_float32(name):
    make = functools.partial(ROWS[name].make, 1e-2)
    (want, _), (got, state) = jax.jit(
        lambda: (_forgetting_run(make, F32), _forgetting_run(make, BF16))
    )()
    for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        w, g = np.asarray(w), np.asarray(g)
        scale = np.max(np.abs(w[-100:]), axis=0, keepdims=True)
        # The last 100 steps, long after the tenfold drop. A first moment kept in bf16 (the
        # params' dtype, as in optax) stops moving once (1 - b1) |g - m| is below half its ulp:
        # within 2^-8 / (1 - b1), 4% for b1 = 0.9, of float32's. A frozen v_t is off by 30%.
        np.testing.assert_allclose(g[-100:], w[-100:], rtol=5e-2, atol=float(np.max(scale)) * 1e-2)
    _assert_second_moments_are_float32(state)


def _small_gradient_run(make, dtype, steps=5):
    """Gradients with |g| in [1e-4, 5e-3]: their squares times 1 - b2 underflow in fp16."""
    rng = np.random.default_rng(1)
    grads = {
        name: jnp.asarray(
            rng.uniform(1e-4, 5e-3, (steps, *shape)) * rng.choice([-1, 1], (steps, *shape)),
            FP16,  # the same numbers in both runs
        ).astype(dtype)
        for name, shape in SHAPES.items()
    }
    return _steps(make(), _params(dtype), grads)


@pytest.mark.parametrize("name", GRADIENT_DRIVEN)
def test_fp16_small_gradients_give_finite_float32_steps(name):
    make = functools.partial(ROWS[name].make, 1e-2)
    (want, _), (got, state) = jax.jit(
        lambda: (_small_gradient_run(make, F32), _small_gradient_run(make, FP16))
    )()
    for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        assert np.all(np.isfinite(g)), g
        if name == "torch.Adafactor":
            continue  # torch's eps floor is the machine epsilon of the gradient's dtype
        scale = float(np.max(np.abs(w)))
        # Below fp16's normal range (6.1e-5) its numbers are 6e-8 apart: a step there (DoG's
        # first, ~1e-6) is float32's to half that spacing at best.
        subnormal = float(jnp.finfo(FP16).smallest_subnormal)
        np.testing.assert_allclose(g, w, rtol=1e-2, atol=max(scale * 2e-3, subnormal / 2))
    _assert_second_moments_are_float32(state)


@pytest.mark.parametrize("dtype", [BF16, FP16], ids=str)
def test_state_dtypes_and_the_nu_dtype_override(dtype):
    params = _params(dtype)
    state = optjax.adam(1e-3).init(params)
    assert _assert_second_moments_are_float32(state) == len(SHAPES)
    assert {x.dtype for x in jax.tree.leaves(state[0].mu)} == {jnp.dtype(dtype)}  # m: params'
    low = optjax.adam(1e-3, mu_dtype=dtype, nu_dtype=dtype).init(params)
    assert {x.dtype for x in jax.tree.leaves(low[0].nu)} == {jnp.dtype(dtype)}
    # Adafactor factors a large matrix: its row and column statistics are float32 too.
    big = {"w": jnp.ones((128, 130), dtype)}
    rows = optjax.adafactor().init(big)[0]
    assert rows.v_row["w"].dtype == rows.v_col["w"].dtype == F32
    # The EMA of the parameters is float32, and it moves (0.1% per step: below a bf16 ulp).
    tx = optjax.average_params(optjax.sgd(0.0), decay=0.999)
    averaged = tx.init(params)
    assert {x.dtype for x in jax.tree.leaves(averaged.average)} == {jnp.dtype(F32)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    _, averaged = tx.update(zeros, averaged, params)  # the first iterate: a = 1
    _, averaged = tx.update(zeros, averaged, jax.tree.map(lambda p: p * 0, params))  # x = 0
    np.testing.assert_allclose(averaged.average["b"], 0.999)


def test_flat_path_keeps_float32_moments_for_bf16_params():
    params = {"w": jnp.ones((3, 5), BF16), "b": jnp.ones(7, F32)}
    flat, layout = optjax.flat.flatten(params)
    tx = optjax.adam(1e-2)
    state = tx.init(flat)
    groups = [g.dtype for g in layout.groups]  # the params' dtype of each buffer
    assert [b.dtype for b in state[0].nu.buffers] == [F32, F32]
    assert [b.dtype for b in state[0].mu.buffers] == groups
    grads = layout.flatten(jax.tree.map(lambda p: p * 0.5, params))
    u, state = jax.jit(tx.update)(grads, state, flat)
    assert [b.dtype for b in u.buffers] == groups
    np.testing.assert_allclose(np.asarray(u.unflatten()["w"], F32), -1e-2, rtol=1e-2)


def _training_curve(dtype, steps=200):
    """Full-batch Adam on a small MLP (16-32-4, synthetic teacher labels) with params, inputs
    and gradients in ``dtype`` and the loss in float32: the loss at every step. The suite's
    quick version of benchmarks/low_precision.py (MNIST)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 16))
    y = np.argmax(x @ rng.normal(size=(16, 4)) + 0.5 * rng.normal(size=(256, 4)), axis=1)
    p0 = {
        "w1": rng.normal(size=(16, 32)) / 4,
        "b1": np.zeros(32),
        "w2": rng.normal(size=(32, 4)) / np.sqrt(32),
        "b2": np.zeros(4),
    }
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), p0)
    xs, labels = jnp.asarray(x, dtype), jnp.asarray(y[:, None], jnp.int32)

    def loss(p):
        logits = (jax.nn.relu(xs @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]).astype(F32)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels, axis=1))

    tx = optjax.adam(1e-2)

    def step(carry, _):
        p, state = carry
        value, g = jax.value_and_grad(loss)(p)
        u, state = tx.update(g, state, p)
        return (optjax.apply_updates(p, u), state), value

    return jax.lax.scan(step, (params, tx.init(params)), length=steps)[1]


def test_low_precision_training_curves_follow_float32():
    want, bf16, fp16 = jax.jit(lambda: [_training_curve(d) for d in (F32, BF16, FP16)])()
    want, start = np.asarray(want), float(want[0])
    assert want[-1] < 0.05 * start  # it trains: the gradients shrink a hundredfold on the way
    # The distance between the curves, as a fraction of the initial loss: what the params'
    # own rounding allows (bf16 parameters take coarser steps than float32's late in training).
    assert np.max(np.abs(np.asarray(bf16) - want)) < 1e-2 * start
    assert np.max(np.abs(np.asarray(fp16) - want)) < 1e-3 * start  # fp16 v_t underflowed: NaN
