"""The flat fused path (optjax.flat): the layout's round trips, its segment reductions against
NumPy, and trajectories that match the tree path for elementwise optimizers and for chains with
per-leaf reductions, over mixed dtypes and shapes, jitted with params and state donated.

The tree path is the oracle here (it is tested against the papers' formulas elsewhere). XLA:CPU
may compile one elementwise formula differently in a loop's vector body and its scalar tail, so
a value can differ by an ulp between a leaf and the same numbers inside a longer buffer: the
elementwise comparisons allow 2 ulps of the leaf's dtype, the ones with reductions (summed in
another order) 8.
"""

import functools
import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_conformance import ROWS as CONFORMANCE_ROWS
from test_conformance import gauss_newton_diagonal

import optjax
from optjax import flat
from optjax import torch_compat as tc
from optjax.transforms.adaptive import scale_by_lion_single_read
from optjax.transforms.factored import scale_by_factored_rms_clipped

BF16 = jnp.bfloat16


def make_params(seed=0):
    rng = np.random.default_rng(seed)

    def arr(shape, dtype=jnp.float32):
        return jnp.asarray(rng.normal(size=shape), dtype)

    return {
        "dense": {"w": arr((7, 5)), "b": arr((5,))},
        "emb": arr((130, 129)),  # factored by Adafactor; 129 columns: a vector loop's tail
        "scale": arr(()),
        "half": {"w": arr((3, 4), BF16), "b": arr((4,), BF16)},
        "conv": arr((3, 3, 2, 4)),
    }


def make_grads(params, steps, seed=1):
    rng = np.random.default_rng(seed)
    return [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        for _ in range(steps)
    ]


def assert_close(got, want, ulps, scale=None):
    """``got`` within ``ulps`` of ``want``, leaf by leaf, in ulps of the leaf's own dtype at the
    leaf's largest magnitude: ``max |want|``, or the larger ``scale`` (a tree of magnitudes, e.g.
    the largest a parameter has been along its trajectory: a step that takes a value from 0.1 to
    0.008 rounds at 0.1's ulp)."""
    scales = jax.tree.leaves(want) if scale is None else jax.tree.leaves(scale)
    for path, a, b, m in zip(
        jax.tree_util.tree_flatten_with_path(want)[0],
        jax.tree.leaves(want),
        jax.tree.leaves(got),
        scales,
        strict=True,
    ):
        assert a.dtype == b.dtype and a.shape == b.shape, path[0]
        eps = float(jnp.finfo(a.dtype).eps) * ulps  # one ulp of the leaf's own dtype
        a32, b32 = np.asarray(a, np.float32), np.asarray(b, np.float32)
        top = max(float(np.max(np.abs(np.asarray(x, np.float32)), initial=0.0)) for x in (a, m))
        np.testing.assert_allclose(
            b32, a32, rtol=eps, atol=eps * max(top, 1e-30), err_msg=str(path[0])
        )


def trajectory(tx, params, grads, pack=None):
    """Params after each jitted, donated step; with ``pack``, params and grads run flat."""
    if pack is not None:
        params, grads = pack(params), [pack(g) for g in grads]
    # Fresh copies: the step donates them (and some inits share one zeros array between fields).
    params = jax.tree.map(jnp.copy, params)
    state = jax.tree.map(jnp.copy, tx.init(params))

    @jax.jit
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return optjax.apply_updates(params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1))
    out = []
    for g in grads:
        params, state = step(params, state, g)
        tree = params.unflatten() if pack is not None else params
        out.append(jax.tree.map(np.asarray, tree))  # a host copy: the next step donates params
    return out


