"""optjax.microbatching against optax.microbatching 0.2.8: the same names, and micro_grad,
micro_vmap and reshape_batch_axis giving optax's results on the same inputs (float64 at rtol
1e-6, float32), with the places optax crashes or loses precision shown side by side."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optjax
import optjax.microbatching as mb
import optjax.wrappers.microbatching as wrappers_mb

OX = optax.microbatching
A, OA = mb.AccumulationType, OX.AccumulationType
DTYPES = {"float64": (jnp.float64, 1e-6), "float32": (jnp.float32, 1e-5)}


def _close(ours, theirs, rtol):
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=rtol)


def _data(dtype, *shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.normal(size=s), dtype) for s in shapes]


def _optax(fn, *args, **kwargs):
    with jax.numpy_dtype_promotion("standard"):
        return fn(*args, **kwargs)


def test_names_are_optax_microbatching_names_defined_once():
    theirs = {n for n in vars(OX) if not n.startswith("_") and n != "annotations"}
    assert (
        set(mb.__all__)
        == theirs
        == {
            "AccumulationType",
            "Accumulator",
            "microbatch",
            "micro_grad",
            "micro_vmap",
            "reshape_batch_axis",
        }
    )
    for name in ("AccumulationType", "Accumulator", "microbatch"):
        assert getattr(mb, name) is getattr(wrappers_mb, name) is getattr(optjax.wrappers, name)


# --- reshape_batch_axis -------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "size", "axis"), [("float64", 2, 0), ("float32", 4, 1)])
def test_reshape_batch_axis_matches_optax(dtype, size, axis):
    dt, _ = DTYPES[dtype]
    with jax.enable_x64(dt == jnp.float64):
        x, y = _data(dt, (8, 8, 3), (8, 8))
        tree = {"x": x, "y": [y, jnp.arange(64).reshape(8, 8)]}
        ours = mb.reshape_batch_axis(tree, size, axis)
        _close(ours, _optax(OX.reshape_batch_axis, tree, size, axis), rtol=0)
        assert ours["y"][0].shape == (*y.shape[:axis], 8 // size, size, *y.shape[axis + 1 :])


def test_reshape_batch_axis_matches_microbatch_order():
    """Microbatch a of `microbatch` is row a of reshape_batch_axis: rows a, a + n, a + 2n."""
    x = jnp.arange(12.0)
    split = mb.reshape_batch_axis(x, 3)
    seen = mb.microbatch(lambda r: r, 0, 3, A.CONCAT)(x)
    np.testing.assert_array_equal(split, [[0, 4, 8], [1, 5, 9], [2, 6, 10], [3, 7, 11]])
    np.testing.assert_array_equal(seen, x)


def test_reshape_batch_axis_negative_axis_optax_crashes():
    """optax builds the new shape from x.shape[axis + 1:], the whole shape for axis=-1."""
    x = jnp.arange(16).reshape(2, 8)
    with pytest.raises(TypeError, match="cannot reshape"):
        _optax(OX.reshape_batch_axis, x, 2, axis=-1)
    np.testing.assert_array_equal(
        mb.reshape_batch_axis(x, 2, axis=-1), OX.reshape_batch_axis(x, 2, 1)
    )


# --- micro_vmap ---------------------------------------------------------------------------------


def _vfun(x, y, *, z):
    return {"xy": x * jnp.sum(y), "z": jnp.sin(z) + x[0], "n": jnp.sum(x * z)}


VMAP_CASES = {  # name: (our kwargs, optax kwargs, in_axes), accumulators as (ours, optax's)
    "default_concat": ({}, (0, 0)),
    "sum_size_2": ({"microbatch_size": 2, "accumulator": (A.SUM, OA.SUM)}, (0, 0)),
    "mean_in_axes_none_and_1": (
        {"microbatch_size": 4, "accumulator": (A.MEAN, OA.MEAN)},
        (None, 1),
    ),
    "tree_of_kinds_early_stop": (
        {
            "microbatch_size": 2,
            "accumulator": (
                {"xy": A.CONCAT, "z": A.RUNNING_MEAN, "n": A.SUM},
                {"xy": OA.CONCAT, "z": OA.RUNNING_MEAN, "n": OA.SUM},
            ),
            "num_real_microbatches": 3,
        },
        (0, 0),
    ),
    "mean_early_stop": (
        {"microbatch_size": 1, "accumulator": (A.MEAN, OA.MEAN), "num_real_microbatches": 5},
        (0, None),
    ),
}


def _cases(cases, float32):
    """Every case in float64; those named in float32 too (each case costs two compilations)."""
    return [(c, "float64") for c in cases] + [(c, "float32") for c in float32]


@pytest.mark.parametrize(
    ("case", "dtype"), _cases(VMAP_CASES, ["sum_size_2", "tree_of_kinds_early_stop"])
)
def test_micro_vmap_matches_optax(case, dtype):
    dt, rtol = DTYPES[dtype]
    kwargs, in_axes = VMAP_CASES[case]
    ours_kw, theirs_kw = dict(kwargs), dict(kwargs)
    if "accumulator" in kwargs:
        ours_kw["accumulator"], theirs_kw["accumulator"] = kwargs["accumulator"]
    with jax.enable_x64(dt == jnp.float64):
        x = _data(dt, (8, 3))[0]
        y = x.T if in_axes[1] == 1 else x
        if in_axes[0] is None:
            x = x[0]
        if in_axes[1] is None:
            y = x[0] if in_axes[0] is None else x[:, 0]
        z = _data(dt, (8, 3), seed=1)[0]
        if in_axes[0] is None or in_axes[1] is None:
            z = z[:, 0]

        def f(x, y, *, z):  # per-example shapes: x and z (3,), y (3,) or (); z () where x is
            x = x if x.ndim else x[None]
            return _vfun(x, y, z=z if x.shape == z.shape or z.ndim == 0 else z[: x.shape[0]])

        ours = jax.jit(mb.micro_vmap(f, in_axes, **ours_kw))(x, y, z=z)
        theirs = _optax(jax.jit(OX.micro_vmap(f, in_axes, **theirs_kw)), x, y, z=z)
        _close(ours, theirs, rtol)
        if case == "default_concat":  # jax.vmap's result
            _close(ours, jax.vmap(f, in_axes)(x, y, z=z), rtol)


def test_micro_vmap_custom_accumulator_vmap_fn_and_traced_count():
    x = jnp.arange(24.0).reshape(8, 3)
    ours_max = mb.Accumulator(
        init=lambda s: jnp.full(s.shape, -jnp.inf, s.dtype),
        update=lambda carry, value, i: jnp.maximum(carry, value),
        finalize=lambda carry: carry,
        aggregate=lambda values: jnp.max(values, axis=0),
    )
    theirs_max = OX.Accumulator(
        *(getattr(ours_max, f) for f in ("init", "update", "finalize", "aggregate"))
    )
    calls = []

    def vmap_fn(fun, in_axes, out_axes):
        calls.append((in_axes, out_axes))
        return jax.vmap(fun, in_axes, out_axes)

    f = jnp.cos
    ours = mb.micro_vmap(f, microbatch_size=2, vmap_fn=vmap_fn, accumulator=ours_max)(x)
    theirs = _optax(OX.micro_vmap(f, microbatch_size=2, vmap_fn=vmap_fn, accumulator=theirs_max), x)
    _close(ours, theirs, 1e-6)
    np.testing.assert_allclose(ours, jnp.max(jnp.cos(x), axis=0), rtol=1e-6)
    assert calls[0] == ((0,), 0)

    @jax.jit
    def counted(x, m):
        return mb.micro_vmap(
            jnp.sum, microbatch_size=2, accumulator=A.SUM, num_real_microbatches=m
        )(x)

    assert float(counted(x, 1)) == float(jnp.sum(x[::4]))  # microbatch 0: rows 0 and 4
    assert float(counted(x, 4)) == float(jnp.sum(x))


def test_micro_vmap_int_in_axes_maps_every_positional_argument():
    """jax.vmap maps every positional argument along an int in_axes; optax maps only the first
    and then fails, so its default in_axes=0 fails on any function of two arguments."""
    x, y = jnp.arange(8.0), jnp.ones(8)
    theirs = OX.micro_vmap(jnp.multiply, microbatch_size=2)
    with pytest.raises(ValueError, match=re.escape("len(in_axes)=1, len(args)=2")):
        _optax(theirs, x, y)
    _close(mb.micro_vmap(jnp.multiply, microbatch_size=2)(x, y), jax.vmap(jnp.multiply)(x, y), 0)


def test_micro_vmap_negative_in_axes_optax_crashes():
    x = jnp.arange(16.0).reshape(2, 8)
    with pytest.raises(TypeError, match="cannot reshape"):
        _optax(OX.micro_vmap(jnp.sum, -1, microbatch_size=2), x)
    _close(mb.micro_vmap(jnp.sum, -1, microbatch_size=2)(x), jnp.sum(x, axis=0), 0)


def test_micro_vmap_of_a_function_without_array_results_optax_crashes():
    """optax reads the microbatch size from the first leaf of the result: there is none."""
    x = jnp.arange(8.0)
    with pytest.raises(IndexError):
        _optax(OX.micro_vmap(lambda r: None, microbatch_size=2), x)
    assert mb.micro_vmap(lambda r: None, microbatch_size=2)(x) is None
    assert mb.micro_vmap(lambda r: {}, microbatch_size=2)(x) == {}


# --- micro_grad ---------------------------------------------------------------------------------


def _loss(params, features, targets):
    residual = features @ params["w"] + params["b"] - targets
    return 0.5 * jnp.mean(residual**2)


GRAD_CASES = {  # name: keyword arguments, accumulators as (ours, optax's)
    "defaults": {},
    "mean_size_2_metrics": {
        "microbatch_size": 2,
        "accumulator": (A.MEAN, OA.MEAN),
        "transform_fn": lambda g: jax.tree.map(lambda x: 2 * x, g),
        "metrics_fn": optax.tree.norm,
    },
    "moments_tree_accumulator_early_stop": {
        "microbatch_size": 2,
        "transform_fn": lambda g: (g, jax.tree.map(jnp.square, g)),
        "accumulator": ((A.SUM, A.RUNNING_MEAN), (OA.SUM, OA.RUNNING_MEAN)),
        "num_real_microbatches": 3,
    },
    "no_batch_dim_has_aux_argnums": {
        "microbatch_size": 4,
        "keep_batch_dim": False,
        "has_aux": True,
        "argnums": (0, 2),
        "transform_fn": lambda g: optax.clip_by_global_norm(0.5).update(g, None)[0],
    },
}


@pytest.mark.parametrize(
    ("case", "dtype"), _cases(GRAD_CASES, ["mean_size_2_metrics", "no_batch_dim_has_aux_argnums"])
)
def test_micro_grad_matches_optax(case, dtype):
    dt, rtol = DTYPES[dtype]
    kwargs = dict(GRAD_CASES[case])
    keep = kwargs.get("keep_batch_dim", True)
    ours_kw, theirs_kw = dict(kwargs), dict(kwargs)
    if "accumulator" in kwargs:
        ours_kw["accumulator"], theirs_kw["accumulator"] = kwargs["accumulator"]
    with jax.enable_x64(dt == jnp.float64):
        w, b, features, targets = _data(dt, (3,), (), (8, 3), (8,))

        def fun(params, features, targets):
            assert features.ndim == 1 + keep
            loss = _loss(params, features, targets)
            return (loss, {"pred": features @ params["w"]}) if kwargs.get("has_aux") else loss

        params = {"w": w, "b": b}
        batch = {"features": features}
        if kwargs.get("argnums") == (0, 2):
            args = (params, features, targets)  # gradient w.r.t. each example's target too

            def call(micro, kw):
                return jax.jit(micro(fun, batch_argnums=(1, 2), **kw))(*args)
        else:

            def batch_fun(params, batch, targets):
                return fun(params, batch["features"], targets)

            def call(micro, kw):
                run = jax.jit(micro(batch_fun, batch_argnums=(1, 2), **kw))
                return run(params, batch, targets)

        ours = call(mb.micro_grad, ours_kw)
        theirs = _optax(call, OX.micro_grad, theirs_kw)
        _close(tuple(ours[1]), tuple(theirs[1]), rtol)
        _close(ours[0], theirs[0], rtol)
        if case == "defaults":  # the sum of per-example gradients is the batch gradient * 8
            total = jax.jit(jax.grad(_loss))(params, features, targets)
            _close(ours[0], jax.tree.map(lambda g: 8 * g, total), rtol)


def test_micro_grad_under_jit_with_a_traced_count_and_a_traced_batch():
    loss = lambda p, x: jnp.sum((p * x) ** 2)

    def both(micro):
        @jax.jit
        def run(p, x, m):
            return micro(loss, microbatch_size=2, num_real_microbatches=m)(p, x)

        return run

    x = jnp.arange(8.0)
    ours = both(mb.micro_grad)(jnp.ones(()), x, 2)
    theirs = _optax(both(OX.micro_grad), jnp.ones(()), x, 2)
    _close(ours[0], theirs[0], 1e-6)
    assert float(ours[0]) == 2 * float(jnp.sum(x[jnp.array([0, 4, 1, 5])] ** 2))


def test_micro_grad_positional_argument_after_the_batch_optax_crashes():
    """optax maps only the positional arguments up to max(batch_argnums): one after the batch
    (a scale, a key) fails in its vmap."""

    def loss(p, x, scale):
        return scale * jnp.sum(p * x)

    x = jnp.arange(8.0)
    with pytest.raises(ValueError, match=re.escape("len(in_axes)=2, len(args)=3")):
        _optax(OX.micro_grad(loss, microbatch_size=2), jnp.ones(()), x, 3.0)
    g, aux = mb.micro_grad(loss, microbatch_size=2)(jnp.ones(()), x, jnp.float32(3.0))
    assert float(g) == 3 * 28.0
    np.testing.assert_array_equal(aux.values, 3 * x)


def test_micro_grad_float16_sum_stalls_at_2048():
    """optax sums float16 gradients in float16: 2048 + 1 rounds to 2048, so the gradients
    2048, 1, 1 sum to 2048. optjax sums in float32 and returns float16: 2050."""

    def loss(p, x):
        return jnp.sum(p * x)

    p, x = jnp.ones((), jnp.float16), jnp.array([2048, 1, 1], jnp.float16)
    theirs, _ = _optax(OX.micro_grad(loss, microbatch_size=1), p, x)
    ours, _ = mb.micro_grad(loss, microbatch_size=1)(p, x)
    assert float(theirs) == 2048.0
    assert float(ours) == 2050.0 and ours.dtype == jnp.float16


def test_microbatch_size_0_optax_divides_by_zero():
    with pytest.raises(ZeroDivisionError):
        _optax(OX.reshape_batch_axis, jnp.ones(4), 0)
    with pytest.raises(ValueError, match="microbatch_size must be an integer >= 1"):
        mb.reshape_batch_axis(jnp.ones(4), 0)


# --- bad arguments ------------------------------------------------------------------------------

X8 = jnp.arange(8.0)
BAD = {  # name: (make or call with the value, values)
    "reshape_batch_axis.microbatch_size": (
        lambda v: mb.reshape_batch_axis(X8, v),
        [0, -1, 1.5, True, None, 3],
    ),
    "reshape_batch_axis.axis": (lambda v: mb.reshape_batch_axis(X8, 2, v), [1, -2, 1.5, "0"]),
    "micro_vmap.fun": (lambda v: mb.micro_vmap(v), [None, 3]),
    "micro_vmap.in_axes": (lambda v: mb.micro_vmap(jnp.sum, v), [1.5, "0", (0, 1.5), True]),
    "micro_vmap.in_axes[0]": (lambda v: mb.micro_vmap(jnp.sum, v)(X8), [1, -2]),
    "micro_vmap.out_axes": (lambda v: mb.micro_vmap(jnp.sum, 0, v), [1, -1, None, (0,), True]),
    "micro_vmap.microbatch_size": (
        lambda v: mb.micro_vmap(jnp.sum, microbatch_size=v)(X8),
        [0, -2, 1.5, True, 3],
    ),
    "micro_vmap.vmap_fn": (lambda v: mb.micro_vmap(jnp.sum, vmap_fn=v), [None, "vmap"]),
    "micro_vmap.accumulator": (lambda v: mb.micro_vmap(jnp.sum, accumulator=v), ["sum", 1]),
    "micro_vmap.num_real_microbatches": (
        lambda v: mb.micro_vmap(jnp.sum, microbatch_size=2, num_real_microbatches=v)(X8),
        [-1, 1.5, 5],
    ),
    "micro_grad.fun": (lambda v: mb.micro_grad(v), [None, 1.0]),
    "micro_grad.has_aux": (lambda v: mb.micro_grad(jnp.dot, v), [1, "yes", None]),
    "micro_grad.argnums": (lambda v: mb.micro_grad(jnp.dot, argnums=v), [1.5, "a", [None]]),
    "micro_grad.batch_argnums": (
        lambda v: mb.micro_grad(jnp.dot, batch_argnums=v)(1.0, X8),
        [(), -1, 1.5, ["a"], 2],
    ),
    "micro_grad.keep_batch_dim": (lambda v: mb.micro_grad(jnp.dot, keep_batch_dim=v), [0, None]),
    "micro_grad.microbatch_size": (
        lambda v: mb.micro_grad(jnp.dot, microbatch_size=v),
        [0, 2.0, "2"],
    ),
    "micro_grad.accumulator": (lambda v: mb.micro_grad(jnp.dot, accumulator=v), ["mean", None]),
    "micro_grad.transform_fn": (lambda v: mb.micro_grad(jnp.dot, transform_fn=v), [None, 1]),
    "micro_grad.metrics_fn": (lambda v: mb.micro_grad(jnp.dot, metrics_fn=v), [None, 1]),
    "micro_grad.num_real_microbatches": (
        lambda v: mb.micro_grad(jnp.dot, num_real_microbatches=v),
        [-1, 1.5],
    ),
}


@pytest.mark.parametrize("where", BAD)
def test_bad_arguments_raise_naming_the_argument_and_value(where):
    make, values = BAD[where]
    name = where.split(".")[1]
    for value in values:
        with pytest.raises(ValueError) as info:
            make(value)
        message = str(info.value)
        assert name in message, message
        shown = [value, *value] if isinstance(value, (list, tuple)) else [value]
        assert any(repr(v) in message for v in shown), message
