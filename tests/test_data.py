"""The IDX reader, the search order, the download (with a fake opener: no network), batching."""

import gzip
import hashlib
import io
import tracemalloc
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from real_data import MNIST_DIR, needs_mnist

from optjax.train import data
from optjax.train.data import (
    BatchSampler,
    ChecksumError,
    DataNotFoundError,
    DatasetSpec,
    IDXError,
    load_dataset,
    read_idx,
)


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file written by hand from the format's definition (big-endian header)."""
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(
        d.to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(dtypes[type_code]).tobytes()


def small_split(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def write_dataset(
    directory: Path, n_train=30, n_test=20, compress=True
) -> dict[str, tuple[str, str]]:
    """Write the four files of a small synthetic dataset; return role -> (file name, sha256)."""
    directory.mkdir(parents=True, exist_ok=True)
    (tri, trl), (tei, tel) = small_split(n_train, 0), small_split(n_test, 1)
    files = {}
    for role, stem, array in [
        ("train_images", "train-images-idx3-ubyte", tri),
        ("train_labels", "train-labels-idx1-ubyte", trl),
        ("test_images", "t10k-images-idx3-ubyte", tei),
        ("test_labels", "t10k-labels-idx1-ubyte", tel),
    ]:
        raw = idx_bytes(array)
        payload = gzip.compress(raw, mtime=0) if compress else raw
        name = stem + ".gz" if compress else stem
        (directory / name).write_bytes(payload)
        files[role] = (stem + ".gz", hashlib.sha256(gzip.compress(raw, mtime=0)).hexdigest())
    return files


def spec_for(
    files, mirrors=("https://mirror-a.invalid/", "https://mirror-b.invalid/")
) -> DatasetSpec:
    return DatasetSpec("tiny", ("tiny",), mirrors, files)


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No OPTJAX_DATA_DIR, and a per-test user cache."""
    monkeypatch.delenv("OPTJAX_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


# ---------------------------------------------------------------- the IDX reader


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_round_trips_images_and_labels(tmp_path, compress):
    images, labels = small_split(7, 3)
    for name, array in [("img", images), ("lab", labels)]:
        raw = idx_bytes(array)
        path = tmp_path / name
        path.write_bytes(gzip.compress(raw) if compress else raw)
        out = read_idx(path)
        assert out.dtype == np.uint8 and out.shape == array.shape
        np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize(
    "type_code, values",
    [
        (0x08, np.array([0, 7, 255], np.uint8)),
        (0x09, np.array([-128, 0, 127], np.int8)),
        (0x0B, np.array([-300, 7, 1024], np.int16)),
        (0x0C, np.array([-(2**31), 5, 2**31 - 1], np.int32)),
        (0x0D, np.array([[1.5, -2.0], [3.25, 1e6]], np.float32)),
        (0x0E, np.array([0.1, -1e300], np.float64)),
    ],
    ids=["ubyte", "byte", "short", "int", "float", "double"],
)
def test_read_idx_decodes_every_big_endian_type(tmp_path, type_code, values):
    (tmp_path / "f").write_bytes(idx_bytes(values, type_code))
    out = read_idx(tmp_path / "f")
    assert out.dtype == values.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, values)


def test_read_idx_header_is_2051_for_mnist_style_images():
    # The published header of MNIST's training images: magic 2051, 60000 x 28 x 28.
    header = bytes.fromhex("000008030000ea600000001c0000001c")
    with pytest.raises(IDXError, match=r"truncated: header says shape \(60000, 28, 28\)"):
        data.parse_idx(header + b"\x00" * 100)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\x00", "trailing bytes"),
        (lambda b: b[:10], "truncated header"),
        (lambda b: b[:3], "shorter than the 4-byte magic"),
        (lambda b: b"\x01" + b[1:], "bad IDX magic number 0x01000803"),
        (lambda b: b[:2] + b"\x07" + b[3:], "bad IDX magic number"),
        (lambda b: b[:3] + b"\x00" + b[4:], "bad IDX magic number"),
    ],
    ids=[
        "short-payload",
        "long-payload",
        "short-header",
        "tiny",
        "magic-byte",
        "type-code",
        "zero-dims",
    ],
)
def test_read_idx_rejects_corrupt_files_naming_the_file(tmp_path, corrupt, message):
    path = tmp_path / "bad-idx"
    path.write_bytes(corrupt(idx_bytes(small_split(3, 0)[0])))
    with pytest.raises(IDXError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_rejects_truncated_gzip(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(small_split(3, 0)[0]))[:-20])
    with pytest.raises(IDXError, match="corrupt or truncated gzip"):
        read_idx(path)


def gzip_of_zeros(header: bytes, zeros: int) -> bytes:
    """A gzip file of ``header`` then ``zeros`` zero bytes, compressed a block at a time (the
    test never holds the decompressed bytes)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1, mtime=0) as f:
        f.write(header)
        block = bytes(1 << 20)
        for start in range(0, zeros, len(block)):
            f.write(block[: min(len(block), zeros - start)])
    return out.getvalue()


def header(type_code: int, *dims: int) -> bytes:
    return bytes([0, 0, type_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


BIG = 2**32 - 1  # the largest size an IDX dimension can declare
# Files claiming or holding far more than they should: (file bytes, message). Each must fail
# holding no more than what its header declares (47 MB for 60000 images) and a few MiB.
HOSTILE_IDX = {
    "bomb-declares-10-bytes": (lambda: gzip_of_zeros(header(0x08, 10), 64 << 20),
                               r"has trailing bytes: header says shape \(10,\)"),
    "bomb-declares-60000-images": (
        lambda: gzip_of_zeros(header(0x08, 60000, 28, 28), 64 << 20), r"has trailing bytes"),
    "gzip-declares-900MB": (lambda: gzip_of_zeros(header(0x08, 900, 1000, 1000), 1 << 20),
                            r"900000000 bytes of data\), more than a gzip file of \d+ bytes"),
    "raw-declares-60000-images": (lambda: header(0x08, 60000, 28, 28) + bytes(1000),
                                  r"truncated: .* more than a file of 1016 bytes can hold"),
    "overflows-int64": (lambda: header(0x08, BIG, BIG, BIG) + bytes(8),
                        r"header says shape \(4294967295, 4294967295, 4294967295\) "
                        r"\(79228162458924105385300197375 bytes of data\), more than the "
                        r"1073741824 bytes allowed"),
    "doubles-overflow": (lambda: gzip.compress(header(0x0E, BIG, BIG) + bytes(64)),
                         r"more than the 1073741824 bytes allowed"),
    "255-dims": (lambda: header(0x08, *[BIG] * 255), r"more than the 1073741824 bytes allowed"),
    "over-max-bytes": (lambda: gzip_of_zeros(header(0x08, 1 << 31), 1 << 20),
                       r"\(2147483648 bytes of data\), more than the 1073741824 bytes allowed"),
}  # fmt: skip


@pytest.mark.parametrize("case", HOSTILE_IDX)
def test_hostile_idx_files_fail_fast_in_bounded_memory(tmp_path, case):
    build, message = HOSTILE_IDX[case]
    path = tmp_path / "hostile"
    path.write_bytes(build())
    tracemalloc.start()
    try:
        with pytest.raises(IDXError, match=message) as info:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)
    declared = 60000 * 28 * 28 if "60000" in case else 0
    assert peak < declared + (8 << 20), f"{peak / 2**20:.0f} MiB held to refuse a bad file"


def test_read_idx_max_bytes_and_types_are_checked_from_the_header(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(10, dtype=np.uint8))))
    assert read_idx(path, max_bytes=10, types=(0x08,)).tolist() == list(range(10))
    with pytest.raises(IDXError, match=r"\(10 bytes of data\), more than the 9 bytes allowed"):
        read_idx(path, max_bytes=9)
    with pytest.raises(
        IDXError, match=r"type 0x08 \(ubyte\) cannot be loaded; allowed: 0x0D \(float\)$"
    ):
        read_idx(path, types=(0x0D,))


