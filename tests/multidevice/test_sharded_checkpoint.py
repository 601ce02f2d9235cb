"""optjax.checkpoint.Checkpointer on 8 simulated devices: params and adam's state sharded over
the mesh are written shard by shard, and restored bit for bit onto the same mesh, onto 4 of the
devices, and replicated, each leaf in the sharding its template asks for."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import optjax
from optjax import checkpoint

SHAPES = {"w": ((64, 24), np.float32), "k": ((8, 16), np.float32), "b": ((24,), "bfloat16")}
STEP = 11


def _run(mesh):
    """Params split over "data" on their first axis, adam's state laid out like them and
    filled with random numbers (placed, not computed: nothing compiles), a step count and a
    PRNG key per device."""
    rng = np.random.default_rng(0)
    split = NamedSharding(mesh, P("data"))
    params = {
        name: jax.device_put(rng.normal(size=shape).astype(dtype), split)
        for name, (shape, dtype) in SHAPES.items()
    }
    tx = optjax.adam(1e-3)
    state = jax.tree.map(
        lambda a, s: jax.device_put((rng.normal(size=a.shape) * 100).astype(a.dtype), s),
        jax.eval_shape(tx.init, params),
        optjax.sharding.state_sharding(tx, params),
    )
    keys = jax.device_put(jax.random.split(jax.random.key(0), 8), split)
    return {"params": params, "opt_state": state, "keys": keys, "step": STEP}


def _is_key(x):
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _split(x):
    """Whether ``x`` is split over "data" on its first axis."""
    spec = x.sharding.spec if isinstance(x, jax.Array) else ()
    return len(spec) > 0 and spec[0] == "data"


def _bits(tree):
    def one(x):
        if hasattr(x, "dtype") and _is_key(x):
            x = jax.random.key_data(x)
        x = np.asarray(x)
        return str(x.dtype), x.shape, x.tobytes()

    return jax.tree.structure(tree), [one(x) for x in jax.tree.leaves(tree)]


def _template(tree, sharding_for):
    """The tree as abstract arrays (nothing allocated) in the shardings ``sharding_for`` gives."""
    return jax.tree.map(
        lambda x: (
            jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding_for(x))
            if isinstance(x, jax.Array)
            else x
        ),
        tree,
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    mesh = jax.make_mesh((8,), ("data",))
    run = _run(mesh)
    ckpt = checkpoint.Checkpointer(tmp_path_factory.mktemp("run"))
    ckpt.save(STEP, run, metadata={"devices": 8})
    ckpt.wait()
    yield mesh, run, ckpt
    ckpt.close()


def test_the_state_is_sharded_as_saved(saved):
    _, run, _ = saved
    for x in [*jax.tree.leaves(run["params"]), *run["opt_state"][0].mu.values(), run["keys"]]:
        assert _split(x) and x.addressable_shards[0].data.shape[0] == x.shape[0] // 8


def test_each_array_is_written_shard_by_shard(saved):
    """What orbax recorded for each array: the mesh and split it was saved from, and chunks of
    one device's shard, each written by the device that holds it (nothing gathered)."""
    _, run, ckpt = saved
    stored = ckpt._manager.metadata(STEP).item_metadata["state"].tree
    leaves = jax.tree.leaves(run)
    assert len(stored) == len(leaves)
    split = 0
    for i, leaf in enumerate(leaves):
        if not _split(leaf):
            continue
        data = jax.random.key_data(leaf) if _is_key(leaf) else leaf
        meta = stored[f"leaf_{i}"]
        assert meta.sharding.partition_spec[0] == "data" and meta.sharding.shape == [8]
        assert meta.storage.write_shape == leaf.sharding.shard_shape(data.shape)
        split += 1
    assert split == 3 * len(SHAPES) + 1  # params, mu, nu and the keys


@pytest.mark.parametrize("target", ["same_mesh", "template_arrays", "four_devices", "replicated"])
def test_restore_onto_a_mesh_is_bitwise_and_in_the_shardings_asked(saved, target):
    mesh, run, ckpt = saved
    four = jax.make_mesh((4,), ("data",), devices=jax.devices()[:4])
    sharding_for = {
        "same_mesh": lambda x: x.sharding,
        "template_arrays": None,
        "four_devices": lambda x: NamedSharding(four, x.sharding.spec),
        "replicated": lambda x: NamedSharding(mesh, P()),
    }[target]
    like = run if sharding_for is None else _template(run, sharding_for)
    restored = ckpt.restore(like)
    assert _bits(restored) == _bits(run)
    assert restored["step"] == STEP and ckpt.metadata() == {"devices": 8}
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(like), strict=True):
        if isinstance(want, (jax.Array, jax.ShapeDtypeStruct)):
            assert (got.shape, got.dtype) == (want.shape, want.dtype)  # keys are keys again
            # jax itself writes a key array placed with P() as P(None,): the same layout.
            same = got.sharding == want.sharding or (
                _is_key(got) and got.sharding.is_equivalent_to(want.sharding, got.ndim)
            )
            assert same, (got.sharding, want.sharding)
    if target == "four_devices":
        w = restored["opt_state"][0].mu["w"]
        assert {d.id for d in w.sharding.device_set} == {0, 1, 2, 3}
        assert w.addressable_shards[0].data.shape == (16, 24)
