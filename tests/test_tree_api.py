"""optax.tree's functions in optjax.tree against optax 0.2.8 live, on nested trees with None
leaves, 0-d and Python-number leaves and mixed dtypes, eagerly and under jit; and the places where
optjax is deliberately right where optax is not.

No optimizer is added here, so there are no conformance rows.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from packaging.version import Version

import optjax
from optjax import tree as T

# optax.tree, and the behaviour compared with, are optax 0.2.8's (constraints-min.txt installs
# 0.2.4, which has no optax.tree).
needs_optax_tree = pytest.mark.skipif(
    not hasattr(optax, "tree") or Version(optax.__version__) < Version("0.2.8"),
    reason="compares with optax 0.2.8's optax.tree",
)


def _tree(seed, dtype="float32", complex_=False):
    """A nested tree of random leaves in ``dtype`` (complex values with ``complex_``): dicts and
    a list, 2-d, 1-d and 0-d leaves, and None leaves. Its structure is the same for every seed
    and dtype."""
    rng = np.random.default_rng(seed)

    def leaf(*shape):
        value = rng.normal(size=shape)
        if complex_:
            value = value + 1j * rng.normal(size=shape)
        return jnp.asarray(value, dtype)

    return {"w": leaf(3, 2), "b": [leaf(4), None, leaf()], "s": {"t": leaf(), "u": None}}


def _mixed(seed, dtypes=(jnp.bfloat16, jnp.float32)):
    """A tree of mixed dtypes: leaf "h" in ``dtypes[0]``, "f" in ``dtypes[1]``, "p" a Python
    number and a None leaf."""
    rng = np.random.default_rng(seed)
    return {
        "h": jnp.asarray(rng.normal(size=(3,)), dtypes[0]),
        "f": jnp.asarray(rng.normal(size=(2, 2)), dtypes[1]),
        "p": 0.5 + seed,
        "n": [None],
    }


def _assert_trees_close(actual, expected, rtol, check_dtype=True):
    """The same structure (None leaves included), and leaf by leaf the same shape, the same
    dtype (with ``check_dtype``) and values within ``rtol`` (rtol 0: equal)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(actual)
    flat_ref, treedef_ref = jax.tree_util.tree_flatten_with_path(expected)
    assert treedef == treedef_ref, (treedef, treedef_ref)
    for (path, a), (_, b) in zip(flat, flat_ref, strict=True):
        at = jax.tree_util.keystr(path) or "<root>"
        a, b = jnp.asarray(a), jnp.asarray(b)
        assert a.shape == b.shape, (at, a.shape, b.shape)
        if check_dtype:
            assert a.dtype == b.dtype, (at, a.dtype, b.dtype)
        wide = np.complex128 if jnp.iscomplexobj(a) or jnp.iscomplexobj(b) else np.float64
        np.testing.assert_allclose(
            np.asarray(a, wide), np.asarray(b, wide), rtol=rtol, atol=0, err_msg=at
        )


