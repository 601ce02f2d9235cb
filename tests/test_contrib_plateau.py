"""reduce_on_plateau and split_real_and_imaginary against optax 0.2.8 step by step on the same
gradients (and, for reduce_on_plateau, the same sequence of monitored values), in float64 and
float32; the places where optax's reduce_on_plateau is wrong (patience=0 cuts on improvements;
a negative best value lets worse values count as improvements; rtol=1 never improves) and where
its split_real_and_imaginary drops extra arguments; the flat layout; jit and vmap over a traced
hyperparameter; hyperparameter validation.

reduce_on_plateau is a scaling primitive, not an optimizer: it has no conformance row.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax_compare import assert_trajectories_close, problem, run, worst_error

import optjax
from optjax import flat
from optjax.contrib._complex_valued import SplitRealAndImaginaryState, split_real_and_imaginary
from optjax.contrib._plateau import ReduceLROnPlateauState, reduce_on_plateau


def run_jitted(tx, params, grads, values=None, *, states: bool = False) -> list:
    """optax_compare.run's ``[(updates, params)]`` (``(updates, params, state)`` with
    ``states``) as one jitted scan over the steps, with ``value=values[t]`` at step t where
    ``values`` is given (run eagerly, optax's lax.cond would be compiled at every step)."""
    is_optax = type(tx).__module__.startswith("optax")
    apply = optax.apply_updates if is_optax else optjax.apply_updates

    def trajectory(params, grads, values):
        def step(carry, inputs):
            (params, state), (g, v) = carry, inputs
            extra = {} if v is None else {"value": v}
            updates, state = tx.update(g, state, params, **extra)
            params = apply(params, updates)
            return (params, state), (updates, params, state) if states else (updates, params)

        return jax.lax.scan(step, (params, tx.init(params)), (grads, values))[1]

    stacked = jax.tree.map(lambda *g: jnp.stack(g), *grads)
    values = None if values is None else jnp.asarray(values, jnp.float32)
    with jax.numpy_dtype_promotion("standard" if is_optax else "strict"):
        out = jax.jit(trajectory)(params, stacked, values)
    return [jax.tree.map(lambda x, t=t: np.asarray(x[t]), out) for t in range(len(grads))]


def as_real(trajectory):
    """Each complex leaf as its (real, imaginary) parts stacked; real leaves as they are."""
    return jax.tree.map(
        lambda x: np.stack([x.real, x.imag]) if np.iscomplexobj(x) else x, trajectory
    )


def compare_jitted(ours, theirs, problem32, problem64, values=None):
    """optax_compare.compare_with_optax on jitted runs: agreement with optax on the float64
    problem (rtol 1e-6), and optjax's float32 run at least as close to optjax's float64 one as
    optax's float32 run (complex leaves compared as their parts)."""
    with jax.enable_x64(True):
        exact = as_real(run_jitted(ours(), *problem64, values))
        assert_trajectories_close(exact, as_real(run_jitted(theirs(), *problem64, values)))
    ours32 = worst_error(as_real(run_jitted(ours(), *problem32, values)), exact)
    theirs32 = worst_error(as_real(run_jitted(theirs(), *problem32, values)), exact)
    assert ours32 <= theirs32 + float(jnp.finfo(jnp.float32).eps), (ours32, theirs32)


LONG_PLATEAU = [5.0, 4.0] + [4.0] * 10  # the default patience of 10 is used up at the end
PLATEAUS = [5.0, 4.0, 4.0, 4.0, 4.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
CASES = {
    "default": ({}, LONG_PLATEAU),
    "factor,patience,cooldown": (dict(factor=0.5, patience=2, cooldown=1), PLATEAUS),
    "atol,accumulation_size,min_scale": (
        dict(factor=0.5, patience=1, rtol=0.0, atol=0.5, accumulation_size=2, min_scale=0.2),
        PLATEAUS,
    ),
}


SHAPES = {"scalar": (), "matrix": (2, 3)}


@pytest.mark.parametrize("case", CASES)
def test_reduce_on_plateau_matches_optax_in_a_chain(case, standard_promotion):
    kwargs, sequence = CASES[case]
    steps = len(sequence)
    compare_jitted(
        lambda: optjax.chain(optjax.sgd(0.1), reduce_on_plateau(**kwargs)),
        lambda: optax.chain(optax.sgd(0.1), optax.contrib.reduce_on_plateau(**kwargs)),
        problem(jnp.float32, steps, shapes=SHAPES),
        problem(jnp.float64, steps, shapes=SHAPES),
        values=sequence,
    )


def scales(tx, sequence) -> list[float]:
    """The scale after each value of ``sequence``."""
    out = run_jitted(tx, jnp.zeros(1), [jnp.ones(1)] * len(sequence), sequence, states=True)
    return [float(state.scale) for _, _, state in out]


def test_patience_zero_cuts_on_plateaus_where_optax_cuts_on_improvements(standard_promotion):
    # patience=0: cut at every value that does not improve (torch's patience=0 too). optax
    # compares the plateau count, reset to 0 by an improvement, with 0: it cuts exactly when the
    # value improves, and never on a plateau.
    sequence, kw = [3.0, 2.0, 2.0, 1.0], dict(factor=0.1, patience=0)
    np.testing.assert_allclose(scales(reduce_on_plateau(**kw), sequence), [1, 1, 0.1, 0.1])
    theirs = scales(optax.contrib.reduce_on_plateau(**kw), sequence)
    np.testing.assert_allclose(theirs, [0.1, 0.01, 0.01, 0.001], rtol=1e-6)


def test_negative_best_counts_only_lower_values_where_optax_counts_worse_ones(
    standard_promotion,
):
    # A loss of -10, then -9.5 (worse) three times. optax's bar is (1 - rtol) best = -9: -9.5
    # "improves" on -10, becomes the best, and the scale is never cut. optjax's bar is
    # best - rtol |best| = -11: -9.5 is a plateau, cut after patience=2 of them.
    sequence, kw = [-10.0, -9.5, -9.5, -9.5], dict(factor=0.5, patience=2, rtol=0.1)
    np.testing.assert_allclose(scales(reduce_on_plateau(**kw), sequence), [1, 1, 0.5, 0.5])
    np.testing.assert_allclose(scales(optax.contrib.reduce_on_plateau(**kw), sequence), 1.0)


def test_rtol_one_takes_first_value_as_best_where_optax_never_improves(standard_promotion):
    # With rtol=1 optax's bar for the first value is (1 - 1) * inf = NaN: nothing improves, ever,
    # and the scale is cut every `patience` values whatever they are. The first value is the best
    # so far in optjax; then only values below best - |best| (here, below 0) improve.
    sequence, kw = [1.0, -5.0, -20.0], dict(factor=0.5, patience=1, rtol=1.0)
    np.testing.assert_allclose(scales(reduce_on_plateau(**kw), sequence), [1, 1, 1])
    np.testing.assert_allclose(
        scales(optax.contrib.reduce_on_plateau(**kw), sequence), [0.5, 0.25, 0.125]
    )


def test_scale_is_float32_for_bf16_params_and_updates_keep_their_dtype():
    tx = reduce_on_plateau(factor=0.3, patience=1)
    params = {"w": jnp.ones(3, jnp.bfloat16), "s": jnp.ones((), jnp.bfloat16)}
    state = tx.init(params)
    assert isinstance(state, ReduceLROnPlateauState)
    assert state.scale.dtype == state.best_value.dtype == jnp.float32
    for v in [1.0, 1.0, 1.0]:
        updates, state = tx.update(params, state, value=jnp.asarray(v, jnp.bfloat16))
    assert float(state.scale) == pytest.approx(0.09, rel=1e-6)  # 0.3^2, to float32
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
    assert updates["w"][0] == jnp.asarray(0.09, jnp.bfloat16)


def test_jit_and_vmap_over_a_traced_factor():
    def final_scale(factor):
        tx = reduce_on_plateau(factor=factor, patience=1)  # traced: accepted unchecked

        def step(state, v):
            return tx.update(jnp.ones(2), state, value=v)[1], None

        state, _ = jax.lax.scan(step, tx.init(jnp.zeros(2)), jnp.array([2.0, 2.0, 2.0]))
        return state.scale

    got = jax.jit(jax.vmap(final_scale))(jnp.array([0.5, 0.25]))
    np.testing.assert_allclose(got, [0.25, 0.0625])


def test_flat_layout_matches_tree_path():
    tx = optjax.chain(optjax.sgd(0.1), reduce_on_plateau(factor=0.5, patience=1))
    params, layout = flat.flatten({"w": jnp.ones((2, 3)), "s": jnp.ones(())})
    grads = [jax.tree.map(lambda p, t=t: p * (t + 1), params) for t in range(3)]
    on_tree = run(tx, layout.unflatten(params), [layout.unflatten(g) for g in grads], value=1.0)
    on_flat = run(tx, params, grads, value=1.0)
    for (u, _), (flat_u, _) in zip(on_tree, on_flat, strict=True):
        got = layout.unflatten(jax.tree.map(jnp.asarray, flat_u))
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(got), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(on_flat[-1][0].buffers[0][0], -0.1 * 3 * 0.25, rtol=1e-6)


def test_update_without_value_raises_naming_it():
    tx = reduce_on_plateau()
    with pytest.raises(ValueError, match="value="):
        tx.update(jnp.ones(1), tx.init(jnp.zeros(1)))


BAD = {
    "factor": [0.0, 1.0, -0.5, 1.5, float("nan"), "0.5"],
    "patience": [-1, 1.5, True],
    "rtol": [-0.1, 1.5, float("inf")],
    "atol": [-1.0, float("inf")],
    "cooldown": [-1, 0.5],
    "accumulation_size": [0, -1, 2.5],
    "min_scale": [-0.1, 1.5],
}


@pytest.mark.parametrize("arg", sorted(BAD))
def test_bad_hyperparameters_raise_naming_the_argument(arg):
    for value in BAD[arg]:
        with pytest.raises(ValueError, match=arg):
            reduce_on_plateau(**{arg: value})
    with pytest.raises(ValueError, match="rtol and atol"):
        reduce_on_plateau(rtol=0.0, atol=0.0)


# split_real_and_imaginary


def complex_problem(dtype, steps=4):
    """Params with a complex leaf and a real one, and ``steps`` gradients, drawn in float64."""
    rng = np.random.default_rng(0)
    real = jnp.finfo(dtype).dtype

    def draw():
        z = rng.normal(size=3) + 1j * rng.normal(size=3)
        return {"z": jnp.asarray(z, dtype), "x": jnp.asarray(rng.normal(size=2), real)}

    with jax.enable_x64(jnp.dtype(dtype).itemsize == 16):
        return draw(), [draw() for _ in range(steps)]


SPLIT_CASES = {
    "adam": (lambda: optjax.adam(0.1), lambda: optax.adam(0.1)),
    "sgd(momentum,nesterov)": (
        lambda: optjax.sgd(0.1, 0.9, nesterov=True),
        lambda: optax.sgd(0.1, 0.9, nesterov=True),
    ),
}


@pytest.mark.parametrize("case", SPLIT_CASES)
def test_split_real_and_imaginary_matches_optax(case, standard_promotion):
    ours, theirs = SPLIT_CASES[case]
    compare_jitted(
        lambda: split_real_and_imaginary(ours()),
        lambda: optax.contrib.split_real_and_imaginary(theirs()),
        complex_problem(jnp.complex64),
        complex_problem(jnp.complex128),
    )


def test_split_steps_each_part_on_its_own():
    # Sign descent on the parts: sign(3) + i sign(-4), where optjax's complex sign is g / |g|.
    tx = split_real_and_imaginary(optjax.scale_by_sign())
    state = tx.init({"z": jnp.zeros(1, jnp.complex64)})
    assert isinstance(state, SplitRealAndImaginaryState)
    u, _ = tx.update({"z": jnp.array([3.0 - 4.0j], jnp.complex64)}, state)
    np.testing.assert_array_equal(u["z"], np.array([1.0 - 1.0j], np.complex64))


def test_split_forwards_value_to_inner_where_optax_split_drops_extra_args(standard_promotion):
    # reduce_on_plateau inside the split needs value=; optax's wrapper takes no extra arguments.
    inner = optjax.chain(optjax.sgd(1.0), reduce_on_plateau(factor=0.5, patience=1))
    tx, z = split_real_and_imaginary(inner), jnp.ones(1, jnp.complex64)
    state = tx.init(z)
    for v in [1.0, 1.0]:
        u, state = tx.update(z, state, z, value=v)
    np.testing.assert_allclose(u, [-0.5 - 0.0j])
    theirs = optax.contrib.split_real_and_imaginary(optax.contrib.reduce_on_plateau())
    with pytest.raises(TypeError, match="value"):
        theirs.update(z, theirs.init(z), z, value=1.0)
