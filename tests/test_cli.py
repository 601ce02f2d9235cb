"""The command line end to end at a tiny size: tables, --json, --plot, optimizer lookup (optjax
names and torch presets), and bad arguments (one line, non-zero status, no traceback)."""

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import types
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from real_data import MNIST_DIR, needs_mnist
from test_data import spec_for, write_dataset

import optjax
from optjax.train import Progress, RunResult, TrainResult, cli, data

REPO = Path(__file__).resolve().parents[1]
TINY = ["--steps", "6", "--log-every", "3", "--batch-size", "10", "--no-download"]


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """'mnist' replaced by a small synthetic dataset (30 train, 20 test images) in tmp_path."""
    return _tiny_mnist(tmp_path, monkeypatch)


def _tiny_mnist(tmp_path, monkeypatch):
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


def test_cli_learning_rate_list_is_a_sweep_and_epochs_set_the_length(tiny_mnist, capsys):
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
    accs = {r["learning_rate"]: r["test_accuracy"] for r in result["runs"]}
    assert result["summary"]["by_learning_rate"] == [
        {"learning_rate": lr, "mean": accs[lr], "std": None, "n": 1} for lr in (0.01, 0.1)
    ]
    out = capsys.readouterr().out
    assert f"  lr 0.01: {100 * accs[0.01]:.2f} % (n = 1)\n" in out
    assert f"  lr 0.1: {100 * accs[0.1]:.2f} % (n = 1)\n" in out
    best = max(accs, key=lambda lr: accs[lr])  # (a tie goes to the smaller rate, listed first)
    best = 0.01 if accs[0.01] == accs[0.1] else best
    assert f"best learning rate: {best:g} ({100 * accs[best]:.2f} % mean test accuracy)" in out


