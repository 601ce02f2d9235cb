"""The flat path on 8 simulated devices: buffers split on their row axis (rows padded to a multiple
of 8), their state split with them, and the numbers of the unsharded flat run and of the tree
path (the oracles) on meshes with Auto and Explicit axes."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import optjax
from optjax import flat

N = 8
BF16 = jnp.bfloat16
# "w" and "k" are factored by Adafactor (min_dim_size_to_factor=8); the bf16 group has 7 rows of
# one element: padded to 8, most devices hold a row of padding.
SHAPES = {"w": (64, 24), "k": (6, 64), "b": (24,), "odd": (30, 10), "s": (), "tail": (37,)}
HALF = {"hw": (3,), "hb": (4,)}


def mesh(kind):
    return jax.make_mesh((N,), ("data",), axis_types=(kind,))


def make_params():
    rng = np.random.default_rng(0)
    params = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in SHAPES.items()}
    params["half"] = {k: jnp.asarray(rng.normal(size=s), BF16) for k, s in HALF.items()}
    return params


def make_grads(params, steps):
    rng = np.random.default_rng(1)
    return [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        for _ in range(steps)
    ]


OPTIMIZERS = {
    "adam": lambda: optjax.adam(1e-2),
    "clipped_adamw": lambda: optjax.chain(
        optjax.clip_by_global_norm(1.0), optjax.adamw(1e-2, weight_decay=0.1)
    ),
    # Factored leaves run on the views (per_leaf; its state is the tree path's); block-RMS
    # clipping and the parameter scale reduce per leaf on the buffers.
    "adafactor": lambda: optjax.adafactor(1e-2, min_dim_size_to_factor=8),
}
STEPS = 3


def run(tx, params, grads):
    """Params after each jitted step, the last state and updates, the state's types after init,
    and the step's compiled HLO."""
    state = tx.init(params)
    init_types = [jax.typeof(x) for x in jax.tree.leaves(state)]

    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return optjax.apply_updates(params, updates), state, updates

    compiled = jax.jit(step).lower(params, state, grads[0]).compile()
    out = []
    for g in grads:
        params, state, updates = compiled(params, state, g)
        out.append(params)
    return out, (state, updates), init_types, compiled.as_text()


@functools.cache
def oracles(name):
    """The tree path on one device, and the flat path with every buffer whole on each device of
    the mesh (not split), as host arrays. (XLA:CPU compiles a program for one device with other
    loop bounds, and so an ulp here and there in other places, than one for 8 devices.)"""
    params = make_params()
    grads = make_grads(params, STEPS)
    tree_run, *_ = run(OPTIMIZERS[name](), params, grads)
    m = mesh(AxisType.Auto)
    with jax.set_mesh(m):
        whole = lambda t: jax.device_put(flat.flatten(t, row_multiple=N)[0], NamedSharding(m, P()))
        flat_run, *_ = run(OPTIMIZERS[name](), whole(params), [whole(g) for g in grads])
    host = lambda xs: [jax.tree.map(np.asarray, x) for x in xs]
    return host(tree_run), host(flat_run)


def split_flat(m, tree):
    """``tree`` packed with rows padded to a multiple of 8, each buffer split on the data axis."""
    packed, _ = flat.flatten(tree, row_multiple=N)
    return jax.device_put(packed, NamedSharding(m, P("data")))


def assert_close(got, want, rtol):
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        a32, b32 = np.asarray(a, np.float32), np.asarray(b, np.float32)
        tol = max(rtol, float(jnp.finfo(a.dtype).eps))  # a bf16 leaf: one ulp of bf16
        scale = float(np.max(np.abs(a32), initial=1e-30))
        np.testing.assert_allclose(b32, a32, rtol=tol, atol=tol * scale)


_SHAPE = re.compile(r"(?:bf16|f16|f32|s32|u32|pred)\[([\d,]*)\]")


def largest_collective(hlo: str) -> int:
    """Elements of the largest array any collective of ``hlo`` returns."""
    largest = 0
    for line in hlo.splitlines():
        op = re.search(
            r" (all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)", line
        )
        if op is None or "=" not in line:
            continue
        for dims in _SHAPE.findall(line.split("=", 1)[1].split(op.group(0))[0]):
            largest = max(largest, int(np.prod([int(d) for d in dims.split(",") if d])))
    return largest