# ---------------------------------------------------------------- where the files are found


def test_load_dataset_reads_files_and_checks_shapes(clean_env):
    files = write_dataset(clean_env / "d")
    ds = load_dataset(spec_for(files), clean_env / "d", download_missing=False)
    images, labels = small_split(30, 0)
    np.testing.assert_array_equal(ds.train_images, images)
    np.testing.assert_array_equal(ds.train_labels, labels)
    assert ds.train_labels.dtype == np.int32 and ds.test_images.shape == (20, 28, 28)


def test_search_order_argument_then_env_then_cache(clean_env, monkeypatch):
    files = write_dataset(clean_env / "arg" / "tiny", n_train=11)  # in the dataset's subfolder
    write_dataset(clean_env / "env", n_train=12)  # directly in the directory
    write_dataset(clean_env / "xdg" / "optjax" / "tiny", n_train=13)  # the cache
    spec = spec_for(files)
    monkeypatch.setenv("OPTJAX_DATA_DIR", str(clean_env / "env"))
    assert (
        len(
            load_dataset(spec, clean_env / "arg", download_missing=False, verify=False).train_labels
        )
        == 11
    )
    assert len(load_dataset(spec, download_missing=False, verify=False).train_labels) == 12
    # An argument without the files falls through to the next place in the order.
    assert (
        len(
            load_dataset(
                spec, clean_env / "empty", download_missing=False, verify=False
            ).train_labels
        )
        == 12
    )
    monkeypatch.delenv("OPTJAX_DATA_DIR")
    assert len(load_dataset(spec, download_missing=False, verify=False).train_labels) == 13
    dirs = data.search_dirs(spec, clean_env / "arg")
    assert dirs == [
        clean_env / "arg" / "tiny",
        clean_env / "arg",
        clean_env / "xdg" / "optjax" / "tiny",
        clean_env / "xdg" / "optjax",
    ]


