"""ADOPT, AdEMAMix and Simplified AdEMAMix, and their primitives, against optax 0.2.8 step by
step on the same gradients; where optax is wrong (ADOPT crashes on complex params, Simplified
AdEMAMix squares complex gradients without the modulus, AdEMAMix's bf16 slow momentum never
decays); the flat layout; hyperparameter validation.
"""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax_compare import compare_with_optax, constant
from test_flat import assert_close
from test_flat import trajectory as flat_trajectory

import optjax
from optjax import flat
from optjax.contrib._ademamix import (
    ScaleByAdemamixState,
    ScaleBySimplifiedAdEMAMixState,
    ademamix,
    scale_by_ademamix,
    scale_by_simplified_ademamix,
    simplified_ademamix,
)
from optjax.contrib._adopt import adopt, scale_by_adopt

# Two leaves (a 0-d one and a matrix): the runs are eager, and each leaf shape compiles every
# operation once more.
SHAPES = {"scalar": (), "matrix": (4, 3)}


def _lr(tx):
    return lambda: optax.chain(tx(), optax.scale(-0.1))


def _lr_ours(tx):
    return lambda: optjax.chain(tx(), optjax.scale(-0.1))


def fourth_root_of_next(count):
    return (count + 1.0) ** 0.25


CASES = {
    "adopt": (lambda: adopt(0.1), lambda: optax.contrib.adopt(0.1)),
    "adopt(nesterov,b1,b2,eps)": (
        lambda: adopt(constant(0.05), 0.8, 0.99, 1e-3, nesterov=True),
        lambda: optax.contrib.adopt(constant(0.05), 0.8, 0.99, 1e-3, nesterov=True),
    ),
    "scale_by_adopt(no clipping)": (
        _lr_ours(lambda: scale_by_adopt(use_clipping=False)),
        _lr(lambda: optax.contrib.scale_by_adopt(use_clipping=False)),
    ),
    "scale_by_adopt(clip_value_fn)": (
        _lr_ours(lambda: scale_by_adopt(b1=0.5, clip_value_fn=fourth_root_of_next)),
        _lr(lambda: optax.contrib.scale_by_adopt(b1=0.5, clip_value_fn=fourth_root_of_next)),
    ),
    "ademamix": (lambda: ademamix(0.1), lambda: optax.contrib.ademamix(0.1)),
    "ademamix(schedules,wd,eps_root)": (
        lambda: ademamix(0.05, 0.8, 0.99, constant(0.9), constant(3.0), 1e-4, 1e-6, None, 0.1),
        lambda: optax.contrib.ademamix(
            0.05, 0.8, 0.99, constant(0.9), constant(3.0), 1e-4, 1e-6, None, 0.1
        ),
    ),
    "scale_by_ademamix": (
        _lr_ours(lambda: scale_by_ademamix(b3=0.9)),
        _lr(lambda: optax.contrib.scale_by_ademamix(b3=0.9)),
    ),
    "simplified_ademamix": (
        lambda: simplified_ademamix(0.01),
        lambda: optax.contrib.simplified_ademamix(0.01),
    ),
    "simplified_ademamix(all)": (
        lambda: simplified_ademamix(0.01, 0.9, 0.99, constant(2.0), 1e-4, 1e-6, 0.1),
        lambda: optax.contrib.simplified_ademamix(0.01, 0.9, 0.99, constant(2.0), 1e-4, 1e-6, 0.1),
    ),
    "scale_by_simplified_ademamix": (
        _lr_ours(lambda: scale_by_simplified_ademamix(alpha=1.0)),
        _lr(lambda: optax.contrib.scale_by_simplified_ademamix(alpha=1.0)),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_matches_optax_step_by_step(name, standard_promotion):
    ours, theirs = CASES[name]
    compare_with_optax(ours, theirs, shapes=SHAPES)


def test_adopt_first_step_only_fills_the_second_moment():
    tx = scale_by_adopt()
    state, update = tx.init(jnp.zeros(2)), jax.jit(tx.update)
    u, state = update(jnp.array([3.0, -4.0]), state)
    np.testing.assert_array_equal(u, [0.0, 0.0])
    np.testing.assert_allclose(state.nu, [9.0, 16.0])
    u, state = update(jnp.array([30.0, -4.0]), state)  # 30 / 3 = 10 is clipped to 1^0.25
    np.testing.assert_allclose(u, [0.1, -0.1], rtol=1e-6)


def test_optax_adopt_crashes_on_complex_params(standard_promotion):
    # jnp.clip refuses complex values; optjax bounds the modulus of g / max(sqrt(v), eps),
    # keeping its phase.
    p = jnp.zeros(2, jnp.complex64)
    g = jnp.array([3 + 4j, 1j], jnp.complex64)
    tx = optax.contrib.adopt(0.1)
    with pytest.raises(ValueError, match="Complex values have no ordering"):
        tx.update(g, tx.init(p), p)  # already on the first step, whose clip it discards
    tx = adopt(0.1)
    update = jax.jit(tx.update)
    state = update(g, tx.init(p), p)[1]
    assert state[0].nu.dtype == jnp.float32  # |g|^2: real
    u, state = update(10 * g, state, p)  # |10 g / |g|| = 10, clipped to 1
    np.testing.assert_allclose(u, -0.01 * np.array([0.6 + 0.8j, 1j]), rtol=1e-5)


def test_optax_simplified_ademamix_squares_complex_gradients(standard_promotion):
    # optax's second moment is g * g, complex (-7 + 24j for 3 + 4j), so its step loses the
    # gradient's phase; the paper's is |g|^2, and the first step is g / |g|.
    p = jnp.zeros(1, jnp.complex64)
    g = jnp.array([3 + 4j], jnp.complex64)
    tx = simplified_ademamix(1.0)
    u, state = jax.jit(tx.update)(g, tx.init(p), p)
    assert state[0].n.dtype == jnp.float32
    np.testing.assert_allclose(u, [-(0.6 + 0.8j)], rtol=1e-5)
    tx = optax.contrib.simplified_ademamix(1.0)
    u_ref, state_ref = tx.update(g, tx.init(p), p)
    assert jnp.iscomplexobj(state_ref[0].n)
    assert not np.allclose(u_ref, u, rtol=1e-2)


def test_optax_ademamix_bf16_slow_momentum_never_decays(standard_promotion):
    # b3 = 0.9999 rounds to 1 in bf16: optax's bf16 m2 never forgets (1 * 0.9999 is 1 again).
    # optjax keeps m2 in float32 for bf16 params.
    params = jnp.ones(2, jnp.bfloat16)
    zero = jnp.zeros(2, jnp.bfloat16)
    for lib, make, want in [
        ("optjax", scale_by_ademamix, 0.9999),
        ("optax", optax.contrib.scale_by_ademamix, 1.0),
    ]:
        tx = make()
        state = tx.init(params)
        state = state._replace(m2=jax.tree.map(jnp.ones_like, state.m2))
        m2 = jax.jit(tx.update)(zero, state)[1].m2
        assert m2.dtype == (jnp.float32 if lib == "optjax" else jnp.bfloat16)
        np.testing.assert_allclose(np.asarray(m2, np.float32), [want, want], rtol=1e-7)


def test_bf16_params_state_dtypes():
    params = {"w": jnp.ones((2, 3), jnp.bfloat16)}
    grads = {"w": jnp.full((2, 3), 0.5, jnp.bfloat16)}
    for tx, wide in [
        (scale_by_adopt(), ("nu",)),
        (scale_by_ademamix(), ("m2", "nu")),
        (scale_by_simplified_ademamix(), ("n",)),
    ]:
        state, update = tx.init(params), jax.jit(tx.update)
        updates, new_state = update(grads, update(grads, state)[1])
        assert updates["w"].dtype == jnp.bfloat16
        for field, leaf in zip(state._fields, new_state):
            if field in ("count", "count_m2", "t"):
                assert leaf.dtype == jnp.int32
            else:
                want = jnp.float32 if field in wide else jnp.bfloat16
                assert leaf["w"].dtype == want, field


def test_state_classes():
    assert ScaleByAdemamixState._fields == optax.contrib.ScaleByAdemamixState._fields
    assert (
        ScaleBySimplifiedAdEMAMixState._fields
        == optax.contrib.ScaleBySimplifiedAdEMAMixState._fields
    )
    assert type(scale_by_adopt().init(jnp.zeros(1))).__name__ == "ScaleByAdamState"


def test_flat_layout_matches_tree_path():
    rng = np.random.default_rng(5)
    shapes = {"w": ((7, 5), jnp.float32), "h": ((3, 4), jnp.bfloat16)}
    params = {k: jnp.asarray(rng.normal(size=s), d) for k, (s, d) in shapes.items()}
    grads = [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        for _ in range(2)
    ]
    parts = [scale_by_adopt(), scale_by_ademamix(b3=0.9), scale_by_simplified_ademamix()]
    assert all(flat.is_flat_ready(t) for t in parts)
    make = lambda: optjax.chain(*parts, optjax.scale(-0.01))  # elementwise all through
    want = flat_trajectory(make(), params, grads)
    got = flat_trajectory(make(), params, grads, pack=flat.FlatLayout.of(params).flatten)
    for w, g in zip(want, got):
        assert_close(g, w, ulps=2)


def _defaults(f):
    return {k: p.default for k, p in inspect.signature(f).parameters.items()}


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (adopt, optax.contrib.adopt),
        (scale_by_adopt, optax.contrib.scale_by_adopt),
        (ademamix, optax.contrib.ademamix),
        (scale_by_ademamix, optax.contrib.scale_by_ademamix),
        (simplified_ademamix, optax.contrib.simplified_ademamix),
        (scale_by_simplified_ademamix, optax.contrib.scale_by_simplified_ademamix),
    ],
    ids=lambda f: f.__name__,
)
def test_arguments_and_defaults_are_optax(ours, theirs):
    # optax's arguments in its order and with its defaults; optjax adds keyword-only dtypes.
    mine, its = _defaults(ours), _defaults(theirs)
    assert list(mine)[: len(its)] == list(its)
    assert set(mine) - set(its) <= {"nu_dtype", "mu_dtype"}
    for name, default in its.items():
        if name == "clip_value_fn":  # a lambda each: the same function of the step
            assert float(mine[name](jnp.float32(16.0))) == float(default(16.0)) == 2.0
        else:
            assert mine[name] == default, name


