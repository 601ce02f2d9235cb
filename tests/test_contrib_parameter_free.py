"""Learning-rate-free methods (optjax.contrib: Prodigy, D-Adaptation AdamW, DoG, DoWG, layer-wise
DoG, COCOB, Mechanic) against optax 0.2.8 step by step on the same gradients, in float64 and
float32; the places where optax is wrong (NaN on a zero gradient, a scalar leaf made a vector,
global scalars rounded to bf16, Mechanic stalled in float32); the flat layout; hyperparameter
validation.

The trajectories run eagerly (optax_compare): a few steps on small trees, whose operations are
compiled once per shape and dtype; jitted steps are checked by the conformance table.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax_compare import (
    assert_trajectories_close,
    compare_with_optax,
    constant,
    problem,
    run,
    worst_error,
)

import optjax
from optjax import flat
from optjax.contrib._mechanic import MechanicState, mechanize
from optjax.contrib._parameter_free import (
    cocob,
    dadapt_adamw,
    dog,
    dowg,
    prodigy,
    scale_by_cocob,
    scale_by_distance_over_gradients,
    scale_by_dog,
    scale_by_dowg,
)

C = optax.contrib
SHAPES = {"scalar": (), "matrix": (4, 3)}  # few shapes: few operations to compile
NO_SCALAR = {"matrix": (4, 3)}  # optax's layer-wise DoG breaks scalar leaves


def jitted(tx):
    """optax's transform with its update jitted: optax's Mechanic runs a lax.cond, which
    eagerly compiles a program at every step."""
    return optax.GradientTransformationExtraArgs(tx.init, jax.jit(tx.update))


# (name, optjax, optax): default arguments, then every argument changed.
CASES = [
    ("prodigy", lambda: prodigy(), lambda: C.prodigy()),
    (
        "prodigy(all)",
        lambda: prodigy(constant(0.5), (0.8, 0.99), 0.9, 1e-6, 1e-3, 2.0, 0.1, True),
        lambda: C.prodigy(constant(0.5), (0.8, 0.99), 0.9, 1e-6, 1e-3, 2.0, 0.1, True),
    ),
    ("dadapt_adamw", lambda: dadapt_adamw(), lambda: C.dadapt_adamw()),
    (
        "dadapt_adamw(all)",
        lambda: dadapt_adamw(constant(0.5), (0.8, 0.99), 1e-6, 1e-2, 0.1),
        lambda: C.dadapt_adamw(constant(0.5), (0.8, 0.99), 1e-6, 1e-2, 0.1),
    ),
    ("dog", lambda: dog(), lambda: C.dog()),
    (
        "dog(learning_rate)",
        lambda: dog(constant(0.5), ("learning_rate", 0.1), 1e-6, 0.1),
        lambda: C.dog(constant(0.5), ("learning_rate", 0.1), 1e-6, 0.1),
    ),
    ("dog(distance)", lambda: dog(0.5, ("distance", 0.1)), lambda: C.dog(0.5, ("distance", 0.1))),
    ("dowg", lambda: dowg(), lambda: C.dowg()),
    (
        "dowg(all)",
        lambda: dowg(constant(0.5), 0.3, 1e-3, 0.1),
        lambda: C.dowg(constant(0.5), 0.3, 1e-3, 0.1),
    ),
    ("cocob", lambda: cocob(), lambda: C.cocob()),
    (
        "cocob(all)",
        lambda: cocob(constant(0.5), 10.0, 1e-3, 0.1),
        lambda: C.cocob(constant(0.5), 10.0, 1e-3, 0.1),
    ),
    ("scale_by_cocob", lambda: scale_by_cocob(), lambda: C.scale_by_cocob()),
    (
        "scale_by_dog(heuristic)",
        lambda: optjax.chain(scale_by_dog(("heuristic", 1e-2)), optjax.scale(-1.0)),
        lambda: optax.chain(C._dog.scale_by_dog(("heuristic", 1e-2)), optax.scale(-1.0)),
    ),
    (
        "scale_by_dowg",
        lambda: optjax.chain(scale_by_dowg(), optjax.scale(-1.0)),
        lambda: optax.chain(C._dog.scale_by_dowg(), optax.scale(-1.0)),
    ),
    # Mechanic with a scale that moves the params above float32's resolution from the start
    # (with s_init = 1e-6 the float32 steps are below an ulp: see the stall test).
    (
        "mechanize(sgd)",
        lambda: mechanize(optjax.sgd(0.1), s_init=0.1),
        lambda: jitted(C.mechanize(optax.sgd(0.1), s_init=0.1)),
    ),
    (
        "mechanize(sgd,all)",
        lambda: mechanize(optjax.sgd(0.1), 0.1, 1e-6, 1e-3, 3),
        lambda: jitted(C.mechanize(optax.sgd(0.1), 0.1, 1e-6, 1e-3, 3)),
    ),
]


@pytest.mark.parametrize("name,ours,theirs", CASES, ids=[c[0] for c in CASES])
def test_matches_optax_step_by_step(name, ours, theirs):
    compare_with_optax(ours, theirs, steps=4, shapes=SHAPES)


GROWING = [
    ("prodigy", lambda m: m.prodigy(estim_lr0=1e-3)),
    (
        "prodigy(safeguard)",
        lambda m: m.prodigy(estim_lr0=1e-3, beta3=0.9, estim_lr_coef=30.0, safeguard_warmup=True),
    ),
    ("dadapt_adamw", lambda m: m.dadapt_adamw(estim_lr0=1e-3)),
]


@pytest.mark.parametrize("name,make", GROWING, ids=[c[0] for c in GROWING])
def test_distance_estimate_grows_as_optax_does(name, make):
    # Gradients with a common direction, so that d_t grows within the few steps (with N(0, 1)
    # gradients and d_0 = 1e-6 it stays d_0, and s_t and r_t would go unchecked).
    from optjax.contrib import _parameter_free as parameter_free

    with jax.enable_x64(True):
        params, grads = problem(jnp.float64, 6, shapes=SHAPES)
        grads = [jax.tree.map(lambda g: g + 1.0, g) for g in grads]
        ours = run(make(parameter_free), params, grads, states=True)
        theirs = run(make(C), params, grads, states=True)
    assert_trajectories_close([o[:2] for o in ours], [t[:2] for t in theirs], rtol=1e-6)
    d = [float(o[2].estim_lr) for o in ours]
    np.testing.assert_allclose(d, [float(t[2].estim_lr) for t in theirs], rtol=1e-6)
    assert d[-1] > 1.5e-3


@pytest.mark.parametrize(
    "kwargs", [{}, dict(reps_rel=1e-2, eps=1e-4, global_scale=-0.5)], ids=["default", "all"]
)
def test_distance_over_gradients_matches_optax(kwargs):
    # x_0 in float64 for the float64 run (optax's default param_dtype float32 rounds it).
    ours = lambda dtype: optjax.chain(
        scale_by_distance_over_gradients(param_dtype=dtype, **kwargs), optjax.scale(-1.0)
    )
    theirs = lambda dtype: optax.chain(
        optax.scale_by_distance_over_gradients(param_dtype=dtype, **kwargs), optax.scale(-1.0)
    )
    with jax.enable_x64(True):
        params, grads = problem(jnp.float64, 6, shapes=NO_SCALAR)
        exact = run(ours(jnp.float64), params, grads)
        want = run(theirs(jnp.float64), params, grads)
    for a, b in zip(jax.tree.leaves(exact), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * np.max(np.abs(b)))
    params, grads = problem(jnp.float32, 6, shapes=NO_SCALAR)
    ours32 = worst_error(run(ours(jnp.float32), params, grads), exact)
    theirs32 = worst_error(run(theirs(jnp.float32), params, grads), exact)
    assert ours32 <= theirs32 + float(jnp.finfo(jnp.float32).eps)


def test_mechanize_float32_params_track_float64_at_least_as_well_as_optax():
    # With the default s_init the first steps are below float32's resolution of the params:
    # the updates are then mostly rounding, so compare the params and the learned scale.
    make = lambda lib: (
        mechanize(optjax.sgd(0.1)) if lib == "optjax" else jitted(C.mechanize(optax.sgd(0.1)))
    )
    with jax.enable_x64(True):
        params, grads = problem(jnp.float64, 6, shapes=SHAPES)
        exact = run(make("optjax"), params, grads, states=True)
        want = run(make("optax"), params, grads, states=True)
    for (_, p, s), (_, p_ref, s_ref) in zip(exact, want, strict=True):
        for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(p_ref), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12)
        np.testing.assert_allclose(s.s, s_ref.s, rtol=1e-6)
    params, grads = problem(jnp.float32, 6, shapes=SHAPES)
    ours, theirs = (run(make(lib), params, grads, states=True) for lib in ("optjax", "optax"))
    error = lambda out: worst_error([p for _, p, _ in out], [p for _, p, _ in exact])
    assert error(ours) <= error(theirs) + float(jnp.finfo(jnp.float32).eps)  # both half an ulp
    scale_error = lambda out: max(
        abs(float(np.sum(s.s)) / float(np.sum(e.s)) - 1) for (_, _, s), (_, _, e) in zip(out, exact)
    )
    assert scale_error(ours) < 1e-6 < 1e-2 < scale_error(theirs)


def test_mechanize_moves_in_float32_where_optax_stalls():
    # optax recovers the summed base steps as (x_t - x_0) / S_t: s_init = 1e-6 times Adam's
    # 1e-3 is below half an ulp of x, so x_t = x_0, the inner product h_t is 0, the scale never
    # grows and the params never move. optjax keeps the sum in its state.
    loss = lambda x: jnp.sum((x - 3.0) ** 2)
    moved = {}
    for lib, tx, apply in [
        ("optjax", mechanize(optjax.adam(1e-3)), optjax.apply_updates),
        ("optax", C.mechanize(optax.adam(1e-3)), optax.apply_updates),
    ]:
        x0 = jnp.array([0.5, -1.0, 2.0])

        def body(carry, _, tx=tx, apply=apply):
            x, state = carry
            u, state = tx.update(jax.grad(loss)(x), state, x)
            return (apply(x, u), state), None

        with jax.numpy_dtype_promotion("standard"):
            (x, state), _ = jax.jit(
                lambda x0, tx=tx, body=body: jax.lax.scan(body, (x0, tx.init(x0)), length=300)
            )(x0)
        moved[lib] = (float(jnp.max(jnp.abs(x - x0))), float(jnp.sum(state.s)))
    assert moved["optax"] == (0.0, pytest.approx(1e-6))  # stalled: the scale is still s_init
    assert moved["optjax"][0] > 0.1 and moved["optjax"][1] > 1e-3


ZERO_GRADIENT = [
    ("prodigy", lambda: prodigy(), lambda: C.prodigy()),
    ("dadapt_adamw", lambda: dadapt_adamw(), lambda: C.dadapt_adamw()),
    ("dog(eps=0)", lambda: dog(eps=0.0), lambda: C.dog(eps=0.0)),
    ("dowg(eps=0)", lambda: dowg(1.0, 1e-2, 0.0), lambda: C.dowg(1.0, 1e-2, 0.0)),
    ("cocob(eps=0)", lambda: cocob(eps=0.0), lambda: C.cocob(eps=0.0)),
]


@pytest.mark.parametrize("name,ours,theirs", ZERO_GRADIENT, ids=[c[0] for c in ZERO_GRADIENT])
def test_zero_gradient_at_first_step_gives_no_nan_where_optax_does(name, ours, theirs):
    # Prodigy and D-Adaptation divide by ||s_1||_1 = 0 (optax's d becomes NaN for good); DoG,
    # DoWG and COCOB with eps = 0 divide 0 by 0. optjax takes such a ratio as 0: no step.
    params, grads = problem(jnp.float32, 2, shapes=SHAPES)
    grads[0] = jax.tree.map(jnp.zeros_like, params)
    ours_out, theirs_out = run(ours(), params, grads), run(theirs(), params, grads)
    assert all(np.all(u == 0) for u in jax.tree.leaves(ours_out[0][0]))  # no step on g = 0
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(ours_out))
    assert any(np.any(x != 0) for x in jax.tree.leaves(ours_out[1][0]))  # then it moves
    assert any(np.any(np.isnan(x)) for x in jax.tree.leaves(theirs_out))


def test_distance_over_gradients_keeps_a_scalar_leaf_scalar_where_optax_makes_it_a_vector():
    # optax keeps each leaf's sum of squares as an array of shape (1,): a scalar leaf's update,
    # and so the param after apply_updates, become shape (1,).
    params = {"s": jnp.array(2.0), "w": jnp.ones(3)}
    grads = {"s": jnp.array(0.5), "w": jnp.full(3, 0.1)}
    theirs = optax.scale_by_distance_over_gradients()
    with jax.numpy_dtype_promotion("standard"):
        u_theirs, _ = theirs.update(grads, theirs.init(params), params)
    assert u_theirs["s"].shape == (1,)
    ours = scale_by_distance_over_gradients()
    u, _ = ours.update(grads, ours.init(params), params)
    assert u["s"].shape == () and optjax.apply_updates(params, u)["s"].shape == ()
    np.testing.assert_allclose(u["s"], 1e-6 * 3 / 0.5 * 0.5, rtol=1e-6)  # reps (1+|x|) g/|g|


def _scalars(state):
    """The global scalars of each method's state, by name."""
    names = ("estim_lr", "numerator_weighted", "max_dist", "sum_sq_norm_grads",
             "weighted_sq_norm_grads", "estim_sq_dist", "r", "m", "v", "s")  # fmt: skip
    found = {}
    for s in jax.tree.leaves(state, is_leaf=lambda x: hasattr(x, "_fields")):
        if hasattr(s, "_fields"):
            found.update({n: getattr(s, n) for n in names if n in s._fields})
    return found