def test_decompressed_files_are_accepted(clean_env):
    files = write_dataset(clean_env / "raw", compress=False)
    ds = load_dataset(spec_for(files), clean_env / "raw", download_missing=False)
    np.testing.assert_array_equal(ds.test_labels, small_split(20, 1)[1])


def test_wrong_checksum_is_a_clear_error(clean_env):
    files = write_dataset(clean_env / "d")
    files["test_labels"] = (files["test_labels"][0], "0" * 64)
    with pytest.raises(
        ChecksumError,
        match=r"t10k-labels-idx1-ubyte.gz: sha256 [0-9a-f]{64} is not the published 0{64}",
    ):
        load_dataset(spec_for(files), clean_env / "d", download_missing=False)


def _labels(values) -> np.ndarray:
    return np.asarray(values, np.uint8)


# Files that each read well alone but do not make a dataset: (role, array written, type code,
# the error's message, the file it names).
SPLIT_FAULTS = {
    "fewer-labels": ("test_labels", _labels([0] * 5), 0x08, r"20 images in .* but 5 labels in",
                     "t10k-images"),
    "more-labels": ("train_labels", _labels([1] * 31), 0x08, r"30 images in .* but 31 labels",
                    "train-labels"),
    "label-10": ("train_labels", _labels([3] * 29 + [10]), 0x08,
                 r"train label 10 at index 29 is outside \[0, 10\) \(1 of 30 labels are\)",
                 "train-labels"),
    "label-255": ("test_labels", _labels([255] * 20), 0x08,
                  r"test label 255 at index 0 is outside \[0, 10\) \(20 of 20 labels are\)",
                  "t10k-labels"),
    "test-images-32x32": ("test_images", np.zeros((20, 32, 32), np.uint8), 0x08,
                          r"train images are 28x28 .* but test images are 32x32",
                          "t10k-images"),
    "train-images-28x27": ("train_images", np.zeros((30, 28, 27), np.uint8), 0x08,
                           r"train images are 28x27 .* but test images are 28x28",
                           "train-images"),
    "images-2d": ("train_images", np.zeros((30, 784), np.uint8), 0x08,
                  r"train images must have 3 dimensions \(N, rows, cols\), got shape \(30, 784\)",
                  "train-images"),
    "labels-2d": ("test_labels", np.zeros((20, 1), np.uint8), 0x08,
                  r"test labels must have 1 dimension \(N,\), got shape \(20, 1\)", "t10k-labels"),
    "float-images": ("train_images", np.full((30, 28, 28), 0.5, np.float32), 0x0D,
                     r"element type 0x0D \(float\) cannot be loaded; allowed: 0x08 \(ubyte\)$",
                     "train-images"),
    "short-images": ("test_images", np.full((20, 28, 28), 300, np.int16), 0x0B,
                     r"element type 0x0B \(short\) cannot be loaded", "t10k-images"),
    "byte-labels": ("train_labels", np.ones(30, np.int8), 0x09,
                    r"element type 0x09 \(byte\) cannot be loaded", "train-labels"),
    "int-labels": ("test_labels", np.ones(20, np.int32), 0x0C,
                   r"element type 0x0C \(int\) cannot be loaded", "t10k-labels"),
    "double-labels": ("test_labels", np.ones(20), 0x0E,
                      r"element type 0x0E \(double\) cannot be loaded", "t10k-labels"),
}  # fmt: skip

