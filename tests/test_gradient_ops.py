"""Gradient operations (centralize, normalize_by_update_norm, keep_params_nonnegative, zero_nans,
scale_gradient) and the clipping added beside them (adaptive_grad_clip, per-example clipping),
against optax 0.2.8 step by step: in float64 to rtol 1e-6, and in float32 at least as close to
the float64 trajectory as optax's own float32 run. Then the places where optjax is right and
optax is not, the flat layout, and bad hyperparameters.

The helpers here (`assert_matches_optax`) serve tests/test_optimistic.py too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optjax
from optjax.transforms import clipping as optjax_clipping
from optjax.transforms.clipping import (
    adaptive_grad_clip,
    per_example_global_norm_clip,
    per_example_layer_norm_clip,
)
from optjax.transforms.gradient_ops import (
    centralize,
    keep_params_nonnegative,
    normalize_by_update_norm,
    scale_gradient,
    zero_nans,
)

STEPS = 3
# Every rank a default AGC unit knows, a leaf with one non-unit axis, and a scalar.
SHAPES = {
    "scalar": (),
    "vector": (5,),
    "row": (1, 6),
    "matrix": (4, 3),
    "heads": (2, 3, 4),
    "conv": (3, 3, 2, 4),
    "conv3d": (2, 1, 2, 2, 3),
}


def random_tree(seed, shapes=SHAPES, scale=1.0):
    rng = np.random.default_rng(seed)
    return {k: (scale * rng.normal(size=s)).astype(np.float32) for k, s in shapes.items()}


def _as(tree, dtype):
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def trajectory(tx, apply, params, grads, extras=()):
    """``[(updates_t, state_t)]`` of ``tx`` over ``grads`` (params moved by each step), unrolled
    for the caller to trace (a few steps compile faster so than in a lax.scan); ``extras[t]``
    are step t's keyword extras (e.g. ``value=``)."""
    state, out = tx.init(params), []
    for g, extra in zip(grads, list(extras) or [{} for _ in grads]):
        updates, state = tx.update(g, state, params, **extra)
        params = apply(params, updates)
        out.append((updates, state))
    return out


def _runs(runs, params, grads, extras, stateless):
    """Each ``(factory, library)`` of ``runs`` (the library's apply_updates steps it) on the same
    numbers, all in one jitted function (one compilation). A stateless transform runs each
    gradient from the same params, batched with vmap (one step's code)."""

    def run(params, grads, extras):
        if not stateless:
            return [
                trajectory(make(), library.apply_updates, params, grads, extras)
                for make, library in runs
            ]
        stacked = _stack(grads)

        def one(tx):
            return jax.vmap(lambda g: [tx.update(g, tx.init(params), params)])(stacked)

        return [one(make()) for make, _ in runs]

    out = jax.jit(run)(params, grads, list(extras))
    if not stateless:
        return out
    unstack = lambda steps: [jax.tree.map(lambda x, t=t: x[t], steps[0]) for t in range(len(grads))]
    return [unstack(steps) for steps in out]


def _both(ours, theirs, params, grads, extras, stateless):
    """optjax's ``ours()`` and optax's ``theirs()``: `_runs` of the two."""
    return _runs([(ours, optjax), (theirs, optax)], params, grads, extras, stateless)


def _updates(steps):
    return [u for u, _ in steps]


def _relative_errors(got, want):
    """Per leaf of every step: max |got - want| / max |want| (NaN-free trees)."""
    errors = []
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-30)
        errors.append(float(np.max(np.abs(a - b), initial=0.0)) / scale)
    return np.asarray(errors)


def assert_float32_as_close(ours32, theirs32, reference):
    """Ours within 2 float32 ulps (of each leaf's scale) of optax's distance from float64."""
    assert all(u.dtype == jnp.float32 for u in jax.tree.leaves(ours32))
    ulp = float(jnp.finfo(jnp.float32).eps)
    ours_error = _relative_errors(ours32, reference)
    theirs_error = _relative_errors(theirs32, reference)
    assert np.all(ours_error <= theirs_error + 2 * ulp), (ours_error, theirs_error)


