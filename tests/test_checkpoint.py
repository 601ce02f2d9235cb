"""Checkpoints: every optimizer's state round-trips bit for bit; a mismatching template fails
naming the first differing path; a resumed run equals the uninterrupted one bit for bit."""

import asyncio
import json
import os
import stat
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_conformance import ROWS
from test_wrappers import backend_compiles

import optjax
from optjax import checkpoint

WRAPPED = {
    "inject_hyperparams": lambda: optjax.inject_hyperparams(optjax.adamw)(
        learning_rate=optjax.warmup_cosine_decay_schedule(0.0, 0.1, 2, 10), b1=0.8
    ),
    "MultiSteps": lambda: optjax.MultiSteps(optjax.sgd(0.1, momentum=0.9), 2),
    "masked": lambda: optjax.masked(optjax.adam(0.1), {"w": True, "b": False}),
    "multi_transform": lambda: optjax.multi_transform(
        {"a": optjax.adam(0.1), "l": optjax.lion(0.01)}, {"w": "a", "b": "l"}
    ),
    "apply_if_finite": lambda: optjax.apply_if_finite(optjax.adam(0.1), 2),
    "lookahead": lambda: optjax.lookahead(optjax.adam(0.1), 2, 0.5),
    "average_params": lambda: optjax.average_params(optjax.adam(0.1), 0.9),
}
ALL = {**{name: (lambda row=row: row.make(1e-2)) for name, row in ROWS.items()}, **WRAPPED}


def _params():
    return {"w": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3), "b": jnp.full((3,), 0.5, jnp.bfloat16)}


def _bits(tree):
    """Each leaf as (dtype, shape, raw bytes): equal bits, not merely equal values."""

    def one(x):
        if hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        x = np.asarray(x)
        return str(x.dtype), x.shape, x.tobytes()

    return jax.tree.structure(tree), [one(x) for x in jax.tree.leaves(tree)]


def _stepped_state(tx, params, steps=1):
    state = tx.init(params)
    for i in range(steps):
        grads = jax.tree.map(lambda p, s=float(i + 2): jnp.cos(p.astype(jnp.float32) * s), params)
        grads = optjax.tree.cast_like(grads, params)
        updates, state = tx.update(grads, state, params)
        params = optjax.apply_updates(params, updates)
    return state


@pytest.mark.parametrize("name", ALL)
def test_every_optimizer_state_round_trips_exactly(name, tmp_path):
    tx, params = ALL[name](), _params()
    state = _stepped_state(tx, params)
    path = tmp_path / "state.npz"
    checkpoint.save(path, state)
    restored = checkpoint.restore(path, like=tx.init(params))
    assert _bits(restored) == _bits(state)
    assert [type(x) for x in jax.tree.leaves(restored)] == [type(x) for x in jax.tree.leaves(state)]


def test_round_trip_of_counts_bf16_keys_numbers_and_abstract_templates(tmp_path):
    tree = {
        "count": jnp.array(7, jnp.int32),
        "half": jnp.array([1.0, -2.5, 3e-3], jnp.bfloat16),
        "fp8": jnp.array([0.5, -1.0], jnp.float8_e4m3fn),
        "key": jax.random.key(42),
        "keys": jax.random.split(jax.random.key(1), 3),
        "raw_key": jax.random.key_data(jax.random.key(5)),
        "numpy": np.arange(4, dtype=np.int16),
        "python": (3, 2.5, True),
        "flag": jnp.array(False),
    }
    path = tmp_path / "tree.npz"
    checkpoint.save(path, tree)
    restored = checkpoint.restore(path, like=tree)
    assert _bits(restored) == _bits(tree)
    assert restored["python"] == (3, 2.5, True) and isinstance(restored["numpy"], np.ndarray)
    assert jax.random.key_impl(restored["keys"]) == jax.random.key_impl(tree["keys"])
    tx = optjax.adam(0.1)
    checkpoint.save(path, _stepped_state(tx, _params()))
    abstract = jax.eval_shape(tx.init, _params())  # a template that allocates nothing
    assert _bits(checkpoint.restore(path, abstract)) == _bits(_stepped_state(tx, _params()))