def weight_mask(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


# Every row of the conformance table (tests/test_conformance.py) runs flat too; these are the
# variants its rows do not cover.
ELEMENTWISE = {
    "adam_bf16_moment": lambda: optjax.adam(1e-2, mu_dtype=BF16),
    "adamw_masked": lambda: optjax.adamw(1e-2, weight_decay=0.1, mask=weight_mask),
    "rmsprop": lambda: optjax.rmsprop(1e-2, centered=True, momentum=0.9),
    "lion_b1_above_b2": lambda: optjax.lion(1e-2, b1=0.95, b2=0.9),
    "lion_bf16_moment": lambda: optjax.lion(1e-2, mu_dtype=BF16),
    "scale_by_lion": lambda: optjax.chain(optjax.scale_by_lion(), optjax.scale(-1e-2)),
}

WITH_REDUCTIONS = {
    "clip_global_norm_adam": lambda: optjax.chain(
        optjax.clip_by_global_norm(0.5), optjax.adam(1e-2)
    ),
    "clip_block_rms_sgd": lambda: optjax.chain(optjax.clip_by_block_rms(0.1), optjax.sgd(0.1)),
    "decay_mask_tree": lambda: optjax.chain(
        optjax.add_decayed_weights(0.5, mask=weight_mask(make_params())), optjax.sgd(0.1)
    ),
    "adafactor_unfactored": lambda: optjax.adafactor(1e-2, factored=False),
    "adafactor_factored": lambda: optjax.adafactor(1e-2, weight_decay_rate=0.1, momentum=0.9),
    "factored_rms_clipped": lambda: optjax.chain(
        scale_by_factored_rms_clipped(0.5, factored=False), optjax.sgd(0.1)
    ),
    "factored_rms_clipped_factored": lambda: optjax.chain(
        scale_by_factored_rms_clipped(0.5), optjax.sgd(0.1)
    ),
    "param_block_rms": lambda: optjax.chain(optjax.scale_by_param_block_rms(), optjax.sgd(0.1)),
}


# lr -> the conformance row's optimizer with eps = 0, where the padding's 0 / 0 is NaN (None: it
# has no eps).
EPS_ZERO = {
    "sgd": None,
    "sgd_momentum": None,
    "sgd_nesterov": None,
    "adagrad": lambda lr: optjax.adagrad(lr, initial_accumulator_value=0.0, eps=0.0),
    "adadelta": lambda lr: optjax.adadelta(lr, eps=0.0),
    "rmsprop": lambda lr: optjax.rmsprop(lr, eps=0.0),
    "rmsprop_centered": lambda lr: optjax.rmsprop(lr, eps=0.0, centered=True, momentum=0.5),
    "adam": lambda lr: optjax.adam(lr, eps=0.0),
    "adamw": lambda lr: optjax.adamw(lr, eps=0.0, weight_decay=1e-4),
    "nadam": lambda lr: optjax.nadam(lr, eps=0.0),
    "nadamw": lambda lr: optjax.nadamw(lr, eps=0.0, weight_decay=1e-4),
    "amsgrad": lambda lr: optjax.amsgrad(lr, eps=0.0),
    "adamax": lambda lr: optjax.adamax(lr, eps=0.0),
    "adamaxw": lambda lr: optjax.adamaxw(lr, eps=0.0, weight_decay=1e-4),
    "radam": lambda lr: optjax.radam(lr, eps=0.0),
    "lion": None,
    "adafactor": lambda lr: optjax.adafactor(lr, eps=0.0, multiply_by_parameter_scale=False),
    "adabelief": lambda lr: optjax.adabelief(lr, eps=0.0, eps_root=0.0),
    "adan": lambda lr: optjax.adan(lr, eps=0.0, eps_root=0.0),
    "yogi": lambda lr: optjax.yogi(lr, eps=0.0),
    "novograd": lambda lr: optjax.novograd(lr, eps=0.0),
    "sm3": None,
    "lamb": lambda lr: optjax.lamb(lr, eps=0.0),
    "lars": None,
    "fromage": lambda lr: optjax.fromage(lr, min_norm=0.0),
    "sign_sgd": None,
    "signum": None,
    "rprop": None,
    "noisy_sgd": None,
    "optimistic_gradient_descent": None,
    "optimistic_adam": lambda lr: optjax.optimistic_adam(lr, eps=0.0),
    "optimistic_adam_v2": lambda lr: optjax.optimistic_adam_v2(lr, eps=0.0),
    "lbfgs": None,
    "lbfgs_zoom": None,
    "lbfgs_backtracking": None,
    "polyak_sgd": None,  # eps = 0 is its default (the row runs it), and divides a global norm
    "adopt": lambda lr: optjax.adopt(lr, eps=0.0),
    "ademamix": lambda lr: optjax.ademamix(lr, b3=0.999, eps=0.0),
    "simplified_ademamix": lambda lr: optjax.simplified_ademamix(lr, b1=0.9, eps=0.0),
    "madgrad": lambda lr: optjax.madgrad(lr, eps=0.0),
    "reduce_on_plateau": lambda lr: optjax.chain(
        optjax.adam(lr, eps=0.0), optjax.reduce_on_plateau(factor=0.5, patience=10, min_scale=1e-2)
    ),
    "momo": None,  # no eps: it divides by a global norm only
    "momo_adam": lambda lr: optjax.momo_adam(lr, eps=0.0),
    "acprop": lambda lr: optjax.acprop(lr, eps=0.0),
    "muon": lambda lr: optjax.muon(lr, eps=0.0),
    "galore": lambda lr: optjax.galore(lr, base_optimizer=optjax.adam(lr, eps=0.0)),
    "schedule_free_sgd": None,
    "schedule_free_adamw": lambda lr: optjax.schedule_free_adamw(lr, eps=0.0),
    "prodigy": lambda lr: optjax.prodigy(lr, estim_lr0=1e-3, eps=0.0),
    "dadapt_adamw": lambda lr: optjax.dadapt_adamw(lr, estim_lr0=1e-3, eps=0.0),
    "dog": lambda lr: optjax.dog(lr, init_step=("distance", 1e-3), eps=0.0),
    "dowg": lambda lr: optjax.dowg(lr, init_estim_sq_dist=1e-6, eps=0.0),
    "cocob": lambda lr: optjax.cocob(alpha=1 / lr, eps=0.0),
    "mechanize": None,  # its eps must be > 0 (0 / 0 at the first step)
    "sam": None,
    "sophia": lambda lr: optjax.sophia(lr, hessian_diagonal_fn=gauss_newton_diagonal(), eps=0.0),
    "dpsgd": None,
    "torch.SGD": None,
    "torch.Adam": lambda lr: tc.Adam(lr, eps=0.0, amsgrad=True),
    "torch.AdamW": lambda lr: tc.AdamW(lr, eps=0.0),
    "torch.NAdam": lambda lr: tc.NAdam(lr, eps=0.0),
    "torch.RAdam": lambda lr: tc.RAdam(lr, eps=0.0),
    "torch.Adagrad": lambda lr: tc.Adagrad(lr, eps=0.0),
    "torch.Adadelta": lambda lr: tc.Adadelta(lr, eps=0.0),
    "torch.Adamax": lambda lr: tc.Adamax(lr, eps=0.0),
    "torch.RMSprop": lambda lr: tc.RMSprop(lr, eps=0.0),
    "torch.Adafactor": lambda lr: tc.Adafactor(lr, eps=(0.0, 1e-3)),
    "torch.Rprop": None,
    "torch.ASGD": None,
    "torch.LBFGS": None,
    "torch.LBFGS_strong_wolfe": None,
    "torch.Muon": None,
}

# Transforms that need each leaf on its own run on the flat layout's views (optjax.flat.per_leaf).
PER_LEAF = {
    "masked_adam": lambda: optjax.masked(optjax.adam(1e-2), weight_mask),
    "multi_transform": lambda: optjax.multi_transform(
        {"fast": optjax.adam(1e-2), "slow": optjax.chain(optjax.add_noise(0.1), optjax.sgd(0.1))},
        lambda p: jax.tree.map(lambda x: "fast" if x.ndim > 1 else "slow", p),
    ),
    "add_noise_sgd": lambda: optjax.chain(optjax.add_noise(0.1), optjax.sgd(0.1)),
    "torch_adafactor": lambda: optjax.torch_compat.Adafactor(lr=1e-2),
}


def side_by_side(tx, layout):
    """``run(params, grads)``: ``tx`` stepped on the tree path and on the flat path (``layout``),
    each step jitted with params and state donated (one program per path, whatever the steps or
    gradients), the flat path's padding checked to be zero after every step. Returns the params
    after each step on both paths, the flat ones unflattened."""

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return optjax.apply_updates(params, updates), state, updates

    def run(params, grads):
        out = []
        for pack in (None, layout.flatten):
            p = params if pack is None else pack(params)
            # Fresh copies: the step donates them (and some inits share one zeros array).
            p, state = jax.tree.map(jnp.copy, (p, tx.init(p)))
            steps = []
            for g in grads:
                p, state, updates = step(p, state, g if pack is None else pack(g))
                if pack is not None:
                    assert_padding_zero(layout, (updates, p, state))
                # A host copy: the next step donates p.
                steps.append(jax.tree.map(np.asarray, p if pack is None else p.unflatten()))
            out.append(steps)
        return out

    return run


def padding_of(layout, buffers):
    """Every padding element (partial last rows, padding rows) of each buffer of ``layout``,
    each buffer of shape (size,) or (steps, size)."""
    out = []
    for group, buf in zip(layout.groups, buffers):
        if buf is None or np.shape(buf)[-1:] != (group.size,):
            continue  # not a buffer of the group's elements (a per-leaf statistic, say)
        valid = np.zeros(group.size, bool)
        for size, row in zip(group.sizes, group.row_starts):
            valid[row * group.block : row * group.block + size] = True
        out.append(np.asarray(buf, np.float32)[..., ~valid])
    return out


def assert_padding_zero(layout, raw):
    """Every FlatBuffers of ``layout`` in ``raw`` has exact zeros in its padding."""
    found = jax.tree.leaves(raw, is_leaf=lambda x: isinstance(x, flat.FlatBuffers))
    checked = 0
    for fb in found:
        if isinstance(fb, flat.FlatBuffers) and fb.layout == layout:
            for pad in padding_of(layout, fb.buffers):
                np.testing.assert_array_equal(pad, 0.0)
                checked += pad.size
    assert checked > 0


# make_params's float32 group has a partial last row per leaf and, with row_multiple=5, padding
# rows at its end: every test of a transform here checks their padding stays exactly zero.
LAYOUT = flat.FlatLayout.of(make_params(), row_multiple=5)


def assert_flat_matches_tree(make_tx, ulps, zero_grads=True):
    """``make_tx()`` on both paths, 4 steps of random gradients (and, with ``zero_grads``, 4 of
    zero gradients through the same program): the params agree to ``ulps`` at every step, and
    the flat updates, params and state keep zero padding."""
    params = make_params()
    run = side_by_side(make_tx(), LAYOUT)
    grads = make_grads(params, 4)
    for g in (grads, jax.tree.map(jnp.zeros_like, grads)) if zero_grads else (grads,):
        tree_ps, flat_ps = run(params, g)
        largest = params
        for want, got in zip(tree_ps, flat_ps, strict=True):
            largest = jax.tree.map(lambda m, x: np.maximum(np.abs(m), np.abs(x)), largest, want)
            assert_close(got, want, ulps=ulps, scale=largest)


def test_layout_has_partial_and_padding_rows():
    group = LAYOUT.groups[0]
    assert group.rows > group.leaf_rows  # padding rows
    assert any(size % group.block for size in group.sizes)  # partial rows
    assert sum(pad.size for pad in padding_of(LAYOUT, LAYOUT.flatten(make_params()).buffers)) > 16


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_optimizers_match_tree_path(name):
    assert_flat_matches_tree(ELEMENTWISE[name], ulps=2)


@pytest.mark.parametrize("name", sorted(CONFORMANCE_ROWS))
def test_every_conformance_row_matches_tree_path(name):
    ulps = 8 if "adafactor" in name.lower() else 2  # per-leaf sums, in another order
    assert_flat_matches_tree(lambda: CONFORMANCE_ROWS[name].make(1e-2), ulps=ulps)


@pytest.mark.parametrize("name", sorted(n for n in CONFORMANCE_ROWS if EPS_ZERO[n] is not None))
def test_eps_zero_keeps_the_padding_zero_and_a_global_norm_after_it_finite(name):
    """With eps = 0 the padding's 0 / 0 is NaN unless it is zeroed: a global reduction after it
    (clip_by_global_norm) would turn every update NaN."""
    row = CONFORMANCE_ROWS[name]
    tx = lambda: optjax.chain(
        row.given_objective(EPS_ZERO[name](1e-2)), optjax.clip_by_global_norm(1e-3)
    )
    assert_flat_matches_tree(tx, ulps=8, zero_grads=False)


def test_every_conformance_row_has_its_eps_zero_variant_named():
    assert sorted(EPS_ZERO) == sorted(CONFORMANCE_ROWS)


@pytest.mark.parametrize("name", sorted(WITH_REDUCTIONS))
def test_chains_with_per_leaf_reductions_match_tree_path(name):
    assert_flat_matches_tree(WITH_REDUCTIONS[name], ulps=8)


@pytest.mark.parametrize("name", sorted(PER_LEAF))
def test_per_leaf_transforms_match_tree_path(name):
    # XLA fuses (and rounds) the steps after the packing apart from the per-leaf ones.
    assert_flat_matches_tree(PER_LEAF[name], ulps=8)


def test_per_leaf_noise_stays_out_of_the_padding():
    params = make_params()
    flat_params = flat.FlatLayout.of(params).flatten(params)
    tx = optjax.add_noise(1.0)
    zeros = jax.tree.map(jnp.zeros_like, flat_params)
    updates, _ = jax.jit(tx.update)(zeros, tx.init(flat_params), flat_params)
    layout = flat_params.layout
    repacked = layout.flatten(layout.unflatten(updates))  # padding zeroed by the round trip
    for got, want in zip(updates.buffers, repacked.buffers):
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
    assert any(np.any(np.asarray(b, np.float32) != 0) for b in updates.buffers)


def test_flat_transform_is_a_drop_in_on_trees():
    params = make_params()
    grads = make_grads(params, 3)
    want = trajectory(optjax.adamw(1e-2, weight_decay=0.1), params, grads)
    got = trajectory(flat.flat_transform(optjax.adamw(1e-2, weight_decay=0.1)), params, grads)
    for w, g in zip(want, got):
        assert_close(g, w, ulps=2)
    state = flat.flat_transform(optjax.adam(1e-2)).init(params)
    assert isinstance(state[0].mu, flat.FlatBuffers)  # the state is held flat


def test_round_trip_keeps_structure_dtypes_and_values():
    params = make_params()
    params["empty"] = jnp.zeros((0, 3))
    packed, layout = flat.flatten(params)
    assert [b.dtype for b in packed.buffers] == [jnp.float32, BF16]  # one buffer per dtype
    assert layout.num_params == sum(x.size for x in jax.tree.leaves(params))
    back = jax.jit(flat.unflatten)(packed)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(b, np.float32), np.asarray(a, np.float32))


