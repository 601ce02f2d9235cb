"""L-BFGS and its line searches against optax 0.2.8, step by step on the same objectives, and the
places where optjax is deliberately right where optax is not.

Each trajectory is one jitted ``lax.scan`` of the documented loop (value and gradient read back
from the state with `value_and_grad_from_state` where a line search keeps them), compared in
float64 (rtol 1e-6): the two libraries take the same decisions in every line search, so the
iterates agree to rounding.
"""

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optjax

# The generic conformance loop passes no value/grad/value_fn, so the row runs L-BFGS with a
# fixed learning rate and no line search (the line-search variants are tested here).

ROSENBROCK_START = (-1.2, 1.0, -0.5, 0.8)
QUADRATIC_START = (-2.0, 1.0, 0.5, 3.0, -1.0)


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def quadratic(x):  # condition number 100
    return 0.5 * jnp.sum(jnp.logspace(0.0, 2.0, x.shape[0], dtype=x.dtype) * x**2)


def complex_rosenbrock(z):  # Rosenbrock of (Re z, Im z)
    return rosenbrock(jnp.concatenate([z.real, z.imag]))


OBJECTIVES = {
    "quadratic": (quadratic, QUADRATIC_START),
    "rosenbrock": (rosenbrock, ROSENBROCK_START),
}


def _trajectory(lib, tx, f, x0, steps, from_state=True, direction=lambda g: g):
    """The iterates of the documented loop, as NumPy arrays (one row per step)."""
    value_and_grad = lib.value_and_grad_from_state(f) if from_state else None

    def step(carry, _):
        x, state = carry
        if from_state:
            value, grad = value_and_grad(x, state=state)
        else:
            value, grad = jax.value_and_grad(f)(x)
        u, state = tx.update(direction(grad), state, x, value=value, grad=grad, value_fn=f)
        x = lib.apply_updates(x, u)
        return (x, state), x

    run = jax.jit(lambda x0: jax.lax.scan(step, (x0, tx.init(x0)), length=steps)[1])
    return jax.tree.map(np.asarray, run(x0))


def _compare(make, objective, steps, dtype=jnp.float64, from_state=True):
    """(optjax's iterates, optax's) for ``make(lib)`` on the objective, in float64."""
    f, start = OBJECTIVES[objective]
    with jax.enable_x64(True):
        x0 = jnp.asarray(start, dtype)
        ours = _trajectory(optjax, make(optjax), f, x0, steps, from_state)
        with jax.numpy_dtype_promotion("standard"):  # optax needs it; optjax runs strict
            theirs = _trajectory(optax, make(optax), f, x0, steps, from_state)
    return ours, theirs


def _assert_same_steps(ours, theirs, rtol=1e-6):
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12, err_msg=f"step {i}")


# ---------------------------------------------------------------------------------------------
# Against optax, step by step


LBFGS_CASES = {
    "default-quadratic": (lambda lib: lib.lbfgs(), "quadratic", 10),
    "default-rosenbrock": (lambda lib: lib.lbfgs(), "rosenbrock", 45),
    "memory_size_1-quadratic": (lambda lib: lib.lbfgs(memory_size=1), "quadratic", 15),
    "non_default-rosenbrock": (
        lambda lib: lib.lbfgs(
            memory_size=3,
            scale_init_precond=False,
            linesearch=lib.scale_by_zoom_linesearch(
                max_linesearch_steps=15,
                max_learning_rate=2.0,
                tol=1e-12,
                increase_factor=3.0,
                slope_rtol=1e-3,
                curv_rtol=0.5,
                approx_dec_rtol=None,
                stepsize_precision=1e-3,
            ),  # initial_guess_strategy="keep", scale_by_zoom_linesearch's default
        ),
        "rosenbrock",
        30,
    ),
}


@functools.cache
def _lbfgs_case(name):
    make, objective, steps = LBFGS_CASES[name]
    return _compare(make, objective, steps)


@pytest.mark.parametrize("name", LBFGS_CASES)
def test_lbfgs_matches_optax_step_by_step(name):
    _assert_same_steps(*_lbfgs_case(name))


