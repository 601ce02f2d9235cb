"""Every notebook runs top to bottom at the small size (OPTJAX_NOTEBOOK_SIZE=small); a failing
cell fails the test. Outputs are not written back: the committed ones come from
`python notebooks/run.py` at full size."""

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
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.mark.parametrize("path", runner.notebooks(), ids=lambda p: p.name)
def test_notebook_runs(path, small_size):
    nb = runner.execute(path, timeout=600)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_notebooks_use_only_the_public_api():
    for path in runner.notebooks():
        text = path.read_text()
        assert "optjax._" not in text and "from optjax.transforms" not in text, path.name


def test_committed_notebooks_have_outputs():
    for path in runner.notebooks():
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.get("execution_count") for c in code), f"{path.name} has unexecuted cells"