BF16 = [
    ("prodigy", lambda: prodigy(), lambda: C.prodigy(), "estim_lr"),
]


@pytest.mark.parametrize("name,ours,theirs,field", BF16, ids=[c[0] for c in BF16])
def test_bf16_params_keep_global_scalars_in_float32_where_optax_rounds_them(
    name, ours, theirs, field
):
    # optax keeps them in the params' dtype: in bf16, decays of 0.9995 or 1 - 1e-6 are 1 and a
    # sum keeps 3 digits. optjax's are float32 and follow the float64 run.
    params, grads = problem(jnp.bfloat16, 8, seed=1, shapes=SHAPES)
    with jax.enable_x64(True):
        wide = jax.tree.map(lambda x: x.astype(jnp.float64), (params, grads))
        exact = run(ours(), *wide, states=True)[-1][2]
    ours_state = run(ours(), params, grads, states=True)[-1][2]
    theirs_state = run(theirs(), params, grads, states=True)[-1][2]
    assert all(x.dtype == np.float32 for x in _scalars(ours_state).values())
    assert _scalars(theirs_state)[field].dtype == jnp.bfloat16
    error = lambda state: float(
        np.max(np.abs(np.asarray(_scalars(state)[field], np.float64) / _scalars(exact)[field] - 1))
    )
    assert error(ours_state) < error(theirs_state)