# Elementwise functions of optax.tree, as fn(tree module, x, y, z) (x, y, z trees like _tree's).
ELEMENTWISE = {
    "add": lambda t, x, y, z: t.add(x, y),
    "add_three": lambda t, x, y, z: t.add(x, y, z),
    "sub": lambda t, x, y, z: t.sub(x, y),
    "mul": lambda t, x, y, z: t.mul(x, y),
    "div": lambda t, x, y, z: t.div(x, y),
    "add_scale": lambda t, x, y, z: t.add_scale(x, 0.3, y),
    "scale": lambda t, x, y, z: t.scale(-1.7, x),
    "where": lambda t, x, y, z: t.where(True, x, y),
    "where_array": lambda t, x, y, z: t.where(jnp.asarray(False), x, y),
    "clip": lambda t, x, y, z: t.clip(x, -0.5, 0.5),
    "clip_max": lambda t, x, y, z: t.clip(x, max_value=0.1),
    "conj": lambda t, x, y, z: t.conj(x),
    "real": lambda t, x, y, z: t.real(x),
    "batch_shape": lambda t, x, y, z: t.batch_shape(x, (2,)),
    "update_moment": lambda t, x, y, z: t.update_moment(x, y, 0.9, 1),
    "update_moment_sq": lambda t, x, y, z: t.update_moment(x, y, 0.999, 2),
    "update_moment_per_elem_norm": lambda t, x, y, z: t.update_moment_per_elem_norm(x, y, 0.9, 2),
    "per_elem_norm_order_4": lambda t, x, y, z: t.update_moment_per_elem_norm(x, y, 0.8, 4),
    "update_infinity_moment": lambda t, x, y, z: t.update_infinity_moment(x, y, 0.9, 1e-8),
    "bias_correction": lambda t, x, y, z: t.bias_correction(x, 0.999, jnp.asarray(3)),
    "zeros_like": lambda t, x, y, z: t.zeros_like(x),
    "zeros_like_int": lambda t, x, y, z: t.zeros_like(x, jnp.int32),
    "ones_like": lambda t, x, y, z: t.ones_like(x),
    "ones_like_bf16": lambda t, x, y, z: t.ones_like(x, jnp.bfloat16),
    "full_like": lambda t, x, y, z: t.full_like(x, 2.5),
    "full_like_int": lambda t, x, y, z: t.full_like(x, 3, jnp.int32),
    "cast": lambda t, x, y, z: t.cast(x, jnp.bfloat16),
    "cast_none": lambda t, x, y, z: t.cast(x, None),
    "cast_like": lambda t, x, y, z: t.cast_like(y, t.cast(x, jnp.float16)),
}

REDUCTIONS = {
    "sum": lambda t, x, y, z: t.sum(x),
    "sum_assoc": lambda t, x, y, z: t.sum(add3(t, x, y, z), associative_reduction=True),
    "vdot": lambda t, x, y, z: t.vdot(x, y),
    "norm": lambda t, x, y, z: t.norm(x),
    "norm_sq": lambda t, x, y, z: t.norm(x, squared=True),
    "norm_1": lambda t, x, y, z: t.norm(x, ord=1),
    "norm_1_sq": lambda t, x, y, z: t.norm(x, ord=1, squared=True),
    "norm_inf": lambda t, x, y, z: t.norm(x, ord=jnp.inf),
    "norm_inf_str": lambda t, x, y, z: t.norm(x, ord="infinity", squared=True),
    "max": lambda t, x, y, z: t.max(x),
    "min": lambda t, x, y, z: t.min(x),
    "size": lambda t, x, y, z: t.size(x),
    "allclose": lambda t, x, y, z: t.allclose(x, y),
    "allclose_self": lambda t, x, y, z: t.allclose(x, x),
}


def add3(t, x, y, z):
    return t.add(x, y, z)


def _table(lib_tree, table, *trees):
    return jax.jit(lambda *ts: {name: fn(lib_tree, *ts) for name, fn in table.items()})(*trees)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@needs_optax_tree
def test_elementwise_and_reductions_match_optax_under_jit(dtype, standard_promotion):
    with jax.enable_x64(dtype == "float64"):
        x, y, z = (_tree(s, dtype) for s in (0, 1, 2))
        table = {**ELEMENTWISE, **REDUCTIONS}
        ours, theirs = _table(T, table, x, y, z), _table(optax.tree, table, x, y, z)
    for name in table:
        # float32: optax forms 1 - 0.999**t in float32, 7e-6 off (see the bias_correction test)
        rtol = 1e-6 if dtype == "float64" else 1e-4 if name == "bias_correction" else 2e-6
        _assert_trees_close(ours[name], theirs[name], rtol=rtol)


@pytest.mark.parametrize("name", ["add", "sub", "mul", "where", "scale", "conj", "real"])
@needs_optax_tree
def test_complex_and_python_number_leaves_match_optax(name, standard_promotion):
    fns = {
        "conj": lambda lib, x, y: lib.conj(x),
        "real": lambda lib, x, y: lib.real(x),
        "where": lambda lib, x, y: lib.where(True, x, y),
        "scale": lambda lib, x, y: lib.scale(0.5, x),
    }
    fn = fns.get(name, lambda lib, x, y: getattr(lib, name)(x, y))
    x, y = _tree(3, jnp.complex64, complex_=True), _tree(4, jnp.complex64, complex_=True)
    _assert_trees_close(fn(T, x, y), fn(optax.tree, x, y), rtol=1e-6)
    x, y = {"a": 1.5, "b": [2.0, None]}, {"a": -0.5, "b": [4.0, None]}
    _assert_trees_close(fn(T, x, y), jax.tree.map(jnp.asarray, fn(optax.tree, x, y)), 1e-6, False)


