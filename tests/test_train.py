"""Models, the train step (against a NumPy float64 backprop), vmapped runs against separate
runs, optax and nnx.Optimizer interplay, and a real-data MNIST run."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from real_data import MNIST_DIR, needs_mnist

import optjax
from optjax.train import (
    CNN,
    MLP,
    Dataset,
    eval_graphdef,
    init_runs,
    init_train_state,
    load_dataset,
    make_train_step,
    sweep,
    train,
)


def synthetic(n_train=240, n_test=120, seed=0) -> Dataset:
    """Learnable images: the label is the horizontal band (of 10) that is brightest."""
    rng = np.random.default_rng(seed)

    def split(n):
        labels = rng.integers(0, 10, n).astype(np.int32)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, y in enumerate(labels):
            images[i, 2 + 2 * y : 4 + 2 * y] += 150
        return images, labels

    (a, b), (c, d) = split(n_train), split(n_test)
    return Dataset("synthetic", a, b, c, d)


DS = synthetic()
SMALL = {"steps": 40, "batch_size": 32, "log_every": 20}


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def run_params(result, i):
    return [x[i] for x in leaves(result.params)]


def assert_trees_close(a, b, rtol=2e-4, atol=2e-6):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


# ---------------------------------------------------------------- models


def test_mlp_default_is_784_100_10_and_hidden_sizes_are_configurable():
    model = MLP(rngs=nnx.Rngs(0))
    assert [layer.kernel.shape for layer in model.layers] == [(784, 100), (100, 10)]
    deep = nnx.eval_shape(lambda: MLP(hidden=(64, 32), num_classes=5, rngs=nnx.Rngs(0)))
    assert [layer.kernel.shape for layer in deep.layers] == [(784, 64), (64, 32), (32, 5)]


def test_mlp_forward_is_relu_network():
    model = MLP(hidden=(7,), rngs=nnx.Rngs(1))
    x = np.random.default_rng(0).random((3, 28, 28)).astype(np.float32)
    (w1, b1), (w2, b2) = [
        (np.float64(layer.kernel[...]), np.float64(layer.bias[...])) for layer in model.layers
    ]
    expected = np.maximum(x.reshape(3, -1) @ w1 + b1, 0) @ w2 + b2
    np.testing.assert_allclose(model(jnp.asarray(x)), expected, rtol=1e-4, atol=1e-5)


def test_cnn_shapes():
    def build_and_call(images):
        model = CNN(channels=(4, 8), hidden=16, rngs=nnx.Rngs(0))
        return model.dense.kernel[...], model(images)

    for shape in [(2, 28, 28), (2, 28, 28, 1)]:
        kernel, logits = jax.eval_shape(build_and_call, jax.ShapeDtypeStruct(shape, jnp.float32))
        assert kernel.shape == (7 * 7 * 8, 16) and logits.shape == (2, 10)


@pytest.mark.parametrize("init", ["lecun", "torch"])
def test_weight_inits(init):
    layer = MLP(hidden=(400,), init=init, rngs=nnx.Rngs(0)).layers[0]
    w, b = np.asarray(layer.kernel[...]), np.asarray(layer.bias[...])
    bound = 1 / np.sqrt(784)
    if init == "torch":  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases
        assert (
            np.abs(w).max() <= bound and np.abs(b).max() <= bound and np.abs(b).max() > 0.5 * bound
        )
        np.testing.assert_allclose(w.std(), bound / np.sqrt(3), rtol=0.02)
    else:  # LeCun normal: variance 1/fan_in, zero biases
        np.testing.assert_allclose(w.std(), bound, rtol=0.02)
        assert not b.any()


def test_bad_model_arguments():
    with pytest.raises(
        ValueError, match=r"init must be one of \['lecun', 'torch'\], got init='xavier'"
    ):
        MLP(init="xavier", rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match="layer size 1 must be an integer >= 1, got layer size 1=0"
    ):
        MLP(hidden=(0,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"channels must hold 2 values, got channels=\(8,\)"):
        CNN(channels=(8,), rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=r"dropout rates must be in \[0, 1\), got dropout=\(0.5, 1.0\)"
    ):
        CNN(dropout=(0.5, 1.0), rngs=nnx.Rngs(0))


# ---------------------------------------------------------------- the train step


def numpy_sgd_step(params, x, y, lr):
    """One SGD step of the 784-H-10 ReLU MLP with mean cross-entropy, by hand in float64."""
    w1, b1, w2, b2 = (np.float64(p) for p in params)
    h_pre = x @ w1 + b1
    h = np.maximum(h_pre, 0)
    logits = h @ w2 + b2
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    n = len(y)
    loss = -np.log(p[np.arange(n), y]).mean()
    d_logits = (p - np.eye(10)[y]) / n
    d_w2, d_b2 = h.T @ d_logits, d_logits.sum(0)
    d_h = d_logits @ w2.T * (h_pre > 0)
    d_w1, d_b1 = x.T @ d_h, d_h.sum(0)
    new = [w1 - lr * d_w1, b1 - lr * d_b1, w2 - lr * d_w2, b2 - lr * d_b2]
    return loss, new


def mlp_arrays(params):
    layers = params["layers"]
    return [layers[0]["kernel"], layers[0]["bias"], layers[1]["kernel"], layers[1]["bias"]]


def test_train_step_is_sgd_on_cross_entropy():
    tx = optjax.sgd(0.5)
    graphdef, state = init_train_state(MLP(hidden=(32,), rngs=nnx.Rngs(0)), tx)
    x = DS.train_images[:50].reshape(50, -1).astype(np.float32) / 255
    y = DS.train_labels[:50]
    before = [np.asarray(a) for a in mlp_arrays(state.params)]
    expected_loss, expected = numpy_sgd_step(before, x, y, 0.5)
    step = make_train_step(graphdef, tx)
    state, loss, acc = step(state, jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    assert 0 <= float(acc) <= 1
    assert_trees_close(
        [np.asarray(a) for a in mlp_arrays(state.params)], expected, rtol=1e-4, atol=1e-6
    )


def test_train_step_donates_the_state_and_leaves_the_model_alone():
    model = MLP(hidden=(8,), rngs=nnx.Rngs(0))
    tx = optjax.adam(1e-3)
    graphdef, state = init_train_state(model, tx)
    step = make_train_step(graphdef, tx)
    new_state, _, _ = step(state, jnp.zeros((4, 28, 28)), jnp.zeros(4, jnp.int32))
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state))
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(new_state))
    assert model(jnp.zeros((1, 784))).shape == (1, 10)  # the model's own arrays are intact


def test_runs_are_initialised_like_the_model_with_that_seed():
    _, params, other = init_runs("mlp", [5, 3])
    reference = nnx.as_pure(nnx.state(MLP(rngs=nnx.Rngs(3)), nnx.Param))
    assert_trees_close([x[1] for x in leaves(params)], leaves(reference), rtol=0, atol=0)
    kernel = leaves(params)[1]
    assert kernel.shape == (2, 784, 100) and not np.array_equal(kernel[0], kernel[1])
    assert jax.tree.leaves(other) == []


# ---------------------------------------------------------------- many runs in one program


@pytest.fixture(scope="module")
def seed1_adam():
    """The reference: one separate run with seed 1 and optjax.adam(1e-2)."""
    return train("mlp", optjax.adam(1e-2), DS, seeds=[1], **SMALL)


def test_vmapped_seeds_match_separate_runs(seed1_adam):
    together = train("mlp", optjax.adam(1e-2), DS, seeds=[0, 1], **SMALL)
    alone0 = train("mlp", optjax.adam(1e-2), DS, seeds=[0], **SMALL)
    assert_trees_close(run_params(together, 1), run_params(seed1_adam, 0))
    assert_trees_close(run_params(together, 0), run_params(alone0, 0))
    np.testing.assert_allclose(
        together.history["train_loss"][:, 1], seed1_adam.history["train_loss"][:, 0], rtol=1e-5
    )
    np.testing.assert_allclose(
        together.test_accuracies,
        [alone0.runs[0].test_accuracy, seed1_adam.runs[0].test_accuracy],
        atol=1 / 120,
    )
    # The two seeds are different runs (different init and data order), and both learned.
    assert not np.allclose(run_params(together, 0)[0], run_params(together, 1)[0])
    assert together.test_accuracies.min() > 0.5
    assert together.mean == pytest.approx(together.test_accuracies.mean())
    assert together.std == pytest.approx(np.std(together.test_accuracies, ddof=1))


def test_learning_rate_sweep_matches_fixed_rate_runs(seed1_adam):
    result = sweep("mlp", optjax.adam, DS, learning_rates=[1e-3, 1e-2], seeds=[1], **SMALL)
    assert [(r.learning_rate, r.seed) for r in result.runs] == [(1e-3, 1), (1e-2, 1)]
    assert_trees_close(run_params(result, 1), run_params(seed1_adam, 0))
    assert not np.allclose(run_params(result, 0)[0], run_params(result, 1)[0])


def test_optax_transforms_train_like_optjax_ones(seed1_adam):
    # optax's adam mixes a weak float and an int32 count, which strict promotion rejects.
    with jax.numpy_dtype_promotion("standard"):
        result = train("mlp", optax.adam(1e-2), DS, seeds=[1], **SMALL)
    # Same update rule, different float32 rounding: Adam amplifies it where sqrt(v) ~ eps.
    assert_trees_close(run_params(result, 0), run_params(seed1_adam, 0), rtol=1e-4, atol=5e-5)


def test_history_and_evaluation_schedule():
    calls = []
    result = train(
        "mlp",
        optjax.sgd,
        DS,
        learning_rate=0.1,
        steps=50,
        batch_size=16,
        log_every=10,
        eval_every=20,
        seeds=[0, 1, 2],
        callback=calls.append,
    )
    h = result.history
    assert h["step"].tolist() == [10, 20, 30, 40, 50] and h["train_loss"].shape == (5, 3)
    assert h["eval_step"].tolist() == [20, 40, 50] and h["test_accuracy"].shape == (3, 3)
    assert [c.step for c in calls] == [10, 20, 30, 40, 50]
    assert [c.test_accuracy is not None for c in calls] == [False, True, False, True, True]
    assert calls[-1].test_accuracy == pytest.approx(result.mean)
    assert (
        result.runs[2].learning_rate == 0.1
        and result.compile_seconds > 0
        and result.steps_per_second > 0
    )
    model = result.model(2)
    logits = model(jnp.asarray(DS.test_images, jnp.float32) / 255)
    accuracy = float((jnp.argmax(logits, -1) == DS.test_labels).mean())
    assert accuracy == pytest.approx(result.runs[2].test_accuracy, abs=1e-6)
    assert h["train_loss"][-1].mean() < h["train_loss"][0].mean()


class StatefulMLP(nnx.Module):
    """An MLP with state besides its parameters: batch statistics and a dropout RNG stream."""

    def __init__(self, rngs):
        self.hidden = nnx.Linear(784, 32, rngs=rngs)
        self.norm = nnx.BatchNorm(32, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.out = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.norm(self.hidden(x.reshape(len(x), -1))))
        return self.out(self.drop(x))


def test_models_with_dropout_and_batch_norm():
    # SGD, not Adam: batch norm makes the first layer's bias gradient zero up to rounding, which
    # Adam would blow up into full-size steps of arbitrary sign.
    together = train(StatefulMLP, optjax.sgd(0.1), DS, seeds=[0, 1], **SMALL)
    alone = train(StatefulMLP, optjax.sgd(0.1), DS, seeds=[1], **SMALL)
    assert_trees_close(run_params(together, 1), run_params(alone, 0))
    other = together.other
    assert np.asarray(other["drop"]["rngs"]["count"]).tolist() == [40, 40]  # one draw per step
    assert np.abs(np.asarray(other["norm"]["mean"])).min() > 0  # running statistics were updated
    # The result's model is in evaluation mode: dropout off, running averages; it reproduces the
    # reported test accuracy.
    model = together.model(1)
    assert model.drop.deterministic and model.norm.use_running_average
    logits = model(jnp.asarray(DS.test_images, jnp.float32) / 255)
    accuracy = float((jnp.argmax(logits, -1) == DS.test_labels).mean())
    assert accuracy == pytest.approx(together.runs[1].test_accuracy, abs=1e-6)


def test_cnn_train_step_uses_dropout_in_training_only():
    tx = optjax.adam(1e-3)
    graphdef, state = init_train_state(CNN(channels=(2, 4), hidden=8, rngs=nnx.Rngs(0)), tx)
    step = make_train_step(graphdef, tx)
    x, y = jnp.asarray(DS.train_images[:8], jnp.float32) / 255, jnp.asarray(DS.train_labels[:8])
    for _ in range(2):
        state, loss, _ = step(state, x, y)
    assert np.isfinite(float(loss))
    counts = [int(d["rngs"]["count"]) for d in state.other["dropouts"].values()]
    assert counts == [2, 2]  # one draw per step in each dropout layer
    model = nnx.merge(eval_graphdef(graphdef, state.params, state.other), state.params, state.other)
    assert all(d.deterministic for d in model.dropouts)
    np.testing.assert_array_equal(model(x), model(x))


def test_nnx_optimizer_accepts_optjax_transforms():
    model = MLP(hidden=(16,), rngs=nnx.Rngs(0))
    x, y = jnp.asarray(DS.train_images[:20], jnp.float32) / 255, jnp.asarray(DS.train_labels[:20])
    tx = optjax.adam(1e-2)
    graphdef, state = init_train_state(model, tx)
    expected = make_train_step(graphdef, tx)(state, x, y)[0].params

    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def update(model, optimizer):
        loss_fn = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
        optimizer.update(model, nnx.grad(loss_fn)(model))

    update(model, optimizer)
    assert_trees_close(
        leaves(nnx.as_pure(nnx.state(model, nnx.Param))), leaves(expected), rtol=1e-5, atol=1e-7
    )


def test_bad_training_arguments():
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got steps=0"):
        train("mlp", optjax.adam(1e-3), DS, steps=0)
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, 240\].*got batch_size=500"):
        train("mlp", optjax.adam(1e-3), DS, steps=5, batch_size=500)
    with pytest.raises(ValueError, match="model must be one of \\['cnn', 'mlp'\\]"):
        train("resnet", optjax.adam(1e-3), DS, steps=5)
    with pytest.raises(ValueError, match="needs learning_rate="):
        train("mlp", optjax.adam, DS, steps=5)
    with pytest.raises(ValueError, match="this optimizer is a transform already"):
        train("mlp", optjax.adam(1e-3), DS, steps=5, learning_rate=1e-3)
    with pytest.raises(ValueError, match="learning_rate must be a finite number >= 0"):
        sweep("mlp", optjax.adam, DS, learning_rates=[1e-3, -1.0], steps=5)
    with pytest.raises(ValueError, match="sweep needs an optimizer factory"):
        sweep("mlp", optjax.adam(1e-3), DS, learning_rates=[1e-3], steps=5)
    with pytest.raises(ValueError, match="seeds must hold at least one seed"):
        train("mlp", optjax.adam(1e-3), DS, steps=5, seeds=[])


# ---------------------------------------------------------------- real data


@needs_mnist
def test_mlp_with_adam_learns_mnist():
    ds = load_dataset("mnist", MNIST_DIR, download_missing=False)
    result = train(
        "mlp", optjax.adam(1e-3), ds, steps=3000, batch_size=100, seeds=[0], log_every=500
    )
    assert result.runs[0].test_accuracy >= 0.965, result.runs


def _noise_dataset():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (256, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 256).astype(np.int32)
    return Dataset("noise", images, labels, images[:64], labels[:64])


@pytest.mark.parametrize(
    "make_tx",
    [
        lambda: optjax.adam(1e-3),
        lambda: optjax.inject_hyperparams(optjax.sgd)(
            learning_rate=optjax.cosine_decay_schedule(0.1, 12), momentum=0.9
        ),
        lambda: optjax.MultiSteps(optjax.adamw(1e-3), every_k_schedule=2),
    ],
    ids=["adam", "inject_hyperparams", "MultiSteps"],
)
def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path, make_tx):
    data, path = _noise_dataset(), tmp_path / "run"
    common = {"batch_size": 16, "seeds": [0, 1], "log_every": 3}
    whole = train(MLP, make_tx(), data, steps=12, **common)
    train(MLP, make_tx(), data, steps=6, checkpoint=str(path), **common)
    resumed = train(MLP, make_tx(), data, steps=12, checkpoint=str(path), resume=True, **common)
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(
        jax.tree.leaves(whole.params)[0],
        jax.tree.leaves(train(MLP, make_tx(), data, steps=6, **common).params)[0],
    )  # the second half did move the params


def test_resume_errors(tmp_path):
    data, path = _noise_dataset(), str(tmp_path / "run")
    adam = optjax.adam(1e-3)
    with pytest.raises(ValueError, match="resume=True needs checkpoint=DIR"):
        train(MLP, adam, data, steps=4, batch_size=16, resume=True)
    with pytest.raises(ValueError, match=r"resume=True, but checkpoint='.*' holds no step"):
        train(MLP, adam, data, steps=4, batch_size=16, checkpoint=path, resume=True)
    train(MLP, adam, data, steps=4, batch_size=16, log_every=2, checkpoint=path, seeds=[0, 1])
    common = {"checkpoint": path, "batch_size": 16, "seeds": [0, 1]}
    with pytest.raises(ValueError, match=r"holds steps \[2, 4\] already: pass resume=True"):
        train(MLP, adam, data, steps=8, **common)  # a new run never writes over a saved one
    with pytest.raises(ValueError, match="is at step 4; steps=4 leaves nothing to run"):
        train(MLP, adam, data, steps=4, resume=True, **common)
    with pytest.raises(ValueError, match=r"does not match the template: the checkpoint has "):
        train(MLP, optjax.sgd(0.1), data, steps=8, resume=True, **common)
    # Settings that differ from the saved ones are refused, naming the first.
    for changed, message in [
        ({"batch_size": 32}, "it was saved with batch_size=16, this run has batch_size=32"),
        ({"seeds": [0, 2]}, r"it was saved with seeds=\[0, 1\], this run has seeds=\[0, 2\]"),
        ({"seeds": [0]}, r"it was saved with seeds=\[0, 1\], this run has seeds=\[0\]"),
        ({"flat": True}, "it was saved with flat=False, this run has flat=True"),
        ({"settings": {"note": "x"}}, "it was saved with note=None, this run has note='x'"),
    ]:
        with pytest.raises(ValueError, match=f"cannot resume from '.*': {message}$"):
            train(MLP, adam, data, steps=8, resume=True, **{**common, **changed})
    with pytest.raises(ValueError, match="it was saved with dataset='noise', this run has "):
        train(MLP, adam, dataclasses.replace(data, name="other"), steps=8, resume=True, **common)


def _small_cnn(rngs):  # the CNN's layers (convolutions, pooling, dropout), a few channels each
    return CNN(channels=(4, 8), hidden=32, rngs=rngs)


@pytest.mark.parametrize("model", ["mlp", _small_cnn], ids=["mlp", "cnn"])
def test_flat_training_matches_the_tree_path(model, tmp_path):
    data, path = _noise_dataset(), tmp_path / "flat"

    def make_tx():  # no Adam here: it amplifies rounding where sqrt(v) ~ eps
        return optjax.chain(
            optjax.clip_by_global_norm(1.0),
            optjax.add_decayed_weights(1e-2),
            optjax.sgd(0.1, momentum=0.9, nesterov=True),
        )

    common = {"steps": 6, "batch_size": 16, "seeds": [0, 1], "log_every": 3}
    tree = train(model, make_tx(), data, **common)
    flat = train(model, make_tx(), data, flat=True, **common)
    assert jax.tree.structure(flat.params) == jax.tree.structure(tree.params)
    # The global norm is summed in another order on the buffers: equal to float32 rounding.
    assert_trees_close(leaves(flat.params), leaves(tree.params), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flat.history["train_loss"], tree.history["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(flat.test_accuracies, tree.test_accuracies)
    # The flat state checkpoints and resumes like the tree one.
    train(model, make_tx(), data, flat=True, checkpoint=str(path), **{**common, "steps": 3})
    with pytest.raises(ValueError, match="it was saved with flat=True, this run has flat=False"):
        train(model, make_tx(), data, checkpoint=str(path), resume=True, **common)
    resumed = train(model, make_tx(), data, flat=True, checkpoint=str(path), resume=True, **common)
    for a, b in zip(leaves(flat.params), leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(a, b)