def test_first_steps_and_bf16_state_dtypes():
    # The first step of each, by hand.
    p = {"w": jnp.array([1.0, -2.0])}
    g = {"w": jnp.array([3.0, -0.5])}
    expected = {
        "prodigy": [-1e-6, 1e-6],  # -d_0 sign(g)
        "dadapt_adamw": [-1e-6, 1e-6],
        "cocob": [-0.01, 0.01],  # -sign(g) / alpha
        "dowg": list(-np.array([3.0, -0.5]) / np.hypot(3.0, 0.5)),  # -g / ||g|| (r_0^2 = 1)
    }
    txs = {
        "prodigy": prodigy(),
        "dadapt_adamw": dadapt_adamw(),
        "cocob": cocob(),
        "dowg": dowg(init_estim_sq_dist=1.0, eps=0.0),
    }
    for name, tx in txs.items():
        state = tx.init(p)
        u, state = tx.update(g, state, p)
        np.testing.assert_allclose(u["w"], expected[name], rtol=1e-5, err_msg=name)
    # On bf16 params: slow averages and sums float32, first moments bf16, scalars float32.
    p = jax.tree.map(lambda x: x.astype(jnp.bfloat16), p)
    assert prodigy().init(p).grad_sum["w"].dtype == jnp.float32
    assert prodigy().init(p).exp_avg["w"].dtype == jnp.bfloat16
    assert scale_by_cocob().init(p).subgradients["w"].dtype == jnp.float32
    assert mechanize(optjax.sgd(0.1)).init(p).delta["w"].dtype == jnp.float32
    state = mechanize(optjax.sgd(0.1)).init(p)
    assert all(x.dtype == jnp.float32 for x in (state.r, state.m, state.v, state.s))
    # optax's Mechanic keeps them in bf16, where its betas 1 - 10^-k are 1 from k = 3 on.
    assert C.mechanize(optax.sgd(0.1)).init(p).s.dtype == jnp.bfloat16
    assert float(jnp.asarray(1 - 0.1**3, jnp.bfloat16)) == 1.0


