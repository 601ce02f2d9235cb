"""benchmarks/sharding.py: its HLO collective parser against bytes counted by hand, and a tiny
ZeRO-1 run whose table holds the facts ZeRO-1 promises (timings are never asserted)."""

import importlib
import re
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        yield importlib.import_module("sharding")
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


HLO = """\
HloModule jit_step, entry_computation_layout={(f32[16,64]{1,0})->f32[128,64]{1,0}}

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %add = f32[] add(%x, %y)
}

ENTRY %main.1 (param.0: f32[16,64]) -> f32[128,64] {
  %param.0 = f32[16,64]{1,0} parameter(0)
  %all-gather.1 = f32[128,64]{1,0} all-gather(%param.0), channel_id=1, dimensions={0}
  %all-reduce = (f32[], f32[64]{0}, bf16[8,4]{1,0}) all-reduce(%a, %b, %c), to_apply=%add
  %get-tuple-element.1 = f32[64]{0} get-tuple-element(%all-reduce), index=1
  %all-reduce.7 = (f32[], f32[], f32[], f32[], f32[], /*index=5*/s32[3]{0}) all-reduce(%d)
  %all-reduce.8 = pred[] all-reduce(%e), channel_id=2, to_apply=%or
  %fusion.2 = f32[128,64]{1,0} fusion(%all-gather.1, %all-reduce), kind=kLoop, calls=%fc
  %add.3 = f32[128,64]{1,0} add(%all-gather.1, %fusion.2)
  %reduce-scatter.4 = s32[4]{0} reduce-scatter(%f), channel_id=3, dimensions={0}
  %all-to-all = (bf16[2,16]{1,0}, bf16[2,16]{1,0}) all-to-all(%g, %h), channel_id=4
  %all-gather-start = (f32[16]{0}, f32[128]{0}) all-gather-start(%i), dimensions={0}
  %all-gather-done = f32[128]{0} all-gather-done(%all-gather-start)
  %collective-permute-start = (f64[10]{0}, f64[10]{0}, u32[], u32[]) collective-permute-start(%j)
  %collective-permute-done = f64[10]{0} collective-permute-done(%collective-permute-start)
  ROOT %tuple = (f32[128,64]{1,0}) tuple(%add.3)
}
"""


def test_collective_bytes_counts_every_array_of_every_result(bench):
    found = bench.collective_bytes(HLO)
    # Each figure by hand: elements x bytes of the dtype.
    assert found["all-gather"] == {
        "ops": 2,  # the plain one and the async pair, counted once by its -done
        "arrays": [128 * 64 * 4, 128 * 4],
        "bytes": 32768 + 512,
    }
    assert found["all-reduce"] == {
        "ops": 3,
        "arrays": [4, 64 * 4, 8 * 4 * 2, 4, 4, 4, 4, 4, 3 * 4, 1],
        "bytes": 4 + 256 + 64 + 5 * 4 + 12 + 1,
    }
    assert found["reduce-scatter"] == {"ops": 1, "arrays": [16], "bytes": 16}
    assert found["all-to-all"] == {"ops": 1, "arrays": [64, 64], "bytes": 128}
    assert found["collective-permute"] == {"ops": 1, "arrays": [80], "bytes": 80}


def test_collective_bytes_of_a_program_without_collectives(bench):
    found = bench.collective_bytes(HLO.split("ENTRY")[0])
    assert all(entry == {"ops": 0, "arrays": [], "bytes": 0} for entry in found.values())


@pytest.fixture(scope="module")
def zero1_run(bench):
    argv = ["--quick", "--optimizers", "adam", "--layouts", "zero1", "--trials", "1"]
    with jax.numpy_dtype_promotion("standard"):  # optax needs it (see tests/conftest.py)
        return bench.main(argv)


def test_zero1_run_splits_the_state_and_gathers_each_split_update(bench, zero1_run, capsys):
    shapes = jax.tree.leaves(bench.param_shapes(quick=True), is_leaf=bench.is_shape)
    nbytes = [4 * int(np.prod(s)) for s in shapes]
    split = [b for s, b in zip(shapes, nbytes) if bench.split_spec(s) != P()]
    whole = sum(nbytes) - sum(split)
    assert split and whole  # both kinds of leaves are there
    rows = zero1_run["rows"]
    assert [(r["optimizer"], r["layout"], r["library"]) for r in rows] == [
        ("adam", "zero1", "optjax"),
        ("adam", "zero1", "optax"),
    ]
    for r in rows:
        # Adam's state: mu and nu like every parameter, and an int32 count.
        assert r["state_bytes_total"] == 2 * sum(nbytes) + 4
        # Per device: an eighth of the split moments, the small ones whole.
        assert r["state_bytes_per_device"] == 2 * sum(split) // 8 + 2 * whole + 4
        assert r["state_bytes_per_device"] <= r["state_bytes_total"] / 8 + 2 * whole + 4
        # Each split update is gathered back once; nothing else moves.
        assert sorted(r["collectives"]["all-gather"]["arrays"]) == sorted(split)
        for op in ("all-reduce", "reduce-scatter", "all-to-all", "collective-permute"):
            assert r["collectives"][op]["bytes"] == 0, op
    assert rows[0]["max_param_difference_after_one_step"] < 1e-6


def test_zero1_run_prints_the_table(bench, zero1_run):
    lines = bench.render(zero1_run).splitlines()  # what main printed
    assert lines[0] == (
        "command: python benchmarks/sharding.py --quick --optimizers adam --layouts zero1 "
        "--trials 1"
    )
    machine = r"machine: .+; 8 simulated CPU devices on \d+ cores; .+; load average"
    assert re.match(machine, lines[1])
    assert re.match(r"versions: optjax [\d.]+, jax [\d.]+, optax [\d.]+, numpy", lines[2])
    header = lines[6].split("|")[1:-1]
    assert len(header) == 14 and "all-gather B (arrays)" in header[6]
    gathered = zero1_run["rows"][0]["collectives"]["all-gather"]["arrays"]
    for line, r in zip(lines[8:10], zero1_run["rows"]):
        cells = [c.strip() for c in line.split("|")[1:-1]]
        assert cells[:3] == ["adam", "zero1", r["library"]]
        assert cells[3] == f"{r['state_bytes_per_device']:,}"
        assert cells[6] == f"{sum(gathered):,} ({len(gathered)})"
        assert cells[7:11] == ["0"] * 4
