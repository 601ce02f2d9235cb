"""optax 0.2.8's wrappers that optjax took over, each against optax live on the same gradients
(float64, rtol 1e-6; float32 where both round alike), and the places where optax is wrong:
partition, apply_every, conditionally_transform / conditionally_mask, skip_large_updates,
flatten, snapshot / monitor / measure_with_ema, microbatch, inject_stateful_hyperparams,
with_extra_args_support and selective_transform."""

import functools
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optjax
from optjax import wrappers as w

# Wrapped optimizers for tests/test_conformance.py's table (its per-row checks: convergence,
# dtypes and state structure, one compile, vmap over learning rates, grad through a step).


def _params(dtype=jnp.float32):
    return {
        "w": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(3, 2).astype(dtype),
        "b": jnp.array([0.5, -0.25], dtype),
        "s": jnp.array(0.3, dtype),
    }


def _grads(params, steps, seed=0):
    rng = np.random.default_rng(seed)
    return [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        for _ in range(steps)
    ]


def _trajectory(tx, apply, params, grads, **extra_args):
    """(updates, params) after each step: one jitted update for the whole run."""
    state, out = tx.init(params), []
    update = jax.jit(tx.update)
    for g in grads:
        updates, state = update(g, state, params, **extra_args)
        params = apply(params, updates)
        out.append((updates, params))
    return out


def _close(a, b, rtol=1e-6, atol=0.0):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _against_optax(ours, theirs, steps=6, dtype=jnp.float64, **extra_args):
    """Run both transforms on the same gradients and compare every step's updates and params."""
    with jax.enable_x64(dtype == jnp.float64):
        params = _params(dtype)
        grads = _grads(params, steps)
        mine = _trajectory(ours, optjax.apply_updates, params, grads, **extra_args)
        ref = _trajectory(theirs, optax.apply_updates, params, grads, **extra_args)
        _close(mine, ref)
    return mine


