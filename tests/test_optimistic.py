"""Noise (add_noise with optax's ``key``, noisy_sgd), optimistic gradients (the primitive,
optimistic_gradient_descent, optimistic_adam and its v2) and Polyak's step size (the primitive,
polyak_sgd) against optax 0.2.8 step by step, in float64 and float32; then the places where
optjax is right and optax is not, the flat layout, and bad hyperparameters.

polyak_sgd's row in the conformance table is given the loss (``value=``) from the objective.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_gradient_ops import (
    assert_flat_matches_tree,
    assert_matches_optax,
    flat_and_tree,
    flat_test_tree,
    random_tree,
    trajectory,
)

from optjax.optimizers.optimistic import (
    noisy_sgd,
    optimistic_adam,
    optimistic_adam_v2,
    optimistic_gradient_descent,
    polyak_sgd,
)
from optjax.transforms.noise import add_noise
from optjax.transforms.optimistic import scale_by_optimistic_gradient, scale_by_polyak

STEPS = 3
SHAPES = {"scalar": (), "vector": (5,), "matrix": (4, 3)}
# Two leaves of each shape: add_noise draws a shape's noise for all its leaves in one call.
NOISY_SHAPES = {"scalar": (), "matrix": (4, 3), "scalar_2": (), "matrix_2": (4, 3)}
INT32_MAX = 2**31 - 1


def _quiet(make):
    """``make`` with optax's DeprecationWarnings (optimistic_adam, seed=) silenced."""

    def build():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return make()

    return build


def _values(seed, low=0.5, high=3.0):
    """A loss value per step, for Polyak's step (``value=``)."""
    rng = np.random.default_rng(seed)
    return [{"value": np.float32(v)} for v in rng.uniform(low, high, STEPS)]


KEY = jax.random.key(7)

# (ours, optax's, the keyword extras of each step, state fields compared)
CASES = {
    "add_noise(key)": (
        lambda: add_noise(0.3, 0.55, KEY),
        lambda: optax.add_noise(0.3, 0.55, KEY),
        (),
        ("count",),
    ),
    "noisy_sgd(eta, gamma, int key)": (
        lambda: noisy_sgd(0.05, eta=0.2, gamma=0.3, key=11),
        lambda: optax.noisy_sgd(0.05, eta=0.2, gamma=0.3, key=11),
        (),
        (),
    ),
    "scale_by_optimistic_gradient": (
        scale_by_optimistic_gradient,
        optax.scale_by_optimistic_gradient,
        (),
        ("previous_gradient",),
    ),
    "scale_by_optimistic_gradient(0.3, 2)": (
        lambda: scale_by_optimistic_gradient(alpha=0.3, beta=2.0),
        lambda: optax.scale_by_optimistic_gradient(alpha=0.3, beta=2.0),
        (),
        (),
    ),
    "optimistic_gradient_descent": (
        lambda: optimistic_gradient_descent(0.1),
        lambda: optax.optimistic_gradient_descent(0.1),
        (),
        (),
    ),
    "optimistic_gradient_descent(alpha, beta)": (
        lambda: optimistic_gradient_descent(0.05, alpha=0.5, beta=0.25),
        lambda: optax.optimistic_gradient_descent(0.05, alpha=0.5, beta=0.25),
        (),
        (),
    ),
    "optimistic_adam": (
        lambda: optimistic_adam(0.01),
        _quiet(lambda: optax.optimistic_adam(0.01)),
        (),
        ("mu", "nu"),
    ),
    "optimistic_adam(optimism, ...)": (
        lambda: optimistic_adam(0.02, 0.1, b1=0.8, b2=0.99, eps=1e-6, nesterov=False),
        _quiet(lambda: optax.optimistic_adam(0.02, 0.1, b1=0.8, b2=0.99, eps=1e-6, nesterov=False)),
        (),
        (),
    ),
    "optimistic_adam_v2": (
        lambda: optimistic_adam_v2(0.01),
        lambda: optax.optimistic_adam_v2(0.01),
        (),
        (),
    ),
    "optimistic_adam_v2(alpha, beta, ...)": (
        lambda: optimistic_adam_v2(0.02, alpha=0.5, beta=0.3, b2=0.99, eps_root=1e-8),
        lambda: optax.optimistic_adam_v2(0.02, alpha=0.5, beta=0.3, b2=0.99, eps_root=1e-8),
        (),
        (),
    ),
    "scale_by_polyak": (scale_by_polyak, optax.scale_by_polyak, _values(0), ()),
    "scale_by_polyak(sps+, ...)": (
        lambda: scale_by_polyak(f_min=1.0, max_learning_rate=0.2, eps=1e-3, variant="sps+"),
        lambda: optax.scale_by_polyak(f_min=1.0, max_learning_rate=0.2, eps=1e-3, variant="sps+"),
        _values(1),  # some values below f_min: a zero step
        (),
    ),
    "polyak_sgd": (polyak_sgd, optax.polyak_sgd, _values(2), ()),
    "polyak_sgd(...)": (
        lambda: polyak_sgd(max_learning_rate=0.5, f_min=-1.0, eps=0.1, variant="sps+"),
        lambda: optax.polyak_sgd(max_learning_rate=0.5, f_min=-1.0, eps=0.1, variant="sps+"),
        _values(3, low=-2.0),
        (),
    ),
}