MIXED = {
    "add": lambda t, x, y: t.add(x, y),
    "mul": lambda t, x, y: t.mul(x, y),
    "div": lambda t, x, y: t.div(x, y),
    "where": lambda t, x, y: t.where(True, x, y),
    "clip": lambda t, x, y: t.clip(x, -0.2, 0.2),
    "max": lambda t, x, y: t.max(y),
    "min": lambda t, x, y: t.min(x),
}


@needs_optax_tree
def test_mixed_dtypes_give_optax_dtypes_under_strict_promotion():
    # Leaf by leaf bf16 with float32, and float32 with bf16; a Python number in both.
    x, y = _mixed(0), _mixed(1, (jnp.float32, jnp.bfloat16))
    with jax.numpy_dtype_promotion("standard"):
        theirs = jax.jit(lambda x, y: {n: f(optax.tree, x, y) for n, f in MIXED.items()})(x, y)
    # optjax's own code runs under the strict promotion the tests set: it promotes explicitly.
    ours = jax.jit(lambda x, y: {n: f(T, x, y) for n, f in MIXED.items()})(x, y)
    for name in MIXED:
        _assert_trees_close(ours[name], theirs[name], rtol=1e-2)
    assert ours["add"]["h"].dtype == ours["add"]["f"].dtype == jnp.float32


@needs_optax_tree
def test_reductions_of_complex_python_number_and_integer_leaves_match_optax(standard_promotion):
    x, y = _tree(7, jnp.complex64, complex_=True), _tree(8, jnp.complex64, complex_=True)
    np.testing.assert_allclose(T.vdot(x, y), optax.tree.vdot(x, y), rtol=1e-5)  # x conjugated
    np.testing.assert_allclose(T.norm(x), optax.tree.norm(x), rtol=1e-6)
    x = {"a": 3.0, "b": None, "c": [jnp.array([4, -12])]}
    for name in ("sum", "norm", "max"):
        ours, theirs = REDUCTIONS[name](T, x, x, x), REDUCTIONS[name](optax.tree, x, x, x)
        np.testing.assert_allclose(ours, theirs, err_msg=name)
    assert T.vdot(x, x).dtype == jnp.float32 and float(T.vdot(x, x)) == 169.0


@needs_optax_tree
def test_reductions_accumulate_low_precision_in_float32(standard_promotion):
    x = {"a": jnp.full((300,), 1.01, jnp.bfloat16), "b": jnp.array(1.0, jnp.bfloat16)}
    exact = 300 * float(jnp.asarray(1.01, jnp.bfloat16)) + 1
    assert T.sum(x).dtype == jnp.float32 and float(T.sum(x)) == pytest.approx(exact, rel=1e-6)
    assert float(optax.tree.sum(x)) != pytest.approx(exact, rel=1e-3)  # bf16 sums: 8 bits
    assert T.norm(x).dtype == jnp.float32


@needs_optax_tree
def test_low_precision_is_at_least_as_close_to_float64_as_optax(standard_promotion):
    """Where optjax rounds once in float32 and optax several times in bf16."""
    rng = np.random.default_rng(9)
    xs = [jnp.asarray(rng.normal(size=200), jnp.bfloat16) for _ in range(3)]

    def error(got, exact):
        return float(np.sum(np.abs(np.asarray(got, np.float64) - exact)))

    x, y, z = (np.asarray(v, np.float64) for v in xs)
    checks = [
        (lambda lib: lib.add(*xs), x + y + z),
        (lambda lib: lib.add_scale(xs[0], 0.3, xs[1]), x + 0.3 * y),
        (lambda lib: lib.update_moment(xs[0], xs[1], 0.9, 2), 0.1 * x**2 + 0.9 * y),
        (lambda lib: lib.bias_correction(xs[0], 0.999, jnp.asarray(2)), x / (1 - 0.999**2)),
    ]
    for fn, exact in checks:
        ours, theirs = fn(T), fn(optax.tree)
        assert jnp.result_type(ours) == jnp.bfloat16
        assert error(ours, exact) <= error(theirs, exact)