def test_leaves_start_on_blocks_and_padding_is_zero():
    tree = {"a": jnp.ones(1000), "b": jnp.ones(1000), "c": jnp.ones(3)}
    packed, layout = flat.flatten(tree)
    (group,) = layout.groups
    assert group.block == 16 and group.size == 1008 + 1008 + 16  # a little padding
    buffer = np.asarray(packed.buffers[0])
    assert buffer.sum() == 2003  # the padding holds zeros
    assert buffer[1000:1008].sum() == 0 and buffer[1008] == 1


def test_exact_block_needs_no_padding():
    packed, layout = flat.flatten([jnp.ones((64,)) for _ in range(50)])
    assert layout.groups[0].block == 64 and packed.buffers[0].shape == (3200,)


def test_segment_sums_match_numpy_and_skip_padding():
    rng = np.random.default_rng(3)
    tree = {"a": rng.normal(size=1000), "b": rng.normal(size=(10, 100)), "c": rng.normal(size=3)}
    tree = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)
    packed, layout = flat.flatten(tree)
    noisy = flat.FlatBuffers([jnp.where(packed.buffers[0] == 0, 1e6, packed.buffers[0])], layout)
    (sums,) = jax.jit(lambda f: optjax.tree.leaf_sum(optjax.tree.abs_square, f))(noisy)
    want = [np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree)]
    np.testing.assert_allclose(sums, want, rtol=1e-5)
    (means,) = jax.jit(lambda f: optjax.tree.leaf_mean(optjax.tree.abs_square, f))(noisy)
    np.testing.assert_allclose(means, np.divide(want, [1000, 1000, 3]), rtol=1e-5)
    total = jax.jit(optjax.tree.sum_of_squares)(noisy)
    np.testing.assert_allclose(total, sum(want), rtol=1e-5)


