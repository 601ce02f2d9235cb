"""Differential privacy (differentially_private_aggregate, dpsgd) against optax 0.2.8 step by
step on the same per-example gradients and the same random key; the noise's statistics; where
optax is wrong (its dpsgd warns at every construction, a jax.random.PRNGKey is refused, and an
example whose squared norm overflows is zeroed instead of clipped); hyperparameter validation.

Each run is one jitted lax.scan: op by op, the clipping's vmapped norms cost far more."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax_compare import assert_trajectories_close, constant, worst_error

import optjax
from optjax.contrib._privacy import (
    DifferentiallyPrivateAggregateState,
    differentially_private_aggregate,
    dpsgd,
)

BATCH = 4
SHAPES = {"scalar": (), "matrix": (3, 2)}


def problem(dtype, steps=4, seed=0):
    """``(params, [per-example grads for each step])``, drawn in float64 and cast to ``dtype``;
    the examples' norms spread from below to above the clipping norms used here."""
    rng = np.random.default_rng(seed)
    scales = np.array([0.1, 0.5, 2.0, 8.0])  # one per example
    params = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    grads = [
        {
            k: rng.normal(size=(BATCH, *s)) * scales.reshape((-1,) + (1,) * len(s))
            for k, s in SHAPES.items()
        }
        for _ in range(steps)
    ]
    cast = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)
    with jax.enable_x64(jnp.dtype(dtype).itemsize == 8):
        return cast(params), [cast(g) for g in grads]


def jit_run(tx, params, grads, *, with_params=True):
    """``[(updates, params)]`` after each step, the whole run one jitted lax.scan (optax's
    traced under the standard dtype promotion it needs)."""
    is_optax = type(tx).__module__.startswith("optax")
    apply = optax.apply_updates if is_optax else optjax.apply_updates

    def body(carry, g):
        params, state = carry
        updates, state = tx.update(g, state, params if with_params else None)
        params = apply(params, updates)
        return (params, state), (updates, params)

    @jax.jit
    def trajectory(params, grads):
        with jax.numpy_dtype_promotion("standard" if is_optax else "strict"):
            return jax.lax.scan(body, (params, tx.init(params)), grads)[1]

    out = jax.tree.map(
        np.asarray, trajectory(params, jax.tree.map(lambda *g: jnp.stack(g), *grads))
    )
    return [jax.tree.map(lambda x, t=t: x[t], out) for t in range(len(grads))]


def compare(ours, theirs, float32=True, **kwargs):
    """Float64 agreement; with ``float32``, ours in float32 at least as close to the float64
    run as optax's."""
    with jax.enable_x64(True):
        params, grads = problem(jnp.float64)
        exact = jit_run(ours(), params, grads, **kwargs)
        assert_trajectories_close(exact, jit_run(theirs(), params, grads, **kwargs), 1e-6)
    if float32:
        params, grads = problem(jnp.float32)
        ours32 = worst_error(jit_run(ours(), params, grads, **kwargs), exact)
        theirs32 = worst_error(jit_run(theirs(), params, grads, **kwargs), exact)
        assert ours32 <= theirs32 + float(jnp.finfo(jnp.float32).eps), (ours32, theirs32)


def test_aggregate_matches_optax_on_the_same_key(standard_promotion):
    # In float64; dpsgd's float32 run below checks the aggregate's float32 numbers too.
    compare(
        lambda: differentially_private_aggregate(0.7, 1.1, key=jax.random.key(5)),
        lambda: optax.contrib.differentially_private_aggregate(0.7, 1.1, jax.random.key(5)),
        float32=False,
        with_params=False,
    )


def _optax_dpsgd(*args, **kwargs):
    with pytest.warns(DeprecationWarning, match="seed"):  # see the test below
        return optax.contrib.dpsgd(*args, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=0.5, seed=3),
        dict(
            learning_rate=constant(0.05),
            l2_norm_clip=2.0,
            noise_multiplier=0.2,
            seed=1,
            momentum=0.9,
            nesterov=True,
        ),
    ],
    ids=["default", "nesterov_schedule"],
)
def test_dpsgd_matches_optax(kwargs, standard_promotion):
    compare(lambda: dpsgd(**kwargs), lambda: _optax_dpsgd(**kwargs), float32="momentum" in kwargs)