# The noisy cases' transforms with no noise (eta = 0), for the size of each update's terms.
NOISELESS = {
    "add_noise(key)": lambda: add_noise(0.0, 0.55, KEY),
    "noisy_sgd(eta, gamma, int key)": lambda: noisy_sgd(0.05, eta=0.0, gamma=0.3, key=11),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax(name, standard_promotion):
    ours, theirs, extras, fields = CASES[name]
    # Random bits compile slowly: the noisy cases take two leaves and two steps.
    noiseless = NOISELESS.get(name)
    shapes, steps = (NOISY_SHAPES, 2) if noiseless else (SHAPES, STEPS)
    params = random_tree(0, shapes)
    grads = [random_tree(1 + t, shapes) for t in range(steps)]
    assert_matches_optax(
        ours, theirs, params, grads, extras, state_fields=fields, noiseless=noiseless
    )


# ------------------------------------------------------------ where optax is wrong or crashes


def test_optimistic_gradient_descent_accepts_schedules():
    # optax's signature types alpha and beta as ScalarOrSchedule, but its step adds them to
    # numbers: a schedule is a TypeError. optimistic_adam refuses a learning-rate schedule.
    alpha = lambda count: jnp.where(count < 2, 1.0, 0.5)
    beta = lambda count: 0.25 * (count + 1).astype(jnp.float32)
    tx = optax.optimistic_gradient_descent(0.1, alpha=alpha, beta=beta)
    with pytest.raises(TypeError):
        tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
    with pytest.raises(ValueError), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        optax.optimistic_adam(optax.constant_schedule(0.1))

    grads = [
        np.asarray(g["vector"], np.float64) for g in (random_tree(t, SHAPES) for t in range(4))
    ]
    ours = jax.jit(
        lambda gs: _updates_of(optimistic_gradient_descent(0.1, alpha=alpha, beta=beta), gs)
    )([jnp.asarray(g, jnp.float32) for g in grads])
    previous = grads[0]
    for t, (g, u) in enumerate(zip(grads, ours)):
        a, b = (1.0 if t < 2 else 0.5), 0.25 * (t + 1)
        np.testing.assert_allclose(u, -0.1 * ((a + b) * g - b * previous), rtol=1e-5, atol=1e-7)
        previous = g
    # optimistic_adam with a schedule equals it with the schedule's constant value.
    with_schedule, constant = jax.jit(
        lambda gs: (
            _updates_of(optimistic_adam(lambda count: 0.1), gs),
            _updates_of(optimistic_adam(0.1), gs),
        )
    )([jnp.asarray(g, jnp.float32) for g in grads])
    np.testing.assert_allclose(np.asarray(with_schedule), np.asarray(constant), rtol=1e-6)


def _updates_of(tx, grads, params=None):
    params = jnp.zeros_like(grads[0]) if params is None else params
    return [u for u, _ in trajectory(tx, lambda p, u: p, params, grads)]


def test_polyak_sgd_scaling_multiplies_the_step():
    # optax chains sgd(scaling) before scale_by_polyak, whose norm then sees s g: its step is
    # -min(gap / (s ||g||^2), s max_lr) g, not the documented -s min(gap / ||g||^2, max_lr) g.
    g, value, s = jnp.array([1.0, 2.0]), jnp.float32(5.0), 0.5  # gap / ||g||^2 = 1
    theirs = optax.polyak_sgd(max_learning_rate=100.0, scaling=s)
    ours = polyak_sgd(max_learning_rate=100.0, scaling=s)
    u_theirs = theirs.update(g, theirs.init(g), g, value=value)[0]
    u_ours = ours.update(g, ours.init(g), g, value=value)[0]
    np.testing.assert_allclose(u_ours, -s * 1.0 * g)  # s times the Polyak step
    np.testing.assert_allclose(u_theirs, -g / s)  # 1 / s times: 4x ours
    # The cap too: s max_lr, in both.
    capped = polyak_sgd(max_learning_rate=0.1, scaling=s)
    np.testing.assert_allclose(capped.update(g, capped.init(g), g, value=value)[0], -s * 0.1 * g)


def test_scale_by_polyak_keeps_stepping_below_machine_epsilon():
    # optax takes a zero step whenever ||g||^2 + eps <= 2.2e-16 (float64's epsilon), so near a
    # minimum, or on a loss of small scale, Polyak's step stops although gap / ||g||^2 is fine.
    g, value = jnp.array([3e-9, 4e-9]), jnp.float32(1.25e-17)  # ||g||^2 = 2.5e-17: step 0.5
    theirs = optax.scale_by_polyak().update(g, optax.EmptyState(), value=value)[0]
    tx = scale_by_polyak()
    ours = tx.update(g, tx.init(g), value=value)[0]
    np.testing.assert_array_equal(theirs, [0.0, 0.0])
    np.testing.assert_allclose(ours, 0.5 * g, rtol=1e-6)
    zero = tx.update(jnp.zeros(2), tx.init(g), value=value)[0]  # no gradient: no 0/0
    np.testing.assert_array_equal(zero, [0.0, 0.0])


def test_scale_by_polyak_refuses_a_bad_variant_at_construction():
    # optax builds the transform and fails only at its first update.
    theirs = optax.scale_by_polyak(variant="spss")
    with pytest.raises(ValueError):
        theirs.update(jnp.ones(2), optax.EmptyState(), value=1.0)
    with pytest.raises(ValueError, match=r"variant must be one of \['sps', 'sps\+'\]"):
        scale_by_polyak(variant="spss")


# ------------------------------------------------------------------------------- behaviour


def test_polyak_update_needs_the_value():
    for tx in (scale_by_polyak(), polyak_sgd()):
        with pytest.raises(ValueError, match="value=loss"):
            tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.ones(2))