def test_global_norm_clipping_ignores_padding():
    tree = {"a": jnp.full(1000, 0.1), "b": jnp.full(1000, -0.1), "c": jnp.full(3, 0.1)}
    packed, layout = flat.flatten(tree)
    noisy = flat.FlatBuffers([jnp.where(packed.buffers[0] == 0, 50.0, packed.buffers[0])], layout)
    tx = optjax.clip_by_global_norm(1.0)
    got = layout.unflatten(tx.update(noisy, tx.init(noisy))[0])
    want = tx.update(tree, tx.init(tree))[0]  # norm 4.47: scaled by 1 / 4.47, padding or not
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        np.testing.assert_allclose(b, a, rtol=1e-5)
        np.testing.assert_allclose(np.abs(b), 0.1 / np.sqrt(0.01 * 2003), rtol=1e-5)


def test_grad_of_a_loss_of_the_views_is_flat():
    params = make_params()
    params["half"] = jax.tree.map(lambda x: x.astype(jnp.float32), params["half"])
    packed, layout = flat.flatten(params)

    def loss(tree):
        return sum(jnp.sum(jnp.sin(x) * (i + 1)) for i, x in enumerate(jax.tree.leaves(tree)))

    flat_grads = jax.jit(jax.grad(lambda f: loss(layout.unflatten(f))))(packed)
    assert isinstance(flat_grads, flat.FlatBuffers) and flat_grads.layout == layout
    want = layout.flatten(jax.grad(loss)(params))
    np.testing.assert_allclose(flat_grads.buffers[0], want.buffers[0], rtol=1e-6)


