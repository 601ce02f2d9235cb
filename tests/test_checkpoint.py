"""Checkpoints: every optimizer's state round-trips bit for bit; a mismatching template fails
naming the first differing path; a resumed run equals the uninterrupted one bit for bit."""

import json
import os
import stat
import subprocess
import sys

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
