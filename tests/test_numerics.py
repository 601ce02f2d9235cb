"""optax's top-level numerics helpers in optjax.numerics (re-exported as optjax.X) against
optax 0.2.8 live: values and gradients, float64 and float32, trees with None leaves, 0-d and
Python-number leaves and mixed dtypes, eagerly and under jit; and where optax is wrong.

No optimizer is added here, so there are no conformance rows.
"""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from packaging.version import Version

import optjax
from optjax import numerics as N

# The optax behaviour the bug tests show is optax 0.2.8's (constraints-min.txt installs 0.2.4).
optax_0_2_8 = pytest.mark.skipif(
    Version(optax.__version__) < Version("0.2.8"), reason="shows optax 0.2.8's behaviour"
)

# (name, kwargs) of safe_norm's cases: ords, axes, keepdims, and a floor that clips.
NORMS = [
    dict(),
    dict(ord=1, axis=1),
    dict(ord=jnp.inf, axis=0, keepdims=True),
    dict(ord="fro", axis=(0, 1), keepdims=True),
]


def _values_and_grads(lib, x):
    """Each safe measure and its gradient at x, for floors 0 and 2.5 (which clips rows)."""
    out = []
    for floor in (0.0, 2.5):
        for kwargs in NORMS:

            def f(x, floor=floor, kwargs=kwargs):
                return lib.safe_norm(x, floor, **kwargs)

            out.append((f(x), jax.grad(lambda x, f=f: jnp.sum(f(x)))(x)))

        def rms(x, floor=floor):
            return lib.safe_root_mean_squares(x, floor)

        out.append((rms(x), jax.grad(rms)(x)))
    return out


def test_safe_norms_and_their_gradients_match_optax(standard_promotion):
    # In float64 (float32 and bf16: in the test of scalars and low precision below).
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=(3, 4))).at[1].set(0.0)  # a row of zeros
        ours_fn = jax.jit(lambda x: _values_and_grads(N, x))
        theirs_fn = jax.jit(lambda x: _values_and_grads(optax, x))
        for point in (x, jnp.zeros_like(x)):  # and 0 itself, where the gradient must stay 0
            ours, theirs = ours_fn(point), theirs_fn(point)
            for (v, g), (v_ref, g_ref) in zip(ours, theirs, strict=True):
                assert v.dtype == v_ref.dtype and v.shape == v_ref.shape
                assert np.isfinite(g).all()
                np.testing.assert_allclose(v, v_ref, rtol=1e-6)
                np.testing.assert_allclose(g, g_ref, rtol=1e-6, atol=1e-7)


def test_safe_norm_gradient_is_zero_at_zero_not_nan():
    # Real (3, 4) arrays: in the test above. Here a complex x.
    x = jnp.zeros((3, 4), jnp.complex64)
    assert np.all(np.asarray(jax.grad(lambda x: N.safe_norm(x, 0.0))(x)) == 0)
    # The unsafe form it replaces is NaN there.
    unsafe = jax.grad(lambda x: jnp.maximum(jnp.linalg.norm(x), 0.0))(jnp.zeros((3, 4)))
    assert jnp.isnan(unsafe).all()


def test_safe_norms_of_scalars_and_low_precision(standard_promotion):
    assert float(N.safe_norm(-3.0, 1.0)) == 3.0 == float(optax.safe_norm(-3.0, 1.0))
    assert float(N.safe_norm(jnp.array(0.5), 1.0)) == 1.0
    x = jnp.array([3.0, 4.0], jnp.bfloat16)
    assert N.safe_norm(x, 0.0).dtype == jnp.bfloat16 == optax.safe_norm(x, 0.0).dtype
    assert float(N.safe_norm(x, 0.0)) == 5.0
    assert N.safe_norm(jnp.array([3, 4]), 0.0).dtype == jnp.float32  # integers: float32
    assert N.safe_root_mean_squares(jnp.array([1.0 + 1.0j]), 0.0).dtype == jnp.float32
    x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 4)), jnp.float32).at[0].set(0.0)
    for kwargs in NORMS[1:2]:
        ours, theirs = N.safe_norm(x, 0.5, **kwargs), optax.safe_norm(x, 0.5, **kwargs)
        assert ours.dtype == theirs.dtype == jnp.float32
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)


