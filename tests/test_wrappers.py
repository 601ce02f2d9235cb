"""Wrappers, each against a hand-written equivalent: masked vs the inner transform run on the
selected leaves only, multi_transform vs each group run alone, inject_hyperparams vs the plain
optimizer, MultiSteps vs one batch k times larger, apply_if_finite vs a run without the bad
steps, lookahead and parameter averaging vs NumPy loops of their papers' formulas."""

import contextlib
import copy
import inspect
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optjax

OPTIMIZERS = [
    "sgd", "adagrad", "adadelta", "rmsprop", "adam", "adamw", "nadam", "nadamw", "amsgrad",
    "adamax", "adamaxw", "radam", "lion", "adafactor",
]  # fmt: skip


@contextlib.contextmanager
def backend_compiles(fun_name: str):
    """Count XLA compilations of the jitted function named ``fun_name`` inside the block."""
    count = []

    def listen(event, duration, **kwargs):
        del duration
        if (
            event == "/jax/core/compile/backend_compile_duration"
            and kwargs.get("fun_name") == f"jit({fun_name})"
        ):
            count.append(1)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def _params(dtype=jnp.float32):
    return {
        "w": jnp.linspace(-1.0, 1.0, 15, dtype=jnp.float32).reshape(5, 3).astype(dtype),
        "b": jnp.linspace(0.5, 1.0, 7, dtype=jnp.float32).astype(dtype),
        "s": jnp.array(0.25, dtype),
    }


def _grads(params, i):
    """A different, deterministic gradient for step i."""
    return jax.tree.map(
        lambda p: (jnp.sin(p.astype(jnp.float32) * (i + 1)) + 0.1).astype(p.dtype), params
    )


def _run(tx, params, steps, grads=_grads, jit=False):
    """Updates, states and params after each of ``steps`` steps (eager unless ``jit``: on such
    small trees compiling costs more than it saves)."""
    state, update = tx.init(params), jax.jit(tx.update) if jit else tx.update
    out = []
    for i in range(steps):
        u, state = update(grads(params, i), state, params)
        params = optjax.apply_updates(params, u)
        out.append((u, state, params))
    return out


def _close(a, b, rtol=1e-6, atol=0.0):
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol),
        a,
        b,
    )


def _leaf_shapes(tree):
    return sorted(x.shape for x in jax.tree.leaves(tree))


# masked, freeze, multi_transform -----------------------------------------------------------


def test_masked_is_the_inner_transform_on_the_selected_leaves_only():
    mask = {"w": True, "b": False, "s": True}
    params = _params()
    out = _run(optjax.masked(optjax.adam(0.1), mask), params, 4)
    inner, state, p_sel = optjax.adam(0.1), None, {"w": params["w"], "s": params["s"]}
    state = inner.init(p_sel)
    p = params
    for i, (u, _, p_next) in enumerate(out):
        g = _grads(p, i)
        expected, state = inner.update({"w": g["w"], "s": g["s"]}, state, p_sel)
        _close({"w": u["w"], "s": u["s"]}, expected)
        np.testing.assert_array_equal(u["b"], g["b"])  # masked out: passes through unchanged
        p_sel = optjax.apply_updates(p_sel, expected)
        p = p_next


def test_masked_state_holds_nothing_for_masked_out_leaves():
    state = optjax.masked(optjax.adam(0.1), {"w": True, "b": False, "s": True}).init(_params())
    assert _leaf_shapes(state) == [(), (), (), (5, 3), (5, 3)]  # count; mu and nu of w and s
    assert (7,) not in _leaf_shapes(state)


def test_mask_as_function_and_as_prefix_tree():
    params = {"enc": {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}, "head": jnp.ones((2, 3))}
    g = jax.tree.map(lambda p: 2.0 * p, params)
    by_fn = optjax.masked(optjax.sgd(0.5), lambda p: jax.tree.map(lambda x: x.ndim == 2, p))
    u, _ = by_fn.update(g, by_fn.init(params), params)
    np.testing.assert_array_equal(u["enc"]["w"], -jnp.ones((2, 2)))
    np.testing.assert_array_equal(u["enc"]["b"], 2.0 * jnp.ones(2))
    by_prefix = optjax.masked(optjax.sgd(0.5), {"enc": False, "head": True})
    u, _ = by_prefix.update(g, by_prefix.init(params), params)
    np.testing.assert_array_equal(u["head"], -jnp.ones((2, 3)))
    np.testing.assert_array_equal(u["enc"]["w"], g["enc"]["w"])


