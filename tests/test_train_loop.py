"""The training loop's configuration (RunConfig: checked once, shared by train and sweep), and
evaluation in padded batches against one plain pass over the whole test set."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train import DS, _noise_dataset

import optjax
from optjax.train import MLP, RunConfig, sweep, train


def small_mlp(rngs):
    return MLP(hidden=(16,), rngs=rngs)


# ---------------------------------------------------------------- evaluation


def numpy_loss_and_accuracy(logits, labels):
    """Mean cross-entropy and accuracy of a whole set, in float64, by hand."""
    logits = np.asarray(logits, np.float64)
    z = logits - logits.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    nll = -log_probs[np.arange(len(labels)), labels]
    return nll.mean(), (logits.argmax(axis=1) == labels).mean()


@pytest.mark.parametrize("eval_batch_size", [50, 7, 1000])
def test_evaluation_in_padded_batches_equals_one_pass_over_the_test_set(eval_batch_size):
    # 120 test images: batches of 50 end with 20 real images and 30 padded ones, batches of 7
    # with 1 and 6; 1000 is more than the test set (one batch of 120).
    assert len(DS.test_labels) == 120
    result = train(
        small_mlp,
        optjax.sgd(0.1),
        DS,
        steps=4,
        batch_size=32,
        log_every=2,
        seeds=[0, 1],
        eval_batch_size=eval_batch_size,
    )
    images = jnp.asarray(DS.test_images, jnp.float32) / 255
    for i, run in enumerate(result.runs):
        logits = result.model(i)(images)  # the trained model on the whole test set at once
        loss, acc = numpy_loss_and_accuracy(logits, DS.test_labels)
        assert run.test_loss == pytest.approx(loss, rel=1e-5)
        assert run.test_accuracy == pytest.approx(acc, abs=1e-6)
        assert result.history["test_loss"][-1, i] == pytest.approx(loss, rel=1e-5)


# ---------------------------------------------------------------- the configuration


@pytest.mark.parametrize(
    "options, message",
    [
        ({"steps": 0}, "steps must be an integer >= 1, got steps=0"),
        ({"steps": 2.5}, "steps must be an integer >= 1, got steps=2.5"),
        ({"batch_size": -1}, "batch_size must be an integer >= 1, got batch_size=-1"),
        ({"log_every": 0}, "log_every must be an integer >= 1, got log_every=0"),
        ({"eval_every": 0}, "eval_every must be an integer >= 1, got eval_every=0"),
        ({"eval_batch_size": True}, "eval_batch_size must be an integer >= 1, got "),
        ({"resume": "yes"}, "resume must be True or False, got resume='yes'"),
        ({"flat": 1}, "flat must be True or False, got flat=1"),
        ({"zero": "yes"}, "zero must be True or False, got zero='yes'"),
        ({"fsdp": 0}, "fsdp must be True or False, got fsdp=0"),
        ({"zero": True}, "zero=True needs mesh=, a mesh with a 'data' axis"),
        ({"fsdp": True}, "fsdp=True needs mesh=, a mesh with a 'data' axis"),
        ({"mesh": "cpu"}, "mesh must be a jax.sharding.Mesh with a 'data' axis, got mesh='cpu'"),
        ({"checkpoint": 3}, r"checkpoint must be a directory path \(str or os.PathLike\) or "),
        ({"resume": True}, "resume=True needs checkpoint=DIR, the directory to resume from, "),
        ({"settings": [1]}, r"settings must be a dict of JSON values .* got settings=\[1\]"),
        ({"settings": {"a": object}}, "settings must be a dict of JSON values"),
        ({"settings": {"lr": float("nan")}}, r"settings must be .* got settings=\{'lr': nan\}"),
        ({"settings": "lr=1"}, "settings must be a dict of JSON values"),
    ],
)
def test_run_config_rejects_bad_values_naming_them(options, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**{"steps": 10, **options})
    with pytest.raises(ValueError, match=message):  # train and sweep check through RunConfig
        train("mlp", optjax.sgd(0.1), DS, **{"steps": 10, **options})
    with pytest.raises(ValueError, match=message):
        sweep("mlp", optjax.sgd, DS, learning_rates=[0.1], **{"steps": 10, **options})


def test_run_config_is_frozen_and_its_defaults_are_the_documented_ones():
    config = RunConfig(steps=5)
    assert dataclasses.asdict(config) == {
        "steps": 5,
        "batch_size": 100,
        "log_every": 100,
        "eval_every": None,
        "eval_batch_size": 1000,
        "checkpoint": None,
        "resume": False,
        "flat": False,
        "mesh": None,
        "zero": False,
        "fsdp": False,
        "settings": None,
    }
    assert config.eval_interval == 5 and RunConfig(steps=5, eval_every=2).eval_interval == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.steps = 6  # type: ignore[misc]


def test_unknown_or_missing_options_are_type_errors():
    with pytest.raises(TypeError, match="train\\(\\) got unexpected keyword argument\\(s\\) step;"):
        train("mlp", optjax.sgd(0.1), DS, step=5)
    with pytest.raises(TypeError, match="the run options are steps, batch_size, log_every"):
        sweep("mlp", optjax.sgd, DS, learning_rates=[0.1], steps=5, lr=0.1)
    with pytest.raises(TypeError, match=r"sweep\(\) needs steps= \(or config=RunConfig"):
        sweep("mlp", optjax.sgd, DS, learning_rates=[0.1])
    with pytest.raises(TypeError, match="config must be a RunConfig, got dict"):
        train("mlp", optjax.sgd(0.1), DS, config={"steps": 5})


def test_a_config_object_trains_like_the_keywords_and_keywords_replace_its_values():
    config = RunConfig(steps=99, batch_size=32, log_every=2)
    by_keywords = train(small_mlp, optjax.sgd(0.1), DS, steps=4, batch_size=32, log_every=2)
    by_config = train(small_mlp, optjax.sgd(0.1), DS, config=config, steps=4)
    assert by_config.steps == 4 and by_config.history["step"].tolist() == [2, 4]
    pairs = zip(jax.tree.leaves(by_config.params), jax.tree.leaves(by_keywords.params), strict=True)
    for a, b in pairs:
        np.testing.assert_array_equal(a, b)
    assert config.steps == 99  # the caller's config is left as it was


def test_a_sweep_resumes_from_its_checkpoint_like_the_uninterrupted_sweep(tmp_path):
    data, path = _noise_dataset(), str(tmp_path / "sweep.npz")
    common = {"learning_rates": [1e-3, 1e-2], "seeds": [0, 1], "batch_size": 16, "log_every": 3}
    whole = sweep(small_mlp, optjax.adam, data, steps=6, **common)
    sweep(small_mlp, optjax.adam, data, steps=3, checkpoint=path, **common)
    resumed = sweep(small_mlp, optjax.adam, data, steps=6, checkpoint=path, resume=True, **common)
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [(r.learning_rate, r.seed) for r in resumed.runs] == [
        (1e-3, 0),
        (1e-3, 1),
        (1e-2, 0),
        (1e-2, 1),
    ]