def test_documented_loop_converges_on_rosenbrock():
    ours, _ = _lbfgs_case("default-rosenbrock")  # value and gradient read from the state
    np.testing.assert_allclose(ours[-1], np.ones(4), atol=1e-8)


def _fixed_rate(lib):
    return lib.lbfgs(learning_rate=0.5, memory_size=2, linesearch=None)


@functools.cache
def _fixed_rate_case():
    return _compare(_fixed_rate, "rosenbrock", 20, from_state=False)


def test_lbfgs_with_a_learning_rate_and_no_line_search_matches_optax():
    _assert_same_steps(*_fixed_rate_case())


@pytest.mark.parametrize("memory_size", [1, 2, 3])
def test_small_memories_compile_to_programs_linear_in_the_leaves(memory_size):
    """The two loops run memory_size - 1 times; XLA removes a loop it knows runs once or never,
    and then copies each coefficient's sum over all leaves into every leaf (a program growing
    as the leaves squared: 2.5x for twice the leaves at memory_size 1 and 2)."""
    tx = optjax.scale_by_lbfgs(memory_size=memory_size)

    def program_size(leaves):
        params = {f"p{i:03d}": jnp.full((4,), 0.5 + i / 100) for i in range(leaves)}
        step = jax.jit(lambda g, s, p: tx.update(g, s, p))
        return len(step.lower(params, tx.init(params), params).compile().as_text())

    assert program_size(32) < 2.1 * program_size(16)


def test_each_leaf_traces_fewer_operations_than_in_optax(standard_promotion):
    """The memory is read and written one slot at a time with lax's slicing (the slot is always
    in [0, m)): x[j] and x.at[j].set also trace the handling of a negative j, per leaf and per
    read, which tracing, lowering and XLA then carry for every leaf of a large model."""

    def per_leaf(lib):
        tx = lib.scale_by_lbfgs()

        def operations(leaves):
            params = {f"p{i}": jnp.full((4,), 0.5 + i / 10) for i in range(leaves)}
            step = jax.jit(lambda g, s, p: tx.update(g, s, p))
            text = step.lower(params, tx.init(params), params).as_text()
            return len(re.findall(r"= \"?(?:stablehlo\.\w+|call)", text))

        return operations(3) - operations(2)

    assert per_leaf(optjax) < per_leaf(optax)


def test_complex_params_take_the_steps_of_their_real_and_imaginary_parts():
    # Inner products <a, b> = Re sum(conj(a) b) and |y|^2: C^n as R^2n. The updates are the
    # steepest-ascent direction, conj(jax.grad), as for any complex optimizer.
    real = _fixed_rate_case()[0]
    with jax.enable_x64(True):
        x0 = jnp.asarray(ROSENBROCK_START, jnp.float64)
        z0 = jax.lax.complex(x0[:2], x0[2:])
        z = _trajectory(
            optjax, _fixed_rate(optjax), complex_rosenbrock, z0, 20, False, direction=jnp.conj
        )
    np.testing.assert_allclose(np.concatenate([z.real, z.imag], axis=1), real, rtol=1e-10)


BACKTRACKING_CASES = {
    "default-quadratic": (
        lambda lib: lib.chain(lib.sgd(1.0), lib.scale_by_backtracking_linesearch(15)),
        "quadratic",
        False,
    ),
    "non_default-store_grad-rosenbrock": (
        lambda lib: lib.chain(
            lib.sgd(1.0),
            lib.scale_by_backtracking_linesearch(
                max_backtracking_steps=30,
                slope_rtol=0.3,
                decrease_factor=0.5,
                increase_factor=3.0,
                max_learning_rate=0.01,
                atol=1e-9,
                rtol=1e-4,
                store_grad=True,
            ),
        ),
        "rosenbrock",
        True,
    ),
}


@pytest.mark.parametrize("name", BACKTRACKING_CASES)
def test_backtracking_linesearch_matches_optax_step_by_step(name):
    make, objective, from_state = BACKTRACKING_CASES[name]
    _assert_same_steps(*_compare(make, objective, 25, from_state=from_state))


