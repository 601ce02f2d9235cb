"""signSGD, Signum and Rprop, and their primitives (scale_by_sign, scale_by_rprop), against
optax 0.2.8 step by step on the same gradients; the two places where optax's Rprop is wrong
(a step late, and blind to flips whose gradient product underflows); the flat layout;
hyperparameter validation.

The trajectories run eagerly: the runs share their few small operations (compiled once per
shape and dtype), which costs far less than compiling a program per run; jitted steps are
checked by the flat-layout test here and the conformance table.
"""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_flat import assert_close
from test_flat import trajectory as flat_trajectory

import optjax
from optjax import flat
from optjax.optimizers.sign import rprop, sign_sgd, signum
from optjax.transforms.sign import ScaleByRpropState, scale_by_rprop, scale_by_sign

# Rows for tests/test_conformance.py's ROWS (to be merged there, as optjax.sign_sgd, ...). Sign
# descent with a constant rate ends in a cycle of its own size (on Rosenbrock's curved valley,
# one that stalls far from the minimum): the rate decays, as the signSGD paper's does.

STEPS = 6
SHAPES = {"scalar": (), "matrix": (4, 3)}


def problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = {k: jnp.asarray(rng.normal(size=s), dtype) for k, s in SHAPES.items()}
    grads = [
        {k: jnp.asarray(rng.normal(size=s), dtype) for k, s in SHAPES.items()} for _ in range(STEPS)
    ]
    return params, grads


def trajectory(tx, apply, params, grads):
    """``[(updates, params, state)]`` after each step."""
    state, out = tx.init(params), []
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = apply(params, updates)
        out.append(jax.tree.map(np.asarray, (updates, params, state)))
    return out


def constant(value):
    return lambda count: jnp.where(count >= 0, value, 0.0)  # a schedule, constant in value


CASES = [
    (
        "scale_by_sign",
        lambda: optjax.chain(scale_by_sign(), optjax.scale(-0.1)),
        lambda: optax.chain(optax.scale_by_sign(), optax.scale(-0.1)),
    ),
    ("sign_sgd", lambda: sign_sgd(0.1), lambda: optax.sign_sgd(0.1)),
    ("sign_sgd(schedule)", lambda: sign_sgd(constant(0.2)), lambda: optax.sign_sgd(constant(0.2))),
    ("signum", lambda: signum(0.1), lambda: optax.signum(0.1)),
    (
        "signum(schedule,beta)",
        lambda: signum(constant(0.05), beta=0.5),
        lambda: optax.signum(constant(0.05), beta=0.5),
    ),
]


@pytest.mark.parametrize("name,ours,theirs", CASES, ids=[c[0] for c in CASES])
def test_matches_optax_step_by_step_in_float64(name, ours, theirs, standard_promotion):
    with jax.enable_x64(True):
        params, grads = problem(jnp.float64)
        got = trajectory(ours(), optjax.apply_updates, params, grads)
        want = trajectory(theirs(), optax.apply_updates, params, grads)
    for (u, p, _), (u_ref, p_ref, _) in zip(got, want, strict=True):
        for a, b in zip(jax.tree.leaves((u, p)), jax.tree.leaves((u_ref, p_ref)), strict=True):
            assert a.dtype == b.dtype == np.float64
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12)


RPROP_CASES = {
    "default": dict(learning_rate=0.1),
    # Small bounds, so that both clips are reached within the steps.
    "bounds": dict(
        learning_rate=0.05, eta_minus=0.3, eta_plus=1.5, min_step_size=0.02, max_step_size=0.1
    ),
}


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=str)
@pytest.mark.parametrize("case", sorted(RPROP_CASES))
def test_rprop_matches_optax_state_step_by_step(case, dtype, standard_promotion):
    # optax's state holds the step it should have taken (see the test below): optjax's updates
    # are -state.prev_updates of optax, and both keep the same step sizes.
    kwargs = RPROP_CASES[case]
    with jax.enable_x64(dtype == jnp.float64):
        params, grads = problem(dtype)
        got = trajectory(rprop(**kwargs), optjax.apply_updates, params, grads)
        want = trajectory(optax.rprop(**kwargs), optax.apply_updates, params, grads)
    for (u, _, (state, _)), (_, _, (state_ref, _)) in zip(got, want, strict=True):
        assert isinstance(state, ScaleByRpropState)
        for k in SHAPES:
            np.testing.assert_allclose(u[k], -state_ref.prev_updates[k], rtol=1e-6)
            np.testing.assert_allclose(state.prev_updates[k], state_ref.prev_updates[k], rtol=1e-6)
            np.testing.assert_allclose(state.step_sizes[k], state_ref.step_sizes[k], rtol=1e-6)
    assert np.any(u["matrix"] == 0)  # some signs flipped: those steps were skipped
    sizes = np.concatenate([np.ravel(s[2][0].step_sizes["matrix"]) for s in got])
    if case == "bounds":
        np.testing.assert_allclose([sizes.min(), sizes.max()], [0.02, 0.1], rtol=1e-6)