def assert_matches_optax(
    ours, theirs, params, grads, extras=(), state_fields=(), stateless=False, noiseless=None
):
    """``ours()`` and ``theirs()`` (transform factories) on the same float32 numbers: equal to
    rtol 1e-6 in float64, and ours in float32 at least as close to the float64 run as optax's
    (`assert_float32_as_close`). ``state_fields`` are state attributes compared too (of the
    state, or of a chain's first state).

    For a transform that adds noise (whose float64 draw is another sample than its float32
    one), ``noiseless()`` is the same transform drawing none: each float32 update of ours is
    then within 2 ulps of optax's, relative to the sizes of its two terms (the noiseless
    update and optax's noise), as rounding each term and their sum allows. A bound relative
    to the update alone would not hold where the noise cancels the gradient."""
    with jax.enable_x64(True):
        p64, g64 = _as(params, jnp.float64), [_as(g, jnp.float64) for g in grads]
        e64 = [_as(e, jnp.float64) for e in extras]
        got, want = _both(ours, theirs, p64, g64, e64, stateless)
        for (u, s), (u_ref, s_ref) in zip(got, want, strict=True):
            for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(u_ref), strict=True):
                assert a.dtype == b.dtype == jnp.float64
                scale = float(np.max(np.abs(b), initial=0.0))
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12 * scale)
            for field in state_fields:
                a, b = _state_field(s, field), _state_field(s_ref, field)
                jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), a, b)
        reference = _updates(want)
    p32, g32 = _as(params, jnp.float32), [_as(g, jnp.float32) for g in grads]
    e32 = [_as(e, jnp.float32) for e in extras]
    if noiseless is not None:
        ulp = float(jnp.finfo(jnp.float32).eps)
        runs = [(ours, optjax), (theirs, optax), (noiseless, optjax)]
        leaves = [
            jax.tree.leaves(_updates(steps)) for steps in _runs(runs, p32, g32, e32, stateless)
        ]
        for a, b, c in zip(*leaves, strict=True):
            a, b, c = (np.asarray(x, np.float64) for x in (a, b, c))
            np.testing.assert_array_less(
                np.abs(a - b), 2 * ulp * (np.abs(c) + np.abs(b - c)) + 1e-45
            )
        return
    ours32, theirs32 = _both(ours, theirs, p32, g32, e32, stateless)
    assert_float32_as_close(_updates(ours32), _updates(theirs32), reference)


def _state_field(state, field):
    state = state[0] if isinstance(state, tuple) and not hasattr(state, "_fields") else state
    return getattr(state, field)


# ------------------------------------------------------------------------- against optax 0.2.8


def _grads_with_nans(seed):
    grads = [random_tree(seed + t) for t in range(STEPS)]
    grads[0]["matrix"][1, 2] = np.nan
    grads[2]["scalar"] = np.float32(np.nan)
    grads[2]["conv"][0, 0, 1, 3] = np.nan
    return grads


# Leaves of every rank centralize treats apart (scalars and vectors pass unchanged).
FEW = {k: SHAPES[k] for k in ("scalar", "vector", "matrix", "conv")}