def test_flat_update_does_the_same_work_for_any_number_of_leaves():
    def equations(n_leaves):
        packed, _ = flat.flatten([jnp.ones((64,)) for _ in range(n_leaves)])
        tx = optjax.adamw(1e-3, weight_decay=0.1)
        jaxpr = jax.make_jaxpr(tx.update)(packed, tx.init(packed), packed)
        return len(jaxpr.eqns)

    assert equations(3) == equations(300)


def test_layout_is_static_and_compared_by_value():
    a = flat.FlatLayout.of({"x": jnp.ones(3), "y": jnp.ones((2, 2))})
    b = flat.FlatLayout.of({"x": jax.ShapeDtypeStruct((3,), jnp.float32), "y": jnp.zeros((2, 2))})
    assert a == b and hash(a) == hash(b)
    assert a != flat.FlatLayout.of({"x": jnp.ones(4), "y": jnp.ones((2, 2))})
    traces = []

    @jax.jit
    def f(packed):
        traces.append(1)
        return packed.buffers[0].sum()

    f(a.flatten({"x": jnp.ones(3), "y": jnp.ones((2, 2))}))
    f(b.flatten({"x": jnp.zeros(3), "y": jnp.ones((2, 2))}))
    assert len(traces) == 1


def test_factored_leaves_fall_back_to_the_tree_state():
    params = make_params()
    packed, _ = flat.flatten(params)
    tx = optjax.scale_by_factored_rms()
    state = tx.init(packed)
    tree_state = tx.init(params)
    assert jax.tree.structure(state) == jax.tree.structure(tree_state)
    assert [x.shape for x in jax.tree.leaves(state)] == [
        x.shape for x in jax.tree.leaves(tree_state)
    ]
    assert state.v_row["emb"].ndim == 1 and state.v["emb"] is None  # factored
    unfactored = optjax.scale_by_factored_rms(factored=False).init(packed)
    assert isinstance(unfactored.v, flat.FlatBuffers)


def test_flatten_rejects_a_leaf_of_another_shape():
    layout = flat.FlatLayout.of({"a": jnp.ones(3), "b": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"leaf 1 has shape \(3,\).*expects shape \(2,\)"):
        layout.flatten({"a": jnp.ones(3), "b": jnp.ones(3)})


def test_unflatten_rejects_the_wrong_buffers():
    packed, layout = flat.flatten({"a": jnp.ones(3), "h": jnp.ones(2, BF16)})
    with pytest.raises(ValueError, match="got 1 buffers, the layout has 2"):
        layout.unflatten(packed.buffers[:1])
    with pytest.raises(ValueError, match=r"float32 buffer has shape \(4,\)"):
        layout.unflatten([jnp.ones(4), packed.buffers[1]])


def test_a_traced_mask_is_rejected_on_the_flat_layout():
    packed, _ = flat.flatten({"a": jnp.ones(3), "b": jnp.ones(2)})
    tx = optjax.add_decayed_weights(0.1, mask=lambda p: jax.tree.map(lambda x: x.sum() > 0, p))
    with pytest.raises(ValueError, match=r"mask at \['a'\] must be a Python bool .* traced"):
        jax.jit(tx.update)(packed, tx.init(packed), packed)


def test_param_block_rms_wants_both_flat_or_both_trees():
    packed, _ = flat.flatten({"a": jnp.ones(3)})
    tx = optjax.scale_by_param_block_rms()
    with pytest.raises(ValueError, match="both flat, or both trees"):
        tx.update(packed, tx.init(packed), {"a": jnp.ones(3)})


def test_runs_stacked_under_vmap_match_each_run():
    runs = [make_params(seed) for seed in range(3)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *runs)
    layout = flat.FlatLayout.of(runs[0])
    flat_params = jax.vmap(layout.flatten)(stacked)
    assert flat_params.buffers[0].shape == (3, layout.groups[0].size)
    tx = optjax.adam(1e-2)
    grads = jax.vmap(layout.flatten)(jax.tree.map(jnp.ones_like, stacked))

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optjax.apply_updates(p, u), s

    new, _ = jax.jit(jax.vmap(step))(flat_params, jax.vmap(tx.init)(flat_params), grads)
    trees = jax.vmap(flat.as_tree)(new)
    for r, run in enumerate(runs):
        want = step(run, tx.init(run), jax.tree.map(jnp.ones_like, run))[0]
        assert_close(jax.tree.map(lambda x, r=r: x[r], trees), want, ulps=2)


# The primitives made to stream (no full-size temporary in a jitted, donated step).


def step_temporary_bytes(tx, params):
    def step(p, s, g):
        updates, s = tx.update(g, s, p)
        return optjax.apply_updates(p, updates), s

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), params).compile()
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("factored", [True, False])
def test_factored_rms_folds_block_rms_clipping(factored):
    params = make_params()
    grads = make_grads(params, 4)
    chained = optjax.chain(
        optjax.scale_by_factored_rms(factored=factored), optjax.clip_by_block_rms(0.3)
    )
    folded = scale_by_factored_rms_clipped(0.3, factored=factored)
    for want, got in zip(trajectory(chained, params, grads), trajectory(folded, params, grads)):
        assert_close(got, want, ulps=8)


