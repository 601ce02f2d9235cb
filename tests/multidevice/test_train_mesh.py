"""The training harness on 8 simulated devices: data-parallel runs (the batch split over the
mesh's data axis), with the optimizer state split (ZeRO-1) or the parameters too (FSDP), give
the one-device run's losses and accuracies; a resumed run continues on its devices."""

import jax
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import optjax
from optjax.train import MLP, Dataset, RunConfig, train
from optjax.train import loop as train_loop


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (512, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 512).astype(np.int32)
    return Dataset("noise", images, labels, images[:200], labels[:200])


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))


RUN = {"steps": 20, "batch_size": 32, "seeds": [0, 1], "log_every": 10, "eval_batch_size": 40}


@pytest.fixture(scope="module")
def one_device(data):
    return train(MLP, optjax.adam(1e-3), data, **RUN)


@pytest.mark.parametrize("layout", [{}, {"zero": True}, {"fsdp": True}], ids=str)
def test_eight_devices_give_the_one_device_run(data, mesh, one_device, layout):
    result = train(MLP, optjax.adam(1e-3), data, **RUN, mesh=mesh, **layout)
    np.testing.assert_allclose(
        result.history["train_loss"], one_device.history["train_loss"], rtol=1e-5
    )
    np.testing.assert_allclose(
        result.history["test_loss"], one_device.history["test_loss"], rtol=1e-5
    )
    np.testing.assert_array_equal(
        result.history["test_accuracy"], one_device.history["test_accuracy"]
    )
    kernel = result.params["layers"][0]["kernel"]  # (runs, 784, 100)
    assert kernel.sharding.spec == (P(None, "data", None) if layout.get("fsdp") else P())


@pytest.mark.parametrize("layout", [{"zero": True}, {"fsdp": True}], ids=str)
def test_zero_and_fsdp_split_the_optimizer_state(data, mesh, layout):
    config = RunConfig(**{k: v for k, v in RUN.items() if k != "seeds"}, mesh=mesh, **layout)
    runs = train_loop._Runs([0, 1], None)
    setup = train_loop._setup(MLP, lambda _: optjax.adam(1e-3), runs, data, config)
    mu = setup.state.opt_state[0].mu["layers"][0]["kernel"]  # (runs, 784, 100)
    assert mu.addressable_shards[0].data.nbytes * 8 == mu.nbytes  # an eighth per device
    small = setup.state.opt_state[0].mu["layers"][1]["kernel"]  # (runs, 100, 10): under 1024
    assert small.sharding.is_fully_replicated
    assert setup.steps._indices(1).sharding.spec == P(None, None, "data")  # each batch split


@pytest.fixture(scope="module")
def zero_run(data, mesh):
    return train(MLP, optjax.adam(1e-3), data, **RUN, mesh=mesh, zero=True)


@pytest.mark.parametrize(
    "devices, layout",
    [(8, {"zero": True}), (4, {"fsdp": True}), (1, {})],
    ids=["same mesh", "4 devices, fsdp", "1 device"],
)
def test_a_resumed_mesh_run_equals_the_uninterrupted_one(
    data, mesh, zero_run, tmp_path, devices, layout
):
    """Saved from 8 devices with the state split (ZeRO-1), resumed on the same mesh, on 4 with
    the parameters split too, or on one: each device reads its part, and the run goes on as
    if never stopped."""
    path = tmp_path / "run"
    options = {**RUN, "mesh": mesh, "zero": True}
    train(MLP, optjax.adam(1e-3), data, **{**options, "steps": 10}, checkpoint=path)
    other = {k: v for k, v in options.items() if k not in ("mesh", "zero")}
    if devices > 1:
        other["mesh"] = jax.make_mesh(
            (devices,), ("data",), axis_types=(AxisType.Auto,), devices=jax.devices()[:devices]
        )
    resumed = train(MLP, optjax.adam(1e-3), data, **other, **layout, checkpoint=path, resume=True)
    whole = zero_run
    np.testing.assert_allclose(
        resumed.history["train_loss"][-1], whole.history["train_loss"][-1], rtol=1e-5
    )
    kernel = resumed.params["layers"][0]["kernel"]
    np.testing.assert_allclose(kernel, whole.params["layers"][0]["kernel"], rtol=1e-5, atol=1e-7)
    if devices == 8:  # the same devices, the same layout: the same bits
        np.testing.assert_array_equal(kernel, whole.params["layers"][0]["kernel"])


def test_mesh_options_are_checked(mesh):
    bad = [
        ({"mesh": "data"}, "mesh must be a jax.sharding.Mesh with a 'data' axis"),
        ({"mesh": jax.make_mesh((8,), ("model",))}, "with a 'data' axis"),
        ({"zero": True}, "zero=True needs mesh="),
        ({"fsdp": True}, "fsdp=True needs mesh="),
        ({"mesh": mesh, "zero": True, "fsdp": True}, "choose one"),
        ({"mesh": mesh, "batch_size": 12}, r"batch_size must be a multiple of .* \(8 devices\)"),
        ({"mesh": mesh, "eval_batch_size": 100}, "eval_batch_size must be a multiple"),
        ({"mesh": mesh, "flat": True}, "flat=True is not supported with mesh="),
        ({"mesh": mesh, "zero": 1}, "zero must be True or False"),
    ]
    for options, message in bad:
        with pytest.raises(ValueError, match=message):
            RunConfig(steps=10, **{"batch_size": 32, "eval_batch_size": 40, **options})
