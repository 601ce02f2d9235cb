"""LAMB, LARS and Fromage, and their primitives (scale_by_trust_ratio, scale_by_param_block_norm,
scale_by_lars), against optax 0.2.8 step by step on the same gradients, in float64 and float32;
LARS's trust ratio as the paper writes it, where optax's differs; per-leaf norms on the flat
layout; hyperparameter validation.

The trajectories run eagerly: the runs share their few small operations (compiled once per
shape and dtype), which costs far less than compiling a program per run; jitted steps are
checked by the flat-layout tests here and the conformance table.
"""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_flat import assert_close
from test_flat import trajectory as flat_trajectory

import optjax
from optjax import flat
from optjax.optimizers.layerwise import fromage, lamb, lars
from optjax.transforms.layerwise import (
    scale_by_lars,
    scale_by_param_block_norm,
    scale_by_trust_ratio,
)

# Rows for tests/test_conformance.py's ROWS (to be merged there, as optjax.lamb, ...).

STEPS = 5
SHAPES = {"scalar": (), "matrix": (4, 3), "zero": (4, 3)}  # few shapes: few ops to compile


def matrices(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


def all_but_matrix(params):
    return {k: k != "matrix" for k in params}


def problem(dtype, seed=0):
    """Params (the "zero" leaf all zeros: the trust ratio's fallback) and STEPS stacked
    gradients, in float64 NumPy, cast to ``dtype``."""
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    params["zero"] = np.zeros(SHAPES["zero"])
    grads = {k: rng.normal(size=(STEPS, *s)) for k, s in SHAPES.items()}
    cast = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)
    return cast(params), cast(grads)


def trajectory(tx, apply, params, grads):
    """``[(updates, params)]`` after each step."""
    state, out = tx.init(params), []
    for t in range(STEPS):
        updates, state = tx.update(jax.tree.map(lambda g, t=t: g[t], grads), state, params)
        params = apply(params, updates)
        out.append(jax.tree.map(np.asarray, (updates, params)))
    return out


def constant(value):
    return lambda count: jnp.where(count >= 0, value, 0.0)  # a schedule, constant in value


# (name, optjax transform, optax transform): each run on the same params and gradients. The
# primitives are followed by a small step so that the params move and the ratios change.
CASES = [
    (
        "trust_ratio",
        lambda: optjax.chain(scale_by_trust_ratio(), optjax.scale(-0.1)),
        lambda: optax.chain(optax.scale_by_trust_ratio(), optax.scale(-0.1)),
    ),
    (
        "trust_ratio(min_norm,trust_coefficient,eps)",
        lambda: optjax.chain(scale_by_trust_ratio(0.5, 0.3, 1e-2), optjax.scale(-0.1)),
        lambda: optax.chain(optax.scale_by_trust_ratio(0.5, 0.3, 1e-2), optax.scale(-0.1)),
    ),
    (
        "param_block_norm",
        lambda: optjax.chain(scale_by_param_block_norm(), optjax.scale(-0.1)),
        lambda: optax.chain(optax.scale_by_param_block_norm(), optax.scale(-0.1)),
    ),
    (
        "param_block_norm(min_scale)",
        lambda: optjax.chain(scale_by_param_block_norm(2.0), optjax.scale(-0.1)),
        lambda: optax.chain(optax.scale_by_param_block_norm(2.0), optax.scale(-0.1)),
    ),
    ("lamb", lambda: lamb(1e-2), lambda: optax.lamb(1e-2)),
    (
        "lamb(b1,b2,eps,eps_root,weight_decay,mask,schedules)",
        lambda: lamb(constant(3e-2), 0.8, 0.99, 1e-4, 1e-8, constant(0.1), all_but_matrix),
        lambda: optax.lamb(constant(3e-2), 0.8, 0.99, 1e-4, 1e-8, constant(0.1), all_but_matrix),
    ),
    ("lars", lambda: lars(0.5), lambda: optax.lars(0.5)),
    (
        "lars(trust_coefficient,eps,trust_ratio_mask,momentum,nesterov)",
        lambda: lars(0.3, 0.0, True, 0.02, 1e-3, matrices, 0.5, True),
        lambda: optax.lars(0.3, 0.0, True, 0.02, 1e-3, matrices, 0.5, True),
    ),
    ("fromage", lambda: fromage(1e-2), lambda: optax.fromage(1e-2)),
    (
        "fromage(schedule,min_norm)",
        lambda: fromage(constant(0.3), min_norm=0.5),
        lambda: optax.fromage(constant(0.3), 0.5),
    ),
]
CASE_IDS = [name for name, _, _ in CASES]
BY_NAME = {name: (ours, theirs) for name, ours, theirs in CASES}