def test_mask_errors_name_the_problem():
    params = _params()
    with pytest.raises(ValueError, match=r"only params has \['s'\]; only mask has \['x'\]"):
        optjax.masked(optjax.sgd(0.1), {"w": True, "b": False, "x": True}).init(params)
    with pytest.raises(ValueError, match=r"mask at \['b'\] must be a single bool, got 'yes'"):
        optjax.masked(optjax.sgd(0.1), {"w": True, "b": "yes", "s": True}).init(params)
    tx = optjax.masked(optjax.sgd(0.1), lambda p: jax.tree.map(lambda x: jnp.all(x > 0), p))
    with pytest.raises(ValueError, match="traced value"):
        jax.jit(tx.update)(params, tx.init(jax.tree.map(np.asarray, params)), params)


def test_freeze_leaves_frozen_params_unchanged():
    params = _params()
    tx = optjax.chain(
        optjax.adamw(0.1, weight_decay=0.5), optjax.freeze({"w": True, "b": False, "s": True})
    )
    final = _run(tx, params, 3)[-1][2]
    np.testing.assert_array_equal(final["w"], params["w"])
    np.testing.assert_array_equal(final["s"], params["s"])
    assert not np.allclose(final["b"], params["b"])


@pytest.mark.parametrize("labels_as", ["tree", "function"])
def test_multi_transform_runs_each_group_alone(labels_as):
    labels = {"w": "adam", "b": "sgd", "s": "sgd"}
    groups = {"adam": optjax.adam(0.1), "sgd": optjax.sgd(0.3, momentum=0.9)}
    param_labels = labels if labels_as == "tree" else (lambda p: {k: labels[k] for k in p})
    params = _params()
    out = _run(optjax.multi_transform(groups, param_labels), params, 3)
    # step by step: each group's transform on its own leaves
    states = {
        name: tx.init({k: params[k] for k in labels if labels[k] == name})
        for name, tx in groups.items()
    }
    p = params
    for i, (u, _, p_next) in enumerate(out):
        g = _grads(p, i)
        for name, tx in groups.items():
            keys = [k for k in labels if labels[k] == name]
            expected, states[name] = tx.update(
                {k: g[k] for k in keys}, states[name], {k: p[k] for k in keys}
            )
            _close({k: u[k] for k in keys}, expected)
        p = p_next


def test_multi_transform_state_per_group_and_unknown_label():
    groups = {"adam": optjax.adam(0.1), "sgd": optjax.sgd(0.1, momentum=0.9)}
    state = optjax.multi_transform(groups, {"w": "adam", "b": "sgd", "s": "sgd"}).init(_params())
    assert _leaf_shapes(state.inner_states["adam"]) == [(), (5, 3), (5, 3)]
    assert _leaf_shapes(state.inner_states["sgd"]) == [(), (7,)]
    with pytest.raises(ValueError, match=r"label 'bias' at \['b'\] with no transform"):
        optjax.multi_transform(groups, {"w": "adam", "b": "bias", "s": "sgd"}).init(_params())


WEIGHT_DECAY = {  # optimizer -> (its weight-decay argument, extra arguments)
    "adamw": ("weight_decay", {}),
    "nadamw": ("weight_decay", {}),
    "adamaxw": ("weight_decay", {}),
    "lion": ("weight_decay", {}),
    "adadelta": ("weight_decay", {}),
    "adafactor": ("weight_decay_rate", {"multiply_by_parameter_scale": False}),
}


@pytest.mark.parametrize("name", WEIGHT_DECAY)
def test_every_weight_decay_mask_is_called_mask(name):
    factory, (wd_name, extra) = getattr(optjax, name), WEIGHT_DECAY[name]
    assert "mask" in inspect.signature(factory).parameters
    params = _params()
    g = _grads(params, 0)
    masked_tx = factory(0.1, **{wd_name: 0.5, "mask": {"w": True, "b": False, "s": True}}, **extra)
    u, _ = masked_tx.update(g, masked_tx.init(params), params)
    for key, decayed in [("w", True), ("b", False), ("s", True)]:  # each leaf on its own
        alone = factory(0.1, **{wd_name: 0.5 if decayed else 0.0}, **extra)
        expected, _ = alone.update(g[key], alone.init(params[key]), params[key])
        np.testing.assert_allclose(u[key], expected, rtol=1e-6)
    decayed_b = factory(0.1, **{wd_name: 0.5}, **extra).update(g, masked_tx.init(params), params)[
        0
    ]["b"]
    assert not np.allclose(u["b"], decayed_b, rtol=1e-6, atol=0)  # the mask did keep b out