def test_lion_and_folded_adafactor_steps_need_no_full_size_temporary():
    leaf = jnp.ones((256, 512))  # 512 KiB
    folded_adafactor = optjax.chain(
        scale_by_factored_rms_clipped(1.0),
        optjax.scale_by_param_block_rms(),
        optjax.scale(-1e-3),
    )
    assert step_temporary_bytes(optjax.lion(1e-3), leaf) < leaf.nbytes // 4
    assert step_temporary_bytes(folded_adafactor, leaf) < leaf.nbytes // 4


def test_factored_rms_rejects_a_clipping_threshold_of_zero():
    with pytest.raises(ValueError, match="clipping_threshold must be a number > 0"):
        scale_by_factored_rms_clipped(0.0)


# One abstraction: transforms written without the flat layout in mind are run on its views.


def normalize_each_leaf():
    """A transform written for trees only: it divides each leaf by its own RMS."""
    return optjax.stateless(
        lambda u, p: jax.tree.map(lambda g: g / jnp.sqrt(jnp.mean(jnp.square(g))), u)
    )


def test_a_transform_that_is_not_flat_ready_runs_on_the_views_in_a_chain():
    params = make_params()
    params.pop("half")  # one dtype, one buffer: a wrong per-buffer RMS would show on every leaf
    grads = make_grads(params, 3)
    make = lambda: optjax.chain(normalize_each_leaf(), optjax.sgd(0.1))
    assert not flat.is_flat_ready(normalize_each_leaf())
    want = trajectory(make(), params, grads)
    got = trajectory(make(), params, grads, pack=flat.FlatLayout.of(params).flatten)
    for w, g in zip(want, got):
        assert_close(g, w, ulps=8)
    # Called on the buffers directly, outside any chain, it still sees each leaf.
    packed = flat.FlatLayout.of(params).flatten(grads[0])
    direct = normalize_each_leaf().update(packed, optjax.EmptyState())[0].unflatten()
    per_leaf = normalize_each_leaf().update(grads[0], optjax.EmptyState())[0]
    for a, b in zip(jax.tree.leaves(direct), jax.tree.leaves(per_leaf)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # Declared flat-ready, it would see one buffer: the mark is a promise, and this one is false.
    wrong = flat.mark_flat_ready(normalize_each_leaf())
    one_buffer = wrong.update(packed, optjax.EmptyState())[0].unflatten()
    assert not np.allclose(one_buffer["emb"], per_leaf["emb"])


def public_transforms():
    """Every transform optjax exports at the top level, built with small arguments."""
    needs = {
        "scale": (0.1,),
        "scale_by_learning_rate": (0.1,),
        "scale_by_schedule": (optjax.constant_schedule(0.1),),
        "clip": (1.0,),
        "clip_by_global_norm": (1.0,),
        "clip_by_block_rms": (1.0,),
        "ema": (0.9,),
        "stateless": None,  # made from any function: not flat-ready unless declared
        "stateless_with_tree_map": None,
        "masked": (optjax.sgd(0.1), weight_mask),
        "freeze": (weight_mask,),
        "multi_transform": ({"a": optjax.sgd(0.1)}, lambda p: jax.tree.map(lambda _: "a", p)),
        "apply_if_finite": (optjax.sgd(0.1), 3),
        "lookahead": (optjax.sgd(0.1), 2, 0.5),
        "average_params": (optjax.sgd(0.1),),
        "MultiSteps": (optjax.sgd(0.1), 2),
        "named_chain": (("sgd", optjax.sgd(0.1)),),
        "flat_transform": (optjax.sgd(0.1),),
    }
    candidates = {n: getattr(optjax, n) for n in dir(optjax) if not n.startswith("_")}
    candidates.update({f"torch_compat.{n}": getattr(tc, n) for n in tc.__all__})
    found = {}
    for name, obj in candidates.items():
        if not (inspect.isfunction(obj) or name == "MultiSteps"):
            continue
        if name in needs:
            if needs[name] is not None:
                found[name] = obj(*needs[name])
            continue
        for args in [(0.1,), ()]:  # a learning rate, or no required argument
            try:
                tx = obj(*args)
                break
            except (TypeError, ValueError, AttributeError):
                tx = None
        if hasattr(tx, "init") and hasattr(tx, "update"):
            found[name] = tx
    found["inject_hyperparams"] = optjax.inject_hyperparams(optjax.adam)(learning_rate=0.1)
    return found


def test_every_public_transform_is_flat_ready():
    found = public_transforms()
    assert {"adam", "scale_by_adam", "clip_by_block_rms", "masked", "chain", "adafactor"} <= set(
        found
    )
    not_ready = sorted(name for name, tx in found.items() if not flat.is_flat_ready(tx))
    assert not_ready == []


def test_param_block_rms_keeps_its_floor_on_both_paths():
    params = {"zero": jnp.zeros((4, 5)), "tiny": jnp.full(37, 1e-5), "big": jnp.full(9, -3.0)}
    grads = {k: jnp.ones_like(v) for k, v in params.items()}
    tx = optjax.scale_by_param_block_rms(min_scale=1e-3)
    want = {"zero": 1e-3, "tiny": 1e-3, "big": 3.0}  # max(rms(p), min_scale), by hand
    tree_out = tx.update(grads, tx.init(params), params)[0]
    packed, layout = flat.flatten(params)
    flat_out = layout.unflatten(tx.update(layout.flatten(grads), tx.init(packed), packed)[0])
    for out in (tree_out, flat_out):
        for k, scale in want.items():
            np.testing.assert_allclose(out[k], np.full(params[k].shape, scale), rtol=1e-6)


@pytest.mark.parametrize(
    "b1, b2, mu_dtype",
    [(0.9, 0.99, None), (0.5, 0.5, None), (0.0, 0.9, None), (0.95, 0.9, None), (0.9, 0.99, BF16)],
)
def test_lion_single_read_gives_the_papers_steps(b1, b2, mu_dtype):
    params = make_params()
    grads = make_grads(params, 6)
    paper = optjax.scale_by_lion(b1, b2, mu_dtype)
    fast = scale_by_lion_single_read(b1, b2, mu_dtype)
    state_p, state_f = paper.init(params), fast.init(params)
    for g in grads:
        u_p, state_p = jax.jit(paper.update)(g, state_p)
        u_f, state_f = jax.jit(fast.update)(g, state_f)
        for a, b in zip(jax.tree.leaves(u_p), jax.tree.leaves(u_f)):
            np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
        for a, b in zip(jax.tree.leaves(state_p), jax.tree.leaves(state_f)):
            np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


# Padding rows (row_multiple): each buffer's rows padded up to a multiple of n, for a buffer
# split n ways on its row axis (tests/multidevice/test_flat_sharded.py splits them).


def padding_mask(layout):
    """Per buffer, True on the elements that belong to a leaf: each leaf from a block boundary
    on, in tree order; the rest (a leaf's last row's tail, the padding rows) is padding."""
    masks = []
    for group in layout.groups:
        valid, start = np.zeros(group.rows * group.block, bool), 0
        for size in group.sizes:
            valid[start : start + size] = True
            start += -(-size // group.block) * group.block
        masks.append(valid)
    return masks


def assert_padding_is_zero(packed):
    for buf, valid in zip(packed.buffers, padding_mask(packed.layout), strict=True):
        np.testing.assert_array_equal(np.asarray(buf, np.float32)[~valid], 0)


ODD_TREES = {
    "mixed": make_params,
    "scalar": lambda: {"s": jnp.ones(())},
    "few_bf16_rows": lambda: {"w": jnp.ones((40, 33)), "h": jnp.arange(3, dtype=BF16)},
    "empty_last": lambda: {"a": jnp.arange(5.0), "b": jnp.zeros((0, 4))},
    "all_empty": lambda: {"a": jnp.zeros((0,)), "b": jnp.zeros((2, 0))},
}


@pytest.mark.parametrize("name", sorted(ODD_TREES))
def test_rows_are_a_multiple_of_n_and_the_round_trip_holds(name):
    tree = ODD_TREES[name]()
    plain = flat.FlatLayout.of(tree)
    for n in [1, 2, 3, 7, 8, 64, 1000]:
        packed, layout = flat.flatten(tree, row_multiple=n)
        assert layout.num_params == plain.num_params and layout.row_multiple == n
        for group, base, buf in zip(layout.groups, plain.groups, packed.buffers, strict=True):
            assert group.rows % n == 0 and 0 <= group.rows - group.leaf_rows < n
            assert group.leaf_rows == base.rows and group.block == base.block  # leaves unmoved
            assert buf.shape == (group.rows * group.block,)
        assert_padding_is_zero(packed)
        for a, b in zip(layout.leaf_sizes(), plain.leaf_sizes(), strict=True):
            np.testing.assert_array_equal(a, b)
        back = layout.unflatten(packed)
        assert jax.tree.structure(back) == jax.tree.structure(tree)
        for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(back), strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_array_equal(np.asarray(b, np.float32), np.asarray(a, np.float32))
        for a, b in zip(layout.flatten(back).buffers, packed.buffers, strict=True):
            np.testing.assert_array_equal(np.asarray(b, np.float32), np.asarray(a, np.float32))


def test_per_leaf_reductions_leave_the_padding_rows_out():
    rng = np.random.default_rng(4)
    tree = {
        "a": jnp.asarray(rng.normal(size=1000), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(10, 100)), jnp.float32),
        "c": jnp.asarray(rng.normal(size=3), jnp.float32),
        "e": jnp.zeros((0,)),  # the last float32 leaf is empty: its mean is NaN
        "h": jnp.asarray(rng.normal(size=5), BF16),
    }

    @jax.jit
    def reductions(packed):
        return (
            optjax.tree.leaf_sum(optjax.tree.abs_square, packed),
            optjax.tree.leaf_sum(jnp.cos, packed),  # cos(0) = 1: a zero padding would count
            optjax.tree.leaf_mean(jnp.abs, packed),
            optjax.tree.sum_of_squares(packed),
            optjax.tree.global_norm(packed),
        )

    want = reductions(flat.flatten(tree)[0])
    for n in [3, 8, 64]:
        packed, layout = flat.flatten(tree, row_multiple=n)
        noisy = flat.FlatBuffers(  # every padding element, in rows and padding rows, set to 1e6
            [
                jnp.where(v, b, 1e6).astype(b.dtype)
                for b, v in zip(packed.buffers, padding_mask(layout))
            ],
            layout,
        )
        for got in (reductions(packed), reductions(noisy)):
            for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
                np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6)