def test_mismatched_structure_names_the_first_differing_path(tmp_path):
    path = tmp_path / "adam.npz"
    checkpoint.save(path, (*optjax.adam(0.1).init(_params()), {"z": jnp.zeros(2)}))
    with pytest.raises(
        ValueError,
        match=r"structure differs at leaf 0: the template has \[0\]\.trace\['b'\] where the "
        r"checkpoint has \[0\]\.count",
    ):
        checkpoint.restore(path, like=optjax.sgd(0.1, momentum=0.9).init(_params()))
    bigger = {**_params(), "c": jnp.zeros(2)}
    with pytest.raises(
        ValueError,
        match=r"the template has \[0\]\.mu\['c'\] where the checkpoint has \[0\]\.mu\['w'\]",
    ):
        checkpoint.restore(path, like=optjax.adam(0.1).init(bigger))
    with pytest.raises(
        ValueError, match=r"the checkpoint has \[2\]\['z'\], which the template lacks"
    ):
        checkpoint.restore(path, like=(*optjax.adam(0.1).init(_params()), {}))
    longer = ({"z": jnp.zeros(2), "zz": jnp.zeros(1)},)
    with pytest.raises(
        ValueError, match=r"the template has \[2\]\['zz'\], which the checkpoint lacks"
    ):
        checkpoint.restore(path, like=optjax.adam(0.1).init(_params()) + longer)


def test_mismatched_shape_or_dtype_names_path_expected_and_found(tmp_path):
    path = tmp_path / "adam.npz"
    checkpoint.save(path, optjax.adam(0.1).init(_params()))
    narrower = {**_params(), "w": jnp.zeros((4, 2))}
    with pytest.raises(
        ValueError,
        match=r"at \[0\]\.mu\['w'\]: expected shape \(4, 2\) dtype float32, "
        r"found shape \(4, 3\) dtype float32",
    ):
        checkpoint.restore(path, like=optjax.adam(0.1).init(narrower))
    f32 = {**_params(), "b": jnp.zeros(3, jnp.float32)}
    with pytest.raises(
        ValueError,
        match=r"at \[0\]\.mu\['b'\]: expected shape \(3,\) dtype float32, "
        r"found shape \(3,\) dtype bfloat16",
    ):
        checkpoint.restore(path, like=optjax.adam(0.1).init(f32))
    checkpoint.save(path, {"count": jnp.array(1, jnp.int32)})
    with pytest.raises(
        ValueError,
        match=r"at \['count'\]: expected shape \(\) dtype float32, found shape \(\) dtype int32",
    ):
        checkpoint.restore(path, like={"count": jnp.array(1.0)})


def test_failed_restore_builds_nothing_and_leaves_the_template_alone(tmp_path):
    tx = optjax.inject_hyperparams(optjax.adam)(learning_rate=0.1)
    path = tmp_path / "state.npz"
    checkpoint.save(path, _stepped_state(tx, _params()))
    like = tx.init({**_params(), "w": jnp.zeros((4, 2))})  # differs only in the last leaves
    before = _bits(like)
    result = "untouched"
    with pytest.raises(ValueError, match=r"\.inner_state\[0\]\.mu\['w'\]"):
        result = checkpoint.restore(path, like)
    assert result == "untouched" and _bits(like) == before
    assert float(like.hyperparams["learning_rate"]) == np.float32(0.1)


def test_unreadable_files_raise(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        checkpoint.restore(garbage, like={})
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(2))
    with pytest.raises(ValueError, match=r"is not an optjax checkpoint \(optjax-checkpoint/1\)"):
        checkpoint.restore(foreign, like={"x": np.zeros(2)})
    truncated = tmp_path / "truncated.npz"
    checkpoint.save(truncated, {"x": jnp.zeros(1000)})
    truncated.write_bytes(truncated.read_bytes()[:-600])
    with pytest.raises(ValueError, match="cannot be read"):
        checkpoint.restore(truncated, like={"x": jnp.zeros(1000)})