MOMENTS = [
    ("update_moment", dict(decay=0.9, order=1)),
    ("update_moment", dict(decay=0.999, order=2)),
    ("update_moment_per_elem_norm", dict(decay=0.999, order=2)),
    ("update_moment_per_elem_norm", dict(decay=0.8, order=4)),
    ("update_infinity_moment", dict(decay=0.999, eps=1e-8)),
    ("update_infinity_moment", dict(decay=0.5, eps=0.1)),
]


def _moment_trajectories(lib_tree, grads):
    """Each moment of MOMENTS, step by step over grads, and its bias corrections."""
    out = []
    for name, kwargs in MOMENTS:
        moment = lib_tree.zeros_like(grads[0])
        for t, g in enumerate(grads, start=1):
            moment = getattr(lib_tree, name)(g, moment, **kwargs)
            count = jnp.asarray(t, jnp.int32)
            out.append((moment, lib_tree.bias_correction(moment, kwargs["decay"], count)))
    return out


@needs_optax_tree
def test_moment_trajectories_match_optax_step_by_step(standard_promotion):
    # float64 (float32 single steps are in the table above, and its rounding in the next tests)
    with jax.enable_x64(True):
        grads = [_tree(10 + t, "float64") for t in range(4)]
        ours, theirs = _moment_trajectories(T, grads), _moment_trajectories(optax.tree, grads)
    for (m, corrected), (m_ref, corrected_ref) in zip(ours, theirs, strict=True):
        _assert_trees_close(m, m_ref, rtol=1e-6)
        _assert_trees_close(corrected, corrected_ref, rtol=1e-6)
    # Complex updates: the moment of the modulus, |g|^order = (|g|^2)^(order / 2).
    g, m = _tree(20, jnp.complex64, complex_=True), T.zeros_like(_tree(20, jnp.float32))
    for order in (1, 2, 3):
        ours = T.update_moment_per_elem_norm(g, m, 0.9, order)
        _assert_trees_close(ours, optax.tree.update_moment_per_elem_norm(g, m, 0.9, order), 1e-6)


@needs_optax_tree
def test_complex_updates_into_real_moments_give_complex_moments_as_in_optax(standard_promotion):
    # g^order of a complex g is complex: a real moment cannot hold it (a cast would drop the
    # imaginary part), so the moment becomes its complex counterpart, optax's promoted dtype.
    g = _tree(21, jnp.complex64, complex_=True)
    for moment_dtype in (jnp.float32, jnp.bfloat16):
        m = T.full_like(_tree(22, jnp.float32), 0.5, moment_dtype)
        for order in (1, 2):
            ours = T.update_moment(g, m, 0.9, order)
            theirs = optax.tree.update_moment(g, T.cast(m, jnp.float32), 0.9, order)
            _assert_trees_close(ours, theirs, rtol=1e-6)
    with jax.enable_x64(True):
        g, m = _tree(23, jnp.complex64, complex_=True), _tree(24, jnp.float64)
        # complex128, formed in complex128 (optax squares in complex64 first)
        _assert_trees_close(
            T.update_moment(g, m, 0.9, 2), optax.tree.update_moment(g, m, 0.9, 2), 1e-6
        )


@needs_optax_tree
def test_bias_correction_is_closer_to_float64_than_optax_in_float32(standard_promotion):
    moment = jnp.ones(3)
    worst = {"optjax": 0.0, "optax": 0.0}
    for t in range(1, 11):
        exact = 1 / (1 - 0.999**t)
        for name, fn in (("optjax", T.bias_correction), ("optax", optax.tree.bias_correction)):
            got = np.asarray(fn(moment, 0.999, jnp.asarray(t)), np.float64)
            worst[name] = max(worst[name], float(np.max(np.abs(got / exact - 1))))
    assert worst["optjax"] < 5e-7, worst  # a few float32 ulps
    assert worst["optjax"] < worst["optax"] / 20, worst