def test_flat_layout_matches_tree_path():
    params = {"w": jnp.arange(35.0).reshape(7, 5) / 30, "s": jnp.array(0.5)}
    rng = np.random.default_rng(3)
    grads = [jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params)
             for _ in range(3)]  # fmt: skip
    txs = {
        # The others are conformance rows, which tests/test_flat.py runs flat.
        "ldog": scale_by_distance_over_gradients(global_scale=-1.0),
    }
    for name, tx in txs.items():
        assert flat.is_flat_ready(tx), name
        tree_path = run(tx, params, grads)
        flat_params, layout = flat.flatten(params)
        state, x = tx.init(flat_params), flat_params
        for g, (_, want) in zip(grads, tree_path):
            u, state = tx.update(layout.flatten(g), state, x)
            x = optjax.apply_updates(x, u)
            for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(x.unflatten()), strict=True):
                np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=name)


def test_mechanize_forwards_extra_args_to_the_base_optimizer():
    tx = mechanize(optjax.polyak_sgd(max_learning_rate=1.0))
    p = jnp.array([1.0, 2.0])
    u, state = tx.update(jnp.array([2.0, 4.0]), tx.init(p), p, value=jnp.array(2.5))
    assert isinstance(state, MechanicState)
    np.testing.assert_allclose(u / 1e-6, [-0.25, -0.5], rtol=1e-4)  # s_init * polyak: 2.5/20 g