@optax_0_2_8
def test_safe_root_mean_squares_of_fp16_overflows_in_optax(standard_promotion):
    x = jnp.array([300.0, -300.0], jnp.float16)
    assert jnp.isinf(optax.safe_root_mean_squares(x, 0.0))  # its squares overflow fp16 at 256
    assert float(N.safe_root_mean_squares(x, 0.0)) == 300.0


@optax_0_2_8
def test_safe_root_mean_squares_of_a_python_number_crashes_in_optax(standard_promotion):
    with pytest.raises(ValueError, match="accepts only NDarrays"):
        optax.safe_root_mean_squares(-2.0, 0.0)
    assert float(N.safe_root_mean_squares(-2.0, 0.0)) == 2.0


def test_safe_increment_matches_optax(standard_promotion):
    assert N.safe_int32_increment is N.safe_increment  # optax's older name, as in optax
    increment = N.safe_increment
    for dtype in (jnp.int8, jnp.int32, jnp.uint32, jnp.bfloat16):
        info = jnp.iinfo(dtype) if jnp.issubdtype(dtype, jnp.integer) else jnp.finfo(dtype)
        for value in (0, 5, info.max - 1, info.max):
            count = jnp.asarray(value, dtype)
            ours, theirs = increment(count), optax.safe_increment(count)
            assert ours.dtype == theirs.dtype == dtype
            assert ours == theirs
        top = increment(jnp.asarray(info.max, dtype))  # saturates, never wraps
        assert np.asarray(top).item() == info.max
    assert int(increment(5)) == 6 == int(optax.safe_increment(5))
    assert int(jax.jit(increment)(jnp.asarray(np.iinfo(np.int32).max))) == np.iinfo(np.int32).max
    with pytest.raises(ValueError, match="count must have an integer or floating dtype"):
        increment(jnp.asarray(True))
    with pytest.raises(ValueError, match="count"):
        increment(jnp.asarray(1 + 1j))


def _params(seed, dtype):
    rng = np.random.default_rng(seed)
    return {
        "w": jnp.asarray(rng.normal(size=(3, 4)), dtype),
        "b": [jnp.asarray(rng.normal(), dtype), None],
    }


def test_incremental_and_periodic_updates_match_optax_step_by_step(standard_promotion):
    for dtype in ("float64", "float32"):
        with jax.enable_x64(dtype == "float64"):
            online = [_params(t, dtype) for t in range(6)]

            def run(lib, online):
                polyak, target, out = online[0], online[0], []
                for step, params in enumerate(online):
                    polyak = lib.incremental_update(params, polyak, 0.1)
                    target = lib.periodic_update(params, target, jnp.asarray(step), 3)
                    out.append((polyak, target))
                return out

            ours, theirs = jax.jit(lambda o: run(N, o))(online), run(optax, online)  # jit, eager
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_allclose(a, b, rtol=1e-6)
        assert jax.tree.structure(ours) == jax.tree.structure(theirs)


def test_updates_keep_the_slow_copy_dtype_and_take_python_numbers():
    new, old = (
        {"w": jnp.ones(3, jnp.float32), "p": 1.0},
        {"w": jnp.zeros(3, jnp.bfloat16), "p": 0.0},
    )
    avg = N.incremental_update(new, old, 0.25)
    assert avg["w"].dtype == jnp.bfloat16 and float(avg["w"][0]) == 0.25
    assert float(avg["p"]) == 0.25
    copy = N.periodic_update(new, old, 4, 2)
    assert copy["w"].dtype == jnp.bfloat16 and float(copy["w"][0]) == 1.0
    assert float(N.periodic_update(new, old, 5, 2)["p"]) == 0.0
    # Formed in float32 and rounded once: closer to the exact average than bf16 arithmetic.
    rng = np.random.default_rng(3)
    a, b = (jnp.asarray(rng.normal(size=500), jnp.bfloat16) for _ in range(2))
    exact = 0.3 * np.asarray(a, np.float64) + 0.7 * np.asarray(b, np.float64)
    with jax.numpy_dtype_promotion("standard"):
        theirs = optax.incremental_update(a, b, 0.3)
    ours = N.incremental_update(a, b, 0.3)
    assert ours.dtype == theirs.dtype == jnp.bfloat16

    def error(got):
        return float(np.sum(np.abs(np.asarray(got, np.float64) - exact)))

    assert error(ours) <= error(theirs), (error(ours), error(theirs))