def test_bias_correction_takes_python_counts_and_saturated_counts():
    assert float(T.bias_correction(jnp.array(0.1), 0.9, 1)) == pytest.approx(1.0, rel=1e-6)
    top = jnp.asarray(np.iinfo(np.int32).max, jnp.int32)
    for decay in (0.0, 0.5, 0.999, 0.9999999):
        out = T.bias_correction({"m": jnp.array([2.0], jnp.bfloat16), "p": 3.0}, decay, top)
        assert out["m"].dtype == jnp.bfloat16 and float(out["m"][0]) == 2.0
        assert float(out["p"]) == 3.0


def test_flat_buffers_leave_padding_out():
    params = {"a": -jnp.arange(1.0, 4.0), "b": -jnp.ones((2, 3))}
    flat, _ = optjax.flat.flatten(params, row_multiple=4)
    assert flat.buffers[0].size == 12 and T.size(flat) == 9  # 3 elements of padding

    @jax.jit
    def reductions(flat):
        ones = T.ones_like(flat)  # its padding holds ones too: every reduction leaves it out
        return [
            T.sum(ones),
            T.norm(ones, squared=True),
            T.norm(ones, ord=1),
            T.vdot(ones, ones),
            T.max(flat),  # -1, not the padding's 0
            -T.min(T.scale(-1.0, flat)),
            T.norm(flat) ** 2,
        ]

    np.testing.assert_allclose(reductions(flat), [9, 9, 9, 9, -1, -1, 20], rtol=1e-6)


@needs_optax_tree
def test_random_trees_match_optax():
    key = jax.random.key(42)
    x = _tree(40)
    keys_ours, keys_theirs = T.split_key_like(key, x), optax.tree.split_key_like(key, x)
    _assert_trees_close(
        T.unwrap_random_key_data(keys_ours), optax.tree.unwrap_random_key_data(keys_theirs), 0
    )
    for kwargs in ({}, {"sampler": jax.random.uniform, "dtype": jnp.bfloat16}):
        ours, theirs = T.random_like(key, x, **kwargs), optax.tree.random_like(key, x, **kwargs)
        _assert_trees_close(ours, theirs, rtol=0)
    raw = T.random_like(jax.random.PRNGKey(0), {"a": jnp.zeros(2)}, lambda k, s, d: jnp.ones(s, d))
    assert raw["a"].tolist() == [1.0, 1.0]  # a sampler without out_sharding


@needs_optax_tree
def test_dtype_matches_optax():
    trees = [
        {"a": jnp.zeros(2), "b": [jnp.zeros(3)]},
        {"a": jnp.zeros(2, jnp.bfloat16), "b": jnp.zeros(3, jnp.float16), "c": jnp.zeros(2)},
        {"a": jnp.zeros(2, jnp.int8), "b": jnp.zeros(3, jnp.int32)},
        {},
    ]
    with jax.numpy_dtype_promotion("standard"):  # optax's 'promote' uses the config's lattice
        for tree in trees:
            for handler in (None, "promote", "highest", "lowest"):
                try:
                    expected = optax.tree.dtype(tree, handler)
                except ValueError:
                    with pytest.raises(ValueError):
                        T.dtype(tree, handler)
                    continue
                assert T.dtype(tree, handler) == expected, (tree, handler)
    with pytest.raises(ValueError, match=r"\['b'\] is float16"):
        T.dtype(trees[1])


# Python scalars, None leaves: optax 0.2.8 crashes or is wrong; optjax is right.


@needs_optax_tree
def test_norm_of_fp16_tree_overflows_in_optax(standard_promotion):
    x = {"a": jnp.array([300.0], jnp.float16), "b": jnp.array(400.0, jnp.float16)}
    assert jnp.isinf(optax.tree.norm(x))  # its squares overflow fp16 at 256
    assert float(T.norm(x)) == 500.0