def test_dpsgd_builds_without_the_deprecation_warning_optax_gives():
    # optax's dpsgd passes its seed on as differentially_private_aggregate's deprecated seed=:
    # every construction warns (an error under warnings-as-errors, as in this suite).
    with pytest.warns(DeprecationWarning, match="seed"):
        optax.contrib.dpsgd(0.1, 1.0, 1.0, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tx = dpsgd(0.1, 1.0, 1.0, seed=0)
    state = tx.init({"w": jnp.zeros(2)})
    assert isinstance(state, tuple) and len(state) == 3  # optax's structure
    assert isinstance(state[0], DifferentiallyPrivateAggregateState)


def test_aggregate_takes_a_raw_prng_key_where_optax_fails():
    raw = jax.random.PRNGKey(4)
    with pytest.raises(TypeError):
        optax.contrib.differentially_private_aggregate(1.0, 1.0, key=raw)
    from_raw = differentially_private_aggregate(1.0, 1.0, key=raw)
    from_key = differentially_private_aggregate(1.0, 1.0, key=jax.random.key(4))
    from_int = differentially_private_aggregate(1.0, 1.0, key=4)
    for tx in from_key, from_int:  # the same key, so the same noise
        np.testing.assert_array_equal(tx.init(None).rng_key, from_raw.init(None).rng_key)


def test_aggregate_clips_an_example_whose_squares_overflow_where_optax_zeroes_it(
    standard_promotion,
):
    # Example 0's norm is 5e19: its squares overflow float32, and optax's norm is inf, so its
    # multiplier C / inf = 0 drops the example. Clipped, it is (0.6, 0.8).
    g = jnp.array([[3e19, 4e19], [3.0, 4.0]])
    ours = differentially_private_aggregate(1.0, 0.0, key=0)
    theirs = optax.contrib.differentially_private_aggregate(1.0, 0.0, key=0)
    got = jax.jit(ours.update)(g, ours.init(None))[0]
    np.testing.assert_allclose(got, [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(theirs.update(g, theirs.init(None))[0], [0.3, 0.4], rtol=1e-6)


def test_noise_has_the_papers_statistics():
    # Zero gradients: each update is N(0, (sigma C)^2) / B elementwise; fresh noise each step.
    clip, sigma, batch = 2.0, 1.5, 8
    tx = differentially_private_aggregate(clip, sigma, key=jax.random.key(0))
    g = {"a": jnp.zeros((batch, 20000)), "b": jnp.zeros((batch, 3))}

    @jax.jit
    def two_steps(state):
        u1, state = tx.update(g, state)
        u2, state = tx.update(g, state)
        return u1, u2

    u1, u2 = two_steps(tx.init(None))
    std = sigma * clip / batch
    assert abs(float(jnp.mean(u1["a"]))) < 4 * std / np.sqrt(20000)
    assert float(jnp.std(u1["a"])) == pytest.approx(std, rel=0.03)
    assert not np.allclose(u1["a"], u2["a"])  # the key moves on
    assert not np.allclose(u1["a"][:3], u1["b"])  # each leaf draws its own


def test_aggregate_warns_without_a_key_and_refuses_two():
    with pytest.warns(UserWarning, match="key 0"):
        differentially_private_aggregate(1.0, 1.0)
    with pytest.raises(ValueError, match="key"):
        differentially_private_aggregate(1.0, 1.0, key=1, seed=2)
    tx = differentially_private_aggregate(1.0, 0.5, seed=7)  # the older name of an int key
    same = differentially_private_aggregate(1.0, 0.5, key=7)
    np.testing.assert_array_equal(tx.init(None).rng_key, same.init(None).rng_key)


def test_aggregate_refuses_gradients_without_a_shared_example_axis():
    tx = differentially_private_aggregate(1.0, 1.0, key=0)
    with pytest.raises(ValueError, match=r"grads\['b'\] has 3 examples"):
        tx.update({"a": jnp.ones((2, 4)), "b": jnp.ones((3, 4))}, tx.init(None))
    with pytest.raises(ValueError, match="scalar"):
        tx.update({"a": jnp.ones(())}, tx.init(None))


BAD = {
    "l2_norm_clip": [-1.0, float("nan"), "1"],
    "noise_multiplier": [-0.1, float("inf"), None],
    "key": [1.5, "0", jnp.zeros(3)],
    "seed": [1.5, "0"],
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_aggregate_refuses_bad_hyperparameters(name):
    for value in BAD[name]:
        kwargs = {"l2_norm_clip": 1.0, "noise_multiplier": 1.0, "key": 0, name: value}
        if name == "seed":
            kwargs.pop("key")
        with pytest.raises(ValueError, match=name):
            differentially_private_aggregate(**kwargs)


DPSGD_BAD = {
    "learning_rate": [-0.1, float("nan")],
    "momentum": [-0.1, 1.5],
    "l2_norm_clip": [-1.0],
    "noise_multiplier": [-1.0],
}


@pytest.mark.parametrize("name", sorted(DPSGD_BAD))
def test_dpsgd_refuses_bad_hyperparameters(name):
    for value in DPSGD_BAD[name]:
        kwargs = dict(learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=1.0, seed=0)
        with pytest.raises(ValueError, match=name):
            dpsgd(**{**kwargs, name: value})