def test_save_is_atomic_and_refuses_what_it_cannot_store(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, {"x": jnp.ones(3)})
    good = path.read_bytes()
    with pytest.raises(ValueError, match=r"leaf \['y'\]: expected an array or a number, got str"):
        checkpoint.save(path, {"x": jnp.zeros(3), "y": "text"})
    with pytest.raises(ValueError, match=r"leaf \['x'\] is traced; save outside jit"):
        jax.jit(lambda x: checkpoint.save(path, {"x": x}))(jnp.zeros(3))
    assert path.read_bytes() == good and os.listdir(tmp_path) == ["ckpt.npz"]


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(
    "umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], ids=["022", "077", "002"]
)
def test_a_new_checkpoint_file_gets_the_mode_the_umask_gives(tmp_path, umask, mode):
    path = tmp_path / "ckpt.npz"
    previous = os.umask(umask)
    try:
        checkpoint.save(path, {"x": jnp.ones(3)})
    finally:
        os.umask(previous)
    assert _mode(path) == mode and os.listdir(tmp_path) == ["ckpt.npz"]


def test_saving_over_a_checkpoint_keeps_its_mode(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, {"x": jnp.ones(3)})
    os.chmod(path, 0o640)
    checkpoint.save(path, {"x": jnp.zeros(3)})
    assert _mode(path) == 0o640 and os.listdir(tmp_path) == ["ckpt.npz"]
    np.testing.assert_array_equal(checkpoint.restore(path, {"x": jnp.ones(3)})["x"], np.zeros(3))