@pytest.mark.parametrize("name", ["adadelta", "adafactor"])
def test_weight_decay_mask_alias(name):
    factory, (wd_name, extra) = getattr(optjax, name), WEIGHT_DECAY[name]
    mask, params = {"w": True, "b": False, "s": False}, _params()
    a = factory(0.1, **{wd_name: 0.5, "mask": mask}, **extra)
    b = factory(0.1, **{wd_name: 0.5, "weight_decay_mask": mask}, **extra)
    g = _grads(params, 0)
    _close(a.update(g, a.init(params), params)[0], b.update(g, b.init(params), params)[0], rtol=0)
    with pytest.raises(ValueError, match="mask once"):
        factory(0.1, mask=mask, weight_decay_mask=mask)


# inject_hyperparams -----------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_inject_hyperparams_matches_the_plain_optimizer(name):
    factory = getattr(optjax, name)
    params = _params()
    injected = _run(optjax.inject_hyperparams(factory)(learning_rate=0.01), params, 3)
    plain = _run(factory(learning_rate=0.01), params, 3)
    for (u, state, _), (v, _, _) in zip(injected, plain):
        # bias corrections use a float32 log for array hyperparameters, a double one for floats
        _close(u, v, rtol=2e-6, atol=1e-10)
        assert state.hyperparams["learning_rate"].dtype == jnp.float32


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_inject_hyperparams_bf16_params_keep_float32_hyperparameters(name):
    params = _params(jnp.bfloat16)
    out = _run(optjax.inject_hyperparams(getattr(optjax, name))(learning_rate=0.01), params, 3)
    for u, state, p in out:
        assert all(x.dtype == jnp.float32 for x in state.hyperparams.values())
        assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(u))
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves((u, p)))
    if "b2" in state.hyperparams:
        assert float(state.hyperparams["b2"]) == float(
            np.float32(0.999 if name != "lion" else 0.99)
        )


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=str)
def test_inject_hyperparams_adam_low_precision_tracks_float32_run(dtype):
    tx = optjax.inject_hyperparams(optjax.adam)(learning_rate=5e-2, b1=0.9, b2=0.999)
    low = _run(tx, _params(dtype), 5)[-1][2]
    high = _run(optjax.adam(5e-2), _params(), 5)[-1][2]
    moved = jax.tree.map(lambda p, q: np.asarray(p, np.float64) - np.asarray(q), high, _params())
    assert np.mean(np.abs(np.concatenate([m.ravel() for m in jax.tree.leaves(moved)]))) > 0.1
    _close(jax.tree.map(lambda x: x.astype(jnp.float32), low), high, atol=2e-2)


@pytest.mark.parametrize("placement", ["default", "committed"])
def test_changing_the_learning_rate_does_not_recompile(placement):
    tx = optjax.inject_hyperparams(optjax.sgd)(learning_rate=0.1, momentum=0.0)

    @jax.jit
    def lr_step(params, state):
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        return optjax.apply_updates(params, updates), state, updates

    params = {"w": jnp.zeros(3)}
    state = tx.init(params)
    if placement == "committed":  # e.g. params and state placed on a device or sharded
        params, state = jax.device_put((params, state), jax.devices()[0])
    with backend_compiles("lr_step") as compiles:
        params, state, u = lr_step(params, state)
        np.testing.assert_allclose(u["w"], -0.1)
        state.hyperparams["learning_rate"] = 0.5
        params, state, u = lr_step(params, state)
        np.testing.assert_allclose(u["w"], -0.5)
        state = optjax.tree.set_by_name(state, "learning_rate", 0.25)
        params, state, u = lr_step(params, state)
        np.testing.assert_allclose(u["w"], -0.25)
    assert float(optjax.tree.get_by_name(state, "learning_rate")) == 0.25
    assert len(compiles) == 1