NOT_NUMBERS = [math.inf, math.nan, 1e39, "0.1", [0.1], True, None]
BAD = {
    ">= 0": [*NOT_NUMBERS, -1.0, -1e-30],
    "[0, 1)": [*NOT_NUMBERS, 1.0, -0.1],
    "[0, 1) or schedule": [math.inf, math.nan, "0.1", True, None, 1.0, -0.1],
    ">= 0 or schedule": [math.inf, math.nan, "0.1", True, None, -1.0],
    "rate": [math.inf, math.nan, "0.1", True, None, -1.0],
}
ADAM_LIKE = {"b1": "[0, 1)", "b2": "[0, 1)", "eps": ">= 0"}
ADEMAMIX = {**ADAM_LIKE, "b3": "[0, 1) or schedule", "alpha": ">= 0 or schedule"}
ADEMAMIX |= {"eps_root": ">= 0"}
SIMPLIFIED = {**ADAM_LIKE, "alpha": ">= 0 or schedule", "eps_root": ">= 0"}
LR = {"learning_rate": 0.1}
HYPERPARAMETERS = [
    (scale_by_adopt, {}, ADAM_LIKE),
    (adopt, LR, {**ADAM_LIKE, "learning_rate": "rate"}),
    (scale_by_ademamix, {}, ADEMAMIX),
    (ademamix, LR, {**ADEMAMIX, "learning_rate": "rate", "weight_decay": ">= 0"}),
    (scale_by_simplified_ademamix, {}, SIMPLIFIED),
    (simplified_ademamix, LR, {**SIMPLIFIED, "learning_rate": "rate", "weight_decay": ">= 0"}),
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