# (ours, optax's, shapes, params scale): stateless transforms, each gradient from the same params.
CASES = {
    "centralize": (centralize, optax.centralize, FEW, 1.0),
    "normalize_by_update_norm": (
        normalize_by_update_norm,
        optax.normalize_by_update_norm,
        FEW,
        1.0,
    ),
    "normalize_by_update_norm(-2, 1e-3)": (
        lambda: normalize_by_update_norm(scale_factor=-2.0, eps=1e-3),
        lambda: optax.normalize_by_update_norm(scale_factor=-2.0, eps=1e-3),
        FEW,
        1.0,
    ),
    # Small params (made >= 0): many updates would take them below zero.
    "keep_params_nonnegative": (keep_params_nonnegative, optax.keep_params_nonnegative, FEW, 0.3),
    "adaptive_grad_clip": (
        lambda: adaptive_grad_clip(0.1),
        lambda: optax.adaptive_grad_clip(0.1),
        SHAPES,
        1.0,
    ),
    "adaptive_grad_clip(0.5, eps=0.3)": (
        lambda: adaptive_grad_clip(0.5, eps=0.3),
        lambda: optax.adaptive_grad_clip(0.5, eps=0.3),
        FEW,
        0.1,  # most units under eps: the floor decides
    ),
    "adaptive_grad_clip(axis=(0, 1))": (
        lambda: adaptive_grad_clip(0.1, axis=(0, 1)),
        lambda: optax.adaptive_grad_clip(0.1, axis=(0, 1)),
        {k: SHAPES[k] for k in ("row", "matrix", "heads", "conv")},
        0.3,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax(name, standard_promotion):
    ours, theirs, shapes, scale = CASES[name]
    params = jax.tree.map(np.abs, random_tree(0, shapes, scale=scale))
    grads = [random_tree(1 + t, shapes) for t in range(STEPS)]
    assert_matches_optax(ours, theirs, params, grads, stateless=True)


def test_zero_nans_matches_optax(standard_promotion):
    params = random_tree(0, FEW)
    grads = [random_tree(5 + t, FEW) for t in range(STEPS)]
    grads[0]["matrix"][1, 2] = np.nan
    grads[2]["scalar"] = np.float32(np.nan)
    grads[2]["conv"][0, 0, 1, 3] = np.nan
    assert_matches_optax(zero_nans, optax.zero_nans, params, grads, state_fields=("found_nan",))
    run = jax.jit(lambda p, g: trajectory(zero_nans(), optjax.apply_updates, p, g))
    flags = [sorted(k for k, v in s.found_nan.items() if v) for _, s in run(params, grads)]
    assert flags == [["matrix"], [], ["conv", "scalar"]]


def _per_example(seed):
    """Per-example gradients for 6 examples: two zero, two small, two of norm about 3."""
    rng = np.random.default_rng(seed)
    grads = {
        "w": rng.normal(size=(6, 3, 2)).astype(np.float32),
        "b": rng.normal(size=(6, 4)).astype(np.float32),
    }
    for g in grads.values():
        g[:2] = 0.0
        g[2:4] *= 0.1
    return grads


CLIPS = [0.0, 0.9, 1.25, np.inf]


def _per_example_clips(lib, grads):
    """Global and per-layer (uniform or not) clipping at each of CLIPS, vmapped over them."""

    def at(clip):
        return (
            lib.per_example_global_norm_clip(grads, clip),
            lib.per_example_layer_norm_clip(grads, clip, True),
            lib.per_example_layer_norm_clip(grads, clip, False),
        )

    return jax.vmap(at)(jnp.asarray(CLIPS, jax.tree.leaves(grads)[0].dtype))


def test_per_example_clipping_matches_optax(standard_promotion):
    both = jax.jit(lambda g: (_per_example_clips(optjax_clipping, g), _per_example_clips(optax, g)))
    with jax.enable_x64(True):
        ours, theirs = both(_as(_per_example(0), jnp.float64))
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-15)  # the counts too
        reference = [sums for sums, _ in ours]
    ours32, theirs32 = both(_as(_per_example(0), jnp.float32))
    counts, counts_ref = [c for _, c in ours32], [c for _, c in theirs32]
    jax.tree.map(np.testing.assert_array_equal, counts, counts_ref)  # the same examples clipped
    assert_float32_as_close([u for u, _ in ours32], [u for u, _ in theirs32], reference)


def test_per_example_clip_matches_the_definition():
    grads = _per_example(2)
    norms = np.sqrt(
        sum(np.sum(g.reshape(6, -1).astype(np.float64) ** 2, 1) for g in grads.values())
    )
    clip = float(np.median(norms))
    factors = np.minimum(1.0, clip / np.where(norms > 0, norms, 1.0))
    total, clipped = per_example_global_norm_clip(grads, clip)
    for k, g in grads.items():
        want = np.tensordot(factors, g.astype(np.float64), axes=1)
        np.testing.assert_allclose(total[k], want, rtol=1e-5, atol=1e-6)
    assert int(clipped) == int(np.sum(norms > clip)) == 3


def test_scale_gradient_matches_optax_and_keeps_dtypes(standard_promotion):
    x = {"a": jnp.array([1.0, -2.0]), "h": jnp.array([0.5], jnp.bfloat16)}

    def loss(scale_gradient_fn, scale):
        def f(x):
            y = scale_gradient_fn(x, scale)
            return jnp.sum(y["a"] ** 2) + jnp.sum(y["h"].astype(jnp.float32) ** 2)

        return f

    for scale in (0.5, -3.0, 1.0, 0.0):
        ours = jax.grad(loss(scale_gradient, scale))(x)
        theirs = jax.grad(loss(optax.scale_gradient, scale))(x)
        assert jax.tree.map(jnp.result_type, ours) == jax.tree.map(jnp.result_type, x)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ours, theirs)
        np.testing.assert_allclose(ours["a"], scale * 2 * np.array([1.0, -2.0]))