def test_a_preset_without_a_learning_rate_shows_the_default_it_used(tiny_mnist, capsys):
    argv = [*TINY, "--data-dir", str(tiny_mnist / "data"), "--optimizer", "torch.SGD", "--quiet"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.startswith(
        "mnist, mlp, torch.SGD (default lr 0.001), 6 steps of batch 10, 1 run(s)\n"
    )
    assert cli.default_learning_rate("torch.Adam") == 1e-3
    assert cli.default_learning_rate("torch.Adadelta") == 1.0
    assert cli.default_learning_rate("adadelta") == 1.0
    assert cli.default_learning_rate("adafactor") is None  # the relative step size


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
        cli.UsageError, match=r"--nesterov does not apply to optimizer 'torch\.RMSprop'"
    ):
        cli.resolve_optimizer("torch.RMSprop", None, momentum=0.9, nesterov=True)
    with pytest.raises(
        cli.UsageError, match=r"unknown torch preset 'torch\.Adam'; choose from torch\.RMSprop"
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
            "unknown optimizer 'nope'; choose from adabelief, adadelta,",
        ),
        (["--steps", "-5"], 2, "--steps must be an integer >= 1, got -5"),
        (["--resume"], 2, "--resume needs --checkpoint DIR, the directory to resume from"),
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
        (["--zero"], 2, "--zero needs --devices N"),
        (["--fsdp"], 2, "--fsdp needs --devices N"),
        (["--devices", "0"], 2, "--devices must be an integer >= 1, got 0"),
        (
            ["--devices", "8", "--batch-size", "100"],
            2,
            "--batch-size must be a multiple of --devices 8, got 100",
        ),
        (["--devices", "2", "--zero", "--fsdp"], 2, "give --zero or --fsdp, not both"),
        (["--devices", "2", "--flat"], 2, "--flat does not work with --devices yet"),
        (["--processes", "2"], 2, "--processes needs --devices N"),
        (["--devices", "4", "--processes", "0"], 2, "--processes must be an integer >= 1, got 0"),
        (["--devices", "4", "--processes", "-3"], 2, "--processes must be an integer >= 1, got -3"),
        (
            ["--devices", "4", "--processes", "3"],
            2,
            "--devices must be a multiple of --processes 3",
        ),
        (
            ["--devices", "4", "--processes", "2", "--distributed"],
            2,
            "give --processes (on this machine) or --distributed, not both",
        ),
        (["--optimizer", "sgd", "--lr", "0.1", "--nesterov"], 2, "--nesterov needs --momentum > 0"),
        (
            ["--optimizer", "torch.Betas"],
            2,
            "unknown torch preset 'torch.Betas'; choose from torch.ASGD, torch.Adadelta",
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
        (["--hidden", "0"], 2, "--hidden sizes must be integers >= 1, got 0"),
        (["--hidden", "100,-3"], 2, "--hidden sizes must be integers >= 1, got 100,-3"),
        (["--model", "cnn", "--hidden", "0"], 2, "--hidden sizes must be integers >= 1, got 0"),
        (
            ["--model", "cnn", "--channels", "0,4"],
            2,
            "--channels sizes must be integers >= 1, got 0,4",
        ),
        (
            ["--model", "cnn", "--channels", "8,-1"],
            2,
            "--channels sizes must be integers >= 1, got 8,-1",
        ),
        (
            ["--checkpoint", "/no/such/dir/run"],
            2,
            "--checkpoint /no/such/dir/run: directory /no/such/dir does not exist",
        ),
        (
            ["--checkpoint", "{tmp}/a-file/run"],
            2,
            "--checkpoint {tmp}/a-file/run: directory {tmp}/a-file does not exist",
        ),
        (["--checkpoint", "{tmp}/a-file"], 2, "--checkpoint {tmp}/a-file: is a file, not a dir"),
        (
            ["--checkpoint", "{tmp}/a-file", "--resume"],
            2,
            "--checkpoint {tmp}/a-file: is a file, not a directory",
        ),
        (["--checkpoint", "/proc/optjax-run"], 2, "--checkpoint /proc/optjax-run: cannot write in"),
        (
            ["--checkpoint", "{tmp}/new", "--resume"],
            2,
            "--resume: --checkpoint {tmp}/new does not exist, so it holds no step to resume from",
        ),
    ],
)
def test_bad_arguments_exit_with_one_line(tmp_path, monkeypatch, capsys, args, status, message):
    monkeypatch.delenv("OPTJAX_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "a-file").write_text("not a directory")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert cli.main([*args, "--no-download"]) == status
    stdout, stderr = capsys.readouterr()
    assert stdout == "" and stderr.count("\n") == 1
    assert stderr.startswith("python -m optjax.train: error: ")
    assert message.replace("{tmp}", str(tmp_path)) in stderr


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A checkpoint directory of a 6-step run on the tiny dataset (steps 3 and 6)."""
    tmp = tmp_path_factory.mktemp("saved")
    with pytest.MonkeyPatch.context() as monkeypatch:
        data_dir = _tiny_mnist(tmp, monkeypatch)
        argv = [*TINY, "--quiet", "--data-dir", str(data_dir / "data")]
        assert cli.main([*argv, "--checkpoint", str(tmp / "run")]) == 0
    return tmp / "run"


def _halve(*patterns):
    def damage(directory):
        for pattern in patterns:
            for path in directory.glob(pattern):
                if path.is_file():
                    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return damage


def _craft_manifest(directory):
    manifest = directory / "6" / "manifest" / "metadata"
    header = json.loads(manifest.read_text())
    header["leaves"][0].update(data_dtype="int8")
    manifest.write_text(json.dumps(header))


def _replace_with_file(path):
    shutil.rmtree(path)
    path.write_text("not a step")


# A --resume checkpoint, damaged: (damage(directory), the one line's message).
DAMAGED_RESUMES = {
    "truncated-manifest": (
        _halve("6/manifest/metadata"),
        "checkpoint '{d}/6' is not an optjax checkpoint (optjax-sharded-checkpoint/1): its "
        "manifest cannot be read (JSONDecodeError: ",
    ),
    "every-file-truncated": (
        _halve("6/**/*"),
        "checkpoint '{d}/6' is damaged and cannot be read: JSONDecodeError: ",
    ),
    "crafted-manifest": (
        _craft_manifest,
        "checkpoint '{d}/6' is damaged or not written by optjax (optjax-sharded-checkpoint/1): "
        "leaf 0 (['state'].",
    ),
    "arrays-missing": (
        lambda d: shutil.rmtree(d / "6" / "state"),
        "checkpoint '{d}/6' does not match the template at ['state'].",
    ),
    "steps-deleted": (
        lambda d: (shutil.rmtree(d / "3"), shutil.rmtree(d / "6")),
        "resume=True, but checkpoint='{d}' holds no step to resume from",
    ),
    "steps-are-files": (
        lambda d: (_replace_with_file(d / "3"), _replace_with_file(d / "6")),
        "resume=True, but checkpoint='{d}' holds no step to resume from",
    ),
    "directory-is-a-file": (
        _replace_with_file,
        "--checkpoint {d}: is a file, not a directory",
    ),
    "directory-missing": (
        shutil.rmtree,
        "--resume: --checkpoint {d} does not exist, so it holds no step to resume from",
    ),
}


@pytest.mark.parametrize("case", DAMAGED_RESUMES)
def test_a_damaged_resume_checkpoint_is_one_line_not_a_traceback(
    saved_run, tiny_mnist, capsys, case
):
    damage, message = DAMAGED_RESUMES[case]
    directory = tiny_mnist / "run"
    shutil.copytree(saved_run, directory)
    damage(directory)
    argv = [*TINY, "--steps", "9", "--quiet", "--data-dir", str(tiny_mnist / "data")]
    assert cli.main([*argv, "--checkpoint", str(directory), "--resume"]) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == "" and stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert stderr.startswith(f"{cli.PROG}: error: {message.replace('{d}', str(directory))}")


def test_a_resume_with_other_settings_is_refused_in_one_line(saved_run, tiny_mnist, capsys):
    directory = tiny_mnist / "run"
    shutil.copytree(saved_run, directory)
    argv = [*TINY, "--steps", "9", "--quiet", "--data-dir", str(tiny_mnist / "data")]
    resume = ["--checkpoint", str(directory), "--resume"]
    assert cli.main([*argv, *resume, "--optimizer", "sgd", "--lr", "0.001"]) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == "" and stderr.count("\n") == 1, stderr
    assert stderr.strip().endswith(
        f"error: cannot resume from {str(directory)!r}: it was saved with optimizer='adam', this "
        "run has optimizer='sgd'"
    )


def test_a_diverged_run_writes_null_not_nan_into_json(tmp_path, monkeypatch, capsys):
    nan, inf = float("nan"), float("inf")
    result = result_of([(0, 0.1, nan), (1, 0.1, 0.5)])
    result.history["train_loss"][1, 0] = inf
    monkeypatch.setattr(cli, "run", lambda args: result)
    out = tmp_path / "r.json"
    argv = ["--optimizer", "sgd", "--lr", "0.1", "--quiet", "--json", str(out)]
    assert cli.main(argv) == 0
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    written = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert (
        written["runs"][0]["test_accuracy"] is None and written["runs"][1]["test_accuracy"] == 0.5
    )
    assert written["history"]["train_loss"][1] == [None, 0.5]
    assert written["summary"]["test_accuracy_mean"] is None
    capsys.readouterr()


@pytest.mark.parametrize(
    "value, expected",
    [
        (float("nan"), None),
        (float("-inf"), None),
        (np.float32("nan"), None),
        (np.array([1.0, np.inf]), [1.0, None]),
        ({"a": (np.nan, 2, "x", None, True)}, {"a": [None, 2, "x", None, True]}),
        (np.int64(3), 3),
        (1e308, 1e308),
    ],
    ids=repr,
)
def test_non_finite_numbers_become_null(value, expected):
    converted = cli._finite_or_null(value)
    assert converted == expected
    json.dumps(converted, allow_nan=False)  # would raise on a NaN left behind


def test_ctrl_c_in_process_exits_130_with_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run", interrupted)
    try:
        status = cli.main(["--optimizer", "sgd", "--lr", "0.1", "--quiet"])
    except KeyboardInterrupt:  # escaping, it would stop the test session itself
        pytest.fail("Ctrl-C escaped cli.main")
    assert status == 130
    stdout, stderr = capsys.readouterr()
    assert stdout == "" and stderr == f"{cli.PROG}: interrupted\n"


def test_ctrl_c_while_training_exits_130_with_one_line(tmp_path):
    """SIGINT to a real run, once it is training: status 130, one line, no traceback."""
    write_dataset(tmp_path / "data" / "mnist", compress=False)  # raw files: no checksums
    command = [sys.executable, "-m", "optjax.train", "--data-dir", str(tmp_path / "data")]
    command += ["--steps", "1000000", "--log-every", "1", "--batch-size", "10", "--no-download"]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    env.pop("OPTJAX_DATA_DIR", None)
    with subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
    ) as proc:
        try:
            first = proc.stderr.readline()  # the first progress line: it is training
            assert first.startswith("[") and " loss " in first, first
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert stdout == "" and stderr == f"{cli.PROG}: interrupted\n"


# Put on PYTHONPATH as sitecustomize: Python imports it at start-up, and it sends the process a
# SIGINT the moment anything first imports jax (which the package optjax does on import).
INTERRUPT_ON_IMPORTING_JAX = """
import importlib.abc, os, signal, sys

class InterruptOnJax(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "jax":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, InterruptOnJax())
"""


def test_ctrl_c_while_importing_exits_130_with_one_line(tmp_path):
    """SIGINT while `python -m optjax.train` still imports jax, before any of the command line's
    own code runs: status 130, one line, no traceback."""
    (tmp_path / "sitecustomize.py").write_text(INTERRUPT_ON_IMPORTING_JAX)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    command = [sys.executable, "-m", "optjax.train", "--help"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stdout == "" and done.stderr == f"{cli.PROG}: interrupted\n"


@pytest.mark.parametrize(
    "argv,cli_started",
    [
        (["python", "-m", "optjax.train", "--steps", "5"], True),
        (["python", "-X", "dev", "-m", "optjax.train"], True),
        (["python", "-moptjax.train"], True),
        (["python", "-m", "optjax.train.cli"], False),
        (["python", "-m", "pytest", "-m", "optjax.train"], False),
        (["python", "script.py", "-m", "optjax.train"], False),
        (["python", "-c", "import optjax"], False),
        (["python"], False),
    ],
)
def test_only_the_command_line_takes_over_ctrl_c_while_importing(argv, cli_started):
    from optjax import _interrupt

    assert _interrupt.started_as_the_cli(argv) is cli_started
    assert _interrupt.started_as_the_cli() is False  # this test process: pytest
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


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


class Terminal(io.StringIO):
    def isatty(self):
        return True


def screen(output: str) -> list[str]:
    """The lines a terminal shows after printing ``output``: text overwrites from the cursor;
    carriage return, newline, erase line (ESC[2K, ESC[K) and cursor up (ESC[nA) move or clear;
    other escape sequences (colours, cursor visibility) show nothing."""
    lines, row, col = [""], 0, 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]+", output):
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        elif token.startswith("\x1b["):
            argument, command = token[2:-1], token[-1]
            if command == "K":
                lines[row] = "" if argument == "2" else lines[row][:col]
            elif command == "A":
                row = max(0, row - int(argument or 1))
        else:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + token + line[col + len(token) :]
            col += len(token)
    return [line.rstrip() for line in lines]


def test_progress_bar_redraws_in_place_on_a_terminal_without_stale_characters(monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    stream = Terminal()
    with cli.ProgressBar(stream, width=10) as bar:
        bar(Progress(5, 10, 0.5, 0.9, 1449.0, test_accuracy=0.96))
        bar(Progress(10, 10, 0.25, 0.95, 13.0))  # a shorter line than the one before
    lines = screen(stream.getvalue())
    shown = [line for line in lines if line]
    assert len(shown) == 1, shown  # one line, redrawn in place
    assert re.fullmatch(
        r"\S{10} 10/10 loss 0\.2500 acc 95\.00% test 96\.00% 13 steps/s", shown[0]
    ), shown[0]
    assert lines[-1] == ""  # the cursor is left on the next line


def test_progress_bar_on_a_terminal_ends_when_training_stops_early(monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    stream = Terminal()
    with pytest.raises(KeyboardInterrupt), cli.ProgressBar(stream, width=10) as bar:
        bar(Progress(5, 10, 0.5, 0.9, 100.0))
        raise KeyboardInterrupt
    lines = screen(stream.getvalue())
    assert lines[-1] == "" and lines[-2].endswith(" 5/10 loss 0.5000 acc 90.00% 100 steps/s")


def test_progress_in_a_log_file_is_a_few_plain_lines():
    stream = io.StringIO()  # not a terminal
    bar = cli.ProgressBar(stream, width=10)
    for step in range(3, 301, 3):
        test = 0.9 if step % 30 == 0 else None
        bar(Progress(step, 300, 1.0 / step, 0.5, 1000.0 - step, test_accuracy=test))
    lines = stream.getvalue().splitlines()
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", stream.getvalue())  # no \r, no escapes
    assert len(lines) == 11 and stream.getvalue().endswith("\n")  # the first, then each tenth
    assert lines[0] == "[----------] 3/300 loss 0.3333 acc 50.00% 997 steps/s"
    assert lines[1] == "[#---------] 30/300 loss 0.0333 acc 50.00% test 90.00% 970 steps/s"
    assert lines[-1].startswith("[##########] 300/300 loss 0.0033")


# ---------------------------------------------------------------- the summary and the plot


def result_of(runs, steps=10):
    """A TrainResult with these (seed, learning rate, test accuracy) runs, and curves of two
    points reaching them."""
    runs = [RunResult(seed, lr, acc, 1 - acc, 1 - acc) for seed, lr, acc in runs]
    accs = np.array([[r.test_accuracy for r in runs]]) * [[0.5], [1.0]]
    history = {
        "step": np.array([steps // 2, steps]),
        "train_loss": 1 - accs,
        "train_accuracy": accs,
        "eval_step": np.array([steps // 2, steps]),
        "test_loss": 1 - accs,
        "test_accuracy": accs,
    }
    return TrainResult(runs, history, steps, 10, 1.0, 0.5, 20.0, None, None, None)


SWEEP = [(0, 0.3, 0.90), (1, 0.3, 0.94), (0, 0.1, 0.97), (1, 0.1, 0.98), (0, 0.01, 0.95)]


def test_a_sweep_is_summarized_per_learning_rate_and_names_the_best():
    lines = cli.summary_table(result_of(SWEEP), "title").splitlines()
    assert lines[7:12] == [
        "test accuracy per learning rate (mean ± std over seeds):",
        "  lr 0.01: 95.00 % (n = 1)",
        "  lr 0.1: 97.50 ± 0.71 % (n = 2)",  # sample std of 97 and 98: sqrt(0.5)
        "  lr 0.3: 92.00 ± 2.83 % (n = 2)",  # sample std of 90 and 94: sqrt(8)
        "best learning rate: 0.1 (97.50 % mean test accuracy)",
    ]
    assert "over 5 runs" not in "\n".join(lines)  # no mean over different learning rates


def test_a_single_run_shows_n_1_and_no_spread():
    summary = cli.summary_table(result_of([(0, 0.001, 0.974)]), "title")
    assert "test accuracy: 97.40 % (n = 1)" in summary and "±" not in summary
    summary = cli.summary_table(result_of([(0, 0.001, 0.96), (1, 0.001, 0.98)]), "title")
    assert "test accuracy: 97.00 ± 1.41 % (mean ± std over 2 runs)" in summary


@pytest.mark.parametrize(
    "runs, labels",
    [
        (SWEEP, ["lr 0.3, seed 0", "lr 0.3, seed 1", "lr 0.1, seed 0", "lr 0.1, seed 1",
                 "lr 0.01, seed 0"]),
        ([(0, 0.1, 0.9), (0, 0.01, 0.9)], ["lr 0.1", "lr 0.01"]),
        ([(3, 0.1, 0.9), (4, 0.1, 0.9)], ["seed 3", "seed 4"]),
        ([(3, None, 0.9), (4, None, 0.9)], ["seed 3", "seed 4"]),
        ([(7, 0.001, 0.9)], ["lr 0.001, seed 7"]),
        ([(7, None, 0.9)], ["seed 7"]),
    ],
)  # fmt: skip
def test_plot_legend_names_runs_by_what_sets_them_apart(runs, labels):
    result = result_of(runs)
    assert cli.run_labels(result) == labels
    legend = cli.figure(result).axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == labels


# ---------------------------------------------------------------- help, version, installation


def test_help_lists_the_optimizers_and_every_default(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "100")
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    names = cli.optimizer_names() + cli.torch_presets()
    assert "adam" in names and "torch.Adam" in names
    for name in names:
        assert re.search(rf"(?<![\w.]){re.escape(name)}\b", text), name
    # Each option's entry: from its line to the next option's. All but flags and --help,
    # --version say their default.
    entries = re.split(r"\n(?=  -)", text.split("options:\n", 1)[1])
    for action in cli.build_parser()._actions:
        if action.nargs == 0:  # --help, --version, and the on/off flags
            continue
        (entry,) = [e for e in entries if e.split()[0].rstrip(",") == action.option_strings[0]]
        assert "default" in entry, entry
    assert (
        "--batch-size BATCH_SIZE\n                        examples per step and run (default: 100)"
        in text
    )
    assert "(default: 0)" in text.split("--seeds", 1)[1]


def test_learning_rates_is_another_name_for_the_learning_rate_list():
    parse = cli.build_parser().parse_args
    assert parse(["--learning-rates", "0.3,0.1"]).learning_rate == [0.3, 0.1]
    assert parse(["--lr", "0.3"]).learning_rate == [0.3]


def test_version_names_optjax_jax_and_flax(capsys):
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out == f"optjax {optjax.__version__} (jax {jax.__version__}, flax {flax.__version__})\n"


def test_plot_without_matplotlib_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert cli.main(["--plot", str(tmp_path / "p.png"), "--no-download"]) == 2
    _, stderr = capsys.readouterr()
    assert stderr == (
        "python -m optjax.train: error: --plot needs matplotlib, which is not installed: "
        "pip install 'optjax[train]'\n"
    )


def test_without_flax_the_command_says_what_to_install(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nsys.modules['flax'] = None  # as if flax were not installed\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    def python(*args):
        return subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
        )

    proc = python("-m", "optjax.train", "--steps", "3")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        "python -m optjax.train: error: the training harness needs flax, which is not "
        "installed: pip install 'optjax[train]'\n"
    )
    # The library: optjax imports; optjax.train's data names import, its others say the same.
    proc = python(
        "-c",
        "import optjax, optjax.train\n"
        "from optjax.train import load_dataset\n"
        "try:\n"
        "    from optjax.train import train\n"
        "except ModuleNotFoundError as error:\n"
        "    print(error.name, error)\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "flax optjax.train.train needs flax, which is not installed: pip install 'optjax[train]'\n"
    )


@needs_mnist
def test_cli_on_eight_cpu_devices_in_one_or_two_processes_gives_the_one_device_run(tmp_path):
    """The one-device run's numbers, trained on 8 devices: for 40 steps as two processes of 4
    CPU devices each (--processes 2, joined on 127.0.0.1, each batch and the optimizer state
    split over the 8 devices with --zero), checkpointed by both (each writing its shards); then
    to 60 steps in one process that makes 8 CPU devices itself (--devices 8) and splits the
    parameters too (--fsdp)."""
    checkpoint = str(tmp_path / "run")

    def arguments(name, *extra):
        out = tmp_path / f"{name}.json"
        argv = ["--data-dir", str(MNIST_DIR), "--steps", "60", "--log-every", "20"]
        return out, [*argv, "--batch-size", "64", "--quiet", "--seeds", "0,1", "--json", str(out)]

    def run(name, *extra):
        out, argv = arguments(name)
        command = [sys.executable, "-m", "optjax.train", *argv, *extra]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
        assert done.returncode == 0, done.stderr
        return json.loads(out.read_text()), done.stdout + done.stderr

    out, argv = arguments("one")  # the one-device run: in this process, on its one CPU device
    assert cli.main(argv) == 0
    one = json.loads(out.read_text())
    two, printed = run(
        "two", "--steps", "40", "--devices", "8", "--zero", "--processes", "2",
        "--checkpoint", checkpoint,
    )  # fmt: skip
    assert sorted(os.listdir(checkpoint)) == ["20", "40"]
    resume = ["--devices", "8", "--fsdp", "--checkpoint", checkpoint, "--resume"]
    resumed, _ = run("resumed", *resume)

    assert two["config"]["devices"] == 8 and two["config"]["zero"] is True
    assert resumed["config"]["devices"] == 8 and resumed["config"]["fsdp"] is True
    assert "8 devices, zero, 2 processes" in printed and "[Gloo]" not in printed
    assert printed.count("test accuracy:") == 1  # process 0 reports, the other keeps quiet
    expected = np.asarray(one["history"]["train_loss"])
    np.testing.assert_allclose(two["history"]["train_loss"], expected[:2], rtol=1e-5)
    np.testing.assert_allclose(resumed["history"]["train_loss"], expected[2:], rtol=1e-5)
    assert [r["test_accuracy"] for r in resumed["runs"]] == [
        r["test_accuracy"] for r in one["runs"]
    ]


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
    out = capsys.readouterr().out
    assert f"test accuracy: {100 * accuracy:.2f} % (n = 1)" in out
    assert "mnist, mlp, torch.Adam (default lr 0.001), 200 steps" in out