@pytest.mark.parametrize("name,ours,theirs", CASES, ids=CASE_IDS)
def test_matches_optax_step_by_step_in_float64(name, ours, theirs, standard_promotion):
    with jax.enable_x64(True):
        params, grads = problem(jnp.float64)
        got = trajectory(ours(), optjax.apply_updates, params, grads)
        want = trajectory(theirs(), optax.apply_updates, params, grads)
    for (path, b), a in zip(
        jax.tree_util.tree_flatten_with_path(want)[0], jax.tree.leaves(got), strict=True
    ):
        assert a.dtype == b.dtype == np.float64, path
        # An atol of 1e-7 of the leaf's scale for entries that pass through zero.
        atol = 1e-7 * float(np.max(np.abs(b)))
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=atol, err_msg=str(path))


def updates_at_fixed_params(tx, params, grads):
    """``[updates]`` of each step with the params held fixed (the state still evolves), so
    that runs in different precisions see the same inputs and differ by their own rounding."""
    state, out = tx.init(params), []
    for t in range(STEPS):
        updates, state = tx.update(jax.tree.map(lambda g, t=t: g[t], grads), state, params)
        out.append(jax.tree.map(lambda u: np.asarray(u, np.float64), updates))
    return out


def _worst_error(run, exact):
    """The largest error of a run against the exact one, relative to each leaf's scale."""
    worst = 0.0
    for a, b in zip(jax.tree.leaves(run), jax.tree.leaves(exact)):
        worst = max(worst, float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 1e-30))
    return worst


# The primitives alone (each rounds its update once), and the optimizers whole.
LOW_PRECISION = {
    "trust_ratio": (scale_by_trust_ratio, optax.scale_by_trust_ratio),
    "param_block_norm": (scale_by_param_block_norm, optax.scale_by_param_block_norm),
    "lamb": BY_NAME["lamb"],
    "lars": BY_NAME["lars"],
    "fromage": BY_NAME["fromage"],
}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=str)
@pytest.mark.parametrize("name", LOW_PRECISION)
def test_low_precision_is_at_least_as_close_to_float64_as_optax(name, dtype, standard_promotion):
    # optjax forms every norm and ratio in float32 and rounds each update once (Adam's second
    # moment in lamb stays float32 for bf16 params); optax takes a bf16 leaf's norm in bf16 and
    # rounds the ratio and the product again.
    ours, theirs = LOW_PRECISION[name]
    params, grads = problem(dtype)
    with jax.enable_x64(True):
        wide = jax.tree.map(lambda x: x.astype(jnp.float64), (params, grads))
        exact = updates_at_fixed_params(ours(), *wide)
    run = updates_at_fixed_params(ours(), params, grads)
    got = _worst_error(run, exact)
    optax_error = _worst_error(updates_at_fixed_params(theirs(), params, grads), exact)
    # At least as close, to within one float32 rounding (the two round alike in float32).
    assert got <= optax_error + 1e-7, (got, optax_error)
    if dtype == jnp.bfloat16 and name in ("trust_ratio", "param_block_norm"):
        # Formed in float32 and rounded once: within half an ulp of bf16.
        half_ulp = float(jnp.finfo(dtype).eps) / 2
        for a, b in zip(jax.tree.leaves(run), jax.tree.leaves(exact)):
            assert np.all(np.abs(a - b) <= half_ulp * 1.001 * np.abs(b)), (a, b)