# ------------------------------------------------------------ where optax is wrong or crashes


def test_scale_gradient_accepts_a_traced_scale():
    # optax.scale_gradient compares the scale with 1 in Python: a traced scale (under jit, or
    # vmap over scales) raises TracerBoolConversionError.
    def grad_at(scale):
        return jax.grad(lambda x: scale_gradient(x, scale) ** 2)(jnp.float32(3.0))

    with pytest.raises(jax.errors.TracerBoolConversionError):
        jax.jit(lambda s: jax.grad(lambda x: optax.scale_gradient(x, s) ** 2)(3.0))(0.5)
    np.testing.assert_allclose(jax.jit(grad_at)(jnp.float32(0.5)), 3.0)
    np.testing.assert_allclose(jax.vmap(grad_at)(jnp.array([0.0, 1.0, -2.0])), [0.0, 6.0, -12.0])


def test_per_example_clip_with_a_scalar_leaf_raises_value_error():
    # optax reads grads[0].shape[0] before checking ranks: a scalar first leaf (or no leaf at
    # all) is an IndexError; optjax names the leaf.
    grads = {"a": jnp.ones(()), "b": jnp.ones((3, 2))}
    with pytest.raises(IndexError):
        optax.per_example_global_norm_clip(grads, 1.0)
    with pytest.raises(ValueError, match=r"grads\['a'\] is a scalar"):
        per_example_global_norm_clip(grads, 1.0)
    with pytest.raises(ValueError, match=r"grads\['c'\] has 2 examples but grads\['b'\] has 3"):
        per_example_layer_norm_clip({"b": jnp.ones((3, 2)), "c": jnp.ones((2,))}, 1.0)
    total, clipped = per_example_global_norm_clip([], 1.0)
    assert total == [] and int(clipped) == 0


def test_normalize_by_update_norm_zero_gradient_with_eps_zero_is_not_nan():
    # optax divides by ||g|| + eps: a zero gradient with eps = 0 gives 0/0 = NaN.
    zeros = {"a": jnp.zeros(3), "b": jnp.zeros(())}
    theirs = optax.normalize_by_update_norm(eps=0.0).update(zeros, optax.EmptyState())[0]
    assert np.all(np.isnan(theirs["a"]))
    tx = normalize_by_update_norm(eps=0.0)
    ours = tx.update(zeros, tx.init(zeros))[0]
    assert jax.tree.map(lambda u: float(jnp.max(jnp.abs(u))), ours) == {"a": 0.0, "b": 0.0}


def test_adaptive_grad_clip_clips_tiny_units_to_the_bound_not_below():
    # optax divides by max(||g||, 1e-6): a unit whose bound clipping * max(||W||, eps) and
    # gradient norm are both below 1e-6 is clipped to less than the bound (here half).
    params, grads = jnp.zeros(2), jnp.array([3e-7, 4e-7])  # ||g|| = 5e-7, bound 1e-4 * 1e-3
    theirs = optax.adaptive_grad_clip(1e-4).update(grads, optax.EmptyState(), params)[0]
    tx = adaptive_grad_clip(1e-4)
    ours = tx.update(grads, tx.init(params), params)[0]
    np.testing.assert_allclose(float(jnp.linalg.norm(ours)), 1e-7, rtol=1e-5)  # on the bound
    np.testing.assert_allclose(float(jnp.linalg.norm(theirs)), 5e-8, rtol=1e-5)  # half of it
    np.testing.assert_allclose(ours / jnp.linalg.norm(ours), grads / jnp.linalg.norm(grads))