def test_inject_hyperparams_schedule_is_evaluated_and_stored_each_step():
    schedule = optjax.linear_schedule(1.0, 0.0, transition_steps=4)
    tx = optjax.inject_hyperparams(optjax.sgd)(learning_rate=schedule)
    out = _run(tx, {"w": jnp.zeros(2)}, 4, lambda p, i: {"w": jnp.ones(2)})
    for t, (u, state, _) in enumerate(out):
        np.testing.assert_allclose(state.hyperparams["learning_rate"], 1.0 - t / 4)
        np.testing.assert_allclose(u["w"], -(1.0 - t / 4))
        assert int(state.count) == t + 1


def test_inject_hyperparams_passes_static_arguments_through():
    state = optjax.inject_hyperparams(optjax.sgd)(0.1, momentum=0.9, nesterov=True).init(_params())
    assert sorted(state.hyperparams) == ["learning_rate", "momentum"]
    tx = optjax.inject_hyperparams(optjax.adafactor)(learning_rate=0.1, min_dim_size_to_factor=3)
    state = tx.init(_params())
    assert "min_dim_size_to_factor" not in state.hyperparams and "decay_rate" in state.hyperparams
    assert (5,) in _leaf_shapes(state)  # w (5, 3) is factored: a row statistic of length 5
    mask_fn = lambda p: jax.tree.map(lambda x: x.ndim > 0, p)  # a mask function, not a schedule
    state = optjax.inject_hyperparams(optjax.adamw)(learning_rate=0.1, mask=mask_fn).init(_params())
    assert "mask" not in state.hyperparams
    tx = optjax.inject_hyperparams(optjax.adam, static_args="b1")(learning_rate=0.1)
    assert "b1" not in tx.init(_params()).hyperparams


def test_inject_hyperparams_keeps_floats_the_factory_branches_on_static():
    def factory(learning_rate, clip=0.0):  # a float that removes a step when 0 cannot be traced
        return (
            optjax.sgd(learning_rate)
            if clip == 0.0
            else optjax.chain(optjax.clip(clip), optjax.sgd(learning_rate))
        )

    state = optjax.inject_hyperparams(factory)(learning_rate=1.0).init(_params())
    assert "clip" not in state.hyperparams and "learning_rate" in state.hyperparams
    # adadelta always chains its weight decay, so even a decay of 0.0 can be changed later
    state = optjax.inject_hyperparams(optjax.adadelta)(learning_rate=1.0).init(_params())
    assert {"weight_decay", "rho"} <= set(state.hyperparams)


def test_inject_hyperparams_errors():
    with pytest.raises(ValueError, match=r"b1 must be in \[0, 1\), got b1=1.5"):
        optjax.inject_hyperparams(optjax.adam)(learning_rate=0.1, b1=1.5)
    with pytest.raises(ValueError, match="learning_rate must be a finite number >= 0"):
        optjax.inject_hyperparams(optjax.sgd)(learning_rate=-1.0)
    with pytest.raises(ValueError, match="hyperparam_dtype must be float32 or wider"):
        optjax.inject_hyperparams(optjax.adam, hyperparam_dtype=jnp.bfloat16)
    state = optjax.inject_hyperparams(optjax.adam)(learning_rate=0.1).init(_params())
    with pytest.raises(
        ValueError, match=r"'lr' is not an injected hyperparameter; the injected ones are \['b1'"
    ):
        state.hyperparams["lr"] = 0.1
    with pytest.raises(ValueError, match=r"shape \(\); got a value of shape \(2,\)"):
        state.hyperparams["b1"] = [0.9, 0.8]


def test_inject_hyperparams_state_copies_and_pickles():
    state = optjax.inject_hyperparams(optjax.adam)(learning_rate=0.1).init(_params())
    for other in (copy.deepcopy(state), pickle.loads(pickle.dumps(state))):
        assert type(other.hyperparams) is optjax.Hyperparams
        _close(other, state, rtol=0)


# MultiSteps --------------------------------------------------------------------------------

X = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
Y = (X @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3).astype(np.float32)


def _loss(p, x, y):
    return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)