def test_a_split_buffer_gives_each_device_whole_rows():
    m = mesh(AxisType.Explicit)
    params = split_flat(m, make_params())
    for group, buf in zip(params.layout.groups, params.buffers, strict=True):
        assert group.rows % N == 0 and group.rows > group.leaf_rows  # padding rows here
        rows_each = group.rows // N
        for shard in buf.addressable_shards:
            (index,) = shard.index
            assert index.start % (rows_each * group.block) == 0
            assert shard.data.shape == (rows_each * group.block,)
    back = params.unflatten()
    for a, b in zip(jax.tree.leaves(make_params()), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(np.asarray(b, np.float32), np.asarray(a, np.float32))


@pytest.mark.parametrize("kind", [AxisType.Auto, AxisType.Explicit], ids=str)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_split_buffers_step_like_the_unsharded_flat_and_tree_paths(name, kind):
    tree_run, flat_run = oracles(name)
    m = mesh(kind)
    with jax.set_mesh(m):
        params = make_params()
        grads = [split_flat(m, g) for g in make_grads(params, STEPS)]
        params = split_flat(m, params)
        got, (state, updates), init_types, hlo = run(OPTIMIZERS[name](), params, grads)
    for g, f, t in zip(got, flat_run, tree_run, strict=True):
        if name == "adam":  # elementwise: the same numbers, device by device
            for a, b in zip(f.buffers, g.buffers, strict=True):
                np.testing.assert_array_equal(np.asarray(b, np.float32), np.asarray(a, np.float32))
        else:  # per-leaf sums, taken in another order
            assert_close(g, f, rtol=1e-6)
        assert_close(g.unflatten(), t, rtol=1e-6 if name == "adam" else 2e-6)
        host = jax.tree.map(np.asarray, g)
        repacked = host.layout.flatten(host.unflatten())  # its padding is zeros
        for a, b in zip(repacked.buffers, host.buffers, strict=True):
            np.testing.assert_array_equal(b, a)  # so is the stepped buffers'
    split = NamedSharding(m, P("data"))
    flat_state = optjax.tree.get_by_type(state, flat.FlatBuffers)
    assert flat_state or name == "adafactor"  # moments held flat, split like the params
    for buffers in [*flat_state, updates]:
        for buf in buffers.buffers:
            assert buf.sharding.is_equivalent_to(split, 1), buf.sharding
    if kind == AxisType.Explicit:  # the state's types, sharding included, are init's
        assert [jax.typeof(x) for x in jax.tree.leaves(state)] == init_types
        assert list(map(jax.typeof, updates.buffers)) == list(map(jax.typeof, params.buffers))
    if name != "adafactor":  # factored leaves gather their views; nothing else moves a buffer
        smallest_shard = min(b.size for b in params.buffers if b.size >= N * 16) // N
        assert largest_collective(hlo) < smallest_shard


def test_state_is_split_like_the_buffers_from_init():
    m = mesh(AxisType.Explicit)
    with jax.set_mesh(m):
        params = split_flat(m, make_params())
        state = optjax.adamw(1e-3).init(params)
    (adam_state, *_) = state
    for moment in (adam_state.mu, adam_state.nu):
        for buf, param in zip(moment.buffers, params.buffers, strict=True):
            # nu of a bf16 buffer is float32 (tests/test_low_precision.py), split the same way
            dtype = param.dtype if moment is adam_state.mu else optjax.tree.wide_dtype(param)
            assert jax.typeof(buf) == jax.typeof(param).update(dtype=dtype)
            assert buf.sharding.spec == P("data")


def test_grad_of_a_loss_of_the_views_is_split_like_the_buffers():
    m = mesh(AxisType.Explicit)
    params = make_params()
    layout = flat.FlatLayout.of(params, row_multiple=N)

    def loss(tree):
        return sum(
            jnp.sum(jnp.sin(x.astype(jnp.float32)) * (i + 1))
            for i, x in enumerate(jax.tree.leaves(tree))
        )

    with jax.set_mesh(m):
        split = split_flat(m, params)
        grads = jax.jit(jax.grad(lambda f: loss(layout.unflatten(f))))(split)
    want = layout.flatten(jax.grad(loss)(params))
    for buf, param, w in zip(grads.buffers, split.buffers, want.buffers, strict=True):
        assert jax.typeof(buf) == jax.typeof(param)
        np.testing.assert_allclose(np.asarray(buf, np.float32), np.asarray(w, np.float32))


def test_a_split_across_rows_is_refused_with_the_fix():
    m = mesh(AxisType.Explicit)
    params = {"a": jnp.ones(1000), "b": jnp.ones(1000), "c": jnp.ones(3), "d": jnp.ones(80)}
    packed, layout = flat.flatten(params)  # 132 rows of 16: 2112 elements, split 8 ways
    assert layout.groups[0].rows % N and packed.buffers[0].size % N == 0
    tx = optjax.clip_by_block_rms(1.0)
    with jax.set_mesh(m):
        split = jax.device_put(packed, NamedSharding(m, P("data")))
        with pytest.raises(ValueError, match=r"split 8 ways.*its 132 rows.*row_multiple=8"):
            jax.jit(tx.update)(split, tx.init(split))