@needs_optax_tree
def test_norm_inf_of_tree_without_elements_is_minus_inf_in_optax(standard_promotion):
    for x in ({}, {"a": jnp.zeros((0,))}):
        assert float(optax.tree.norm(x, ord="inf")) == -math.inf  # a negative norm
        assert float(T.norm(x, ord="inf")) == 0.0


@needs_optax_tree
def test_max_of_int_tree_rounds_to_float32_in_optax(standard_promotion):
    x = {"a": jnp.array([16777217, 3], jnp.int32)}  # 2^24 + 1: not a float32
    assert float(optax.tree.max(x)) == 16777216.0
    assert T.max(x).dtype == jnp.int32 and int(T.max(x)) == 16777217


@needs_optax_tree
def test_update_moment_per_elem_norm_of_negative_reals_is_signed_in_optax(standard_promotion):
    g, m = {"a": jnp.array([-2.0, -4.0])}, {"a": jnp.zeros(2)}
    assert float(optax.tree.update_moment_per_elem_norm(g, m, 0.5, 1)["a"][0]) == -1.0
    assert jnp.isnan(optax.tree.update_moment_per_elem_norm(g, m, 0.5, 1.5)["a"]).all()
    assert T.update_moment_per_elem_norm(g, m, 0.5, 1)["a"].tolist() == [1.0, 2.0]
    assert T.update_moment_per_elem_norm(g, m, 0.5, 1.5)["a"].tolist() == pytest.approx(
        [0.5 * 2**1.5, 0.5 * 4**1.5]
    )


@needs_optax_tree
def test_cast_and_random_like_of_python_number_leaves_crash_in_optax(standard_promotion):
    x = {"a": 1.5, "b": jnp.zeros(2)}
    with pytest.raises(AttributeError):
        optax.tree.cast(x, jnp.bfloat16)
    with pytest.raises(AttributeError):
        optax.tree.random_like(jax.random.key(0), x)
    assert T.cast(x, jnp.bfloat16)["a"].dtype == jnp.bfloat16
    assert T.random_like(jax.random.key(0), x)["a"].shape == ()


# get, get_all_with_path, set: by key name, as optax's.


def _state():
    """An optax state with NamedTuples, dicts, a typed key and nested matches."""
    tx = optax.chain(
        optax.add_noise(1.0, 0.9, key=0),
        optax.inject_hyperparams(optax.adam)(learning_rate=lambda t: 0.1 / (t + 1)),
    )
    return tx.init({"w": jnp.zeros(2), "b": jnp.zeros(())})


def _by_path(found):
    return sorted((jax.tree_util.keystr(path), id(value)) for path, value in found)


@needs_optax_tree
def test_get_all_with_path_and_get_match_optax(standard_promotion):
    state = _state()
    nested = {"a": {"a": jnp.ones(1), "b": 2.0}, "c": [{"a": None}]}
    for tree, key in [
        (state, "count"),
        (state, "learning_rate"),
        (state, "mu"),
        (state, "ScaleByAdamState"),
        (state, "AddNoiseState"),
        (state, "missing"),
        (nested, "a"),
        (nested, "b"),
    ]:
        ours = T.get_all_with_path(tree, key)
        theirs = optax.tree.get_all_with_path(tree, key)
        assert _by_path(ours) == _by_path(theirs), key
        if len(theirs) == 1:
            assert T.get(tree, key) is optax.tree.get(tree, key)
        elif not theirs:
            assert T.get(tree, key, default="none") == "none"
        else:
            with pytest.raises(KeyError):
                optax.tree.get(tree, key)
            with pytest.raises(ValueError, match=r"values match .* at \["):
                T.get(tree, key)  # a KeyError too
            with pytest.raises(KeyError):
                T.get(tree, key)

    # Filtering by path: the learning rate value, not its schedule state.
    def is_array(path, value):
        return isinstance(value, jax.Array)

    assert float(T.get(state, "learning_rate", filtering=is_array)) == pytest.approx(0.1)
    adam_only = T.get(state, "count", filtering=lambda p, v: p[-1].tuple_name == "ScaleByAdamState")
    assert adam_only is optax.tree.get(
        state, "count", filtering=lambda p, v: p[-1].tuple_name == "ScaleByAdamState"
    )