def test_rprop_steps_on_the_current_gradient_where_optax_lags_a_step():
    # optax.rprop returns the previous step's update: its first update is 0, and each later
    # one is the step Rprop takes on the gradient before. Rprop steps on the current one.
    grads = [jnp.array([1.0, -2.0])] * 3  # signs kept: each step 1.2 times the last
    for make, want in [
        (rprop, [[-0.1, 0.1], [-0.12, 0.12], [-0.144, 0.144]]),
        (optax.rprop, [[0.0, 0.0], [-0.1, 0.1], [-0.12, 0.12]]),
    ]:
        tx = make(0.1)
        state, got = tx.init(jnp.zeros(2)), []
        for g in grads:
            u, state = tx.update(g, state)
            got.append(u)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, err_msg=make.__module__)


def test_rprop_sees_sign_flips_where_optax_gradient_product_underflows():
    # optax tests g_t * prev_t > 0: in float16 a gradient of 3e-4 times a step of 5e-5 is 1.5e-8,
    # below half the smallest float16 (6e-8), so it is 0 and every flip goes unseen: the step
    # never shrinks and the parameter oscillates at full step. optjax multiplies the signs.
    grads = [jnp.array([3e-4 * (-1) ** t], jnp.float16) for t in range(5)]
    sizes = {}
    for lib, make in [("optjax", rprop), ("optax", optax.rprop)]:
        tx = make(5e-5)
        state = tx.init(jnp.zeros(1, jnp.float16))
        for g in grads:
            _, state = tx.update(g, state)
        sizes[lib] = float(state[0].step_sizes[0])
    assert sizes["optax"] == pytest.approx(5e-5, rel=1e-3)  # never shrunk
    assert sizes["optjax"] == pytest.approx(5e-5 * 0.5**2, rel=1e-3)  # halved at each flip


def test_rprop_step_sizes_are_float32_for_bf16_params_and_track_float64():
    # A bf16 step size drifts as it is multiplied by 1.2 and 0.5 in turn (0.1 * 1.2 is already
    # 0.1201 in bf16); optjax keeps it in float32.
    params, grads = problem(jnp.bfloat16)
    with jax.enable_x64(True):
        wide = jax.tree.map(lambda x: x.astype(jnp.float64), (params, grads))
        exact = trajectory(rprop(0.1), optjax.apply_updates, *wide)[-1][2][0].step_sizes
    ours = trajectory(rprop(0.1), optjax.apply_updates, params, grads)[-1][2][0]
    theirs = trajectory(optax.rprop(0.1), optax.apply_updates, params, grads)[-1][2][0]
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(ours.step_sizes))
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(ours.prev_updates))
    error = lambda sizes: max(
        float(np.max(np.abs(np.asarray(sizes[k], np.float64) / exact[k] - 1))) for k in SHAPES
    )
    assert error(ours.step_sizes) < 1e-6 < error(theirs.step_sizes)


LR_BF16 = float(jnp.asarray(0.1, jnp.bfloat16))


def test_signum_accumulator_dtype_and_bf16_params():
    params, grads = problem(jnp.bfloat16)
    for dtype in (None, jnp.float32):
        tx = signum(0.1, accumulator_dtype=dtype)
        out = trajectory(tx, optjax.apply_updates, params, grads)
        updates, _, (state, *_) = out[-1]
        assert all(m.dtype == (dtype or jnp.bfloat16) for m in jax.tree.leaves(state.ema))
        assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
        assert set(np.unique(np.abs(updates["matrix"].astype(np.float32)))) <= {0.0, LR_BF16}