@pytest.mark.parametrize("inner", ["adam", "sgd_momentum"])
def test_multisteps_equals_one_batch_k_times_larger(inner):
    make = {
        "adam": lambda: optjax.adam(0.05),
        "sgd_momentum": lambda: optjax.sgd(0.05, momentum=0.9),
    }[inner]
    k, p0 = 4, {"w": jnp.zeros(3), "b": jnp.zeros(())}
    tx = optjax.MultiSteps(make(), every_k_schedule=k)
    big, small = make(), jax.jit(tx.update)
    grad = jax.jit(jax.grad(_loss))
    p_small, s_small, p_big, s_big = p0, tx.init(p0), p0, big.init(p0)
    for step in range(3):
        for j in range(k):
            before = p_small
            chunk = slice(8 * j, 8 * (j + 1))
            u, s_small = small(grad(p_small, X[chunk], Y[chunk]), s_small, p_small)
            p_small = optjax.apply_updates(p_small, u)
            if j < k - 1:  # between boundaries the updates are exactly zero
                assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(u))
                _close(p_small, before, rtol=0)
                assert not bool(tx.has_updated(s_small))
        u, s_big = big.update(grad(p_big, X, Y), s_big, p_big)
        p_big = optjax.apply_updates(p_big, u)
        assert bool(tx.has_updated(s_small)) and int(s_small.gradient_step) == step + 1
        _close(p_small, p_big, rtol=1e-5, atol=1e-6)


def test_multisteps_sum_and_schedule_of_k():
    ks = optjax.piecewise_constant_schedule(1, {2: 3})  # k = 1 for two inner steps, then 3
    tx = optjax.MultiSteps(
        optjax.sgd(1.0), every_k_schedule=lambda n: ks(n).astype(jnp.int32), use_grad_mean=False
    )
    out = _run(tx, {"w": jnp.zeros(2)}, 8, lambda p, i: {"w": jnp.full(2, float(i + 1))}, jit=True)
    emitted = [float(u["w"][0]) for u, _, _ in out]
    assert emitted == [-1.0, -2.0, 0.0, 0.0, -(3.0 + 4.0 + 5.0), 0.0, 0.0, -(6.0 + 7.0 + 8.0)]


def test_multisteps_accumulator_dtype_and_protocols():
    params = _params(jnp.bfloat16)
    tx = optjax.MultiSteps(optjax.adam(0.1), 2, accumulator_dtype=jnp.bfloat16)
    state = tx.init(params)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(state.acc_grads))
    assert all(  # by default, float32 at least
        x.dtype == jnp.float32
        for x in jax.tree.leaves(optjax.MultiSteps(optjax.adam(0.1), 2).init(params).acc_grads)
    )
    as_tx = tx.gradient_transformation()
    assert isinstance(as_tx, optjax.GradientTransformation)
    out = _run(optjax.chain(optjax.clip_by_global_norm(1.0), as_tx), params, 2, jit=True)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(out[-1][0]))
    with pytest.raises(
        ValueError, match="every_k_schedule must be an integer >= 1, got every_k_schedule=0"
    ):
        optjax.MultiSteps(optjax.adam(0.1), 0)


def test_multisteps_sums_low_precision_gradients_in_float32_by_default():
    # 1 + 3 * 2^-9: in bf16 each 2^-9 is under half an ulp of 1 and rounds away; in float32 the
    # sum is 1.005859, which rounds once, to the bf16 above 1, 1 + 2^-7, when it reaches sgd.
    grads = [1.0, 2.0**-9, 2.0**-9, 2.0**-9]
    p = jnp.zeros(1, jnp.bfloat16)

    def last_update(**kwargs):
        tx = optjax.MultiSteps(optjax.sgd(1.0), 4, use_grad_mean=False, **kwargs)
        state = tx.init(p)
        for g in grads:
            u, state = tx.update(jnp.full(1, g, jnp.bfloat16), state, p)
        return float(u[0])

    assert last_update() == -(1 + 2.0**-7)
    assert last_update(accumulator_dtype=jnp.bfloat16) == -1.0  # what the float32 default avoids