def test_padding_rows_take_the_last_nonempty_leaf_in_expand_and_where_leaves():
    tree = {"a": jnp.ones(5), "b": jnp.ones((2, 3)), "c": jnp.zeros((0,))}
    packed, layout = flat.flatten(tree, row_multiple=4)
    (group,) = layout.groups
    assert group.rows > group.leaf_rows
    (values,) = layout.expand((jnp.asarray([1.0, 2.0, np.nan]),))  # c is empty: its value NaN
    np.testing.assert_array_equal(values[group.leaf_rows :], 2.0)
    assert not np.any(np.isnan(values))
    (valid,) = padding_mask(layout)
    ones = flat.FlatBuffers([jnp.where(valid, 1.0, 7.0)], layout)  # padding marked 7 and 9
    threes = flat.FlatBuffers([jnp.where(valid, 3.0, 9.0)], layout)
    for keep, padding_rows in [
        ({"a": True, "b": False, "c": True}, 9.0),  # with b, the last leaf that has rows
        ({"a": False, "b": True, "c": False}, 7.0),
    ]:
        (mixed,) = optjax.tree.where_leaves(keep, ones, threes).buffers
        tree = layout.unflatten([mixed])
        np.testing.assert_array_equal(tree["a"], 1.0 if keep["a"] else 3.0)
        np.testing.assert_array_equal(tree["b"], 1.0 if keep["b"] else 3.0)
        np.testing.assert_array_equal(mixed[group.leaf_rows * group.block :], padding_rows)
    scaled = optjax.tree.map_with_leaf_values(
        lambda x, v: x / v, packed, (jnp.asarray([1.0, 2.0, 0.0]),)
    )  # c's 0 would make the padding 0 / 0
    assert_padding_is_zero(scaled)
    np.testing.assert_array_equal(scaled.unflatten()["b"], 0.5)