def test_another_format_is_refused_even_under_python_O(tmp_path):
    path = tmp_path / "future.npz"
    checkpoint.save(path, {"x": jnp.ones(2)})
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(arrays["manifest"].tobytes())
    header["format"] = "optjax-checkpoint/2"
    arrays["manifest"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(path, **arrays)
    message = (
        rf"checkpoint '{path}' is not an optjax checkpoint \(optjax-checkpoint/1\): "
        r"its format is 'optjax-checkpoint/2'"
    )
    with pytest.raises(ValueError, match=message):
        checkpoint.restore(path, like={"x": jnp.ones(2)})
    # The same check with assert statements stripped (python -O), in a fresh interpreter.
    script = (
        "import sys, numpy as np\n"
        "from optjax import checkpoint\n"
        "assert False, 'never reached: -O strips asserts'\n"
        "try:\n"
        f"    checkpoint.restore({str(path)!r}, like={{'x': np.ones(2, np.float32)}})\n"
        "except ValueError as error:\n"
        "    print(error)\n"
        "else:\n"
        "    sys.exit('restored a checkpoint of another format')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-O", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "its format is 'optjax-checkpoint/2'" in proc.stdout


# resuming a training loop ------------------------------------------------------------------

RESUME = {
    "adam": lambda: optjax.adam(1e-2),
    "inject_hyperparams_adamw": WRAPPED["inject_hyperparams"],
    "MultiSteps_adam": lambda: optjax.MultiSteps(optjax.adam(1e-2), every_k_schedule=3),
    "noise_and_skip": lambda: optjax.apply_if_finite(
        optjax.chain(optjax.add_noise(0.1, seed=3), optjax.adam(1e-2)), 2
    ),  # the state carries PRNG key data
    "multi_transform": lambda: optjax.multi_transform(
        {"hidden": optjax.sgd(0.05, momentum=0.9), "out": optjax.adafactor(1e-2)},
        lambda p: {k: "out" if k == "out" else "hidden" for k in p},
    ),
}


def _mlp_params():
    rng = np.random.default_rng(0)
    return {
        "hidden": {
            "kernel": jnp.asarray(rng.normal(0, 0.4, (6, 16)), jnp.float32),
            "bias": jnp.zeros(16),
        },
        "out": {
            "kernel": jnp.asarray(rng.normal(0, 0.25, (16, 2)), jnp.float32),
            "bias": jnp.zeros(2),
        },
    }


def _batch(t):
    """The t-th batch of a fixed, deterministic data stream."""
    rng = np.random.default_rng(t)
    x = rng.normal(size=(8, 6)).astype(np.float32)
    return x, np.stack([np.sin(x[:, 0]), x[:, 1] * x[:, 2]], axis=1).astype(np.float32)


def _loss(params, x, y):
    h = jnp.tanh(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return jnp.mean((h @ params["out"]["kernel"] + params["out"]["bias"] - y) ** 2)


@pytest.mark.parametrize("name", RESUME)
def test_resumed_run_equals_uninterrupted_run_bit_for_bit(name, tmp_path):
    tx, steps = RESUME[name](), 8

    @jax.jit
    def train_step(params, opt_state, x, y):
        updates, opt_state = tx.update(jax.grad(_loss)(params, x, y), opt_state, params)
        return optjax.apply_updates(params, updates), opt_state

    def train(params, opt_state, start, stop):
        for t in range(start, stop):
            params, opt_state = train_step(params, opt_state, *_batch(t))
        return params, opt_state

    params = _mlp_params()
    with backend_compiles("train_step") as compiles:
        uninterrupted = train(params, tx.init(params), 0, steps)
        half = train(params, tx.init(params), 0, steps // 2)
    path = tmp_path / "run.npz"
    checkpoint.save(path, {"params": half[0], "opt_state": half[1], "step": steps // 2})
    del half  # a new process would start from here: a fresh template, then the file
    template = {"params": _mlp_params(), "opt_state": tx.init(_mlp_params()), "step": 0}
    restored = checkpoint.restore(path, like=template)
    with backend_compiles("train_step") as compiles_after_restore:
        resumed = train(restored["params"], restored["opt_state"], restored["step"], steps)

    assert _bits(resumed) == _bits(uninterrupted)
    assert len(compiles) == 1 and not compiles_after_restore  # the same program runs on
    assert not np.allclose(uninterrupted[0]["out"]["kernel"], params["out"]["kernel"])  # it trained


# a directory of steps: Checkpointer ---------------------------------------------------------


def _run_tree(step=7):
    """Counters, bf16 and fp8, typed PRNG keys, NumPy and Python leaves, and an adam state."""
    return {
        "count": jnp.array(step, jnp.int32),
        "half": jnp.array([1.0, -2.5, 3e-3], jnp.bfloat16),
        "fp8": jnp.array([0.5, -1.0], jnp.float8_e4m3fn),
        "key": jax.random.key(42),
        "keys": jax.random.split(jax.random.key(1), 3),
        "numpy": np.arange(4, dtype=np.int16),
        "python": (step, 2.5, True),
        "opt_state": optjax.adam(0.1).init(_params()),
        "committed": jax.device_put(jnp.arange(3.0), jax.devices()[0]),
        "committed_key": jax.device_put(jax.random.key(3), jax.devices()[0]),
    }


def _reads(monkeypatch, ckpt):
    """The items each orbax restore of ``ckpt`` reads: "manifest" (JSON) or "state" (arrays)."""
    items = []
    original = ckpt._manager.restore

    def restore(step, *args, **kwargs):
        items.extend(kwargs["args"].keys())
        return original(step, *args, **kwargs)

    monkeypatch.setattr(ckpt._manager, "restore", restore)
    return items


def test_checkpointer_round_trip_is_bitwise(tmp_path, monkeypatch):
    tree = _run_tree()
    with checkpoint.Checkpointer(tmp_path / "run") as ckpt:
        ckpt.save(7, tree)
        restored = ckpt.restore(like=tree)  # waits for the save in progress
        abstract = jax.tree.map(  # allocates nothing: shapes, dtypes and shardings
            lambda x: (
                jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
                if isinstance(x, jax.Array)
                else x
            ),
            tree,
        )
        from_abstract = ckpt.restore(like=abstract, step=7)
        reads = _reads(monkeypatch, ckpt)
        ckpt.restore(tree)
    assert reads == ["manifest", "state"]  # what a restore reads, when the template matches
    for got in (restored, from_abstract):
        assert _bits(got) == _bits(tree)
        assert got["python"] == (7, 2.5, True) and isinstance(got["numpy"], np.ndarray)
        assert jax.random.key_impl(got["keys"]) == jax.random.key_impl(tree["keys"])
    assert [type(x) for x in jax.tree.leaves(restored)] == [type(x) for x in jax.tree.leaves(tree)]
    assert not restored["half"].committed  # uncommitted like the template: no recompiling
    for name in ("committed", "committed_key"):  # committed to a device: read straight to it
        assert restored[name].committed and restored[name].sharding == tree[name].sharding


@pytest.mark.parametrize("max_to_keep, kept", [(1, [3]), (2, [2, 3]), (None, [1, 2, 3])])
def test_checkpointer_keeps_the_last_max_to_keep_steps(tmp_path, max_to_keep, kept):
    directory = tmp_path / "run"
    with checkpoint.Checkpointer(directory, max_to_keep=max_to_keep) as ckpt:
        assert ckpt.all_steps() == [] and ckpt.latest_step() is None
        for step in (1, 2, 3):
            ckpt.save(step, {"x": jnp.full(2, step, jnp.int32)})
        ckpt.wait()
        assert ckpt.all_steps() == kept and ckpt.latest_step() == 3
    assert sorted(os.listdir(directory), key=int) == [str(s) for s in kept]
    with checkpoint.Checkpointer(directory, max_to_keep=max_to_keep) as again:
        assert again.all_steps() == kept
        x = again.restore({"x": jnp.zeros(2, jnp.int32)}, step=kept[0])["x"]
    np.testing.assert_array_equal(x, [kept[0]] * 2)


def test_checkpointer_metadata_round_trips(tmp_path, monkeypatch):
    config = {"optimizer": "adam", "lr": 1e-3, "betas": (0.9, 0.999), "mesh": {"data": 8}}
    monkeypatch.chdir(tmp_path)
    with checkpoint.Checkpointer("run", async_save=False) as ckpt:  # a relative path too
        assert ckpt.directory == str(tmp_path / "run")
        ckpt.save(1, {"x": jnp.ones(2)}, metadata=config)
        ckpt.save(2, {"x": jnp.ones(2)})
        assert ckpt.metadata(step=1) == {**config, "betas": [0.9, 0.999]}  # as JSON has it
        assert ckpt.metadata() == {}  # the latest step, saved without any
    with checkpoint.Checkpointer(tmp_path / "run") as again:
        assert again.metadata(1)["betas"] == [0.9, 0.999]


SAVED = (*optjax.adam(0.1).init(_params()), {"z": jnp.zeros(2), "step": 3})
MISMATCHES = {
    "another_optimizer": (
        (*optjax.sgd(0.1, momentum=0.9).init(_params()), {"z": jnp.zeros(2), "step": 3}),
        r"structure differs at leaf 0: the template has \[0\]\.trace\['b'\] where the "
        r"checkpoint has \[0\]\.count",
    ),
    "more_params": (
        optjax.adam(0.1).init({**_params(), "c": jnp.zeros(2)}),
        r"the template has \[0\]\.mu\['c'\] where the checkpoint has \[0\]\.mu\['w'\]",
    ),
    "leaf_missing_from_template": (
        (*SAVED[:2], {"step": 3}),
        r"the checkpoint has \[2\]\['z'\], which the template lacks",
    ),
    "leaf_missing_from_checkpoint": (
        (*SAVED[:2], {**SAVED[2], "zz": jnp.zeros(1)}),
        r"the template has \[2\]\['zz'\], which the checkpoint lacks",
    ),
    "shape": (
        (*optjax.adam(0.1).init({**_params(), "w": jnp.zeros((4, 2))}), SAVED[2]),
        r"at \[0\]\.mu\['w'\]: expected shape \(4, 2\) dtype float32, "
        r"found shape \(4, 3\) dtype float32",
    ),
    "bf16_as_f32": (
        (*optjax.adam(0.1).init({**_params(), "b": jnp.zeros(3)}), SAVED[2]),
        r"at \[0\]\.mu\['b'\]: expected shape \(3,\) dtype float32, "
        r"found shape \(3,\) dtype bfloat16",
    ),
    "count_as_float": (
        (SAVED[0]._replace(count=jnp.zeros([], jnp.float32)), *SAVED[1:]),
        r"at \[0\]\.count: expected shape \(\) dtype float32, found shape \(\) dtype int32",
    ),
    "abstract_dtype": (
        (*SAVED[:2], {"z": jax.ShapeDtypeStruct((2,), jnp.float16), "step": 3}),
        r"at \[2\]\['z'\]: expected shape \(2,\) dtype float16, found shape \(2,\) dtype float32",
    ),
    "python_float_for_int": (
        (*SAVED[:2], {"z": jnp.zeros(2), "step": 3.0}),
        r"at \[2\]\['step'\]: expected shape \(\) dtype float, found shape \(\) dtype int",
    ),
}


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("saved")
    with checkpoint.Checkpointer(directory) as ckpt:
        ckpt.save(0, SAVED)
    return directory


@pytest.mark.parametrize("case", MISMATCHES)
def test_checkpointer_refuses_a_mismatch_naming_the_path_and_reads_no_array(
    case, saved_dir, monkeypatch
):
    like, message = MISMATCHES[case]
    before = _bits(like)
    with checkpoint.Checkpointer(saved_dir) as ckpt:
        reads = _reads(monkeypatch, ckpt)
        result = "untouched"
        with pytest.raises(ValueError, match=message) as error:
            result = ckpt.restore(like)
    assert f"checkpoint '{saved_dir / '0'}' does not match the template" in str(error.value)
    assert reads == ["manifest"]  # the arrays were never read
    assert result == "untouched" and _bits(like) == before


def test_checkpointer_checks_the_stored_arrays_against_the_manifest(tmp_path):
    with checkpoint.Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(0, {"x": jnp.zeros(3), "y": jnp.zeros(2)})
    manifest = tmp_path / "0" / "manifest" / "metadata"
    header = json.loads(manifest.read_text())
    header["leaves"][1].update(shape=[4], data_shape=[4])  # the arrays orbax holds disagree
    manifest.write_text(json.dumps(header))
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        with pytest.raises(
            ValueError, match=r"at \['y'\]: the stored data is missing or does not match"
        ):
            ckpt.restore({"x": jnp.zeros(3), "y": jnp.zeros(4)})
        header["format"] = "optjax-sharded-checkpoint/2"
        manifest.write_text(json.dumps(header))
        with pytest.raises(ValueError, match=r"its format is 'optjax-sharded-checkpoint/2'"):
            ckpt.restore({"x": jnp.zeros(3), "y": jnp.zeros(2)})
        manifest.unlink()
        with pytest.raises(ValueError, match=r"is not an optjax checkpoint"):
            ckpt.restore({"x": jnp.zeros(3), "y": jnp.zeros(2)})


def _hold_commits(monkeypatch):
    """Orbax's last act of a save, renaming ``<step>.orbax-checkpoint-tmp`` to ``<step>``, held
    back: ``reached`` is set when a save gets there (all else written), and the rename waits
    for ``release``."""
    from orbax.checkpoint._src.path import atomicity

    reached, release = threading.Event(), threading.Event()
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def held(self):
        reached.set()
        await asyncio.to_thread(release.wait, 60)
        return await finalize(self)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", held)
    return reached, release


def test_a_step_is_listed_only_once_complete(tmp_path, monkeypatch):
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, {"x": jnp.ones(3)})
        ckpt.wait()
        reached, release = _hold_commits(monkeypatch)
        ckpt.save(2, {"x": jnp.full(3, 2.0)})  # returns; the files are written in the background
        try:
            assert reached.wait(60)  # all written, but for the rename that completes the step
            assert ckpt.all_steps() == [1] and ckpt.latest_step() == 1
            assert sorted(os.listdir(tmp_path)) == ["1", "2.orbax-checkpoint-tmp"]
            with checkpoint.Checkpointer(tmp_path) as reader:  # another process's view
                assert reader.all_steps() == [1]
                np.testing.assert_array_equal(reader.restore({"x": jnp.zeros(3)})["x"], 1.0)
        finally:
            release.set()
        ckpt.wait()
        assert ckpt.all_steps() == [1, 2] and sorted(os.listdir(tmp_path)) == ["1", "2"]


def test_a_killed_save_leaves_no_step(tmp_path):
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, {"x": jnp.ones(3)})
    partial = tmp_path / "2.orbax-checkpoint-tmp"  # what a save killed midway leaves
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "half_written").write_bytes(b"\0" * 10)
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        assert ckpt.all_steps() == [1] and ckpt.latest_step() == 1
        np.testing.assert_array_equal(ckpt.restore({"x": jnp.zeros(3)})["x"], 1.0)
        ckpt.save(2, {"x": jnp.full(3, 2.0)})  # the same step again replaces the leftovers
        np.testing.assert_array_equal(ckpt.restore({"x": jnp.zeros(3)})["x"], 2.0)
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]


def test_checkpointer_saves_nothing_it_cannot_store(tmp_path):
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        with pytest.raises(ValueError, match=r"leaf \['y'\]: expected an array or a number"):
            ckpt.save(1, {"x": jnp.zeros(3), "y": "text"})
        with pytest.raises(ValueError, match=r"leaf \['x'\] is traced; save outside jit"):
            jax.jit(lambda x: ckpt.save(1, {"x": x}))(jnp.zeros(3))
        ckpt.save(1, {})  # an empty tree is a checkpoint too
        assert ckpt.restore({}) == {} and ckpt.all_steps() == [1]
    assert os.listdir(tmp_path) == ["1"]


BAD_ARGUMENTS = {
    "directory_is_a_file": (
        {"directory": "a_file"},
        r"directory must be a directory, or a path where one can be made; got directory='.*"
        r"a_file', which is a file",
    ),
    "directory_empty": ({"directory": ""}, r"directory must be a path .*got directory=''$"),
    "directory_int": ({"directory": 3}, r"directory must be a path .*got directory=3$"),
    "max_to_keep_0": (
        {"max_to_keep": 0},
        r"max_to_keep must be an integer >= 1, or None to keep every step; got max_to_keep=0$",
    ),
    "max_to_keep_negative": ({"max_to_keep": -2}, r"integer >= 1.* got max_to_keep=-2$"),
    "max_to_keep_float": ({"max_to_keep": 2.0}, r"integer >= 1.* got max_to_keep=2\.0$"),
    "max_to_keep_bool": ({"max_to_keep": True}, r"integer >= 1.* got max_to_keep=True$"),
    "max_to_keep_str": ({"max_to_keep": "3"}, r"integer >= 1.* got max_to_keep='3'$"),
    "async_save_int": ({"async_save": 1}, r"async_save must be True or False, got async_save=1$"),
    "async_save_none": ({"async_save": None}, r"True or False, got async_save=None$"),
}


@pytest.mark.parametrize("case", BAD_ARGUMENTS)
def test_checkpointer_refuses_bad_arguments(tmp_path, monkeypatch, case):
    kwargs, message = BAD_ARGUMENTS[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match=message):
        checkpoint.Checkpointer(**{"directory": "run", **kwargs})
    assert sorted(os.listdir(tmp_path)) == ["a_file"]  # nothing made


BAD_STEPS = [-1, 1.0, 2.5, "3", True, None, np.float32(2), jnp.array(3)]


@pytest.mark.parametrize("step", BAD_STEPS, ids=repr)
def test_checkpointer_refuses_a_bad_step(tmp_path, step):
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        with pytest.raises(ValueError, match=r"step must be an integer >= 0, got step="):
            ckpt.save(step, {"x": jnp.zeros(1)})
        ckpt.save(5, {"x": jnp.zeros(1)})
        if step is not None:  # None asks restore for the latest step
            with pytest.raises(ValueError, match=r"step must be an integer >= 0, got step="):
                ckpt.restore({"x": jnp.zeros(1)}, step=step)
        ckpt.wait()
        assert ckpt.all_steps() == [5]


def test_checkpointer_refuses_steps_it_does_not_have_or_cannot_add(tmp_path):
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        for read in (lambda: ckpt.restore({"x": jnp.zeros(1)}), ckpt.metadata):
            with pytest.raises(ValueError, match=r"step=None asks for the latest checkpoint, "):
                read()
        ckpt.save(5, {"x": jnp.zeros(1)})
        for step in (5, 4, 0):  # orbax would skip these without a word
            with pytest.raises(
                ValueError, match=rf"greater than the latest saved step 5, got step={step}$"
            ):
                ckpt.save(step, {"x": jnp.zeros(1)})
        with pytest.raises(ValueError, match=r"one of the saved steps \[5\], got step=7"):
            ckpt.restore({"x": jnp.zeros(1)}, step=7)
        with pytest.raises(ValueError, match=r"one of the saved steps \[5\], got step=4"):
            ckpt.metadata(step=4)


@pytest.mark.parametrize(
    "metadata",
    [[1, 2], "lr=0.1", {"lr": np.float32(0.1)}, {"f": print}, {"nested": {1, 2}}],
    ids=["list", "str", "numpy_float", "function", "set"],
)
def test_checkpointer_refuses_metadata_json_cannot_hold(tmp_path, metadata):
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        with pytest.raises(ValueError, match=r"metadata must be a JSON-serialisable dict or None"):
            ckpt.save(1, {"x": jnp.zeros(1)}, metadata=metadata)
        assert ckpt.all_steps() == []
    assert os.listdir(tmp_path) == []