_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@pytest.mark.parametrize("case", SPLIT_FAULTS)
def test_files_that_do_not_make_a_dataset_are_refused_naming_the_file(clean_env, case):
    role, array, type_code, message, named = SPLIT_FAULTS[case]
    files = write_dataset(clean_env / "d")
    path = clean_env / "d" / f"{_STEMS[role]}.gz"
    path.write_bytes(gzip.compress(idx_bytes(array, type_code)))
    with pytest.raises(IDXError, match=message) as info:
        load_dataset(spec_for(files), clean_env / "d", download_missing=False, verify=False)
    assert named in str(info.value) and str(clean_env / "d") in str(info.value)


def test_offline_without_files_says_where_to_put_them(clean_env):
    files = write_dataset(clean_env / "elsewhere")
    with pytest.raises(DataNotFoundError) as info:
        load_dataset(spec_for(files), clean_env / "nothing-here", download_missing=False)
    message = str(info.value)
    assert "\n" not in message
    assert f"in {clean_env / 'nothing-here' / 'tiny'}" in message and "OPTJAX_DATA_DIR" in message
    assert "train-images-idx3-ubyte.gz" in message


def test_unknown_dataset_name():
    with pytest.raises(
        ValueError,
        match=r"dataset must be one of \['fashion_mnist', 'mnist'\], got dataset='cifar'",
    ):
        load_dataset("cifar")


# ---------------------------------------------------------------- the download, with a fake opener


class FakeOpener:
    """Serves bytes per URL; an URL it does not know fails like an unreachable host."""

    def __init__(self, pages: dict[str, bytes]):
        self.pages, self.requests = pages, []

    def __call__(self, url, timeout=None):
        self.requests.append(url)
        if url not in self.pages:
            raise urllib.error.URLError("host unreachable")
        return io.BytesIO(self.pages[url])


def served(directory: Path, mirror: str) -> dict[str, bytes]:
    return {mirror + p.name: p.read_bytes() for p in directory.iterdir()}


