"""MNIST and Fashion-MNIST: the IDX reader, where the files are looked for, the download, batches.

Where the files are looked for, in order (the first directory holding all four files wins):

1. the ``data_dir`` argument, 2. the ``OPTJAX_DATA_DIR`` environment variable, 3. the per-user
cache (``$XDG_CACHE_HOME/optjax`` or ``~/.cache/optjax``). In each, the dataset's own subfolder
(``mnist/``, ``fashion-mnist/``) is tried first, then the directory itself. A file may be the
published ``.gz`` or its decompressed twin. Only then are the files downloaded from the public
mirrors into the cache, each checked against its published sha256 before it is kept.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import urllib.request
import zlib
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DATASETS",
    "MAX_IDX_BYTES",
    "UBYTE",
    "BatchSampler",
    "ChecksumError",
    "DataNotFoundError",
    "Dataset",
    "DatasetSpec",
    "IDXError",
    "Opener",
    "default_cache_dir",
    "download",
    "find_files",
    "load_dataset",
    "parse_idx",
    "read_idx",
    "search_dirs",
    "sha256",
    "verify_checksum",
]


class IDXError(ValueError):
    """An IDX file that is truncated, corrupt, or not what its header says."""


class DataNotFoundError(FileNotFoundError):
    """The dataset is in none of the searched directories and could not be downloaded."""


class ChecksumError(ValueError):
    """A dataset file whose sha256 is not the published one."""


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's files: ``files`` maps a role (train_images, ...) to (file name, sha256)."""

    name: str
    subdirs: tuple[str, ...]
    mirrors: tuple[str, ...]
    files: dict[str, tuple[str, str]]
    num_classes: int = 10


def _idx_files(sums: tuple[str, str, str, str]) -> dict[str, tuple[str, str]]:
    names = (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    )
    roles = ("train_images", "train_labels", "test_images", "test_labels")
    return {role: (f"{name}.gz", sha) for role, name, sha in zip(roles, names, sums, strict=True)}


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        "mnist",
        ("mnist",),
        (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        _idx_files(
            (
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            )
        ),
    ),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist",
        ("fashion-mnist", "fashion_mnist"),
        (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        _idx_files(
            (
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            )
        ),
    ),
}

# IDX type codes (third header byte): their names in the format's definition, and big-endian
# NumPy dtypes.
_IDX_TYPES = {
    0x08: ("ubyte", ">u1"),
    0x09: ("byte", ">i1"),
    0x0B: ("short", ">i2"),
    0x0C: ("int", ">i4"),
    0x0D: ("float", ">f4"),
    0x0E: ("double", ">f8"),
}
_IDX_DTYPES = {code: dtype for code, (_, dtype) in _IDX_TYPES.items()}
UBYTE = 0x08  # the one element type the loader takes: MNIST's images and labels are unsigned bytes
MAX_IDX_BYTES = 1 << 30  # read_idx's default limit on a file's data; MNIST's largest has 47 MB
_MAX_DEFLATE_RATIO = 1032  # deflate cannot expand one byte into more than 1032


def _type_name(code: int) -> str:
    name = _IDX_TYPES.get(code, ("unknown",))[0]
    return f"0x{code:02X} ({name})"


def _read_exactly(f, n: int, source: str) -> bytes:
    """Up to ``n`` bytes of ``f`` (fewer only at its end): a header, or one byte to check."""
    buffer = bytearray(n)
    return bytes(buffer[: _read_into(f, memoryview(buffer), source)])


def _read_into(f, buffer: memoryview, source: str) -> int:
    """Fill ``buffer`` from ``f`` a block (at most 1 MiB) at a time; the bytes read, fewer than
    its length only at the end of ``f``."""
    done = 0
    try:
        while done < len(buffer):
            n = f.readinto(buffer[done : done + (1 << 20)])
            if not n:
                break
            done += n
    except (OSError, EOFError, zlib.error) as error:
        raise IDXError(f"{source}: corrupt or truncated gzip data ({error})") from None
    return done