# ------------------------------------------------------------------------ behaviour and dtypes


def test_keep_params_nonnegative_lands_on_zero_in_bf16():
    params = {"p": jnp.array([0.3, 0.75, 1.5], jnp.bfloat16), "q": jnp.array([0.1, 0.2])}
    grads = {"p": jnp.array([-1.0, -0.5, 3.0], jnp.bfloat16), "q": jnp.array([-0.3, 0.1])}
    tx = keep_params_nonnegative()
    u, _ = tx.update(grads, tx.init(params), params)
    new = optjax.apply_updates(params, u)
    assert new["p"].dtype == jnp.bfloat16 and u["p"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(new["p"], np.float32), [0.0, 0.25, 4.5])
    np.testing.assert_allclose(new["q"], [0.0, 0.3])


def test_params_are_required():
    for tx in (keep_params_nonnegative(), adaptive_grad_clip(0.1)):
        with pytest.raises(ValueError, match="needs params"):
            tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def test_centralize_keeps_bf16_and_gives_floats_for_integers():
    tx = centralize()
    g = jnp.array([[1.0, 2.0, 4.0], [0.0, 0.5, 1.0]], jnp.bfloat16)
    u = tx.update(g, tx.init(None))[0]
    assert u.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(u, np.float32), [[-4 / 3, -1 / 3, 5 / 3], [-0.5, 0, 0.5]], atol=1e-2
    )
    ints = tx.update(jnp.array([[1, 2, 3], [4, 5, 7]]), tx.init(None))[0]
    assert ints.dtype == jnp.float32
    np.testing.assert_allclose(ints, [[-1, 0, 1], [-4 / 3, -1 / 3, 5 / 3]], rtol=1e-6)


def test_adaptive_grad_clip_needs_an_axis_beyond_rank_five():
    tx = adaptive_grad_clip(0.1)
    x = jnp.ones((2, 1, 2, 1, 2, 2))
    with pytest.raises(ValueError, match="pass axis="):
        tx.update(x, tx.init(x), x)
    tx = adaptive_grad_clip(0.1, axis=(0, 1, 2, 3, 4))
    assert tx.update(x, tx.init(x), x)[0].shape == x.shape


# --------------------------------------------------------------------------------- flat layout

FLAT_SHAPES = {"w": (7, 5), "b": (5,), "s": (), "conv": (3, 3, 2, 4)}
FLAT_CASES = {
    "centralize": centralize,
    "normalize_by_update_norm": normalize_by_update_norm,
    "keep_params_nonnegative": keep_params_nonnegative,
    "zero_nans": zero_nans,
    "adaptive_grad_clip": lambda: adaptive_grad_clip(0.05),
}


def flat_and_tree(make, params, grads, extras=()):
    """The tree path's updates and the flat path's (flat_transform: packed, run on the buffers
    or their views, unpacked), and the flat path's states, in one jitted function."""

    def run(params, grads, extras):
        tree_path = trajectory(make(), optjax.apply_updates, params, grads, extras)
        flat_path = trajectory(
            optjax.flat.flat_transform(make()), optjax.apply_updates, params, grads, extras
        )
        return _updates(tree_path), flat_path

    return jax.jit(run)(params, grads, list(extras))


def assert_flat_matches_tree(want, got):
    for w, (g, _) in zip(want, got, strict=True):
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(w), strict=True):
            assert a.dtype == b.dtype
            a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7 * np.max(np.abs(b)))


def flat_test_tree(seed, steps=2):
    """Odd-sized float32 leaves (padding in the flat buffers) and a bf16 leaf."""
    params = _as(jax.tree.map(np.abs, random_tree(seed, FLAT_SHAPES)), jnp.float32)
    params["h"] = jnp.array([0.5, 0.25, 0.125], jnp.bfloat16)
    grads = [_as(random_tree(seed + 1 + t, FLAT_SHAPES), jnp.float32) for t in range(steps)]
    for g in grads:
        g["h"] = jnp.array([-1.0, 0.5, 2.0], jnp.bfloat16)
    return params, grads


