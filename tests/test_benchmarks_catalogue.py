"""benchmarks/catalogue_step.py: its --quick run prints the side-by-side table and writes its
JSON (the format only; timings are never asserted), and its catalogue builds in both libraries;
likewise the format of galore_alignment.py's and compile_time.py's tables."""

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_benchmarks_speed import assert_refused

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "catalogue_step.py"
# A few stand for all: a plain one, one from optax.contrib, one that takes value=, and Muon.
TREES, OPTIMIZERS = ["single", "small"], ["adan", "muon", "polyak_sgd", "sophia"]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        yield importlib.import_module("catalogue_step")
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def run(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "result.json"
    args = ["--quick", "--ns-size", "64", "--trees", ",".join(TREES)]
    proc = run(SCRIPT, *args, "--optimizers", ",".join(OPTIMIZERS), "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_quick_run_prints_header_and_a_row_per_group(quick_run):
    stdout, _ = quick_run
    lines = stdout.splitlines()
    assert lines[0].startswith(
        "command: python benchmarks/catalogue_step.py --quick --ns-size 64 --trees single,small "
        "--optimizers adan,muon,polyak_sgd,sophia --json "
    )
    assert re.match(r"machine: .+, \d+ CPU cores, .+; load average \[.+\] -> \[.+\]$", lines[1])
    assert re.match(
        r"versions: optjax [\d.]+, jax [\d.]+, optax [\d.]+, numpy [\d.]+, python [\d.]+$", lines[2]
    )
    assert re.match(r"date: \d{4}-\d\d-\d\d$", lines[3])
    assert lines[5] == (
        "| tree | optimizer | optjax ms/step | optax ms/step | optax/optjax "
        "| XLA B/param optjax | XLA B/param optax | trials |"
    )
    number = r"\d+\.\d+"
    row = re.compile(
        rf"\| (single|small) \(\d+ leaves\) \| (\w+) \| {number} \| {number} \| {number} "
        rf"\| ({number}|-) \| ({number}|-) \| \d+ \|$"
    )
    rows = [row.match(line) for line in lines if line.startswith(("| single", "| small"))]
    assert all(rows), [line for line, m in zip(lines, rows) if not m]
    assert [(m.group(1), m.group(2)) for m in rows] == [(t, o) for t in TREES for o in OPTIMIZERS]
    ns = [line for line in lines if line.startswith("| 64x64 ")]
    assert len(ns) == 1 and re.match(
        rf"\| 64x64 \| 5 \| {number} \| {number} \| {number} \|", ns[0]
    )
    assert lines[-1].startswith("slower than optax (optax/optjax < 0.95): ")


def test_quick_run_writes_json_with_every_figure(quick_run):
    _, result = quick_run
    assert result["meta"]["command"].startswith("python benchmarks/catalogue_step.py --quick")
    assert result["skipped"] == []
    assert len(result["rows"]) == len(TREES) * len(OPTIMIZERS)
    for r in result["rows"]:
        assert "unavailable" not in r, r
        assert r["optjax_ms_per_step"] > 0 and r["optax_ms_per_step"] > 0
        assert r["optax_over_optjax"] == pytest.approx(
            r["optax_ms_per_step"] / r["optjax_ms_per_step"]
        )
        assert set(r["xla_bytes_per_param"]) == set(r["first_call_s"]) == {"optjax", "optax"}
        for lib, key in (("optjax", "optjax_ms_per_step"), ("optax", "optax_ms_per_step")):
            samples = r["samples_s"][lib]
            assert len(samples) == r["trials"] >= 3
            assert r[key] == pytest.approx(1e3 * sorted(samples)[len(samples) // 2])
    (ns,) = result["newton_schulz"]
    assert ns["matrix"] == "64x64" and ns["optax_over_optjax"] == pytest.approx(
        ns["optax_ms"] / ns["optjax_ms"]
    )


# optax deprecates its optimistic_adam (in favour of optimistic_adam_v2); it still builds.
@pytest.mark.filterwarnings("ignore:`optimistic_adam` is deprecated:DeprecationWarning")
def test_every_catalogue_entry_builds_in_both_libraries(bench):
    for name in bench.OPTIMIZERS:
        assert bench.missing(name) is None, name
        for library in ("optjax", "optax"):
            tx = bench.build(name, library)
            assert callable(tx.init) and callable(tx.update), (name, library)


def test_trials_shrink_for_slow_groups_but_never_below_three(bench):
    class Case:
        def __init__(self, seconds):
            self.seconds = seconds

        def run(self, reps):
            return self.seconds * reps

    fast = {"optjax": Case(0.01), "optax": Case(0.01)}
    assert bench.trials_within(fast, 11, 0.1, 30.0) == 11
    slow = {"optjax": Case(2.0), "optax": Case(2.0)}
    assert bench.trials_within(slow, 11, 0.1, 30.0) == 7
    assert bench.trials_within(slow, 11, 0.1, 1.0) == 3


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--optimizers", "adan,adam"], ["--optimizers must be among", "'adam'"]),
        (["--trees", "small,huge"], ["--trees must be among", "huge"]),
        (["--ns-size", "big"], ["--ns-size", "big"]),
    ],
)
def test_bad_arguments_are_refused(bench, capsys, argv, named):
    assert_refused(bench.parse, argv, named, capsys)


def test_compile_time_refuses_an_optimizer_the_catalogue_lacks(bench, capsys, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # main puts benchmarks/ on it for good
    main = importlib.import_module("compile_time").main
    assert_refused(main, ["--optimizers", "sign_sgd,adam"], ["--optimizers must be among"], capsys)


def test_galore_alignment_quick_runs_print_a_row_per_step_under_either_schedule():
    script = REPO / "benchmarks" / "galore_alignment.py"
    temps = {}
    for schedule in ("breadth", "depth"):
        proc = run(script, "--quick", "--schedule", schedule)
        assert proc.returncode == 0, proc.stderr[-3000:]
        lines = proc.stdout.splitlines()
        assert lines[0].endswith(f"{schedule}-first schedule"), lines[0]
        rows = [line.strip("| ").split(" | ") for line in lines[4:]]
        assert [row[0] for row in rows] == ["optjax", "optjax without alignment", "optax"]
        assert all(float(cell) > 0 for row in rows for cell in row[1:5]), rows
        assert all(float(row[5]) >= 0 for row in rows), rows  # page faults per step
        temps[schedule] = rows[0][4]
    # The flag reaches XLA: optjax's step asks for another amount of scratch under each schedule.
    assert temps["breadth"] != temps["depth"], temps


def test_compile_time_prints_a_row_per_tree_and_marks_a_compile_past_its_limit():
    script = REPO / "benchmarks" / "compile_time.py"
    proc = run(script, "--leaves", "3", "--optimizers", "sign_sgd")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split(" | ") for line in proc.stdout.splitlines()[2:]]
    assert [row[:2] for row in rows] == [["| sign_sgd", "3"]]
    assert all(float(cell) > 0 for row in rows for cell in row[2:4]), rows  # compile seconds
    assert all(float(cell) > 0 for row in rows for cell in row[4:6]), rows  # step milliseconds
    assert all(float(cell.strip(" |")) > 0 for row in rows for cell in row[6:]), rows  # kB
    proc = run(script, "--leaves", "4", "--optimizers", "sign_sgd", "--limit", "0.05")
    assert proc.stdout.splitlines()[2] == "| sign_sgd | 4 | >0.05 | >0.05 | - | - | - | - |"