def _read_stream(
    f,
    source: str,
    types: Collection[int] | None,
    max_bytes: int,
    available: int | None,
    gzipped: bool,
) -> np.ndarray:
    """Read one IDX file from the stream ``f``: the header first, checked (magic, element type
    in ``types``, data size within ``max_bytes`` and what the file can hold), then exactly the
    declared data, then one byte more to tell trailing bytes. ``available`` is the size of the
    file on disk (None for bytes in memory); a gzip file can hold at most 1032 times it."""
    start = _read_exactly(f, 4, source)
    if len(start) < 4:
        raise IDXError(
            f"{source}: not an IDX file: {len(start)} bytes, shorter than the 4-byte magic"
        )
    magic = int.from_bytes(start, "big")
    type_code, ndim = start[2], start[3]
    if start[0] or start[1] or type_code not in _IDX_TYPES or ndim == 0:
        raise IDXError(
            f"{source}: bad IDX magic number 0x{magic:08x}: expected 0x0000TTNN with type code TT "
            f"in {{{', '.join(f'0x{c:02x}' for c in _IDX_TYPES)}}} and NN >= 1 dimensions "
            "(2051 for images, 2049 for labels)"
        )
    if types is not None and type_code not in types:
        allowed = ", ".join(_type_name(code) for code in sorted(types))
        raise IDXError(
            f"{source}: element type {_type_name(type_code)} cannot be loaded; allowed: {allowed}"
        )
    sizes = _read_exactly(f, 4 * ndim, source)
    header = 4 + 4 * ndim
    if len(sizes) < 4 * ndim:
        raise IDXError(
            f"{source}: truncated header: {ndim} dimensions need {header} bytes, "
            f"file has {4 + len(sizes)}"
        )
    dims = tuple(int.from_bytes(sizes[4 * i : 4 * i + 4], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = math.prod(dims) * dtype.itemsize  # a Python int: no overflow
    if expected > max_bytes:
        raise IDXError(
            f"{source}: header says shape {dims} ({expected} bytes of data), more than the "
            f"{max_bytes} bytes allowed (max_bytes)"
        )
    if available is not None:
        most = _MAX_DEFLATE_RATIO * available if gzipped else available - header
        if expected > most:
            raise IDXError(
                f"{source}: truncated: header says shape {dims} ({expected} bytes of data), "
                f"more than a {'gzip ' if gzipped else ''}file of {available} bytes can hold"
            )
    payload = np.empty(expected, np.uint8)  # bounded above; pages are used only as filled
    got = _read_into(f, payload.data, source)
    if got < expected:
        raise IDXError(
            f"{source}: truncated: header says shape {dims} ({expected} bytes of data), "
            f"file has {got} bytes after the header"
        )
    if _read_exactly(f, 1, source):  # one byte more, no further: a bomb stops here
        raise IDXError(
            f"{source}: has trailing bytes: header says shape {dims} ({expected} bytes of data), "
            "file has more after the header"
        )
    return payload.view(dtype).reshape(dims).astype(dtype.newbyteorder("="), copy=False)


def parse_idx(
    data: bytes,
    source: str = "<bytes>",
    *,
    types: Collection[int] | None = None,
    max_bytes: int = MAX_IDX_BYTES,
) -> np.ndarray:
    """Decode the bytes of one (decompressed) IDX file into an array of the header's shape.

    The header is a big-endian magic ``0x0000TTNN`` (type code TT, NN dimensions), then NN
    uint32 sizes; the payload must be exactly the product of the sizes times the item size.
    ``types`` limits the type codes accepted (any of the format's six when None); a header
    declaring more than ``max_bytes`` of data is refused.
    """
    return _read_stream(io.BytesIO(data), source, types, max_bytes, len(data), gzipped=False)


def read_idx(
    path: str | os.PathLike,
    *,
    types: Collection[int] | None = None,
    max_bytes: int = MAX_IDX_BYTES,
) -> np.ndarray:
    """Read an IDX file, gzip-compressed or raw (told apart by the gzip magic bytes).

    A gzip file is decompressed as it is read: its header is checked first (see `parse_idx`
    for ``types`` and ``max_bytes``), and no more than the declared data and one byte are ever
    decompressed, so a small file claiming or holding a huge array fails fast, in little memory.

    Example:
        >>> import gzip, pathlib, tempfile
        >>> labels = bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])  # magic 0x0801, 3 labels: 7 2 1
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = pathlib.Path(folder) / "labels.gz"
        ...     _ = path.write_bytes(gzip.compress(labels))
        ...     optjax.train.read_idx(path)
        array([7, 2, 1], dtype=uint8)
    """
    path = Path(path)
    try:
        raw = open(path, "rb")  # closed below, whichever reader wraps it
    except OSError as error:
        raise IDXError(f"{path}: cannot be read ({error})") from None
    with raw:
        size = os.fstat(raw.fileno()).st_size
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        if not gzipped:
            return _read_stream(raw, str(path), types, max_bytes, size, gzipped=False)
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            return _read_stream(stream, str(path), types, max_bytes, size, gzipped=True)


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """The per-user cache: ``$XDG_CACHE_HOME/optjax``, else ``~/.cache/optjax``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "optjax"


def _spec(dataset: str | DatasetSpec) -> DatasetSpec:
    if isinstance(dataset, DatasetSpec):
        return dataset
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got dataset={dataset!r}")
    return DATASETS[dataset]


def search_dirs(
    dataset: str | DatasetSpec, data_dir: str | os.PathLike | None = None
) -> list[Path]:
    """The directories searched for ``dataset``'s files, in order."""
    spec = _spec(dataset)
    bases = [data_dir, os.environ.get("OPTJAX_DATA_DIR") or None, default_cache_dir()]
    dirs: list[Path] = []
    for base in bases:
        if base is not None:
            for d in [Path(base) / sub for sub in spec.subdirs] + [Path(base)]:
                if d not in dirs:
                    dirs.append(d)
    return dirs


def _file_in(directory: Path, filename: str) -> Path | None:
    for candidate in (directory / filename, directory / filename.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def find_files(dataset: str | DatasetSpec, data_dir=None) -> dict[str, Path] | None:
    """The paths of the dataset's files in the first searched directory holding all of them."""
    spec = _spec(dataset)
    for directory in search_dirs(spec, data_dir):
        found = {role: _file_in(directory, name) for role, (name, _) in spec.files.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def verify_checksum(path: Path, expected: str) -> None:
    """Raise ChecksumError unless the file's sha256 is ``expected``."""
    actual = sha256(path)
    if actual != expected:
        raise ChecksumError(
            f"{path}: sha256 {actual} is not the published {expected}; the file is corrupt or "
            "not the original: delete it and fetch it again"
        )


Opener = Callable[..., AbstractContextManager[Any]]  # urlopen(url, timeout=...)-like


def download(
    dataset: str | DatasetSpec,
    cache_dir: str | os.PathLike | None = None,
    opener: Opener | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download the dataset's missing files into ``cache_dir/<subdir>``, trying each mirror in
    turn; a file is kept only once its sha256 matches (a bad copy is deleted, never cached).

    ``opener(url, timeout=...)`` returns a readable file-like object (urllib's urlopen by
    default). Raises DataNotFoundError naming every failed attempt.
    """
    spec = _spec(dataset)
    opener = opener or urllib.request.urlopen
    target = Path(cache_dir or default_cache_dir()) / spec.subdirs[0]
    target.mkdir(parents=True, exist_ok=True)
    for filename, expected in spec.files.values():
        final = target / filename
        if final.is_file() and sha256(final) == expected:
            continue
        failures = []
        for mirror in spec.mirrors:
            url = mirror + filename
            partial = final.with_name(filename + ".part")
            try:
                digest = hashlib.sha256()
                with opener(url, timeout=timeout) as response, open(partial, "wb") as out:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
                if digest.hexdigest() != expected:
                    raise ChecksumError(
                        f"sha256 {digest.hexdigest()} is not the published {expected}"
                    )
                os.replace(partial, final)
                break
            except (OSError, ValueError) as error:
                failures.append(f"{url}: {error}")
            finally:
                partial.unlink(missing_ok=True)
        else:
            raise DataNotFoundError(f"could not download {filename}: " + "; ".join(failures))
    return target


@dataclass(frozen=True)
class Dataset:
    """Images as uint8 (N, 28, 28) and labels as int32 (N,), for the train and test splits."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int = 10


def _not_found_message(spec: DatasetSpec, data_dir, reason: str) -> str:
    names = ", ".join(name for name, _ in spec.files.values())
    where = Path(data_dir or os.environ.get("OPTJAX_DATA_DIR") or default_cache_dir())
    return (
        f"{spec.name} not found ({reason}); put {names} in {where / spec.subdirs[0]} "
        f"(or set OPTJAX_DATA_DIR to a directory holding {spec.subdirs[0]}/)"
    )


def load_dataset(
    dataset: str | DatasetSpec,
    data_dir: str | os.PathLike | None = None,
    *,
    download_missing: bool = True,
    verify: bool = True,
    opener: Opener | None = None,
) -> Dataset:
    """Load a dataset by name ("mnist", "fashion_mnist") from the first directory in the search
    order holding its files, downloading them into the cache if none does.

    ``verify`` checks each ``.gz`` file against its published sha256 (decompressed files are
    checked by their IDX structure only).
    """
    spec = _spec(dataset)
    files = find_files(spec, data_dir)
    if files is None:
        searched = ", ".join(str(d) for d in search_dirs(spec, data_dir))
        if not download_missing:
            raise DataNotFoundError(_not_found_message(spec, data_dir, f"searched {searched}"))
        try:
            target = download(spec, opener=opener)
        except DataNotFoundError as error:
            raise DataNotFoundError(
                _not_found_message(spec, data_dir, f"searched {searched}; download failed: {error}")
            ) from None
        files = find_files(spec, data_dir)
        if files is None:  # the cache is searched last: only a changed environment gets here
            raise DataNotFoundError(
                _not_found_message(spec, data_dir, f"downloaded into {target}, then not found")
            )
    arrays = {}
    for role, path in files.items():
        if verify and path.suffix == ".gz":
            verify_checksum(path, spec.files[role][1])
        arrays[role] = read_idx(path, types=(UBYTE,))
    _check_splits(spec, files, arrays)
    return Dataset(
        spec.name,
        arrays["train_images"].astype(np.uint8),
        arrays["train_labels"].astype(np.int32),
        arrays["test_images"].astype(np.uint8),
        arrays["test_labels"].astype(np.int32),
        spec.num_classes,
    )


def _check_splits(spec: DatasetSpec, files: dict[str, Path], arrays: dict[str, np.ndarray]) -> None:
    """Refuse files that do not make a dataset: images not (N, rows, cols), labels not (N,),
    counts that differ, a label outside [0, num_classes), train and test images of two sizes."""
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        image_file, label_file = files[f"{split}_images"], files[f"{split}_labels"]
        if images.ndim != 3:
            raise IDXError(
                f"{image_file}: {spec.name} {split} images must have 3 dimensions (N, rows, "
                f"cols), got shape {images.shape}"
            )
        if labels.ndim != 1:
            raise IDXError(
                f"{label_file}: {spec.name} {split} labels must have 1 dimension (N,), got "
                f"shape {labels.shape}"
            )
        if len(images) != len(labels):
            raise IDXError(
                f"{spec.name} {split}: {len(images)} images in {image_file} but {len(labels)} "
                f"labels in {label_file}: the counts must be equal"
            )
        bad = np.flatnonzero(labels >= spec.num_classes)  # uint8: never negative
        if bad.size:
            raise IDXError(
                f"{label_file}: {spec.name} {split} label {int(labels[bad[0]])} at index "
                f"{int(bad[0])} is outside [0, {spec.num_classes}) ({bad.size} of {labels.size} "
                "labels are)"
            )
    train, test = arrays["train_images"].shape[1:], arrays["test_images"].shape[1:]
    if train != test:
        raise IDXError(
            f"{spec.name}: train images are {train[0]}x{train[1]} ({files['train_images']}) but "
            f"test images are {test[0]}x{test[1]} ({files['test_images']}): they must be one size"
        )


class BatchSampler:
    """Seeded minibatch indices: each epoch is a fresh permutation of the ``n`` examples, cut into
    batches of ``batch_size`` (an incomplete last batch is dropped).

    Example:
        >>> sampler = optjax.train.BatchSampler(n=6, batch_size=3, seed=0)
        >>> sorted(np.concatenate(sampler.take(2)).tolist())   # one epoch: every example once
        [0, 1, 2, 3, 4, 5]
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        if not 1 <= batch_size <= n:
            raise ValueError(
                f"batch_size must be in [1, {n}] (the number of examples), "
                f"got batch_size={batch_size}"
            )
        self.n, self.batch_size = n, batch_size
        self.rng = np.random.default_rng(seed)
        self._pending = np.empty((0, batch_size), np.int32)

    def _epoch(self) -> np.ndarray:
        order = self.rng.permutation(self.n).astype(np.int32)
        full = self.n // self.batch_size * self.batch_size
        return order[:full].reshape(-1, self.batch_size)

    def take(self, k: int) -> np.ndarray:
        """The next ``k`` batches of indices, shape (k, batch_size)."""
        while len(self._pending) < k:
            self._pending = np.concatenate([self._pending, self._epoch()])
        out, self._pending = self._pending[:k], self._pending[k:]
        return out

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            yield self.take(1)[0]