def test_float32_lbfgs_is_as_close_to_float64_as_optax(standard_promotion):
    steps = 12
    exact = _lbfgs_case("default-rosenbrock")[0][:steps]
    x0 = jnp.asarray(ROSENBROCK_START, jnp.float32)
    ours = _trajectory(optjax, optjax.lbfgs(), rosenbrock, x0, steps)
    theirs = _trajectory(optax, optax.lbfgs(), rosenbrock, x0, steps)
    assert ours.dtype == theirs.dtype == np.float32
    error = lambda x: np.max(np.abs(x - exact), axis=1)
    # The same formulas, rounded apart (sums where optax has tensordots): step by step, optjax
    # is within 1e-6 of optax's distance to the float64 path, or closer.
    assert np.all(error(ours) <= error(theirs) + 1e-6), (error(ours), error(theirs))


# ---------------------------------------------------------------------------------------------
# Where optax 0.2.8 is wrong


def _first_search_fails_then(lib, search, f):
    """A step whose direction is so long that f is NaN at every rate tried (the search returns
    0), then three ordinary steps: the final iterate."""
    tx = lib.chain(lib.sgd(1.0), search)

    @jax.jit
    def step(w, state, stretch):
        g = jax.grad(f)(w)
        u, state = tx.update(g * stretch, state, w, value=f(w), grad=g, value_fn=f)
        return lib.apply_updates(w, u), state

    w = jnp.array([1.0, 2.0])
    w, state = step(w, tx.init(w), 100.0)
    assert float(state[1].learning_rate) == 0.0  # nothing finite found: no step
    for _ in range(3):
        w, state = step(w, state, 1.0)
    return w


def _nan_beyond_ten(w):
    return jnp.where(jnp.max(jnp.abs(w)) > 10, jnp.nan, jnp.sum(w**2))


def test_backtracking_stuck_at_rate_zero_after_a_failed_search(standard_promotion):
    # optax starts each search from increase_factor * the last rate: 0 after a failed search,
    # so it tries w itself, accepts it, and never moves again. optjax restarts from the maximum.
    search = lambda lib: lib.scale_by_backtracking_linesearch(max_backtracking_steps=3)
    theirs = _first_search_fails_then(optax, search(optax), _nan_beyond_ten)
    ours = _first_search_fails_then(optjax, search(optjax), _nan_beyond_ten)
    np.testing.assert_array_equal(theirs, [1.0, 2.0])
    assert float(_nan_beyond_ten(ours)) < 0.5


def test_zoom_keep_stuck_at_rate_zero_after_a_failed_search(standard_promotion):
    # With initial_guess_strategy="keep", optax's next search tries 0, 0 * 2, ... forever.
    search = lambda lib: lib.scale_by_zoom_linesearch(max_linesearch_steps=3)
    theirs = _first_search_fails_then(optax, search(optax), _nan_beyond_ten)
    ours = _first_search_fails_then(optjax, search(optjax), _nan_beyond_ten)
    np.testing.assert_array_equal(theirs, [1.0, 2.0])
    np.testing.assert_allclose(ours, [0.0, 0.0], atol=1e-6)  # f's minimum along -grad


def test_zoom_stores_the_gradient_at_the_step_it_returns():
    # The state's gradient (which value_and_grad_from_state hands to the next step) is f's
    # gradient where the search ended, also when it ran out of steps and fell back to the best
    # step size with sufficient decrease met before its last try. Random sums of a parabola and
    # a sine along a random multiple of -grad, with 1 to 4 steps allowed.
    @functools.partial(jax.jit, static_argnums=0)
    def search(steps, a, b, c, x0, scale):
        f = lambda x: jnp.sum(a * x**2 + b * jnp.sin(c * x))
        value, grad = jax.value_and_grad(f)(x0)
        tx = optjax.scale_by_zoom_linesearch(max_linesearch_steps=steps, curv_rtol=0.1)
        u, state = tx.update(-grad * scale, tx.init(x0), x0, value=value, grad=grad, value_fn=f)
        return state, jax.value_and_grad(f)(x0 + u)

    ran_out = 0
    with jax.enable_x64(True):
        for seed in range(60):
            rng = np.random.default_rng(seed)
            a, b, c = rng.uniform(0.1, 2, 3), rng.uniform(0, 2, 3), rng.uniform(1, 6, 3)
            x0, scale = rng.normal(size=3), rng.uniform(0.05, 5)
            for steps in (1, 2, 3, 4):
                state, (value, grad) = search(steps, a, b, c, x0, scale)
                np.testing.assert_allclose(state.grad, grad, rtol=1e-12, err_msg=f"{seed=}")
                np.testing.assert_allclose(state.value, value, rtol=1e-12, err_msg=f"{seed=}")
                info = state.info
                ran_out += bool(max(info.decrease_error, info.curvature_error) > 0)
    assert ran_out >= 20, ran_out  # the fall-back is exercised, not only accepted steps