def test_optimistic_count_saturates_and_stays_past_the_first_step():
    tx = scale_by_optimistic_gradient()
    state = tx.init(jnp.zeros(2))._replace(
        count=jnp.asarray(INT32_MAX, jnp.int32), previous_gradient=jnp.array([1.0, 1.0])
    )
    u, state = tx.update(jnp.array([3.0, 2.0]), state)
    assert state.count.dtype == jnp.int32 and int(state.count) == INT32_MAX
    np.testing.assert_array_equal(u, [5.0, 3.0])  # 2 g - g_prev: not a first step


def test_add_noise_takes_every_kind_of_key(standard_promotion):
    leaf = jnp.zeros(4)
    kinds = {
        "key": lambda: add_noise(1.0, 0.5, key=jax.random.key(5)),
        "int": lambda: add_noise(1.0, 0.5, key=5),
        "positional": lambda: add_noise(1.0, 0.5, 5),  # the third argument is the key
        "seed": lambda: add_noise(1.0, 0.5, seed=5),
        "raw": lambda: add_noise(1.0, 0.5, key=jax.random.PRNGKey(5)),
        "optax": lambda: optax.add_noise(1.0, 0.5, key=5),
        # Another generator's key keeps its generator: optax's noise for it, and the state's
        # raw key data (checkpointable) is that generator's.
        "rbg": lambda: add_noise(1.0, 0.5, jax.random.key(5, impl="rbg")),
        "optax rbg": lambda: optax.add_noise(1.0, 0.5, jax.random.key(5, impl="rbg")),
    }

    def first_steps():
        return {kind: make().update(leaf, make().init(leaf)) for kind, make in kinds.items()}

    steps = jax.jit(first_steps)()
    for kind in ("int", "positional", "seed", "raw", "optax"):
        np.testing.assert_array_equal(steps[kind][0], steps["key"][0], err_msg=kind)
    np.testing.assert_array_equal(steps["rbg"][0], steps["optax rbg"][0])
    assert not np.array_equal(steps["rbg"][0], steps["key"][0])
    rbg_data = jax.random.key_data(jax.random.key(5, impl="rbg"))
    assert steps["rbg"][1].rng_key.shape == rbg_data.shape != steps["key"][1].rng_key.shape
    with pytest.raises(ValueError, match="give the random key once"):
        add_noise(0.1, 0.5, key=1, seed=1)


# --------------------------------------------------------------------------------- flat layout

FLAT_CASES = {
    "scale_by_optimistic_gradient": (lambda: scale_by_optimistic_gradient(0.5, 2.0), False),
    "optimistic_adam_v2": (lambda: optimistic_adam_v2(0.1), False),
    "polyak_sgd": (lambda: polyak_sgd(0.5, eps=1e-3), True),
}


