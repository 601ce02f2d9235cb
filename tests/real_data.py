"""Where the real MNIST files are for the tests that train or read them: $OPTJAX_DATA_DIR, else
../shared/data beside the repository (what `make test` and .ci/run point to), else none."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _find() -> Path | None:
    for candidate in (os.environ.get("OPTJAX_DATA_DIR"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "mnist").is_dir():
            return Path(candidate)
    return None


MNIST_DIR = _find()

needs_mnist = pytest.mark.skipif(
    MNIST_DIR is None, reason="no MNIST files: set OPTJAX_DATA_DIR or put them in ../shared/data"
)