def lars_spec(params, grads, lr, weight_decay, decayed, trusted, trust_coefficient, eps, momentum):
    """You, Gitman & Ginsburg 2017, Algorithm 1, per leaf, in float64: the local rate
    eta ||w|| / (||g|| + beta ||w||), v = m v + lr local (g + beta w), w = w - v."""
    p = {k: np.asarray(x, np.float64) for k, x in params.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t in range(STEPS):
        for k in p:
            g = np.asarray(grads[k][t], np.float64)
            beta = weight_decay if decayed[k] else 0.0
            w_norm, g_norm = np.linalg.norm(p[k]), np.linalg.norm(g)
            denominator = g_norm + beta * w_norm + eps
            local = 1.0
            if trusted[k] and w_norm > 0 and denominator > 0:
                local = trust_coefficient * w_norm / denominator
            v[k] = momentum * v[k] + lr * local * (g + beta * p[k])
            p[k] = p[k] - v[k]
        yield dict(p)


def test_lars_trust_ratio_is_the_papers_where_optax_takes_the_norm_of_the_decayed_gradient(
    standard_promotion,
):
    # optax.lars divides by ||g + wd p||, LAMB's form; the LARS paper by ||g|| + wd ||p||.
    decayed = {"scalar": False, "matrix": True, "zero": True}
    trusted = {"scalar": True, "matrix": True, "zero": False}
    args = dict(weight_decay=0.3, trust_coefficient=0.5, eps=1e-3)
    with jax.enable_x64(True):
        params, grads = problem(jnp.float64)
        masks = dict(weight_decay_mask=decayed, trust_ratio_mask=trusted, momentum=0.8)
        got = trajectory(lars(0.1, **args, **masks), optjax.apply_updates, params, grads)
        theirs = trajectory(optax.lars(0.1, **args, **masks), optax.apply_updates, params, grads)
    spec = list(
        lars_spec(params, grads, 0.1, decayed=decayed, trusted=trusted, momentum=0.8, **args)
    )
    for (_, p), want in zip(got, spec, strict=True):
        for k in want:
            np.testing.assert_allclose(p[k], want[k], rtol=1e-6, atol=1e-12, err_msg=k)
    moved = np.abs(theirs[0][1]["matrix"] - np.asarray(params["matrix"]))
    paper = np.abs(spec[0]["matrix"] - np.asarray(params["matrix"]))
    assert np.all(moved > 1.1 * paper)  # optax's smaller denominator: a larger first step


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (lamb, optax.lamb),
        (lars, optax.lars),
        (fromage, optax.fromage),
        (scale_by_trust_ratio, optax.scale_by_trust_ratio),
        (scale_by_param_block_norm, optax.scale_by_param_block_norm),
    ],
    ids=lambda f: f.__name__,
)
def test_arguments_and_defaults_are_optax(ours, theirs):
    defaults = lambda f: [(k, p.default) for k, p in inspect.signature(f).parameters.items()]
    assert defaults(ours) == defaults(theirs)


def test_masks_may_be_prefixes_functions_or_full_trees():
    params = {
        "a": {"x": jnp.ones((4, 3)), "y": jnp.full((), 2.0)},
        "b": jnp.linspace(-1.0, 2.0, 12).reshape(4, 3),
    }
    grads = jax.tree.map(lambda p: 0.5 - p, params)
    full = {"a": {"x": True, "y": True}, "b": False}
    for make in (
        lambda m: lars(0.1, weight_decay=0.2, weight_decay_mask=m, trust_ratio_mask=m),
        lambda m: lamb(0.1, weight_decay=0.2, mask=m),
    ):
        want = make(full).update(grads, make(full).init(params), params)[0]
        for mask in ({"a": True, "b": False}, lambda p: full):
            tx = make(mask)
            got = tx.update(grads, tx.init(params), params)[0]
            jax.tree.map(np.testing.assert_array_equal, got, want)
        everything = make(True).update(grads, make(True).init(params), params)[0]
        assert not np.allclose(everything["b"], want["b"])  # the mask did take effect


def test_zero_leaf_moves_and_grad_through_a_step_from_zero_is_finite():
    # A leaf that is 0 (zero-initialised, or unused: "b" stays 0) takes the trust ratio 1; the
    # norm's square root never sees 0, so differentiating steps through it gives no NaN.
    params = {"w": jnp.zeros((4, 3)), "b": jnp.zeros(())}
    f = lambda p: jnp.sum((p["w"] - 1.0) ** 2)  # "b" is not trained

    def after_two_steps(lr):
        tx = optjax.chain(
            scale_by_lars(0.1, trust_coefficient=1.0),
            scale_by_trust_ratio(),
            scale_by_param_block_norm(),
            optjax.scale_by_learning_rate(lr),
        )
        p, state = params, tx.init(params)
        for _ in range(2):
            u, state = tx.update(jax.grad(f)(p), state, p)
            p = optjax.apply_updates(p, u)
        return f(p) + p["b"], f(p)  # a meta-loss that reads every parameter

    (_, loss), grad = jax.jit(jax.value_and_grad(after_two_steps, has_aux=True))(0.5)
    assert float(loss) < float(f(params))  # "w" moved, downhill
    assert np.isfinite(float(grad))


def test_complex_leaves_use_the_modulus():
    p = jnp.array([3.0 + 4.0j, 0.0])  # ||p|| = 5
    g = jnp.array([1.0j, 0.0])  # ||g|| = 1
    u = scale_by_trust_ratio().update(g, optjax.EmptyState(), p)[0]
    np.testing.assert_allclose(u, 5.0 * g, rtol=1e-6)
    u = scale_by_param_block_norm().update(g, optjax.EmptyState(), p)[0]
    np.testing.assert_allclose(u, 5.0 * g, rtol=1e-6)