@needs_optax_tree
def test_set_matches_optax(standard_promotion):
    state = _state()
    nested = {"a": {"a": jnp.ones(1), "b": 2.0}, "c": {"b": None}}
    for tree, filtering, kwargs in [
        (state, None, dict(mu={"w": 1.0, "b": 2.0})),
        (state, None, dict(AddNoiseState="gone")),
        (state, lambda p, v: isinstance(v, jax.Array), dict(learning_rate=jnp.asarray(0.5))),
        (nested, None, dict(a=7.0, b=3.0)),
    ]:
        ours, theirs = T.set(tree, filtering, **kwargs), optax.tree.set(tree, filtering, **kwargs)
        flat_o, def_o = jax.tree_util.tree_flatten_with_path(ours)
        flat_t, def_t = jax.tree_util.tree_flatten_with_path(theirs)
        assert def_o == def_t
        for (p, a), (q, b) in zip(flat_o, flat_t, strict=True):
            assert p == q and (a is b or np.array_equal(a, b))
    with pytest.raises(KeyError):
        optax.tree.set(state, nothing=1)
    with pytest.raises(ValueError, match="no value matches 'nothing'"):
        T.set(state, nothing=1)
    with pytest.raises(ValueError, match="given the filtering"):
        T.set(state, lambda p, v: False, count=1)


@needs_optax_tree
def test_set_skips_matches_inside_lists_in_optax(standard_promotion):
    tree = {"a": 1.0, "c": [{"b": None}]}
    assert optax.tree.get(tree, "b", default="missing") is None  # get finds c[0]['b'] ...
    assert optax.tree.set(tree, a=7.0, b=3.0) == {"a": 7.0, "c": [{"b": None}]}  # set skips it
    assert T.set(tree, a=7.0, b=3.0) == {"a": 7.0, "c": [{"b": 3.0}]}


def test_get_and_set_on_optjax_states():
    tx = optjax.inject_hyperparams(optjax.adam)(learning_rate=0.1)
    state = tx.init({"w": jnp.zeros(2)})
    assert float(T.get(state, "learning_rate")) == pytest.approx(0.1)
    new = T.set(state, learning_rate=jnp.asarray(0.5))
    assert isinstance(new.hyperparams, type(state.hyperparams))  # the dict subclass kept
    assert float(T.get(new, "learning_rate")) == 0.5
    _, after = jax.jit(tx.update)({"w": jnp.ones(2)}, new)
    assert float(T.get(after, "learning_rate")) == 0.5


# map_params: over every copy of the params in a state.


@needs_optax_tree
def test_map_params_matches_optax(standard_promotion):
    params = {"w": jnp.ones((2, 3)), "b": [jnp.ones(3), None]}
    specs = {"w": "W", "b": ["B", None]}
    for ours_tx, theirs_tx in [
        (optjax.adam(0.1), optax.adam(0.1)),
        (optjax.sgd(0.1, momentum=0.9), optax.sgd(0.1, momentum=0.9)),
    ]:
        kwargs = dict(transform_non_params=lambda _: "other")
        ours = T.map_params(ours_tx, lambda _, s: s, ours_tx.init(params), specs, **kwargs)
        theirs = optax.tree.map_params(
            theirs_tx, lambda _, s: s, theirs_tx.init(params), specs, **kwargs
        )
        assert jax.tree.leaves(ours) == jax.tree.leaves(theirs)
        # With no transform_non_params, counts are kept; with an init function, as with the tx.
        doubled = T.map_params(ours_tx.init, lambda p: 2 * p, ours_tx.init(params))
        assert all(float(x.sum()) in (0.0, 0) for x in jax.tree.leaves(doubled))
    # optax's own transform through optjax's map_params.
    tx = optax.adam(0.1)
    mapped = T.map_params(tx, lambda p: p + 1, tx.init(params))
    assert float(mapped[0].mu["w"][0, 0]) == 1.0 and int(mapped[0].count) == 0


def test_map_params_names_where_the_state_differs():
    tx = optjax.adam(0.1)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match=r"map_params: .*another transform"):
        T.map_params(tx, lambda p: p, optjax.sgd(0.1, momentum=0.9).init(params))
    with pytest.raises(ValueError, match=r"rest\[0\].*\['v'\]"):
        T.map_params(tx, lambda p, s: s, tx.init(params), {"v": 1})