@pytest.mark.parametrize("name", sorted(FLAT_CASES))
def test_flat_layout_matches_the_tree_path(name):
    make, needs_value = FLAT_CASES[name]
    params, grads = flat_test_tree(6, steps=3)
    extras = [{"value": jnp.float32(v)} for v in (2.0, 1.0, 0.5)] if needs_value else ()
    want, got = flat_and_tree(make, params, grads, extras)
    assert_flat_matches_tree(want, got)


# ------------------------------------------------------------------------ bad hyperparameters


@pytest.mark.parametrize(
    "make, name, bad",
    [
        (lambda v: add_noise(key=v), "key", [1.5, "3", [3], True, 2**40, jnp.ones(2), np.nan]),
        (lambda v: add_noise(seed=v), "seed", [1.5, "3", True, 2**40]),
        (lambda v: noisy_sgd(0.1, key=v), "key", [2.0, jnp.ones(2, jnp.int32)]),
        (lambda v: noisy_sgd(v), "learning_rate", [-0.1, np.nan, "0.1"]),
        (lambda v: noisy_sgd(0.1, eta=v), "eta", [-1.0, np.inf]),
        (lambda v: scale_by_optimistic_gradient(alpha=v), "alpha", [-0.5, np.nan, "1", None]),
        (lambda v: scale_by_optimistic_gradient(beta=v), "beta", [-1e-3, np.inf, [1.0]]),
        (lambda v: optimistic_gradient_descent(v), "learning_rate", [-1.0, np.nan]),
        (lambda v: optimistic_gradient_descent(0.1, alpha=v), "alpha", [-1.0, 1e39]),
        (lambda v: optimistic_adam(v), "learning_rate", [-1.0, np.nan, None]),
        (lambda v: optimistic_adam(0.1, optimism=v), "optimism", [-1.0, np.inf, "1"]),
        (lambda v: optimistic_adam(0.1, b1=v), "b1", [1.0, -0.1]),
        (lambda v: optimistic_adam_v2(0.1, beta=v), "beta", [-2.0, np.nan]),
        (lambda v: optimistic_adam_v2(0.1, b2=v), "b2", [1.5, np.nan]),
        (lambda v: scale_by_polyak(f_min=v), "f_min", [np.inf, np.nan, "0"]),
        (lambda v: scale_by_polyak(max_learning_rate=v), "max_learning_rate", [-1.0, np.nan]),
        (lambda v: scale_by_polyak(eps=v), "eps", [-1e-8, np.inf]),
        (lambda v: scale_by_polyak(variant=v), "variant", ["SPS", "sps++", None]),
        (lambda v: polyak_sgd(scaling=v), "scaling", [-0.5, np.nan, "1"]),
        (lambda v: polyak_sgd(max_learning_rate=v), "max_learning_rate", [-0.1, None]),
    ],
)
def test_bad_hyperparameters_raise_naming_the_argument(make, name, bad):
    for value in bad:
        with pytest.raises(ValueError, match=rf"^{name} must be .*{name}="):
            make(value)


def test_traced_hyperparameters_are_accepted():
    g = {"w": jnp.ones((3, 2)), "b": jnp.ones(3)}

    def build(v, k):
        transforms = [
            add_noise(v, v, k),
            add_noise(v, v, seed=k),
            noisy_sgd(v, v, v, key=jax.random.key(k)),
            optimistic_gradient_descent(v, v, v),
            optimistic_adam(v, v, v, v, v, v),
            optimistic_adam_v2(v, alpha=v, beta=v),
        ]
        outs = [tx.update(g, tx.init(g), g)[0] for tx in transforms]
        for tx in (scale_by_polyak(v, v, v), polyak_sgd(v, v, v, v)):
            outs.append(tx.update(g, tx.init(g), g, value=v)[0])
        return outs

    jax.make_jaxpr(build)(jnp.float32(0.5), jnp.int32(3))


def test_traced_key_forms_are_accepted():
    leaf = jnp.zeros(3)

    def noise(key):
        tx = add_noise(1.0, 0.5, key)
        return tx.update(leaf, tx.init(leaf))[0]

    typed = jax.jit(noise)(jax.random.key(2))
    raw = jax.jit(noise)(jax.random.PRNGKey(2))
    seeded = jax.jit(noise)(jnp.int32(2))
    np.testing.assert_array_equal(typed, raw)
    np.testing.assert_array_equal(typed, seeded)
    with pytest.raises(ValueError, match=r"key must be an int32 integer or a jax\.random key"):
        jax.jit(noise)(jnp.float32(2.0))