def test_schedule_counts_saturate_at_int32_max():
    top = jnp.iinfo(jnp.int32).max
    params, grads = {"w": jnp.ones(3)}, {"w": jnp.full(3, 0.5)}
    for tx in (lars(0.1, weight_decay=constant(0.1)), fromage(constant(0.1))):
        state = jax.tree.map(
            lambda x: jnp.full_like(x, top) if x.dtype == jnp.int32 else x, tx.init(params)
        )
        u, state = tx.update(grads, state, params)
        counts = [x for x in jax.tree.leaves(state) if x.dtype == jnp.int32]
        assert counts and all(int(c) == top for c in counts)
        assert np.all(np.isfinite(u["w"]))


@pytest.mark.parametrize(
    "make",
    [scale_by_trust_ratio, scale_by_param_block_norm, scale_by_lars, lambda: fromage(0.1)],
    ids=["trust_ratio", "param_block_norm", "lars", "fromage"],
)
def test_update_without_params_says_so(make):
    tx = make()
    with pytest.raises(ValueError, match="needs params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def test_flat_layout_matches_tree_path():
    # Per-leaf norms, masks and weight decay on the flat layout's buffers (no fallback to the
    # views), against the tree path: one chain of all of them, one program per layout.
    mask = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
    parts = [
        lars(
            0.1,
            weight_decay=0.1,
            weight_decay_mask=mask,
            trust_ratio_mask={"w": True, "h": True, "s": False, "z": True},
        ),
        lamb(1e-2, weight_decay=constant(0.1), mask=mask),
        fromage(constant(1e-2)),
        optjax.chain(scale_by_param_block_norm(), optjax.scale(-1e-2)),
    ]
    assert all(flat.is_flat_ready(t) for t in parts)
    make = lambda: optjax.chain(*parts)
    rng = np.random.default_rng(5)
    shapes = {"w": ((7, 5), jnp.float32), "s": ((), jnp.float32), "h": ((3, 4), jnp.bfloat16)}
    shapes |= {"z": ((3,), jnp.float32)}
    params = {k: jnp.asarray(rng.normal(size=s), d) for k, (s, d) in shapes.items()}
    params["z"] = jnp.zeros(3)
    grads = [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        for _ in range(3)
    ]
    want = flat_trajectory(make(), params, grads)
    got = flat_trajectory(make(), params, grads, pack=flat.FlatLayout.of(params).flatten)
    for w, g in zip(want, got):
        assert_close(g, w, ulps=8)


# Bad values of each numeric argument, by kind; each raises ValueError naming the argument.
NOT_NUMBERS = [math.inf, math.nan, 1e39, "0.1", [0.1], True, None]
BAD = {
    ">= 0": [*NOT_NUMBERS, -1.0, -1e-30],
    "> 0": [*NOT_NUMBERS, 0.0, -1.0],
    "[0, 1)": [*NOT_NUMBERS, 1.0, -0.1],
    "[0, 1]": [*NOT_NUMBERS, 1.5, -0.1],
    "rate": [math.inf, math.nan, "0.1", True, None, -1.0],  # a schedule is allowed
}
HYPERPARAMETERS = [
    (scale_by_trust_ratio, {}, {"min_norm": ">= 0", "trust_coefficient": ">= 0", "eps": ">= 0"}),
    (scale_by_param_block_norm, {}, {"min_scale": "> 0"}),
    (scale_by_lars, {}, {"weight_decay": "rate", "trust_coefficient": ">= 0", "eps": ">= 0"}),
    (
        lamb,
        {"learning_rate": 0.1},
        {"learning_rate": "rate", "b1": "[0, 1)", "b2": "[0, 1)", "eps": ">= 0"}
        | {"eps_root": ">= 0", "weight_decay": "rate"},
    ),
    (
        lars,
        {"learning_rate": 0.1},
        {"learning_rate": "rate", "weight_decay": "rate", "trust_coefficient": ">= 0"}
        | {"eps": ">= 0", "momentum": "[0, 1]"},
    ),
    (fromage, {"learning_rate": 0.1}, {"learning_rate": "rate", "min_norm": ">= 0"}),
]


@pytest.mark.parametrize(
    "make,base,ranges", HYPERPARAMETERS, ids=[m.__name__ for m, _, _ in HYPERPARAMETERS]
)
def test_bad_hyperparameters_raise_naming_the_argument(make, base, ranges):
    for name, kind in ranges.items():
        for bad in BAD[kind]:
            with pytest.raises(ValueError, match=rf"^{name} must be .*got {name}="):
                make(**{**base, name: bad})
        make(**{**base, name: 0.5})  # a good value passes
    # Traced values (a constructor called under jit, vmap or inject_hyperparams) are accepted.
    jax.make_jaxpr(lambda x: (make(**{**base, **dict.fromkeys(ranges, x)}), x)[1])(0.5)
