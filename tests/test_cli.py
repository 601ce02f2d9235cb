"""The command line end to end at a tiny size: tables, --json, --plot, optimizer lookup (optjax
names and torch presets), and bad arguments (one line, non-zero status, no traceback)."""

import io
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from real_data import MNIST_DIR, needs_mnist
from test_data import spec_for, write_dataset

import optjax
from optjax.train import cli, data
from optjax.train.loop import Progress

REPO = Path(__file__).resolve().parents[1]
TINY = ["--steps", "6", "--log-every", "3", "--batch-size", "10", "--no-download"]


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """'mnist' replaced by a small synthetic dataset (30 train, 20 test images) in tmp_path."""
    files = write_dataset(tmp_path / "data" / "mnist")
    spec = spec_for(files)
    monkeypatch.setitem(
        data.DATASETS, "mnist", data.DatasetSpec("mnist", ("mnist",), (), spec.files)
    )
    monkeypatch.delenv("OPTJAX_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


def test_cli_trains_and_writes_json_and_plot(tiny_mnist, capsys):
    out_json, out_png = tiny_mnist / "r.json", tiny_mnist / "r.png"
    argv = [
        *TINY,
        "--data-dir",
        str(tiny_mnist / "data"),
        "--optimizer",
        "adam",
        "--learning-rate",
        "1e-3",
        "--seeds",
        "0,1",
        "--json",
        str(out_json),
        "--plot",
        str(out_png),
    ]
    assert cli.main(argv) == 0
    stdout, stderr = capsys.readouterr()
    result = json.loads(out_json.read_text())
    assert result["config"]["optimizer"] == "adam" and result["config"]["seeds"] == [0, 1]
    assert [r["seed"] for r in result["runs"]] == [0, 1] and result["steps"] == 6
    accs = [r["test_accuracy"] for r in result["runs"]]
    assert all(0 <= a <= 1 for a in accs)
    assert result["summary"]["test_accuracy_mean"] == pytest.approx(np.mean(accs))
    assert result["summary"]["test_accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    assert result["history"]["step"] == [3, 6] and np.shape(result["history"]["train_loss"]) == (
        2,
        2,
    )
    assert result["versions"]["jax"] and result["timing"]["steps_per_second"] > 0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The summary table: one row per run, then mean ± std of the test accuracy.
    lines = stdout.splitlines()
    assert lines[0].startswith("mnist, mlp, adam (lr 0.001), 6 steps of batch 10, 2 run(s)")
    assert [line.split()[:2] for line in lines[2:4]] == [["0", "0"], ["1", "1"]]
    mean, std = 100 * np.mean(accs), 100 * np.std(accs, ddof=1)
    assert f"test accuracy: {mean:.2f} ± {std:.2f} % (mean ± std over 2 runs)" in stdout
    assert "6/6 loss" in stderr and "steps/s" in stderr


def test_cli_learning_rate_list_is_a_sweep_and_epochs_set_the_length(tiny_mnist):
    out = tiny_mnist / "r.json"
    argv = [
        *TINY[2:],
        "--epochs",
        "2",
        "--data-dir",
        str(tiny_mnist / "data"),
        "--optimizer",
        "sgd",
        "--learning-rate",
        "0.1,0.01",
        "--momentum",
        "0.9",
        "--nesterov",
        "--flat",
        "--quiet",
        "--json",
        str(out),
    ]
    assert cli.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["config"]["flat"] is True
    assert [(r["learning_rate"], r["seed"]) for r in result["runs"]] == [(0.1, 0), (0.01, 0)]
    assert result["steps"] == 6  # 2 epochs of 30 examples in batches of 10


def test_optimizer_names_are_optjax_optimizers():
    names = cli.optimizer_names()
    for name in [
        "sgd",
        "adam",
        "adamw",
        "nadam",
        "rmsprop",
        "adagrad",
        "adadelta",
        "adamax",
        "amsgrad",
        "adafactor",
        "lion",
    ]:
        assert name in names
    assert "adafactor_relative_step" not in names and "scale_by_adam" not in names


def first_update(tx):
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    grads = {"w": jnp.array([0.3, -0.1, 2.0])}
    return np.asarray(tx.update(grads, tx.init(params), params)[0]["w"])


def test_optjax_names_get_their_options():
    make = cli.resolve_optimizer("sgd", 0.1, momentum=0.9, nesterov=True)
    np.testing.assert_allclose(
        first_update(make(0.1)), first_update(optjax.sgd(0.1, 0.9, nesterov=True))
    )
    make = cli.resolve_optimizer("adadelta", None)  # a default learning rate: none needed
    np.testing.assert_allclose(first_update(make(None)), first_update(optjax.adadelta()))


def test_torch_presets_are_looked_up_in_torch_compat(monkeypatch):
    calls = []

    def RMSprop(lr=1e-2, alpha=0.99, momentum=0.0, weight_decay=0.0):
        calls.append({"lr": lr, "alpha": alpha, "momentum": momentum, "weight_decay": weight_decay})
        return optjax.sgd(lr)

    fake = types.ModuleType("optjax.torch_compat")
    fake.RMSprop = RMSprop
    monkeypatch.setitem(sys.modules, "optjax.torch_compat", fake)
    cli.resolve_optimizer("torch.RMSprop", None)(None)
    cli.resolve_optimizer("torch.RMSprop", 0.5, momentum=0.9)(0.5)
    assert calls == [
        {"lr": 1e-2, "alpha": 0.99, "momentum": 0.0, "weight_decay": 0.0},
        {"lr": 0.5, "alpha": 0.99, "momentum": 0.9, "weight_decay": 0.0},
    ]
    with pytest.raises(
        cli.UsageError, match="--nesterov does not apply to optimizer 'torch.RMSprop'"
    ):
        cli.resolve_optimizer("torch.RMSprop", None, momentum=0.9, nesterov=True)
    with pytest.raises(
        cli.UsageError, match="unknown torch preset 'torch.Adam'; choose from torch.RMSprop"
    ):
        cli.resolve_optimizer("torch.Adam", None)


def test_real_torch_compat_presets_resolve():
    torch_compat = pytest.importorskip("optjax.torch_compat")
    make = cli.resolve_optimizer("torch.Adam", 0.01)
    np.testing.assert_allclose(first_update(make(0.01)), first_update(torch_compat.Adam(lr=0.01)))
    make = cli.resolve_optimizer("torch.SGD", None)  # torch's default learning rate
    np.testing.assert_allclose(first_update(make(None)), first_update(torch_compat.SGD()))


@pytest.mark.parametrize(
    "args, status, message",
    [
        (
            ["--optimizer", "nope", "--learning-rate", "0.1"],
            2,
            "unknown optimizer 'nope'; choose from adadelta,",
        ),
        (["--steps", "-5"], 2, "--steps must be an integer >= 1, got -5"),
        (["--resume"], 2, "--resume needs --checkpoint PATH, the file to resume from"),
        (["--batch-size", "0"], 2, "--batch-size must be an integer >= 1, got 0"),
        (["--optimizer", "adam"], 2, "optimizer 'adam' needs --learning-rate"),
        (
            ["--optimizer", "adam", "--lr", "1e-3", "--momentum", "0.9"],
            2,
            "--momentum does not apply to optimizer 'adam'",
        ),
        (
            ["--optimizer", "adam", "--lr", "-1"],
            2,
            "--learning-rate must be finite and >= 0, got -1.0",
        ),
        (
            ["--optimizer", "adam", "--lr", "0.1", "--weight-decay", "-1"],
            2,
            "--weight-decay does not apply",
        ),
        (
            ["--optimizer", "adamw", "--lr", "0.1", "--weight-decay", "-1"],
            2,
            "optimizer 'adamw': weight_decay must be",
        ),
        (["--seeds", "a,b"], 2, "argument --seeds: expected comma-separated integers, got 'a,b'"),
        (["--steps", "5", "--epochs", "1"], 2, "give --steps or --epochs, not both"),
        (["--optimizer", "sgd", "--lr", "0.1", "--nesterov"], 2, "--nesterov needs --momentum > 0"),
        (
            ["--optimizer", "torch.Betas"],
            2,
            "unknown torch preset 'torch.Betas'; choose from torch.Adadelta",
        ),
        (["--model", "mlp", "--channels", "8,16"], 2, "--channels applies to --model cnn only"),
        (["--model", "mlp", "--dropout", "0.2"], 2, "--dropout applies to --model cnn only"),
        (
            ["--model", "cnn", "--dropout", "0.25,1.5"],
            2,
            "--dropout is two rates in [0, 1), got 0.25,1.5",
        ),
        (
            ["--model", "cnn", "--channels", "8"],
            2,
            "--channels is two sizes (one per conv layer), got [8]",
        ),
        (["--dataset", "cifar"], 2, "argument --dataset: invalid choice: 'cifar'"),
        (
            ["--json", "/no/such/dir/r.json"],
            2,
            "--json /no/such/dir/r.json: directory /no/such/dir does not exist",
        ),
        (
            ["--data-dir", "{tmp}/empty"],
            1,
            "mnist not found (searched {tmp}/empty/mnist, {tmp}/empty, ",
        ),
    ],
)
def test_bad_arguments_exit_with_one_line(tmp_path, monkeypatch, capsys, args, status, message):
    monkeypatch.delenv("OPTJAX_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert cli.main([*args, "--no-download"]) == status
    stdout, stderr = capsys.readouterr()
    assert stdout == "" and stderr.count("\n") == 1
    assert stderr.startswith("python -m optjax.train: error: ")
    assert message.replace("{tmp}", str(tmp_path)) in stderr


def test_bad_arguments_in_a_subprocess_have_no_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OPTJAX_DATA_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    command = [
        sys.executable,
        "-m",
        "optjax.train",
        "--data-dir",
        str(tmp_path),
        "--no-download",
        "--steps",
        "3",
    ]
    proc = subprocess.run(
        command, check=False, capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.count("\n") == 1
        and "mnist not found" in proc.stderr
        and "put train-images-idx3-ubyte.gz" in proc.stderr
    )


def test_progress_bar_redraws_in_place_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    bar = cli.ProgressBar(stream, width=10)
    bar(Progress(5, 10, 0.5, 0.9, 123.0))
    bar(Progress(10, 10, 0.25, 0.95, 200.0, test_accuracy=0.96))
    assert stream.getvalue() == (
        "\r[#####-----] 5/10 loss 0.5000 acc 90.00% 123 steps/s"
        "\r[##########] 10/10 loss 0.2500 acc 95.00% test 96.00% 200 steps/s\n"
    )


@needs_mnist
def test_cli_on_real_mnist_prints_the_test_accuracy(capsys, tmp_path):
    out = tmp_path / "r.json"
    argv = [
        "--data-dir",
        str(MNIST_DIR),
        "--optimizer",
        "torch.Adam",
        "--steps",
        "200",
        "--quiet",
        "--json",
        str(out),
    ]
    assert cli.main(argv) == 0
    accuracy = json.loads(out.read_text())["runs"][0]["test_accuracy"]
    assert accuracy > 0.85
    assert f"test accuracy: {100 * accuracy:.2f} ± 0.00 %" in capsys.readouterr().out
