"""Execute the notebooks top to bottom and save their outputs in place.

    python notebooks/run.py                 # every notebook, full size (what is committed)
    python notebooks/run.py 02 04           # the notebooks whose names start with these
    OPTJAX_NOTEBOOK_SIZE=small python notebooks/run.py --no-save   # a quick check

The test suite runs every notebook at the small size without saving (tests/test_notebooks.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def notebooks(prefixes: list[str] | None = None) -> list[Path]:
    found = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    if prefixes:
        found = [p for p in found if any(p.name.startswith(x) for x in prefixes)]
    return found


def execute(path: Path, timeout: int = 1200) -> nbformat.NotebookNode:
    """Run a notebook in a fresh kernel with the notebooks folder as working directory."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prefixes", nargs="*", help="run only notebooks whose names start with these")
    parser.add_argument("--no-save", action="store_true", help="execute without writing outputs back")
    args = parser.parse_args(argv)
    size = os.environ.get("OPTJAX_NOTEBOOK_SIZE", "full")
    for path in notebooks(args.prefixes):
        start = time.perf_counter()
        nb = execute(path)
        if not args.no_save:
            nbformat.write(nb, path)
        print(f"{path.name}: ran at size {size} in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
