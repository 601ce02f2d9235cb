"""Execute the notebooks top to bottom and save their outputs in place.

    python notebooks/run.py                 # every notebook, full size (what is committed)
    python notebooks/run.py 02 04           # the notebooks whose names start with these
    OPTJAX_NOTEBOOK_SIZE=small python notebooks/run.py --no-save   # a quick check

Figures are embedded whatever MPLBACKEND the caller has set: the kernel always runs matplotlib's
inline backend. A code cell that calls pyplot draws; it shows each figure with `plt.show()`, and
a notebook in which a drawing cell has no image output is reported and not saved.

The test suite runs every notebook at the small size without saving (tests/test_notebooks.py).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent

# The backend that turns a shown figure into an image/png output. Any other one (Agg, set for
# headless runs) would leave the saved notebook without a single figure.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
PYPLOT_CALL = re.compile(r"\bplt\.\w+\(")  # a cell that calls pyplot draws
NEW_FIGURE = re.compile(r"\bplt\.(?:figure|subplots|subplot_mosaic)\(")
SHOW = re.compile(r"\bplt\.show\(\)")


def notebooks(prefixes: list[str] | None = None) -> list[Path]:
    found = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    if prefixes:
        found = [p for p in found if any(p.name.startswith(x) for x in prefixes)]
    return found


def drawing_cells(nb: nbformat.NotebookNode) -> list[tuple[int, nbformat.NotebookNode]]:
    """The code cells that call pyplot, with their index in the notebook."""
    return [
        (i, cell)
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and PYPLOT_CALL.search(cell.source)
    ]


def images(cell: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def missing_figures(nb: nbformat.NotebookNode) -> list[str]:
    """One line for each drawing cell with fewer image/png outputs than the figures it makes
    (at least one)."""
    missing = []
    for i, cell in drawing_cells(nb):
        expected = max(len(NEW_FIGURE.findall(cell.source)), 1)
        if images(cell) < expected:
            first = cell.source.strip().splitlines()[0]
            missing.append(f"cell {i} ({first!r}): {images(cell)} image(s), {expected} expected")
    return missing


def execute(path: Path, timeout: int = 1200) -> nbformat.NotebookNode:
    """Run a notebook in a fresh kernel with the notebooks folder as working directory."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
    )
    client.execute(env={**os.environ, "MPLBACKEND": INLINE_BACKEND})
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "prefixes", nargs="*", help="run only notebooks whose names start with these"
    )
    parser.add_argument(
        "--no-save", action="store_true", help="execute without writing outputs back"
    )
    args = parser.parse_args(argv)
    size = os.environ.get("OPTJAX_NOTEBOOK_SIZE", "full")
    failed = 0
    for path in notebooks(args.prefixes):
        start = time.perf_counter()
        nb = execute(path)
        seconds = time.perf_counter() - start
        missing = missing_figures(nb)
        if missing:
            failed += 1
            print(f"{path.name}: not saved, drawing cells without a figure:", file=sys.stderr)
            print("\n".join(f"  {line}" for line in missing), file=sys.stderr, flush=True)
            continue
        if not args.no_save:
            nbformat.write(nb, path)
        print(f"{path.name}: ran at size {size} in {seconds:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