def test_global_norm_matches_optax(standard_promotion):
    tree = {"w": jnp.array([[1.0, 2.0]]), "b": [jnp.array(-2.0), None], "p": 4.0}
    with warnings.catch_warnings():  # optax 0.2.8 deprecates its own; optjax does not
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = optax.global_norm(tree)
    assert N.global_norm(tree).dtype == expected.dtype
    np.testing.assert_allclose(N.global_norm(tree), expected, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(N.global_norm)(tree), 5.0, rtol=1e-6)
    fp16 = {"a": jnp.array([300.0], jnp.float16)}
    assert float(N.global_norm(fp16)) == 300.0  # optax.tree.norm: inf (see test_tree_api)


def test_tree_map_params_and_init_empty_state():
    assert N.tree_map_params is optjax.tree.map_params
    assert N.init_empty_state({"w": jnp.zeros(2)}) == optjax.EmptyState()
    tx = optjax.GradientTransformation(N.init_empty_state, lambda u, s, p=None: (u, s))
    assert tx.init(None) == optjax.EmptyState()


def test_mismatched_trees_raise_value_error_naming_the_path():
    a = {"w": jnp.ones(2), "b": [jnp.ones(3)]}
    other = {"w": jnp.ones(2), "c": [jnp.ones(3)]}
    for call in (
        lambda: N.incremental_update(a, other, 0.5),
        lambda: N.periodic_update(a, other, 0, 2),
        lambda: N.incremental_update([a, 1.0], [other, 1.0], 0.5),
    ):
        with pytest.raises(ValueError, match=r"\['b'\]"):
            call()
    with pytest.raises(ValueError, match=r"new_tensors\['b'\]\[0\] has shape \(3,\)"):
        N.incremental_update(a, {"w": jnp.ones(2), "b": [jnp.ones(4)]}, 0.5)


BAD = [
    (lambda v: N.safe_norm(jnp.ones(2), v), "min_norm", [-1.0, math.nan, math.inf, "0"]),
    (lambda v: N.safe_root_mean_squares(jnp.ones(2), v), "min_rms", [-0.5, math.nan, None]),
    (lambda v: N.incremental_update({}, {}, v), "step_size", [math.nan, math.inf, "0.1"]),
    (lambda v: N.periodic_update({}, {}, 0, v), "update_period", [0, -3, 2.5, True, "2"]),
]


@pytest.mark.parametrize("call,name,values", BAD, ids=[b[1] for b in BAD])
def test_bad_hyperparameters_raise_value_error_naming_them(call, name, values):
    for value in values:
        with pytest.raises(ValueError, match=rf"\b{name}\b"):
            call(value)


def test_traced_hyperparameters_are_accepted():
    @jax.jit
    def f(x, floor, step_size, period):
        return (
            N.safe_norm(x, floor),
            N.incremental_update({"w": x}, {"w": 0 * x}, step_size),
            N.periodic_update({"w": x}, {"w": 0 * x}, 4, period),
        )

    norm, avg, copy = f(jnp.array([3.0, 4.0]), jnp.asarray(1.0), jnp.asarray(0.5), jnp.asarray(2))
    assert float(norm) == 5.0 and avg["w"].tolist() == [1.5, 2.0] and copy["w"].tolist() == [3, 4]
