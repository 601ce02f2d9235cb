"""The MNIST benchmark scripts in --quick mode print their tables (format only, no timings)."""

import importlib
import re
from pathlib import Path

import pytest
from real_data import MNIST_DIR, needs_mnist

REPO = Path(__file__).resolve().parents[1]


pytestmark = needs_mnist


@pytest.fixture
def benchmark(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return lambda name: importlib.import_module(name)


NUMBER = r"\d+\.\d\d"


def check_header(lines, script):
    assert lines[0].startswith(f"command: python benchmarks/{script} --quick")
    assert re.match(r"machine: .+, \d+ CPU cores, .+; device: .+", lines[1])
    assert re.match(
        r"versions: optjax [\d.]+, jax [\d.]+, flax [\d.]+, numpy [\d.]+, python [\d.]+", lines[2]
    )
    assert re.match(r"date: \d{4}-\d\d-\d\d$", lines[3])


def test_mnist_optimizers_quick_table(benchmark, capsys):
    module = benchmark("mnist_optimizers")
    assert (
        module.main(["--quick", "--only", "SGD momentum,Adam", "--data-dir", str(MNIST_DIR)]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    check_header(lines, "mnist_optimizers.py")
    assert lines[4].startswith(
        "setup: MLP 784-100-10 ReLU (torch init), inputs in [0, 1], batch 100, 10 steps"
    )
    table = [line for line in lines if line.startswith("|")]
    assert table[0] == (
        "| optimizer | torch.optim preset | test accuracy % (mean ± std) | reference % "
        "| difference | time (s) |"
    )
    row = r"\| {} \| {} \| {n} ± {n} \| {} \| [+-]{n} \| \d+\.\d \|"
    assert re.fullmatch(
        row.format("SGD momentum", re.escape("SGD(lr=0.1, momentum=0.9)"), "97.69", n=NUMBER),
        table[2],
    )
    assert re.fullmatch(row.format("Adam", re.escape("Adam()"), "97.20", n=NUMBER), table[3])
    assert len(table) == 4
    assert [r[0] for r in module.ROWS] == [
        "SGD",
        "SGD momentum",
        "SGD Nesterov",
        "Adam",
        "Adagrad",
        "Adadelta",
        "Adamax",
        "RMSprop",
    ]


def test_vmap_seeds_quick_table(benchmark, capsys):
    module = benchmark("vmap_seeds")
    assert module.main(["--quick", "--seeds", "2", "--data-dir", str(MNIST_DIR)]) == 0
    lines = capsys.readouterr().out.splitlines()
    check_header(lines, "vmap_seeds.py")
    table = [line for line in lines if line.startswith("|")]
    assert table[0] == "| how | wall (s) | compile (s) | steps (s) | mean test accuracy % |"
    for line, name in zip(
        table[2:], ["vmapped, one program", "sequential, one run per seed"], strict=True
    ):
        assert re.fullmatch(rf"\| {name} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \|", line)
    # Same seeds, same data order: the two ways reach the same accuracy.
    accuracies = [line.split("|")[5].strip() for line in table[2:]]
    assert abs(float(accuracies[0]) - float(accuracies[1])) < 0.05
    assert re.fullmatch(
        rf"ratio vmapped / sequential wall time, in one process: {NUMBER}", lines[-1]
    )