def test_complex_leaves_keep_their_phase():
    g = jnp.array([3.0 + 4.0j, -2.0j])
    u = scale_by_sign().update(g, optjax.EmptyState())[0]
    np.testing.assert_allclose(u, [0.6 + 0.8j, -1.0j], rtol=1e-6)
    tx = scale_by_rprop(0.1)
    state = tx.init(jnp.zeros(2, jnp.complex64))
    assert state.step_sizes.dtype == jnp.float32  # step sizes are real
    u, state = tx.update(g, state)
    np.testing.assert_allclose(u, 0.1 * np.asarray([0.6 + 0.8j, -1.0j]), rtol=1e-6)
    # Re(g_2 conj(g_1)): -3 + 4 > 0 on the first (same way), -2 < 0 on the second (a flip).
    u, state = tx.update(jnp.array([-1.0 + 2.0j, 1.0j]), state)
    np.testing.assert_allclose(state.step_sizes, [0.12, 0.05], rtol=1e-6)
    np.testing.assert_allclose(u, [0.12 * (-1.0 + 2.0j) / math.sqrt(5), 0.0], rtol=1e-6)


def test_flat_layout_matches_tree_path():
    parts = [rprop(0.1), signum(0.1), sign_sgd(0.1)]
    assert all(flat.is_flat_ready(t) for t in parts)
    rng = np.random.default_rng(5)
    shapes = {"w": ((7, 5), jnp.float32), "s": ((), jnp.float32), "h": ((3, 4), jnp.bfloat16)}
    params = {k: jnp.asarray(rng.normal(size=s), d) for k, (s, d) in shapes.items()}
    grads = [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        for _ in range(3)
    ]
    make = lambda: optjax.chain(*parts)  # elementwise all through
    want = flat_trajectory(make(), params, grads)
    got = flat_trajectory(make(), params, grads, pack=flat.FlatLayout.of(params).flatten)
    for w, g in zip(want, got):
        assert_close(g, w, ulps=2)


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (sign_sgd, optax.sign_sgd),
        (signum, optax.signum),
        (rprop, optax.rprop),
        (scale_by_sign, optax.scale_by_sign),
        (scale_by_rprop, optax.scale_by_rprop),
    ],
    ids=lambda f: f.__name__,
)
def test_arguments_and_defaults_are_optax(ours, theirs):
    defaults = lambda f: [(k, p.default) for k, p in inspect.signature(f).parameters.items()]
    assert defaults(ours) == defaults(theirs)


NOT_NUMBERS = [math.inf, math.nan, 1e39, "0.1", [0.1], True, None]
BAD = {
    ">= 0": [*NOT_NUMBERS, -1.0, -1e-30],
    "> 0": [*NOT_NUMBERS, 0.0, -1.0, constant(0.1)],  # a number: no schedule
    "(0, 1]": [*NOT_NUMBERS, 0.0, 1.5],
    ">= 1": [*NOT_NUMBERS, 0.9, -1.0],
    "[0, 1)": [*NOT_NUMBERS, 1.0, -0.1],
    "rate": [math.inf, math.nan, "0.1", True, None, -1.0],  # a schedule is allowed
}
RPROP_RANGES = {"learning_rate": "> 0", "eta_minus": "(0, 1]", "eta_plus": ">= 1"}
RPROP_RANGES |= {"min_step_size": ">= 0", "max_step_size": "> 0"}
HYPERPARAMETERS = [
    (scale_by_rprop, {"learning_rate": 0.1}, RPROP_RANGES),
    (rprop, {"learning_rate": 0.1}, RPROP_RANGES),
    (sign_sgd, {"learning_rate": 0.1}, {"learning_rate": "rate"}),
    (signum, {"learning_rate": 0.1}, {"learning_rate": "rate", "beta": "[0, 1)"}),
]


@pytest.mark.parametrize(
    "make,base,ranges", HYPERPARAMETERS, ids=[m.__name__ for m, _, _ in HYPERPARAMETERS]
)
def test_bad_hyperparameters_raise_naming_the_argument(make, base, ranges):
    for name, kind in ranges.items():
        for bad in BAD[kind]:
            with pytest.raises(ValueError, match=rf"^{name} must be .*got {name}="):
                make(**{**base, name: bad})
    # Traced values (a constructor called under jit, vmap or inject_hyperparams) are accepted.
    jax.make_jaxpr(lambda x: (make(**{**base, **dict.fromkeys(ranges, x)}), x)[1])(0.5)


def test_rprop_step_size_bounds_must_be_ordered():
    with pytest.raises(ValueError, match="max_step_size must be >= min_step_size"):
        rprop(0.1, min_step_size=1.0, max_step_size=0.5)