PADDED = {
    "adam": lambda: optjax.adam(1e-2),
    "clipped_adamw_masked": lambda: optjax.chain(  # a global norm, a per-leaf mask
        optjax.clip_by_global_norm(0.5), optjax.adamw(1e-2, weight_decay=0.1, mask=weight_mask)
    ),
    "adafactor_momentum": lambda: optjax.chain(  # views for "emb", leaf means on the buffers
        optjax.adafactor(1e-2, momentum=0.9), optjax.clip_by_block_rms(0.1)
    ),
}


def flat_steps(tx, packed, grads):
    """Params buffers after each jitted step (host copies), and the last state."""
    state = tx.init(packed)
    step = jax.jit(
        lambda p, s, g: (lambda u, s: (optjax.apply_updates(p, u), s))(*tx.update(g, s, p))
    )
    out = []
    for g in grads:
        packed, state = step(packed, state, g)
        out.append(jax.tree.map(np.asarray, packed))
    return out, state


@pytest.mark.parametrize("name", sorted(PADDED))
def test_padding_rows_stay_zero_and_the_steps_match_the_unpadded_layout(name):
    params = make_params()
    params["zz"] = jnp.zeros((0, 3))  # the float32 group's last leaf is empty
    grads = make_grads(params, 3)
    plain = flat.FlatLayout.of(params)
    padded = flat.FlatLayout.of(params, row_multiple=8)
    assert all(g.rows > g.leaf_rows for g in padded.groups)
    want, _ = flat_steps(PADDED[name](), plain.flatten(params), [plain.flatten(g) for g in grads])
    got, state = flat_steps(
        PADDED[name](), padded.flatten(params), [padded.flatten(g) for g in grads]
    )
    for w, g in zip(want, got, strict=True):
        assert_padding_is_zero(g)
        assert_close(g.unflatten(), w.unflatten(), ulps=8)
    moments = optjax.tree.get_by_type(state, flat.FlatBuffers)
    assert moments  # some state is held flat: its padding is zero too
    for moment in moments:
        assert moment.layout == padded
        assert_padding_is_zero(moment)


BAD_MULTIPLES = [0, -1, -8, 1.0, 8.0, 2.5, float("nan"), True, False, "8", "", None, [8], (8,)]
BAD_MULTIPLES += [np.float32(8), np.array([8]), jnp.asarray(8.0)]


@pytest.mark.parametrize("value", BAD_MULTIPLES, ids=repr)
def test_row_multiple_must_be_an_integer_of_at_least_one(value):
    tree = {"a": jnp.ones(3)}
    message = rf"row_multiple must be an integer >= 1, got row_multiple={re.escape(repr(value))}"
    with pytest.raises(ValueError, match=message):
        flat.flatten(tree, row_multiple=value)
    with pytest.raises(ValueError, match=message):
        flat.FlatLayout.of(tree, row_multiple=value)


def test_row_multiple_takes_python_and_numpy_integers():
    tree = {"a": jnp.ones(3)}
    for value in [1, 5, np.int32(5), np.int64(5), 10**6]:
        assert flat.FlatLayout.of(tree, row_multiple=value).groups[0].rows % int(value) == 0


def test_the_row_multiple_is_part_of_the_layouts_identity():
    tree = {"a": jnp.ones(32), "b": jnp.ones(32)}  # 2 rows of 32: a multiple of 1 and of 2
    one, two, four = (flat.FlatLayout.of(tree, row_multiple=n) for n in (1, 2, 4))
    assert one.groups[0].rows == two.groups[0].rows == 2
    assert one != two and hash(one) != hash(two) and repr(one) != repr(two)
    assert two == flat.FlatLayout.of(tree, row_multiple=2) and hash(two) == hash(
        flat.FlatLayout.of(tree, row_multiple=2)
    )
    assert "row_multiple=2" in repr(two) and "row_multiple" not in repr(one)
    assert "4x32 (2 padding rows)" in repr(four)
