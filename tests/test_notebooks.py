"""Every notebook runs top to bottom at the small size (OPTJAX_NOTEBOOK_SIZE=small); a failing
cell fails the test. Outputs are not written back: the committed ones come from
`python notebooks/run.py` at full size.

A code cell that calls pyplot draws a figure and shows it with `plt.show()`; its outputs must
hold an image/png, both when the test runs it and in the committed notebook."""

import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("notebook_runner", ROOT / "notebooks" / "run.py")
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)


@pytest.fixture
def small_size(monkeypatch):
    monkeypatch.setenv("OPTJAX_NOTEBOOK_SIZE", "small")
    # A headless backend, as on CI: the runner must still embed every figure.
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.mark.parametrize("path", runner.notebooks(), ids=lambda p: p.name)
def test_notebook_runs(path, small_size):
    nb = runner.execute(path, timeout=600)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert not runner.missing_figures(nb)


def test_notebooks_use_only_the_public_api():
    for path in runner.notebooks():
        text = path.read_text()
        assert "optjax._" not in text and "from optjax.transforms" not in text, path.name


def test_committed_notebooks_have_outputs():
    for path in runner.notebooks():
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.get("execution_count") for c in code), f"{path.name} has unexecuted cells"


@pytest.mark.parametrize("path", runner.notebooks(), ids=lambda p: p.name)
def test_committed_drawing_cells_have_their_figures(path):
    nb = nbformat.read(path, as_version=4)
    assert runner.drawing_cells(nb), f"{path.name} draws nothing"
    missing = runner.missing_figures(nb)
    assert not missing, f"{path.name}: " + "; ".join(missing)


@pytest.mark.parametrize("path", runner.notebooks(), ids=lambda p: p.name)
def test_drawing_cells_show_their_figures(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in runner.drawing_cells(nb):
        assert runner.SHOW.search(cell.source), f"{path.name} cell {i} draws without plt.show()"


def test_missing_figures_reads_the_outputs():
    cell = nbformat.v4.new_code_cell("fig, ax = plt.subplots()\nax.plot([1, 2])\nplt.show()")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), cell])
    assert runner.missing_figures(nb) == [
        "cell 1 ('fig, ax = plt.subplots()'): 0 image(s), 1 expected"
    ]
    cell.outputs = [nbformat.v4.new_output("display_data", {"image/png": "iVBOR"})]
    assert runner.missing_figures(nb) == []
    cell.source += "\nfig2 = plt.figure()\nplt.show()"  # two figures, one image
    assert len(runner.missing_figures(nb)) == 1