# Errors.


def test_mismatched_trees_raise_value_error_naming_the_path():
    x = {"a": jnp.ones(2), "b": {"c": jnp.ones(3)}}
    other = {"a": jnp.ones(2), "b": {"d": jnp.ones(3)}}
    calls = [
        lambda: T.add(x, other),
        lambda: T.add(x, x, other),
        lambda: T.sub(x, other),
        lambda: T.where(True, x, other),
        lambda: T.vdot(x, other),
        lambda: T.allclose(x, other),
        lambda: T.update_moment(x, other, 0.9, 2),
        lambda: T.update_infinity_moment(x, other, 0.9, 0.0),
        lambda: T.cast_like(x, other),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"\['b'\]\['c'\]"):
            call()
    short = {"a": jnp.ones(2), "b": {"c": jnp.ones(4)}}
    with pytest.raises(ValueError, match=r"\['b'\]\['c'\] has shape \(3,\)"):
        T.mul(x, short)
    with pytest.raises(ValueError, match=r"\['b'\]\['c'\] has shape \(3,\)"):
        T.vdot(x, short)
    with pytest.raises(ValueError, match=r"\['a'\]"):
        T.add({"a": None}, {"a": {"z": 1.0}})  # None stands for a leaf, not a subtree


BAD = [
    (lambda v: T.norm({"a": jnp.ones(2)}, ord=v), "ord", [3, "fro", True, -1]),
    (lambda v: T.update_moment({}, {}, v, 2), "decay", [-0.1, 1.5, math.nan, "0.9", None]),
    (lambda v: T.update_moment({}, {}, 0.9, v), "order", [0, -1, math.inf, "2"]),
    (lambda v: T.update_moment_per_elem_norm({}, {}, v, 2), "decay", [-1.0, 2.0]),
    (lambda v: T.update_infinity_moment({}, {}, 0.9, v), "eps", [-1e-8, math.nan, "e"]),
    (lambda v: T.update_infinity_moment({}, {}, v, 0.0), "decay", [1.01, -0.5]),
    (lambda v: T.bias_correction({}, v, 1), "decay", [1.0, -0.1, math.nan]),
    (lambda v: T.bias_correction({}, 0.9, v), "count", [0, -3, 1.5, True]),
    (lambda v: T.allclose({}, {}, rtol=v), "rtol", [-1e-5, math.nan]),
    (lambda v: T.allclose({}, {}, atol=v), "atol", [-1.0, "x"]),
    (lambda v: T.add_scale({}, v, {}), "scalar", [math.nan, math.inf, "s"]),
    (lambda v: T.scale(v, {}), "scalar", [math.nan, -math.inf]),
    (lambda v: T.clip({}, v, 0.0), "min_value", [1.0, 5]),
    (lambda v: T.dtype({}, v), "mixed_dtype_handler", ["max", "", 1]),
]


@pytest.mark.parametrize("call,name,values", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_hyperparameters_raise_value_error_naming_them(call, name, values):
    for value in values:
        with pytest.raises(ValueError, match=rf"\b{name}\b"):
            call(value)


def test_traced_hyperparameters_are_accepted():
    @jax.jit
    def step(decay, count):
        m = T.update_moment({"a": jnp.ones(2)}, {"a": jnp.zeros(2)}, decay, 2)
        return T.bias_correction(m, decay, count)

    out = step(jnp.asarray(0.9), jnp.asarray(1))
    np.testing.assert_allclose(out["a"], [1.0, 1.0], rtol=1e-6)


@needs_optax_tree
def test_every_optax_tree_name_has_optax_arguments():
    import inspect

    def parameters(fn):
        params = inspect.signature(fn).parameters.values()
        return [(p.name, p.kind, p.default) for p in params]

    names = [n for n in dir(optax.tree) if not n.startswith("_")]
    assert names and set(names) <= set(T.__all__)
    for name in names:
        assert parameters(getattr(T, name)) == parameters(getattr(optax.tree, name)), name