@pytest.mark.parametrize("name", sorted(FLAT_CASES))
def test_flat_layout_matches_the_tree_path(name):
    params, grads = flat_test_tree(3)
    if name == "zero_nans":
        grads[1]["w"] = grads[1]["w"].at[3, 1].set(jnp.nan)
    want, got = flat_and_tree(FLAT_CASES[name], params, grads)
    assert_flat_matches_tree(want, got)
    if name == "zero_nans":  # one flag per leaf, in an array per dtype group (in leaf order)
        layout = optjax.flat.FlatLayout.of(params)
        keys = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
        flags = got[1][1].found_nan
        found = [keys[i] for g, f in zip(layout.groups, flags) for i, x in zip(g.leaves, f) if x]
        assert found == ["['w']"]


# ------------------------------------------------------------------------ bad hyperparameters


@pytest.mark.parametrize(
    "make, name, bad",
    [
        (
            lambda v: normalize_by_update_norm(scale_factor=v),
            "scale_factor",
            [np.nan, np.inf, "1", None, True],
        ),
        (lambda v: normalize_by_update_norm(eps=v), "eps", [-1e-6, np.nan, np.inf, [1e-6]]),
        (lambda v: adaptive_grad_clip(v), "clipping", [-0.1, np.nan, np.inf, None, "0.1"]),
        (lambda v: adaptive_grad_clip(0.1, eps=v), "eps", [-1.0, np.nan, 1e39]),
        (lambda v: adaptive_grad_clip(0.1, axis=v), "axis", [1.5, "0", [0], True, (0, 1.0)]),
        (
            lambda v: scale_gradient(jnp.ones(2), v),
            "scale",
            [np.nan, -np.inf, "2", None, jnp.ones(2)],
        ),
        (
            lambda v: per_example_global_norm_clip([jnp.ones((2, 3))], v),
            "l2_norm_clip",
            [-1.0, np.nan, -np.inf, None],
        ),
        (
            lambda v: per_example_layer_norm_clip([jnp.ones((2, 3))], v),
            "global_l2_norm_clip",
            [-0.5, np.nan, "1"],
        ),
    ],
)
def test_bad_hyperparameters_raise_naming_the_argument(make, name, bad):
    for value in bad:
        with pytest.raises(ValueError, match=rf"^{name} must be .*{name}="):
            make(value)


def test_traced_hyperparameters_are_accepted():
    g = {"w": jnp.ones((3, 2)), "b": jnp.ones(3)}

    def build(v):
        outs = []
        for tx in (normalize_by_update_norm(v, v), adaptive_grad_clip(v, v)):
            outs.append(tx.update(g, tx.init(g), g)[0])
        outs.append(per_example_global_norm_clip(g, v)[0])
        outs.append(per_example_layer_norm_clip(g, v)[0])
        return outs

    jax.make_jaxpr(build)(jnp.float32(0.5))


@pytest.mark.parametrize("shape", [(5,), (4, 3), (2, 4, 3), (3, 3, 2, 4), (2, 2, 2, 3, 4)])
def test_unitwise_norm_and_clip_match_optax(shape, standard_promotion):
    rng = np.random.default_rng(len(shape))
    g = jnp.asarray(rng.normal(size=shape), jnp.float32)
    norm = optjax.unitwise_norm(g)
    np.testing.assert_allclose(norm, optax.transforms.unitwise_norm(g), rtol=1e-6)
    max_norm = jnp.full(shape, float(np.median(np.asarray(norm))))  # clips about half
    np.testing.assert_allclose(
        optjax.unitwise_clip(norm, max_norm, g),
        optax.transforms.unitwise_clip(norm, max_norm, g),
        rtol=1e-6,
    )


def test_unitwise_clip_refuses_arrays_of_other_shapes():
    g = jnp.ones((4, 3))
    for norm in (jnp.ones((1, 3)), jnp.ones(3), jnp.ones((4, 3, 1))):
        with pytest.raises(ValueError, match="one shape"):
            optjax.unitwise_clip(norm, norm, g)