BAD = [
    (prodigy, "learning_rate", [-1.0, float("nan")]),
    (prodigy, "betas", [(1.0, 0.999), (0.9, -0.1), (0.9,), 0.9]),
    (prodigy, "beta3", [1.0, -0.5]),
    (prodigy, "eps", [-1e-8, float("inf")]),
    (prodigy, "estim_lr0", [0.0, -1e-6]),
    (prodigy, "estim_lr_coef", [0.0, -1.0]),
    (prodigy, "weight_decay", [-0.1, "0.1"]),
    (prodigy, "safeguard_warmup", ["yes", None]),
    (dadapt_adamw, "betas", [(0.9, 1.0), [0.9]]),
    (dadapt_adamw, "estim_lr0", [0.0, float("nan")]),
    (dadapt_adamw, "weight_decay", [-1.0, None]),
    (dog, "init_step", [("distance", 0.0), ("other", 1.0), ("heuristic", -1.0), 1e-6]),
    (dog, "eps", [-1.0, float("nan")]),
    (dog, "weight_decay", [-1e-4, "1"]),
    (dowg, "init_estim_sq_dist", [0.0, -1.0]),
    (dowg, "eps", [-1e-4, float("inf")]),
    (cocob, "alpha", [0.0, -100.0]),
    (cocob, "eps", [-1e-8, float("nan")]),
    (cocob, "learning_rate", [-1.0, None]),
    (scale_by_distance_over_gradients, "reps_rel", [0.0, -1e-6]),
    (scale_by_distance_over_gradients, "param_dtype", [jnp.int32, "nope"]),
    (scale_by_distance_over_gradients, "global_scale", [float("inf"), None]),
]