def test_multisteps_skips_non_finite_mini_batches():
    tx = optjax.MultiSteps(optjax.sgd(1.0), 2, should_skip_update_fn=optjax.skip_not_finite)
    grads = [1.0, np.nan, 3.0]
    out = _run(
        tx, {"w": jnp.zeros(1)}, 3, lambda p, i: {"w": jnp.array([grads[i]], jnp.float32)}, jit=True
    )
    (_, s0, _), (u1, s1, _), (u2, _, _) = out
    assert (
        float(u1["w"][0]) == 0.0 and int(s1.mini_step) == 1 and bool(s1.skip_state["should_skip"])
    )
    np.testing.assert_array_equal(s1.acc_grads["w"], s0.acc_grads["w"])
    assert float(u2["w"][0]) == -2.0  # mean of 1 and 3; the NaN never entered


# apply_if_finite ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_apply_if_finite_skips_bad_steps_and_counts_them(bad):
    grads = [1.0, bad, 2.0, bad, bad, 3.0]
    make_g = lambda p, i: {"w": jnp.full(2, grads[i], jnp.float32)}
    tx = optjax.apply_if_finite(optjax.adam(0.1), max_consecutive_errors=3)
    out = _run(tx, {"w": jnp.zeros(2)}, 6, make_g, jit=True)
    good = [g for g in grads if np.isfinite(g)]
    plain = _run(
        optjax.adam(0.1),
        {"w": jnp.zeros(2)},
        3,
        lambda p, i: {"w": jnp.full(2, good[i], jnp.float32)},
        jit=True,
    )
    expected_counts = [(0, 0), (1, 1), (0, 1), (1, 2), (2, 3), (0, 3)]
    for i, (u, state, p) in enumerate(out):
        assert (int(state.notfinite_count), int(state.total_notfinite)) == expected_counts[i]
        assert bool(state.last_finite) == bool(np.isfinite(grads[i]))
        if not np.isfinite(grads[i]):
            np.testing.assert_array_equal(u["w"], 0.0)
            _close((out[i - 1][1].inner_state, out[i - 1][2]), (state.inner_state, p), rtol=0)
    _close(out[-1][2], plain[-1][2], rtol=0)  # as if the bad steps never happened
    _close(out[-1][1].inner_state, plain[-1][1], rtol=0)


def test_apply_if_finite_gives_up_after_max_consecutive_errors():
    tx = optjax.apply_if_finite(optjax.sgd(1.0), max_consecutive_errors=2)
    out = _run(
        tx, {"w": jnp.zeros(1)}, 3, lambda p, i: {"w": jnp.array([np.nan], jnp.float32)}, jit=True
    )
    assert [bool(jnp.isnan(u["w"][0])) for u, _, _ in out] == [False, False, True]
    with pytest.raises(ValueError, match="max_consecutive_errors must be an integer >= 1"):
        optjax.apply_if_finite(optjax.sgd(1.0), max_consecutive_errors=0)


# lookahead and parameter averaging ---------------------------------------------------------

A = np.array([0.5, 2.0, 1.0])


def _quad_grads(p, i):
    return {"x": (A * np.asarray(p["x"], np.float64) + np.cos(i)).astype(np.float32)}


@pytest.mark.parametrize("alpha", [0.5, 0.2, 0.8, 1.0])  # not only 0.5, where alpha = 1 - alpha
def test_lookahead_matches_the_papers_algorithm(alpha):
    lr, k, steps = 0.1, 3, 10
    out = _run(
        optjax.lookahead(optjax.sgd(lr), sync_period=k, slow_step_size=alpha),
        {"x": jnp.ones(3)},
        steps,
        _quad_grads,
    )
    fast = slow = np.ones(3)
    for t in range(1, steps + 1):  # Zhang et al. 2019, Algorithm 1, in float64
        fast = fast - lr * (A * fast + np.cos(t - 1))
        if t % k == 0:
            slow = slow + alpha * (fast - slow)
            fast = slow
        _, state, p = out[t - 1]
        np.testing.assert_allclose(p["x"], fast, rtol=1e-5)
        np.testing.assert_allclose(state.slow_params["x"], slow, rtol=1e-5)