def test_zoom_slope_conjugated_on_complex_params(standard_promotion):
    # optax's zoom search forms the initial slope as Re <u, grad> = Re sum(conj(u) grad), right
    # for a conjugated gradient, but the gradient it stores (and value_and_grad_from_state gives
    # back) is jax.grad's: the documented loop on complex parameters leaves the equivalent real
    # problem's path. optjax takes grad as jax.grad gives it, Re sum(grad u), throughout.
    make = lambda lib: lib.chain(lib.sgd(1e-2), lib.scale_by_zoom_linesearch(20))
    with jax.enable_x64(True):
        x0 = jnp.asarray(ROSENBROCK_START, jnp.float64)
        z0 = jax.lax.complex(x0[:2], x0[2:])
        conj = jnp.conj  # updates: the steepest-ascent direction, conj(jax.grad)
        real = _trajectory(optjax, make(optjax), rosenbrock, x0, 5)
        ours = _trajectory(optjax, make(optjax), complex_rosenbrock, z0, 5, direction=conj)
        theirs = _trajectory(optax, make(optax), complex_rosenbrock, z0, 5, direction=conj)
    as_real = lambda z: np.concatenate([z.real, z.imag], axis=1)
    np.testing.assert_allclose(as_real(ours), real, rtol=1e-12, atol=1e-12)
    assert np.all(np.max(np.abs(as_real(theirs) - real), axis=1) > 1e-2)  # from step 1 on


def test_python_number_leaves_where_optax_crashes():
    params = {"w": 1.0, "b": -2.0}
    with pytest.raises(AttributeError):  # 'float' object has no attribute 'shape' / 'dtype'
        optax.scale_by_lbfgs().init(params)
    with pytest.raises(AttributeError):
        optax.scale_by_backtracking_linesearch(5).init(params)
    # optjax: the state of float32 arrays (the steps themselves are tested on Python numbers
    # for every conformance row, in test_scalar_leaves.py).
    as_f32 = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    for tx in (optjax.scale_by_lbfgs(), optjax.scale_by_backtracking_linesearch(5)):
        state, want = tx.init(params), tx.init(as_f32)
        assert jax.tree.structure(state) == jax.tree.structure(want)
        kinds = lambda t: [(x.shape, x.dtype) for x in jax.tree.leaves(t)]
        assert kinds(state) == kinds(want)


# ---------------------------------------------------------------------------------------------
# optjax's own conventions


def test_saturated_step_count_gives_finite_steps():
    tx = optjax.scale_by_lbfgs(memory_size=3)
    w = jnp.array([1.0, -2.0])
    state = tx.init(w)._replace(count=jnp.asarray(np.iinfo(np.int32).max - 1, jnp.int32))

    update = jax.jit(tx.update)
    for _ in range(4):  # the last pair keeps landing in one slot; the others stay valid
        u, state = update(2 * w, state, w)
        assert np.all(np.isfinite(np.asarray(u)))
        w = w - u
    assert int(state.count) == np.iinfo(np.int32).max
    assert float(jnp.sum(w**2)) < 1e-6  # 2 w is the gradient of |w|^2: L-BFGS still solves it


def test_bf16_params_keep_values_and_memory_in_float32():
    # A bf16 loss value cannot tell a 0.1% decrease from none, and the difference of two close
    # bf16 gradients keeps 2 or 3 digits (optax keeps both in bf16). The states' dtypes are
    # stable over steps: test_conformance's test_keeps_dtypes_and_state_structure.
    w = jnp.array([1.0, 2.0, 3.0], jnp.bfloat16)
    lbfgs_state, _, search_state = optjax.lbfgs().init(w)
    assert lbfgs_state.params.dtype == lbfgs_state.updates.dtype == jnp.bfloat16
    assert lbfgs_state.diff_params_memory.dtype == lbfgs_state.weights_memory.dtype == jnp.float32
    assert search_state.value.dtype == search_state.learning_rate.dtype == jnp.float32
    assert search_state.grad.dtype == jnp.bfloat16


