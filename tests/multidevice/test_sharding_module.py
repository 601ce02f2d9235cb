"""optjax.sharding on 8 simulated devices: state shardings found by tracing, state built in
place, and ZeRO-1 checked against the unsharded optimizer (the oracle) and against the
collectives XLA compiles for it."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import optjax
from optjax import sharding

MIN_SIZE = 256


def mesh(kind):
    return jax.make_mesh((8,), ("data",), axis_types=(kind,))


SHAPES = {"w": (64, 24), "k": (6, 64), "b": (24,), "odd": (30, 10), "s": ()}
FSDP = {"w": P("data", None), "k": P(None, "data"), "b": P("data")}  # the rest replicated


def make_params(m, specs=None):
    """Replicated unless ``specs`` says otherwise: the data-parallel layout ZeRO-1 is for."""
    rng = np.random.default_rng(0)
    return {
        k: jax.device_put(
            jnp.asarray(rng.normal(size=s), jnp.float32),
            NamedSharding(m, (specs or {}).get(k, P())),
        )
        for k, s in SHAPES.items()
    }


def grads_for(params, steps):
    rng = np.random.default_rng(1)
    return [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
        for _ in range(steps)
    ]


OPTIMIZERS = {
    "adam": lambda: optjax.adam(1e-2),
    "sgd_momentum": lambda: optjax.sgd(1e-2, momentum=0.9),
    "lion": lambda: optjax.lion(1e-3),
    "clipped_adamw": lambda: optjax.chain(
        optjax.clip_by_global_norm(1.0), optjax.adamw(1e-2, weight_decay=0.1)
    ),
    "adafactor": lambda: optjax.adafactor(1e-2, min_dim_size_to_factor=8),
}
ELEMENTWISE = {"adam", "sgd_momentum", "lion"}


@pytest.mark.parametrize("kind", [AxisType.Auto, AxisType.Explicit], ids=str)
@pytest.mark.parametrize("name", ["adam", "adafactor", "clipped_adamw"])
def test_state_sharding_is_the_shardings_init_gives(name, kind):
    m = mesh(kind)
    tx = OPTIMIZERS[name]()
    with jax.set_mesh(m):
        params = make_params(m, FSDP)
        want = jax.tree.map(lambda x: x.sharding.spec, tx.init(params))
        found = sharding.state_sharding(tx, params)
        structs = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), params
        )
        abstract = sharding.state_sharding(tx, structs)
        built = sharding.init_sharded(tx, params)
    same = lambda a, b: (*a, None, None)[:2] == (*b, None, None)[:2]
    for w, f, a, b in zip(*map(jax.tree.leaves, (want, found, abstract, built)), strict=True):
        assert same(f.spec, w) and same(a.spec, w) and same(b.sharding.spec, w)
    for x, y in zip(jax.tree.leaves(built), jax.tree.leaves(tx.init(params)), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_state_sharding_needs_a_mesh():
    with pytest.raises(ValueError, match="no parameter has a NamedSharding"):
        sharding.state_sharding(optjax.adam(1e-3), {"w": jnp.zeros(3)})


def test_zero1_spec_rule():
    spec = sharding.zero1_spec
    assert spec((64, 24), P(), "data", 8, 1) == P("data", None)  # the largest divisible dim
    assert spec((6, 40), P(), "data", 8, 1) == P(None, "data")
    assert spec((24, 24), P(), "data", 8, 1) == P("data", None)  # the first of equals
    assert spec((30, 10), P(), "data", 8, 1) == P()  # no dimension 8 divides
    assert spec((64, 24), P(), "data", 8, 4096) == P()  # smaller than min_size
    assert spec((64, 24), P("data", None), "data", 8, 1) == P("data", None)  # already split
    assert spec((64, 24), P(None, "model"), "data", 8, 1) == P("data", "model")
    assert spec((), P(), "data", 8, 1) == P()


@pytest.mark.parametrize("kind", [AxisType.Auto, AxisType.Explicit], ids=str)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_zero1_steps_like_the_plain_optimizer(name, kind):
    m = mesh(kind)
    with jax.set_mesh(m):
        params = make_params(m)
        grads = grads_for(params, 4)
        plain, zero = OPTIMIZERS[name](), sharding.zero1(OPTIMIZERS[name](), min_size=MIN_SIZE)

        def run(tx):
            p, state = params, tx.init(params)
            step = jax.jit(tx.update)
            out = []
            for g in grads:
                u, state = step(g, state, p)
                p = optjax.apply_updates(p, u)
                out.append((u, p))
            return out, state

        want, _ = run(plain)
        got, zero_state = run(zero)
    for (wu, wp), (gu, gp) in zip(want, got, strict=True):
        for a, b in zip(jax.tree.leaves((wu, wp)), jax.tree.leaves((gu, gp)), strict=True):
            assert b.sharding.is_equivalent_to(a.sharding, a.ndim)  # gathered back
            if name in ELEMENTWISE:  # one formula; a loop over a shard may round an ulp apart
                np.testing.assert_array_max_ulp(np.asarray(b), np.asarray(a), maxulp=1)
            else:  # sums over a leaf or the tree, taken in another order
                np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-7)
    # Each state leaf the rule splits is split 8 ways: a device holds an eighth of it
    # (Adafactor's state here is all small: factored moments and leaves under MIN_SIZE).
    split = [
        x
        for x in jax.tree.leaves(zero_state)
        if sharding.zero1_spec(x.shape, P(), "data", 8, MIN_SIZE) != P()
    ]
    assert split or name == "adafactor"
    for x in split:
        assert x.addressable_shards[0].data.nbytes * 8 == x.nbytes, x.shape


def per_device_state_bytes(state):
    return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(state))


def test_zero1_holds_an_eighth_of_the_state_per_device():
    m = mesh(AxisType.Auto)
    with jax.set_mesh(m):
        params = make_params(m)
        plain = optjax.adam(1e-2).init(params)
        zero = sharding.zero1(optjax.adam(1e-2), min_size=MIN_SIZE).init(params)
    total = sum(x.nbytes for x in jax.tree.leaves(plain))
    small = sum(
        x.nbytes for x in jax.tree.leaves(plain) if x.size < MIN_SIZE or x.shape == (30, 10)
    )
    assert per_device_state_bytes(plain) == total  # replicated params: every device holds all
    assert per_device_state_bytes(zero) <= (total - small) / 8 + small


_SHAPE = re.compile(r"(bf16|f16|f32|f64|s32|u32|pred)\[([\d,]*)\]")
_BYTES = {"bf16": 2, "f16": 2, "f32": 4, "f64": 8, "s32": 4, "u32": 4, "pred": 1}


def collective_results(hlo: str, op: str) -> list[int]:
    """Bytes of every array in the results of ``op`` instructions (XLA:CPU fuses collectives
    into tuple-shaped results: every shape left of the op's name counts)."""
    sizes = []
    for line in hlo.splitlines():
        if f" {op}(" not in line and f" {op}-start(" not in line:
            continue
        result = line.split("=", 1)[1].split(f" {op}")[0]
        for dtype, dims in _SHAPE.findall(result):
            n = int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
            sizes.append(n * _BYTES[dtype])
    return sizes


def test_zero1_gathers_each_update_once_and_moves_no_state():
    m = mesh(AxisType.Auto)
    tx = sharding.zero1(optjax.adam(1e-2), min_size=MIN_SIZE)
    with jax.set_mesh(m):
        params = make_params(m)
        state = tx.init(params)
        hlo = jax.jit(tx.update).lower(params, state, params).compile().as_text()
    split_params = [
        p.nbytes
        for p in jax.tree.leaves(params)
        if sharding.zero1_spec(p.shape, P(), "data", 8, MIN_SIZE) != P()
    ]
    gathered = collective_results(hlo, "all-gather")
    assert sorted(gathered) == sorted(split_params)  # each split update, gathered once
    state_bytes = {x.nbytes for x in jax.tree.leaves(state) if x.ndim}
    for op in ("all-reduce", "reduce-scatter", "all-to-all", "collective-permute"):
        assert not set(collective_results(hlo, op)) & state_bytes, op


def test_zero1_errors():
    m = mesh(AxisType.Auto)
    with pytest.raises(ValueError, match=r"axis must be one of the mesh's axes \('data',\)"):
        sharding.zero1(optjax.adam(1e-3), "model").init(make_params(m))
    with pytest.raises(ValueError, match="min_size must be an integer >= 1"):
        sharding.zero1(optjax.adam(1e-3), min_size=0)
    with pytest.raises(ValueError, match="zero1: no mesh"):
        sharding.zero1(optjax.adam(1e-3)).init({"w": jnp.zeros(8)})