def test_download_verifies_checksums_and_fills_the_cache(clean_env):
    files = write_dataset(clean_env / "origin")
    spec = spec_for(files)
    opener = FakeOpener(served(clean_env / "origin", spec.mirrors[1]))  # first mirror is down
    ds = load_dataset(spec, opener=opener)
    cache = clean_env / "xdg" / "optjax" / "tiny"
    assert sorted(p.name for p in cache.iterdir()) == sorted(name for name, _ in files.values())
    assert opener.requests[:2] == [
        spec.mirrors[0] + files["train_images"][0],
        spec.mirrors[1] + files["train_images"][0],
    ]
    np.testing.assert_array_equal(ds.train_images, small_split(30, 0)[0])
    # The next load finds the cache and asks the network for nothing.
    again = FakeOpener({})
    load_dataset(spec, opener=again)
    assert again.requests == []


def test_download_rejects_a_bad_checksum_and_caches_nothing(clean_env):
    files = write_dataset(clean_env / "origin")
    spec = spec_for(files)
    pages = served(clean_env / "origin", spec.mirrors[0])
    pages[spec.mirrors[0] + files["train_images"][0]] = b"\x1f\x8bnot the real file"
    with pytest.raises(
        DataNotFoundError, match=r"sha256 [0-9a-f]{64} is not the published"
    ) as info:
        load_dataset(spec, opener=FakeOpener(pages))
    assert "mirror-b.invalid" in str(info.value) and "host unreachable" in str(info.value)
    cache = clean_env / "xdg" / "optjax" / "tiny"
    assert list(cache.iterdir()) == []


def test_download_failure_offline_is_one_clear_line(clean_env):
    spec = spec_for(write_dataset(clean_env / "origin"))
    with pytest.raises(DataNotFoundError) as info:
        load_dataset(spec, opener=FakeOpener({}))
    message = str(info.value)
    assert "download failed" in message and "host unreachable" in message and "\n" not in message
    assert "put train-images-idx3-ubyte.gz" in message


def test_known_datasets_carry_the_published_sums():
    # From the datasets' README (../shared/data/README.md), copied by hand.
    assert data.DATASETS["mnist"].files["train_images"] == (
        "train-images-idx3-ubyte.gz",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    )
    assert data.DATASETS["fashion_mnist"].files["test_labels"] == (
        "t10k-labels-idx1-ubyte.gz",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    )
    assert data.DATASETS["fashion_mnist"].subdirs[0] == "fashion-mnist"


# ---------------------------------------------------------------- batching


def test_batch_sampler_covers_each_epoch_once_and_is_seeded():
    a, b, c = BatchSampler(50, 10, 3), BatchSampler(50, 10, 3), BatchSampler(50, 10, 4)
    batches = a.take(12)  # 2.4 epochs
    assert batches.shape == (12, 10) and batches.dtype == np.int32
    for epoch in (batches[:5], batches[5:10]):
        assert sorted(epoch.ravel().tolist()) == list(range(50))
    np.testing.assert_array_equal(np.concatenate([b.take(5), b.take(7)]), batches)
    assert not np.array_equal(c.take(12), batches)


def test_batch_sampler_drops_the_incomplete_batch():
    batches = BatchSampler(23, 5, 0).take(8)  # 4 full batches per epoch, 3 examples left out
    for epoch in (batches[:4], batches[4:]):
        assert len(set(epoch.ravel().tolist())) == 20


def test_batch_sampler_rejects_bad_batch_size():
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, 10\].*got batch_size=11"):
        BatchSampler(10, 11, 0)


# ---------------------------------------------------------------- the real files, where present


@needs_mnist
def test_real_mnist_matches_the_published_description():
    ds = load_dataset("mnist", MNIST_DIR, download_missing=False)
    assert ds.train_images.shape == (60000, 28, 28) and ds.test_images.shape == (10000, 28, 28)
    # Per-digit counts as published with the dataset.
    assert np.bincount(ds.train_labels).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert np.bincount(ds.test_labels).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    assert ds.train_images.dtype == np.uint8 and ds.train_images.max() == 255