def test_flat_params_take_the_tree_path_steps():
    """The line search on FlatBuffers takes the tree path's steps. A stiff quadratic (curvatures
    1 to 1000), so that each backtracking decision clears the Armijo bound by far more than the
    paths' rounding (they sum the loss's terms in another order): on a problem where a decision
    hangs on the last bits (Rosenbrock's valley), the two paths may backtrack differently."""
    curvature = {"a": jnp.array([1.0, 10.0]), "b": jnp.array([100.0, 1000.0])}
    params = {"a": jnp.array([1.0, -1.0]), "b": jnp.array([0.5, 0.2])}
    loss = lambda p: 0.5 * sum(jnp.sum(curvature[k] * p[k] ** 2) for k in p)
    flat, layout = optjax.flat.flatten(params)
    # value_fn and the stored gradient see the buffers (the search is flat-ready); scale_by_lbfgs
    # runs on the views (its flat rows are tested with the conformance table in test_flat.py).
    search = optjax.scale_by_backtracking_linesearch(30, store_grad=True, max_learning_rate=1.0)
    tx = optjax.chain(optjax.sgd(1.0), search)
    tree_run = _trajectory(optjax, tx, loss, params, 6)
    flat_run = _trajectory(optjax, tx, lambda f: loss(layout.unflatten(f)), flat, 6)
    assert not np.allclose(tree_run["b"][-1], params["b"])  # the steps moved
    for i in range(6):
        views = layout.unflatten(jax.tree.map(lambda b, i=i: b[i], flat_run))
        for leaf in ("a", "b"):
            np.testing.assert_allclose(views[leaf], tree_run[leaf][i], rtol=1e-5, atol=1e-7)


def test_value_and_grad_from_state_reads_the_state_and_refuses_one_without_grad():
    f = lambda w: jnp.sum(w**2)
    tx = optjax.chain(optjax.sgd(1.0), optjax.scale_by_backtracking_linesearch(5, store_grad=True))
    w = jnp.array([1.0, 2.0])
    state = tx.init(w)
    kept = state[1]._replace(value=jnp.float32(7.0), grad=jnp.array([3.0, 4.0]))
    value, grad = optjax.value_and_grad_from_state(f)(w, state=(state[0], kept))
    assert float(value) == 7.0 and grad.tolist() == [3.0, 4.0]  # read, not computed
    value, grad = optjax.value_and_grad_from_state(f)(w, state=state)  # inf: computed
    assert float(value) == 5.0 and grad.tolist() == [2.0, 4.0]
    no_grad = optjax.chain(optjax.sgd(1.0), optjax.scale_by_backtracking_linesearch(5))
    with pytest.raises(ValueError, match="'grad'"):
        optjax.value_and_grad_from_state(f)(w, state=no_grad.init(w))
    with pytest.raises(ValueError, match="'value'"):
        optjax.value_and_grad_from_state(f)(w, state=optjax.adam(0.1).init(w))


def test_extra_keyword_arguments_go_to_value_fn_or_are_refused():
    def f(w, target):
        return jnp.sum((w - target) ** 2)

    tx = optjax.chain(optjax.sgd(1.0), optjax.scale_by_backtracking_linesearch(10))
    w, target = jnp.zeros(2), jnp.array([1.0, -1.0])
    value, grad = jax.value_and_grad(f)(w, target)
    step = jax.jit(
        lambda w, s: tx.update(grad, s, w, value=value, grad=grad, value_fn=f, target=target)
    )
    u, state = step(w, tx.init(w))
    assert float(state[1].value) == float(f(optjax.apply_updates(w, u), target))
    # f(2 eta t) = (2 eta - 1)^2 f(0): eta = 1 gives no decrease, 0.8 does.
    np.testing.assert_allclose(state[1].learning_rate, 0.8)
    with pytest.raises(TypeError, match="'batch'"):
        tx.update(grad, tx.init(w), w, value=value, grad=grad, value_fn=f, target=target, batch=1)
    with pytest.raises(TypeError, match=r"missing: \['value', 'value_fn'\]"):
        tx.update(grad, tx.init(w), w, grad=grad)


