"""benchmarks/optimizer_step.py: its --quick run prints the whole table and writes its JSON (the
format only; timings are never asserted), and its traffic model and goal checks are right."""

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "optimizer_step.py"
# The quick run checks the table's format, so a few groups stand for all: each tree kind, the
# optimizer the goals name and the one without a fused flat kernel.
TREES, OPTIMIZERS = ["single", "small"], ["adam", "lion", "adafactor"]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        yield importlib.import_module("optimizer_step")
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "result.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--torch-python", "none"]
    command += ["--trees", ",".join(TREES), "--optimizers", ",".join(OPTIMIZERS)]
    proc = subprocess.run(
        [*command, "--json", str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_quick_run_prints_header_and_a_row_per_case(quick_run, bench):
    stdout, _ = quick_run
    lines = stdout.splitlines()
    assert (
        lines[0]
        == "command: python benchmarks/optimizer_step.py --quick --torch-python none --trees "
        "single,small --optimizers adam,lion,adafactor --json " + lines[0].split("--json ")[1]
    )
    assert re.match(r"machine: .+, \d+ CPU cores, .+; load average \[.+\] -> \[.+\]$", lines[1])
    assert re.match(
        r"versions: optjax [\d.]+, jax [\d.]+, optax [\d.]+, numpy [\d.]+, python [\d.]+$", lines[2]
    )
    assert re.match(r"date: \d{4}-\d\d-\d\d$", lines[3])
    assert lines[4] == "torch.optim: not run (no torch)"
    assert re.match(
        r"streaming bandwidth at the start: \d+\.\d GB/s \(best of: xla triad \d+\.\d, "
        r"numpy add \d+\.\d\); XLA triad among the trials: median \d+\.\d GB/s over the groups$",
        lines[5],
    )
    number = r"\d+\.\d+"
    row = re.compile(
        r"\| (single|mixed|small) \(\d+ leaves\) \| (\w+) "
        rf"\| (optjax|optjax flat|optax|fused|fused flat) "
        rf"\| {number} \| {number} \| {number} \| \d+% \| {number} \| {number} \| {number} \|$"
    )
    rows = [
        row.match(line) for line in lines if line.startswith(("| single", "| mixed", "| small"))
    ]
    assert all(rows), [line for line, m in zip(lines, rows) if not m]
    seen = {(m.group(1), m.group(2), m.group(3)) for m in rows}
    assert {(tree, opt) for tree, opt, _ in seen} == {(t, o) for t in TREES for o in OPTIMIZERS}
    for tree in TREES:
        for opt in OPTIMIZERS:
            for impl in ("optjax", "optjax flat", "optax", "fused"):
                assert (tree, opt, impl) in seen
            has_fused_flat = tree != "single" and opt != "adafactor"
            assert ((tree, opt, "fused flat") in seen) == has_fused_flat
    goals = [
        line
        for line in lines
        if re.match(r"\| (tree path|flat) .+ \| -?\d+\.\d+ \| (yes|no) \|$", line)
    ]
    assert len(goals) == len(quick_run[1]["targets"]) > 0


def test_quick_run_writes_json_with_every_figure(quick_run):
    _, result = quick_run
    assert result["meta"]["command"].startswith("python benchmarks/optimizer_step.py --quick")
    assert set(result["bandwidth"]["by kernel"]) == {"xla triad", "numpy add"}
    for r in result["rows"]:
        assert r["ms_per_step"] > 0 and r["first_call_s"] > 0 and r["GB_per_s"] > 0
        assert r["ms_per_step"] == pytest.approx(
            1e3 * sorted(r["samples_s"])[len(r["samples_s"]) // 2]
        )
        assert r["GB_per_s"] == pytest.approx(r["traffic_bytes"] / r["ms_per_step"] / 1e6)
        assert r["fraction_of_bandwidth"] == pytest.approx(r["GB_per_s"] / r["stream_GB_per_s"])
    adam = [r for r in result["rows"] if r["optimizer"] == "adam"]
    assert {r["state_bytes_per_param"] for r in adam if r["tree"] == "single"} == {8.0}


def test_traffic_model(bench):
    assert bench.traffic_bytes("adam", [(10, 10), (5,)]) == 28 * 105
    assert bench.traffic_bytes("lion", [(3,)]) == 20 * 3
    # Adafactor: 24 bytes per parameter of a factored leaf, 40 of one with a full v.
    assert bench.traffic_bytes("adafactor", [(200, 300), (64,)]) == 24 * 60000 + 40 * 64


def test_goals_are_judged_from_the_ratios(bench):
    def row(tree, opt, impl, ms, first=1.0):
        return {
            "tree": tree,
            "optimizer": opt,
            "impl": impl,
            "ms_per_step": ms,
            "optax_over_this": None,
            "first_call_s": first,
        }

    rows = [
        row("small", "lion", "optax", 10.0, first=4.0),
        row("small", "lion", "optjax", 2.0),
        row("small", "lion", "optjax flat", 0.1, first=0.1),
        row("single", "adam", "optax", 10.0),
        row("single", "adam", "optjax", 11.0),
        row("single", "adam", "fused", 9.0),
        row("single", "adam", "optjax flat", 9.9),
    ]
    for r in rows:
        r["optax_over_this"] = (
            next(x["ms_per_step"] for x in rows if x["tree"] == r["tree"] and x["impl"] == "optax")
            / r["ms_per_step"]
        )
    met = {t["goal"]: (t["measured"], t["met"]) for t in bench.targets(rows)}
    assert met["tree path lion on small: optax/optjax >= 3"] == (5.0, True)
    assert met["flat lion on small: optax/flat step >= 50"] == (100.0, True)
    assert met["flat lion on small: optax/flat first call >= 20"] == (40.0, True)
    assert met["tree path adam on single: optjax/optax time <= 1.0"] == (1.1, False)
    assert met["flat adam on single: flat/fused time <= 1.05"] == (1.1, False)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--optimizers", "adam,rmsprop"], ["--optimizers must be among", "rmsprop"]),
        (["--trees", "single,huge"], ["--trees must be among", "huge"]),
        (["--trials", "many"], ["--trials", "many"]),
        (["--quick", "--unknown"], ["unrecognized arguments: --unknown"]),
    ],
)
def test_bad_arguments_are_refused(bench, capsys, argv, named):
    assert_refused(bench.parse, argv, named, capsys)


def assert_refused(parse, argv, named, capsys) -> None:
    """A benchmark script's own parser, in this process (the quick runs start each script as a
    command): exit status 2 and a line holding each of ``named``."""
    with pytest.raises(SystemExit) as exit:
        parse(argv)
    assert exit.value.code == 2
    error = capsys.readouterr().err
    assert all(text in error for text in named), error