def test_lookahead_reset_state_and_errors():
    tx = optjax.lookahead(
        optjax.sgd(0.1, momentum=0.9), sync_period=2, slow_step_size=0.5, reset_state=True
    )
    out = _run(tx, {"x": jnp.ones(3)}, 2, _quad_grads)
    assert bool(jnp.any(out[0][1].fast_state[0].trace["x"] != 0))
    np.testing.assert_array_equal(out[1][1].fast_state[0].trace["x"], 0.0)
    with pytest.raises(ValueError, match="sync_period must be an integer >= 1"):
        optjax.lookahead(optjax.sgd(0.1), 0, 0.5)
    with pytest.raises(
        ValueError, match=r"slow_step_size must be in \[0, 1\], got slow_step_size=1.5"
    ):
        optjax.lookahead(optjax.sgd(0.1), 2, 1.5)
    with pytest.raises(ValueError, match="lookahead needs params"):
        tx.update({"x": jnp.ones(3)}, tx.init({"x": jnp.ones(3)}))


@pytest.mark.parametrize("decay", [None, 0.8])
def test_average_params_matches_numpy_average_of_iterates(decay):
    start, every = 3, 2
    tx = optjax.average_params(optjax.sgd(0.1), decay, start_step=start, every_k=every)
    out = _run(tx, {"x": jnp.ones(3)}, 9, _quad_grads)
    plain = _run(optjax.sgd(0.1), {"x": jnp.ones(3)}, 9, _quad_grads)
    average, taken = None, []
    for t, ((_, state, p), (_, _, q)) in enumerate(zip(out, plain), start=1):
        np.testing.assert_array_equal(p["x"], q["x"])  # training itself is unchanged
        x = np.asarray(p["x"], np.float64)
        if t >= start and (t - start) % every == 0:
            taken.append(x)
            average = (
                np.mean(taken, axis=0)
                if decay is None
                else (x if average is None else decay * average + (1 - decay) * x)
            )
        np.testing.assert_allclose(state.average["x"], x if average is None else average, rtol=1e-6)
        assert int(state.num_averaged) == len(taken)


def test_average_params_dtype_and_errors():
    state = optjax.average_params(optjax.sgd(0.1), 0.99, average_dtype=jnp.float32).init(
        _params(jnp.bfloat16)
    )
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.average))
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\), got decay=1.0"):
        optjax.average_params(optjax.sgd(0.1), 1.0)
    with pytest.raises(ValueError, match="start_step must be an integer >= 0, got start_step=-1"):
        optjax.average_params(optjax.sgd(0.1), start_step=-1)
    with pytest.raises(ValueError, match="every_k must be an integer >= 1, got every_k=0"):
        optjax.average_params(optjax.sgd(0.1), every_k=0)
    tx = optjax.average_params(optjax.sgd(0.1))
    with pytest.raises(ValueError, match="average_params needs params"):
        tx.update({"x": jnp.ones(3)}, tx.init({"x": jnp.ones(3)}))


# tree helpers ------------------------------------------------------------------------------


def test_tree_get_and_set_by_name_in_nested_states():
    tx = optjax.MultiSteps(optjax.inject_hyperparams(optjax.adamw)(learning_rate=0.1), 2)
    state = tx.init(_params())
    assert float(optjax.tree.get_by_name(state, "learning_rate")) == np.float32(0.1)
    assert optjax.tree.get_by_name(state, "mu")["w"].shape == (5, 3)
    counts = optjax.tree.get_all_by_name(state, "count")
    assert sorted(counts) == [".inner_opt_state.count", ".inner_opt_state.inner_state[0].count"]
    with pytest.raises(
        ValueError, match=r"2 nodes are named 'count', at \['.inner_opt_state.count'"
    ):
        optjax.tree.get_by_name(state, "count")
    with pytest.raises(
        ValueError, match=r"no node named 'momentum' in the tree; its names are \[.*'b1'"
    ):
        optjax.tree.get_by_name(state, "momentum")
    new = optjax.tree.set_by_name(state, "weight_decay", 0.5)
    assert optjax.tree.get_by_name(new, "weight_decay").dtype == jnp.float32
    assert float(optjax.tree.get_by_name(new, "weight_decay")) == 0.5
    assert float(optjax.tree.get_by_name(state, "weight_decay")) == np.float32(1e-4)  # a copy
    with pytest.raises(ValueError, match=r"has shape \(\); got a value of shape \(3,\)"):
        optjax.tree.set_by_name(state, "b1", jnp.zeros(3))
    with pytest.raises(ValueError, match="no node named 'lr'"):
        optjax.tree.set_by_name(state, "lr", 0.1)