def _quiet(make):
    """Build an optax transform whose constructor warns (a deprecation)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return make()


# --- partition and selective_transform ---------------------------------------------------------


def _labels(params):
    return {k: "adam" if k == "w" else "sgd" for k in params}


def test_partition_matches_optax(standard_promotion):
    labels = _labels(_params())  # a function of the params works too: see selective_transform

    def make(lib, wrappers):
        groups = {"adam": lib.adam(0.05, b1=0.8), "sgd": lib.sgd(0.1, momentum=0.9)}
        return wrappers.partition(groups, labels)

    _against_optax(make(optjax, w), make(optax, optax))
    state = w.partition({"adam": optjax.adam(0.1), "sgd": optjax.sgd(0.1)}, labels).init(_params())
    assert isinstance(state, w.PartitionState) and w.PartitionState is w.MultiTransformState
    assert sorted(state.inner_states) == ["adam", "sgd"]


def _tagged(kind):
    """A transform (of type ``kind``) taking a keyword extra ``tags`` shaped like the updates:
    ``u * tags``."""

    def init(params):
        del params
        return ()

    def update(updates, state, params=None, *, tags):
        return jax.tree.map(lambda u, t: u * t, updates, tags), state

    return kind(init, update)


def test_partition_masks_extra_args_shaped_like_the_updates(standard_promotion):
    def make(lib, wrappers):
        tagged = _tagged(wrappers.GradientTransformationExtraArgs)
        groups = {"adam": lib.chain(tagged, lib.sgd(0.1)), "sgd": lib.sgd(0.1)}
        return wrappers.partition(groups, _labels, mask_compatible_extra_args=True)

    with jax.enable_x64(True):
        tags = jax.tree.map(lambda p: jnp.full(p.shape, 2.0), _params(jnp.float64))
        mine = _against_optax(make(optjax, w), make(optax, optax), steps=2, tags=tags)
        g = _grads(_params(jnp.float64), 1)[0]
        # The tagged group's leaf moved twice as far as plain sgd's; the others as sgd's.
        _close(mine[0][0], {"w": -0.2 * g["w"], "b": -0.1 * g["b"], "s": -0.1 * g["s"]})


def test_selective_transform_matches_optax(standard_promotion):
    freeze_mask = {"w": True, "b": False, "s": False}
    ours = w.selective_transform(optjax.adam(0.05), freeze_mask=freeze_mask)
    theirs = optax.selective_transform(optax.adam(0.05), freeze_mask=freeze_mask)
    mine = _against_optax(ours, theirs)
    assert all(not np.any(np.asarray(u["w"])) for u, _ in mine)
    state = ours.init(_params())
    assert len(jax.tree.leaves(state.inner_states["train"])) == 1 + 2 * 2  # count, mu, nu of b, s
    everything = w.selective_transform(optjax.sgd(0.1), freeze_mask=True)  # one bool for all
    g = _params()
    _close(everything.update(g, everything.init(g))[0], jax.tree.map(jnp.zeros_like, g))


# --- apply_every, conditionally_transform, conditionally_mask ---------------------------------


@pytest.mark.parametrize("k", [1, 3])
def test_apply_every_matches_optax(k, standard_promotion):
    _against_optax(w.apply_every(k), optax.apply_every(k), steps=7)


def test_apply_every_inf_gradient_poisons_later_windows_in_optax(standard_promotion):
    grads = [jnp.array([g]) for g in (jnp.inf, 1.0, 1.0, 2.0)]  # windows of 2: (inf, 1), (1, 2)
    out = {}
    for lib in (w, optax):
        tx = lib.apply_every(2)
        state = tx.init(jnp.zeros(1))
        out[lib] = []
        for g in grads:
            u, state = tx.update(g, state)
            out[lib].append(float(u[0]))
    assert np.isnan(out[optax][3])  # 0 * inf = nan in the accumulator, for ever after
    assert out[w] == [0.0, np.inf, 0.0, 3.0]


def test_apply_every_sums_low_precision_gradients_in_float32(standard_promotion):
    tiny = 2.0**-8  # half a bf16 ulp at 1: lost when added to 1 in bf16
    grads = [jnp.array([g], jnp.bfloat16) for g in (1.0, tiny, tiny)]
    out = {}
    for lib in (w, optax):
        tx = lib.apply_every(3)
        state = tx.init(jnp.zeros(1, jnp.bfloat16))
        for g in grads:
            u, state = tx.update(g, state)
        out[lib] = u
    assert out[w].dtype == jnp.bfloat16
    assert float(out[w][0]) == 1 + 2 * tiny
    assert float(out[optax][0]) == 1.0


def _every_third_skipped(step, flag=True):
    return (step % 3 != 1) & flag


@pytest.mark.parametrize(
    "which,forward_extra_args", [("conditionally_transform", False), ("conditionally_mask", True)]
)
def test_conditional_wrappers_match_optax(which, forward_extra_args, standard_promotion):
    def make(lib, wrappers):
        fn = _every_third_skipped
        return getattr(wrappers, which)(lib.adam(0.05), fn, forward_extra_args=forward_extra_args)

    extra = {"flag": jnp.array(True)} if forward_extra_args else {}
    mine = _against_optax(make(optjax, w), make(optax, optax), **extra)
    with jax.enable_x64(True):
        g = _grads(_params(jnp.float64), 2)[1]
        skipped = jax.tree.map(jnp.zeros_like, g) if which == "conditionally_mask" else g
        _close(mine[1][0], skipped)  # step 1 is skipped


def test_conditional_wrappers_and_apply_every_match_optax_in_float32(standard_promotion):
    def make(lib, wrappers):
        return lib.chain(
            wrappers.conditionally_transform(lib.trace(0.9), lambda step: step % 2 == 0),
            wrappers.conditionally_mask(lib.scale(-0.1), lambda step: step != 3),
            wrappers.apply_every(2),
        )

    _against_optax(make(optjax, w), make(optax, optax), steps=6, dtype=jnp.float32)


def test_conditional_wrappers_keep_their_state_and_count_steps():
    tx = w.conditionally_mask(optjax.sgd(1.0, momentum=0.5), lambda step: step >= 2)
    params = _params()
    state = tx.init(params)
    before = state
    step = jax.jit(tx.update)
    for i in range(3):
        u, state = step(jax.tree.map(jnp.ones_like, params), state, params)
        chex.assert_trees_all_equal_shapes_and_dtypes(state, before)
        if i < 2:
            _close(state.inner_state, before.inner_state)  # momentum untouched while masked
    assert int(state.step) == 3
    np.testing.assert_allclose(u["w"], -jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="should_transform_fn must return a bool scalar"):
        bad = w.conditionally_transform(optjax.sgd(1.0), lambda step: jnp.ones(2, bool))
        bad.update(params, bad.init(params))


# --- add_decayed_weights: schedules and masks read as optax reads them -----------------------


def _decay_cases(params):
    keys = sorted(params)
    full = {k: i % 2 == 0 for i, k in enumerate(keys)}
    return {
        "schedule": lambda lib: lib.add_decayed_weights(lambda n: 0.1 * (n + 1)),
        "schedule_and_mask_function": lambda lib: lib.add_decayed_weights(
            lambda n: 0.05 * (n + 1), mask=lambda p: jax.tree.map(lambda x: x.ndim > 0, p)
        ),
        "prefix_mask": lambda lib: lib.add_decayed_weights(0.2, mask=True),
        # Inside partition each group sees the whole tree with the other group's leaves as
        # MaskedNode(), and a mask for the whole tree applies to it.
        "full_mask_inside_partition": lambda lib: lib.partition(
            {"decay": lib.add_decayed_weights(0.3, mask=full), "sgd": lib.sgd(0.1)},
            {k: "decay" if i < 2 else "sgd" for i, k in enumerate(keys)},
        ),
    }


@pytest.mark.parametrize("case", sorted(_decay_cases(_params())))
def test_add_decayed_weights_matches_optax(case, standard_promotion):
    make = _decay_cases(_params())[case]
    _against_optax(make(optjax), make(optax))


# --- skip_large_updates, skip_not_finite -------------------------------------------------------


def test_skip_large_updates_matches_optax(standard_promotion):
    for tree_, bound in [
        ({"a": jnp.array([3.0, 4.0]), "b": jnp.array(1.0)}, 26.5),
        ({"a": jnp.array([3.0, 4.0]), "b": jnp.array(1.0)}, 25.5),
        ({"a": jnp.array([3.0, 4.0]), "b": jnp.array(1.0)}, 26.0),
        ({"a": jnp.array([jnp.nan, 0.0])}, 1e6),
        ({}, 1.0),
    ]:
        skip, info = w.skip_large_updates(tree_, 0, None, bound)
        skip_ref, info_ref = optax.skip_large_updates(tree_, 0, None, bound)
        assert bool(skip) == bool(skip_ref), (tree_, bound)
        assert sorted(info) == sorted(info_ref)
        np.testing.assert_allclose(info["norm_squared"], info_ref["norm_squared"], rtol=1e-6)


def test_skip_large_updates_inside_multisteps_matches_optax(standard_promotion):
    def make(lib, wrappers):
        skip = functools.partial(wrappers.skip_large_updates, max_squared_norm=9.0)
        return wrappers.MultiSteps(lib.sgd(0.1), every_k_schedule=2, should_skip_update_fn=skip)

    # The random gradients have squared norms around 9: some mini-batches are skipped.
    mine = _against_optax(make(optjax, w), make(optax, optax), steps=8)
    steps_taken = sum(bool(np.any(np.asarray(u["w"]))) for u, _ in mine)
    assert 0 < steps_taken < 4, steps_taken


def test_skip_large_updates_never_skips_complex_updates_in_optax(standard_promotion):
    g = {"a": jnp.array([10j])}  # |g|^2 = 100; optax sums g^2 = -100
    assert not bool(optax.skip_large_updates(g, 0, None, 1.0)[0])
    skip, info = w.skip_large_updates(g, 0, None, 1.0)
    assert bool(skip) and float(info["norm_squared"]) == 100.0


def test_skip_large_updates_fp16_square_overflows_in_optax(standard_promotion):
    g = {"a": jnp.full(4, 300.0, jnp.float16)}  # squared norm 360000, above fp16's 65504
    assert bool(optax.skip_large_updates(g, 0, None, 1e6)[0])  # inf >= 1e6: skipped
    skip, info = w.skip_large_updates(g, 0, None, 1e6)
    assert not bool(skip) and float(info["norm_squared"]) == 360000.0


@pytest.mark.parametrize(
    "g",
    [
        {"a": jnp.array([jnp.nan, 1.0])},
        {"a": jnp.array([jnp.inf])},
        {"a": jnp.ones(2)},
        {"a": jnp.array([jnp.nan, -jnp.inf, 2.0]), "b": jnp.full((2, 3), jnp.nan, jnp.bfloat16)},
        {"a": jnp.array([1.0 + jnp.nan * 1j, 2.0]), "b": jnp.zeros(())},
        {},
    ],
    ids=["nan", "inf", "finite", "two_leaves", "complex", "empty"],
)
def test_skip_not_finite_matches_optax(g, standard_promotion):
    skip, info = w.skip_not_finite(g, 0, None)
    skip_ref, info_ref = optax.skip_not_finite(g, 0, None)
    assert sorted(info) == sorted(info_ref) == ["num_not_finite", "should_skip"]
    assert bool(skip) == bool(skip_ref) == bool(info["should_skip"])
    assert int(info["num_not_finite"]) == int(info_ref["num_not_finite"])
    assert info["num_not_finite"].dtype == jnp.int32


def test_skip_not_finite_state_keeps_its_count_in_multisteps():
    tx = optjax.MultiSteps(optjax.sgd(1.0), 2, should_skip_update_fn=w.skip_not_finite)
    state = tx.init(jnp.zeros(3))
    _, state = tx.update(jnp.array([jnp.nan, jnp.inf, 1.0]), state)
    assert int(state.skip_state["num_not_finite"]) == 2 and bool(state.skip_state["should_skip"])
    _, state = tx.update(jnp.ones(3), state)
    assert int(state.skip_state["num_not_finite"]) == 0


# --- flatten -----------------------------------------------------------------------------------


@pytest.mark.parametrize("inner", ["adam", "clip_by_block_rms"])
def test_flatten_matches_optax(inner, standard_promotion):
    def make(lib, wrappers):
        tx = lib.adam(0.05) if inner == "adam" else lib.clip_by_block_rms(0.5)
        return wrappers.flatten(tx)

    mine = _against_optax(make(optjax, w), make(optax, optax))
    if inner == "clip_by_block_rms":  # one block: the rms over every parameter is clipped
        u = np.concatenate([np.ravel(x) for x in jax.tree.leaves(mine[0][0])])
        np.testing.assert_allclose(np.sqrt(np.mean(u**2)), 0.5, rtol=1e-6)


def test_flatten_empty_tree_crashes_in_optax():
    with pytest.raises(ValueError, match="concatenate"):
        optax.flatten(optax.adam(0.1)).init({})
    tx = w.flatten(optjax.adam(0.1))
    assert tx.update({}, tx.init({}), {})[0] == {}


def test_flatten_keeps_each_leafs_dtype(standard_promotion):
    params = {"h": jnp.ones(2, jnp.bfloat16), "x": jnp.ones(3)}
    for lib, wrappers in ((optjax, w), (optax, optax)):
        tx = wrappers.flatten(lib.sgd(0.1))
        u, _ = tx.update(params, tx.init(params), params)
        dtypes = {k: v.dtype for k, v in u.items()}
        if lib is optjax:
            assert dtypes == {"h": jnp.bfloat16, "x": jnp.float32}
        else:
            assert dtypes == {"h": jnp.float32, "x": jnp.float32}  # optax: the vector's dtype


# --- snapshot, monitor, measure_with_ema -------------------------------------------------------


def _monitored(lib, wrappers, norm):
    return lib.chain(
        lib.sgd(0.1, momentum=0.9),
        wrappers.snapshot("before", norm),
        wrappers.monitor(
            {
                "norm": norm,
                "norm_ema": wrappers.measure_with_ema(norm, 0.8),
                "w_ema": wrappers.measure_with_ema(lambda u: u["w"], 0.5, debias=False),
            }
        ),
        lib.clip_by_global_norm(0.5),
    )


def test_snapshot_and_monitor_match_optax(standard_promotion):
    with jax.enable_x64(True):
        params = _params(jnp.float64)
        ours = _monitored(optjax, w, optjax.tree.global_norm)
        theirs = _monitored(optax, optax, optax.tree.norm)
        s_ours, s_theirs = ours.init(params), theirs.init(params)
        step, step_ref = jax.jit(ours.update), jax.jit(theirs.update)
        for g in _grads(params, 4):
            u, s_ours = step(g, s_ours, params)
            u_ref, s_theirs = step_ref(g, s_theirs, params)
            _close(u, u_ref)
            for name in ("before", "norm", "norm_ema", "w_ema"):
                _close(optjax.tree.get_by_name(s_ours, name), optax.tree.get(s_theirs, name))


def test_monitor_state_structure_changes_after_first_step_in_optax(standard_promotion):
    params = _params()
    theirs = optax.monitor({"norm": optax.tree.norm})
    before = theirs.init(params)
    after = theirs.update(params, before, params)[1]
    assert jax.tree.structure(before) != jax.tree.structure(after)  # {} at init
    ours = optjax.chain(w.monitor({"norm": optjax.tree.global_norm}), optjax.sgd(0.1))

    def step(state, g):  # lax.scan needs the state's type to stay the same
        u, state = ours.update(g, state, params)
        return state, u

    first = ours.init(params)
    last, _ = jax.lax.scan(step, first, jax.tree.map(lambda p: jnp.stack([p, 2 * p]), params))
    chex.assert_trees_all_equal_shapes_and_dtypes(first, last)
    assert float(optjax.tree.get_by_name(last, "norm")) > 0


def test_measure_with_ema_bool_state_changes_dtype_in_optax(standard_promotion):
    def big(u):
        return jnp.max(u) > 1.0

    theirs = optax.measure_with_ema(big, 0.5)
    s0 = theirs.init(jnp.zeros(1))
    s1 = theirs.update(jnp.array([2.0]), s0)[1]
    assert s0[1].ema.dtype == jnp.bool_ and s1[1].ema.dtype == jnp.float32
    ours = w.measure_with_ema(big, 0.5)
    s0 = ours.init(jnp.zeros(1))
    fraction, s1 = ours.update(jnp.array([2.0]), s0)
    chex.assert_trees_all_equal_shapes_and_dtypes(s0, s1)
    assert float(fraction) == 1.0  # debiased: the step where it held, over the one step


def test_measure_with_ema_float32_is_closer_to_float64_than_optax(standard_promotion):
    decay = 0.999  # 1 - decay^t in float32 loses digits; optjax forms it with expm1
    values = np.random.default_rng(3).uniform(0.5, 1.5, size=12)
    exact, m = [], 0.0
    for t, v in enumerate(values, start=1):
        m = decay * m + (1 - decay) * v
        exact.append(m / (1 - decay**t))
    errors = {}
    for lib, wrappers in ((optjax, w), (optax, optax)):
        tx = wrappers.measure_with_ema(lambda u: u[0], decay)
        state, worst = tx.init(jnp.zeros(1)), 0.0
        for v, e in zip(values, exact):
            out, state = tx.update(jnp.array([v], jnp.float32), state)
            worst = max(worst, abs(float(out) / e - 1))
        errors[lib.__name__] = worst
    assert errors["optjax"] <= errors["optax"], errors
    assert errors["optjax"] < 1e-6, errors


# --- microbatch --------------------------------------------------------------------------------


def _fun(x, y, *, scale):
    return {"sum": jnp.sum(x * y, axis=0) * scale, "rows": x + y}


A = optax.microbatching.AccumulationType
CASES = {
    "sum_concat": ({"sum": A.SUM, "rows": A.CONCAT}, {}),
    "mean_running_mean_early_stop": (
        {"sum": A.MEAN, "rows": A.RUNNING_MEAN},
        {"num_real_microbatches": 3},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_microbatch_matches_optax(case, standard_promotion):
    kind, kwargs = CASES[case]  # optax's AccumulationType: optjax takes it too
    with jax.enable_x64(True):
        rng = np.random.default_rng(4)
        x, y = (jnp.asarray(rng.normal(size=(8, 3))) for _ in range(2))
        ours = w.microbatch(_fun, 0, 2, kind, argnames="y", **kwargs)
        theirs = optax.microbatch(_fun, 0, 2, kind, argnames="y", **kwargs)
        mine = jax.jit(lambda x, y: ours(x, y=y, scale=0.5))(x, y)
        _close(mine, theirs(x, y=y, scale=0.5))
        if case == "sum_concat":  # the same as one evaluation
            _close(mine, _fun(x, y, scale=0.5))


def test_microbatch_in_axes_custom_accumulator_and_traced_count(standard_promotion):
    x = jnp.arange(12.0).reshape(3, 4)  # batch along axis 1
    maximum = w.Accumulator(
        init=lambda s: jnp.full(s.shape, -jnp.inf, s.dtype),
        update=lambda carry, value, i: jnp.maximum(carry, value),
        finalize=lambda carry: carry,
        aggregate=lambda values: jnp.max(values, axis=0),
    )
    f = w.microbatch(lambda x: jnp.max(x, axis=1), 0, 1, maximum, in_axes=1)
    np.testing.assert_allclose(f(x), jnp.max(x, axis=1))
    ref = optax.microbatch(lambda x: jnp.sum(x, axis=1), 0, 2, A.SUM, in_axes=1)
    ours = w.microbatch(lambda x: jnp.sum(x, axis=1), 0, 2, w.AccumulationType.SUM, in_axes=1)
    _close(ours(x), ref(x))
    counted = jax.jit(
        lambda x, m: w.microbatch(jnp.sum, 0, 1, w.AccumulationType.SUM, num_real_microbatches=m)(x)
    )
    assert float(counted(jnp.arange(4.0), 3)) == 0.0 + 1.0 + 2.0
    assert w.microbatch(jnp.sum, 0, None) is jnp.sum
    with pytest.raises(ValueError, match="not a multiple of microbatch_size=3"):
        w.microbatch(jnp.sum, 0, 3)(jnp.ones(4))
    with pytest.raises(ValueError, match="averages floating results"):
        w.microbatch(jnp.sum, 0, 2, w.AccumulationType.MEAN)(jnp.ones(4, jnp.int32))


# --- inject_stateful_hyperparams ---------------------------------------------------------------


class _HalveOnHighLoss:
    """A stateful schedule: the rate, halved after each step whose ``loss`` extra is above 1."""

    def init(self):
        return {"rate": jnp.asarray(0.1)}

    def update(self, state, **extra_args):
        rate = state["rate"]
        return {"rate": jnp.where(extra_args["loss"] > 1.0, rate / 2, rate)}

    def __call__(self, state, **extra_args):
        del extra_args
        return state["rate"]


def test_inject_stateful_hyperparams_matches_optax(standard_promotion):
    with jax.enable_x64(True):  # a stateful learning rate, a schedule for b1, a number for b2
        b1 = optjax.linear_schedule(0.9, 0.7, 4)
        ours = w.inject_stateful_hyperparams(optjax.adam, hyperparam_dtype=jnp.float64)
        theirs = _quiet(lambda: optax.inject_stateful_hyperparams(optax.adam, (), jnp.float64))
        _against_optax(
            ours(_HalveOnHighLoss(), b1=b1, b2=0.99),
            theirs(_HalveOnHighLoss(), b1=b1, b2=0.99),
            loss=jnp.array(2.0),
        )
    state = w.inject_stateful_hyperparams(optjax.sgd)(_HalveOnHighLoss()).init(_params())
    assert isinstance(state, w.InjectStatefulHyperparamsState)
    assert float(state.hyperparams["learning_rate"]) == np.float32(0.1)


def test_inject_stateful_hyperparams_bf16_b2_rounds_to_one_in_optax(standard_promotion):
    params = jnp.ones(3, jnp.bfloat16)
    g = jnp.full(3, 0.5, jnp.bfloat16)
    theirs = _quiet(lambda: optax.inject_stateful_hyperparams(optax.adam)(learning_rate=0.1))
    state = theirs.init(params)
    assert float(state.hyperparams["b2"]) == 1.0
    assert bool(jnp.all(jnp.isnan(jax.jit(theirs.update)(g, state, params)[0])))
    ours = w.inject_stateful_hyperparams(optjax.adam)(learning_rate=0.1)
    state, step = ours.init(params), jax.jit(ours.update)
    assert state.hyperparams["b2"].dtype == jnp.float32
    u, state = step(g, state, params)
    np.testing.assert_allclose(u.astype(jnp.float32), -0.1, rtol=1e-2)
    state.hyperparams["learning_rate"] = 0.2  # changeable between steps, as inject_hyperparams
    u, _ = step(g, state, params)
    np.testing.assert_allclose(u.astype(jnp.float32), -0.2, rtol=1e-2)


# --- extra args --------------------------------------------------------------------------------


def test_with_extra_args_support_and_the_one_transformation_type(standard_promotion):
    assert w.GradientTransformationExtraArgs is optjax.GradientTransformation
    g, state = jnp.array([1.0]), optjax.EmptyState()
    tx = w.with_extra_args_support(optjax.scale(2.0))
    assert isinstance(tx, w.GradientTransformationExtraArgs)
    np.testing.assert_allclose(tx.update(g, state, None, loss=jnp.array(1.0))[0], [2.0])
    takes_all = w.partition({"a": optjax.sgd(1.0)}, "a")
    assert w.with_extra_args_support(takes_all) is takes_all
    theirs = optax.with_extra_args_support(optax.scale(2.0))
    assert w.with_extra_args_support(theirs) is theirs  # optax's own type: as it is
    tagged = w.with_extra_args_support(
        _tagged(optjax.GradientTransformation)
    )  # named extras still reach it
    np.testing.assert_allclose(tagged.update(g, state, tags=jnp.array([3.0]), x=1)[0], [3.0])
    mixed = optax.chain(optax.with_extra_args_support(optax.sgd(1.0)), tx)
    np.testing.assert_allclose(mixed.update(g, mixed.init(g), loss=0.0)[0], [-2.0])


# --- the flat layout, and bad hyperparameters --------------------------------------------------


def test_flat_layout_matches_tree_path():
    def make():
        return optjax.chain(
            w.conditionally_mask(optjax.trace(0.9), lambda step: step != 1),
            w.monitor({"norm": optjax.tree.global_norm}),
            w.apply_every(2),
        )

    params = _params()
    grads = _grads(params, 4)
    tree_run = _trajectory(make(), optjax.apply_updates, params, grads)
    flat_run = _trajectory(optjax.flat_transform(make()), optjax.apply_updates, params, grads)
    _close(flat_run, tree_run)


def test_python_number_leaves_and_a_saturated_step_count():
    params, g = {"w": 1.0, "b": -2.0}, {"w": 0.5, "b": 0.25}
    for tx, second_update in [
        (w.apply_every(2), {"w": 1.0, "b": 0.5}),
        (
            w.conditionally_transform(optjax.scale(2.0), lambda step: step == 1),
            {"w": 1.0, "b": 0.5},
        ),
        (w.monitor({"norm": optjax.tree.global_norm}), g),
        (w.flatten(optjax.sgd(0.1)), {"w": -0.05, "b": -0.025}),
    ]:
        state = tx.init(params)
        for _ in range(2):
            u, state = tx.update(g, state, params)
        _close(u, second_update)
    top = jnp.iinfo(jnp.int32).max
    tx = w.conditionally_mask(optjax.sgd(1.0), lambda step: step > 0)
    state = tx.init(jnp.zeros(1))._replace(step=jnp.array(top, jnp.int32))
    u, state = tx.update(jnp.ones(1), state)
    assert int(state.step) == top and float(u[0]) == -1.0  # saturates; does not wrap to < 0
    ema = w.measure_with_ema(jnp.sum, 0.9)
    state = ema.init(jnp.zeros(2))._replace(count=jnp.array(top, jnp.int32))
    m, state = ema.update(jnp.ones(2), state)
    assert int(state.count) == top
    np.testing.assert_allclose(m, 0.2, rtol=1e-6)  # 1 - 0.9^count is 1, not 0 or NaN


BAD = {
    "k": (lambda v: w.apply_every(v), [0, -1, 1.5, True, None]),
    "should_transform_fn": (
        lambda v: w.conditionally_mask(optjax.sgd(0.1), v),
        [None, 3, "step"],
    ),
    "decay": (lambda v: w.measure_with_ema(jnp.sum, v), [1.0, -0.1, float("nan"), None]),
    "measure": (lambda v: w.snapshot("x", v), [None, 1.0]),
    "measure_name": (lambda v: w.snapshot(v, jnp.sum), [None, 3]),
    "measures": (lambda v: w.monitor(v), [[jnp.sum], {"x": 2.0}]),
    "microbatch_size": (lambda v: w.microbatch(jnp.sum, 0, v), [0, -2, 1.5, True]),
    "num_real_microbatches": (
        lambda v: w.microbatch(jnp.sum, 0, 1, num_real_microbatches=v),
        [-1, 1.5],
    ),
    "argnums": (lambda v: w.microbatch(jnp.sum, v, 1), [1.5, ["a"], ()]),
    "accumulator": (lambda v: w.microbatch(jnp.sum, 0, 1, v), ["sum", 1]),
    "max_squared_norm": (
        lambda v: w.skip_large_updates({"a": jnp.ones(1)}, 0, None, v),
        [-1.0, float("nan"), float("inf")],
    ),
    "hyperparam_dtype": (
        lambda v: w.inject_stateful_hyperparams(optjax.adam, hyperparam_dtype=v),
        [jnp.bfloat16, jnp.int32],
    ),
    "static_args": (lambda v: w.inject_stateful_hyperparams(optjax.adam, static_args=v), ["lr"]),
    "b1": (lambda v: w.inject_stateful_hyperparams(optjax.adam)(0.1, b1=v), [1.0, -0.5]),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_hyperparameters_raise_naming_the_argument(name):
    make, values = BAD[name]
    for value in values:
        with pytest.raises(ValueError, match=name):
            make(value)