# ---------------------------------------------------------------------------------------------
# Bad hyperparameters


BAD = [
    (optjax.scale_by_lbfgs, {}, "memory_size", [0, -1, 2.0, "3", None, True]),
    (optjax.scale_by_lbfgs, {}, "scale_init_precond", [1, "yes", None]),
    (optjax.lbfgs, {}, "memory_size", [0, 1.5]),
    (optjax.lbfgs, {}, "learning_rate", [-0.1, math.inf, math.nan, "0.1"]),
    (optjax.scale_by_backtracking_linesearch, {}, "max_backtracking_steps", [-1, 1.5, None]),
    (
        optjax.scale_by_backtracking_linesearch,
        dict(max_backtracking_steps=5),
        "slope_rtol",
        [-0.1, 1.0, math.nan],
    ),
    (
        optjax.scale_by_backtracking_linesearch,
        dict(max_backtracking_steps=5),
        "decrease_factor",
        [0.0, 1.0, 1.5, -0.5],
    ),
    (
        optjax.scale_by_backtracking_linesearch,
        dict(max_backtracking_steps=5),
        "increase_factor",
        [0.5, -math.inf, math.nan, 1e39],
    ),
    (
        optjax.scale_by_backtracking_linesearch,
        dict(max_backtracking_steps=5),
        "max_learning_rate",
        [0.0, -1.0, math.inf],
    ),
    (
        optjax.scale_by_backtracking_linesearch,
        dict(max_backtracking_steps=5),
        "atol",
        [-1e-3, math.nan],
    ),
    (optjax.scale_by_backtracking_linesearch, dict(max_backtracking_steps=5), "rtol", [-1.0]),
    (
        optjax.scale_by_backtracking_linesearch,
        dict(max_backtracking_steps=5),
        "store_grad",
        [1, None],
    ),
    (optjax.scale_by_zoom_linesearch, {}, "max_linesearch_steps", [0, -3, 2.5]),
    (
        optjax.scale_by_zoom_linesearch,
        dict(max_linesearch_steps=5),
        "max_learning_rate",
        [0.0, -1.0, math.nan],
    ),
    (optjax.scale_by_zoom_linesearch, dict(max_linesearch_steps=5), "tol", [-1.0, math.inf]),
    (
        optjax.scale_by_zoom_linesearch,
        dict(max_linesearch_steps=5),
        "increase_factor",
        [1.0, 0.5, math.inf],
    ),
    (optjax.scale_by_zoom_linesearch, dict(max_linesearch_steps=5), "slope_rtol", [1.0, -0.5]),
    (
        optjax.scale_by_zoom_linesearch,
        dict(max_linesearch_steps=5),
        "curv_rtol",
        [-0.5, math.nan, -math.inf],
    ),
    (
        optjax.scale_by_zoom_linesearch,
        dict(max_linesearch_steps=5),
        "approx_dec_rtol",
        [-1e-6, math.inf],
    ),
    (
        optjax.scale_by_zoom_linesearch,
        dict(max_linesearch_steps=5),
        "stepsize_precision",
        [-1e-5, math.nan],
    ),
    (
        optjax.scale_by_zoom_linesearch,
        dict(max_linesearch_steps=5),
        "initial_guess_strategy",
        ["two", None],
    ),
]


@pytest.mark.parametrize(
    "make,base,argument,values", BAD, ids=[f"{m.__name__}-{a}" for m, _, a, _ in BAD]
)
def test_bad_hyperparameters_raise_naming_the_argument(make, base, argument, values):
    for bad in values:
        with pytest.raises(ValueError, match=f"^{argument} must be .*got {argument}="):
            make(**base, **{argument: bad})


def test_documented_infinities_are_accepted():
    optjax.scale_by_zoom_linesearch(5, curv_rtol=math.inf)  # no curvature condition
    optjax.scale_by_backtracking_linesearch(5, increase_factor=math.inf)  # start at the max