@pytest.mark.parametrize("make,arg,values", BAD, ids=[f"{m.__name__}-{a}" for m, a, _ in BAD])
def test_bad_hyperparameters_raise_naming_the_argument(make, arg, values):
    for value in values:
        with pytest.raises(ValueError, match=arg):
            make(**{arg: value})


def test_bad_mechanize_arguments_raise_naming_them():
    sgd = optjax.sgd(0.1)
    for kwargs in [
        dict(base_optimizer=0.1),
        dict(base_optimizer=sgd, weight_decay=-1.0),
        dict(base_optimizer=sgd, eps=0.0),
        dict(base_optimizer=sgd, s_init=0.0),
        dict(base_optimizer=sgd, num_betas=0),
        dict(base_optimizer=sgd, num_betas=2.5),
    ]:
        arg = [k for k in kwargs if k != "base_optimizer"] or ["base_optimizer"]
        with pytest.raises(ValueError, match=arg[-1]):
            mechanize(**kwargs)
    with pytest.raises(ValueError, match="init_estim_sq_dist"):
        dowg(eps=0.0)  # the estimate would start at 0: no step ever


def test_update_without_params_raises():
    for tx in [prodigy(), dadapt_adamw(), dog(), dowg(), cocob(), mechanize(optjax.sgd(0.1))]:
        state = tx.init(jnp.zeros(2))
        with pytest.raises(ValueError, match="needs params"):
            tx.update(jnp.ones(2), state)


@pytest.mark.parametrize("make", [prodigy, dadapt_adamw], ids=["prodigy", "dadapt_adamw"])
def test_fp16_params_keep_the_d_scaled_first_moment_in_float32_and_step_as_float32(make):
    # m_t averages d_t g_t: (1 - b1) d_0 g = 0.1 * 1e-6 * 1e-2 = 1e-9 at the default d_0, below
    # fp16's smallest number. In fp16 it was 0, and so was every step: x never left x_0.
    rng = np.random.default_rng(0)
    grads = [jnp.asarray(rng.normal(size=4) * 1e-2, jnp.float16) for _ in range(3)]
    steps = {}
    for dtype in [jnp.float16, jnp.float32]:
        tx, p = make(), jnp.ones(4, dtype)
        state = tx.init(p)
        assert state.exp_avg.dtype == jnp.float32
        steps[dtype] = []
        for g in grads:
            u, state = tx.update(g.astype(dtype), state, p)
            steps[dtype].append(u)
    np.testing.assert_allclose(steps[jnp.float16][0], -1e-6 * np.sign(grads[0]), rtol=0.02)
    for got, want in zip(steps[jnp.float16], steps[jnp.float32]):
        assert got.dtype == jnp.float16
        np.testing.assert_array_equal(got, want.astype(jnp.float16))  # only the step is rounded
    assert make().init(jnp.ones(4, jnp.bfloat16)).exp_avg.dtype == jnp.bfloat16  # bf16's range
