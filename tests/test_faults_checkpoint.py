"""Checkpoints under faults and hostile files: saves killed at random points, stale temporary
files, and crafted or damaged manifests and archives (one clear ValueError, in bounded memory).
"""

import copy
import gc
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
import types
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_checkpoint import _bits  # each leaf as (dtype, shape, raw bytes)

from optjax import checkpoint

TREE = {
    "key": jax.random.key(0),
    "n": 3,
    "w": jnp.arange(6, dtype=jnp.bfloat16),
}  # leaves in order: key (leaf 0), n (leaf 1), w (leaf 2)


# ---------------------------------------------------------------- a save killed at any point

# A child that imports optjax once, then per "go VERSION" line forks a writer that saves ~50 MB
# trees (versions VERSION, VERSION + 1, ...) to the path over and over; the test kills the
# writer with SIGKILL, and the child reaps it (a zombie would still count as a live writer).
CHILD = """
import os, sys, numpy as np
from optjax import checkpoint
path = sys.argv[1]
for line in sys.stdin:
    version = int(line.split()[1])
    pid = os.fork()
    if pid == 0:
        while True:
            os.write(1, b"%d\\n" % version)  # one write each: lines never interleave
            checkpoint.save(path, {"a": np.full(6_000_000, version, np.float64), "step": version})
            version += 1
    os.write(1, b"pid %d\\n" % pid)
    os.waitpid(pid, 0)
    os.write(1, b"reaped\\n")
"""
SIZE = 6_000_000


def _temporaries(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


def _kill_mid_save(child, directory, version, delay):
    """Have ``child`` fork a writer from ``version`` on; SIGKILL it ``delay`` seconds after its
    first save began (or, with None, as soon as that save's temporary file exists)."""
    child.stdin.write(f"go {version}\n")
    child.stdin.flush()
    lines = [child.stdout.readline(), child.stdout.readline()]  # in either order:
    assert sorted(lines)[0] == f"{version}\n"  # the writer's first save begins
    pid = int(sorted(lines)[1].split()[1])  # "pid N", from the child
    try:
        if delay is None:
            deadline = time.monotonic() + 60
            while not _temporaries(directory) and time.monotonic() < deadline:
                time.sleep(0.0005)
        else:
            time.sleep(delay)
    finally:
        os.kill(pid, signal.SIGKILL)
    for line in child.stdout:  # versions printed before the kill, then "reaped"
        if line == "reaped\n":
            break


def test_a_save_killed_at_random_points_leaves_the_last_checkpoint_and_no_stale_file(tmp_path):
    path = tmp_path / "run.npz"
    like = {"a": np.zeros(SIZE, np.float64), "step": 0}
    checkpoint.save(path, {"a": np.full(SIZE, 0, np.float64), "step": 0})
    rng = random.Random(0)
    left_behind, version, last = 0, 1, 0  # last: the version the file holds
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the writer goes with it at the end
    ) as child:
        try:
            for delay in [None, *(rng.uniform(0, 0.3) for _ in range(3))]:  # None: mid-write
                _kill_mid_save(child, tmp_path, version, delay)
                left_behind += len(_temporaries(tmp_path))
                restored = checkpoint.restore(path, like)  # a complete checkpoint, bit for bit
                found = restored["step"]
                assert found == last or version <= found < version + 100  # the killed save's: no
                expected = np.full(SIZE, found, np.float64)
                assert restored["a"].dtype == np.float64
                assert restored["a"].tobytes() == expected.tobytes()
                assert _temporaries(tmp_path) == []  # the restore removed the dead writer's file
                checkpoint.save(path, {"a": expected, "step": found})
                assert os.listdir(tmp_path) == ["run.npz"]
                version, last = version + 100, found
        finally:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=60)
    assert left_behind >= 1  # the kill with None landed mid-write


def test_a_stale_temporary_goes_at_the_next_save(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, {"x": jnp.ones(2)})
    stale = tmp_path / f".ckpt.npz.{checkpoint._HOST}.{_dead_pid()}.{'a' * 12}.tmp"
    stale.write_bytes(b"half a checkpoint")
    checkpoint.save(path, {"x": jnp.zeros(2)})
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait(timeout=60)
    return proc.pid


def test_only_stale_temporaries_of_the_same_target_are_removed(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, {"x": jnp.ones(2)})
    host, dead = checkpoint._HOST, _dead_pid()
    other_host = "0" * 8 if host != "0" * 8 else "1" * 8
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            f".ckpt.npz.{host}.{dead}.{'a' * 12}.tmp": False,  # stale: removed
            f".ckpt.npz.{host}.{os.getpid()}.{'b' * 12}.tmp": True,  # this process writing
            f".ckpt.npz.{host}.{sleeper.pid}.{'c' * 12}.tmp": True,  # another live writer
            f".ckpt.npz.{other_host}.{dead}.{'d' * 12}.tmp": True,  # another machine's
            f".other.npz.{host}.{dead}.{'e' * 12}.tmp": True,  # another target's
            f".ckpt.npz.x.{host}.{dead}.{'f' * 12}.tmp": True,  # target "ckpt.npz.x"'s
            f".ckpt.npz.{'0' * 12}.tmp": True,  # not optjax's naming scheme
            f"ckpt.npz.{host}.{dead}.{'a' * 12}.tmp": True,  # no leading dot
        }
        for name in names:
            (tmp_path / name).write_bytes(b"partial")
        checkpoint.restore(path, {"x": jnp.ones(2)})
        kept = {name for name, keep in names.items() if keep}
        assert set(os.listdir(tmp_path)) == kept | {"ckpt.npz"}
    finally:
        sleeper.kill()
        sleeper.wait(timeout=60)
    checkpoint.save(path, {"x": jnp.ones(2)})  # the sleeper is dead now: its file goes
    assert f".ckpt.npz.{host}.{sleeper.pid}.{'c' * 12}.tmp" not in os.listdir(tmp_path)


# ---------------------------------------------------------------- crafted manifests


def _leaf(header, name):
    (entry,) = [e for e in header["leaves"] if e["path"] == f"['{name}']"]
    return entry


def _set(name, **fields):
    def corrupt(header):
        _leaf(header, name).update(fields)
        return header

    return corrupt


def _drop(name, field):
    def corrupt(header):
        del _leaf(header, name)[field]
        return header

    return corrupt


def _top(**fields):
    return lambda header: {**header, **fields}


HUGE = 10**12
# Manifest corruptions: (header -> header, a fragment of the error message).
MANIFESTS = {
    "bf16-as-int8": (_set("w", data_shape=[12], data_dtype="int8"),
                     r"expected an array's .* data_dtype bfloat16; got .* data_dtype int8"),
    "header-list": (lambda h: [h], r"is not an optjax checkpoint .*: its manifest is not an obj"),
    "header-null": (lambda h: None, r"its manifest is not an object with a format, got None"),
    "header-string": (lambda h: "optjax", r"its manifest is not an object"),
    "no-format": (lambda h: {"leaves": h["leaves"]}, r"its manifest is not an object with a"),
    "format-number": (_top(format=1), r"its format is 1"),
    "no-leaves": (lambda h: {"format": h["format"]}, r"has fields \['format'\], expected"),
    "extra-top-field": (_top(extra=1), r"has fields \['extra', 'format', 'leaves'\]"),
    "leaves-dict": (_top(leaves={"a": 1}), r"leaves must be a list, got \{'a': 1\}"),
    "leaves-null": (_top(leaves=None), r"leaves must be a list, got None"),
    "leaves-fewer": (lambda h: {**h, "leaves": h["leaves"][:2]},
                     r"members do not match its manifest: extra \['leaf_2.npy'\]"),
    "leaves-more": (lambda h: {**h, "leaves": [*h["leaves"], h["leaves"][1]]},
                    r"missing \['leaf_3.npy'\]"),
    "entry-string": (lambda h: {**h, "leaves": ["w", *h["leaves"][1:]]},
                     r"leaf 0 in its manifest: must be an object, got 'w'"),
    "entry-null": (lambda h: {**h, "leaves": [*h["leaves"][:2], None]}, r"leaf 2 in its"),
    "no-path": (_drop("w", "path"), r"fields missing \['path'\], unexpected \[\]"),
    "no-shape": (_drop("w", "shape"), r"fields missing \['shape'\]"),
    "no-dtype": (_drop("n", "dtype"), r"leaf 1 \(\['n'\]\) in its manifest: fields missing"),
    "no-data-shape": (_drop("w", "data_shape"), r"fields missing \['data_shape'\]"),
    "no-data-dtype": (_drop("w", "data_dtype"), r"fields missing \['data_dtype'\]"),
    "extra-field": (_set("w", offset=0), r"unexpected \['offset'\]"),
    "path-number": (_set("w", path=7), r"path must be a string, got 7"),
    "shape-string": (_set("w", shape="6"), r"shape must be a list of at most 64 integers >= 0"),
    "shape-negative": (_set("w", shape=[-6], data_shape=[-6]), r"got \[-6\]"),
    "shape-float": (_set("w", shape=[6.0]), r"integers >= 0, got \[6.0\]"),
    "shape-bool": (_set("w", shape=[True]), r"got \[True\]"),
    "shape-nested": (_set("w", shape=[[6]]), r"got \[\[6\]\]"),
    "shape-65-dims": (_set("w", shape=[1] * 65, data_shape=[1] * 65), r"at most 64 integers"),
    "shape-huge": (_set("w", shape=[HUGE], data_shape=[HUGE]),
                   rf"leaf_2' holds uint8 \(12,\) in 12 bytes; its manifest entry says {2 * HUGE}"),
    "shape-2-pow-64": (_set("w", shape=[2**64, 2**64], data_shape=[2**64, 2**64]),
                       r"holds uint8 \(12,\) in 12 bytes; its manifest entry says 68056"),
    "shape-differs": (_set("w", data_shape=[3]), r"data_shape \[6\], data_dtype bfloat16; got"),
    "shape-and-data": (_set("w", shape=[12], data_shape=[12]),
                       r"holds uint8 \(12,\) in 12 bytes; its manifest entry says 24 bytes"),
    "dtype-object": (_set("w", dtype="object", data_dtype="object"),
                     r"data_dtype must be one of \['bfloat16', 'bool', .*got 'object'"),
    "dtype-O": (_set("w", dtype="O"), r"dtype must be one of .*got 'O'"),
    "dtype-unicode": (_set("w", dtype="<U2", data_dtype="<U2"), r"got '<U2'"),
    "dtype-void": (_set("w", dtype="V2", data_dtype="V2"), r"got 'V2'"),
    "dtype-nonsense": (_set("w", dtype="not a dtype"), r"dtype must be one of"),
    "dtype-number": (_set("w", dtype=16), r"dtype must be a string, got 16"),
    "dtype-float32": (_set("w", dtype="float32"),
                      r"expected an array's .*: dtype float32, data_shape \[6\], data_dtype "
                      r"float32"),
    "number-as-float": (_set("n", data_dtype="float64"),
                        r"a Python number's .* data_dtype a int dtype; got dtype int"),
    "number-shaped": (_set("n", shape=[1], data_shape=[1]), r"got shape \[1\]"),
    "key-impl-unknown": (_set("key", key_impl="nope"), r"key_impl 'nope' is not a PRNG impl"),
    "key-impl-number": (_set("key", key_impl=5), r"key_impl must be a PRNG implementation's"),
    "key-impl-dropped": (_drop("key", "key_impl"), r"dtype must be one of .*got 'key<fry>'"),
    "key-data-shape": (_set("key", data_shape=[4]),
                       r"a PRNG key's .*data_shape \[2\], data_dtype uint32; got .*\[4\]"),
    "key-on-an-array": (_set("w", key_impl="threefry2x32"), r"dtype key<fry>, data_shape \[6, 2\]"),
}  # fmt: skip


def _archive(path):
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


def _write(path, arrays):
    np.savez(path, **arrays)


def _with_manifest(path, manifest: bytes):
    arrays = _archive(path)
    arrays["manifest"] = np.frombuffer(manifest, np.uint8)
    _write(path, arrays)


def _with_header(path, corrupt):
    header = json.loads(_archive(path)["manifest"].tobytes())
    _with_manifest(path, json.dumps(corrupt(copy.deepcopy(header))).encode())


def _npy(array_header: dict, data: bytes) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, array_header)
    return out.getvalue() + data


def _replace_member(path, name, content: bytes, compress=zipfile.ZIP_STORED):
    arrays = {f"{k}.npy": v for k, v in _archive(path).items()}
    with zipfile.ZipFile(path, "w") as z:
        for member, array in arrays.items():
            if member == name:
                z.writestr(member, content, compress_type=compress)
            else:
                out = io.BytesIO()
                np.lib.format.write_array(out, array)
                z.writestr(member, out.getvalue())


def _edit_archive(edit):
    def damage(path):
        arrays = _archive(path)
        edit(arrays)
        _write(path, arrays)

    return damage


def _cut(fraction):
    return lambda path: path.write_bytes(
        path.read_bytes()[: int(len(path.read_bytes()) * fraction)]
    )


# Damaged archives: (damage(path), a fragment of the error message).
ARCHIVES = {
    "empty-file": (lambda p: p.write_bytes(b""), r"cannot be read: File is not a zip file"),
    "text-file": (lambda p: p.write_text("step 3\n"), r"cannot be read: File is not a zip file"),
    "zip-cut-in-half": (_cut(0.5), r"cannot be read"),
    "zip-cut-at-end": (_cut(0.99), r"cannot be read"),
    "zip-first-100-bytes": (lambda p: p.write_bytes(p.read_bytes()[:100]), r"cannot be read"),
    "a-directory": (lambda p: (p.unlink(), p.mkdir()), r"cannot be read: \[Errno 21\]"),
    "flipped-data-byte": (lambda p: p.write_bytes(p.read_bytes().replace(b"\x80\x40", b"\x80\x41")),
                          r"Bad CRC-32"),
    "manifest-not-json": (lambda p: _with_manifest(p, b"{not json"), r"its manifest is not JSON"),
    "manifest-not-utf8": (lambda p: _with_manifest(p, b"\xff\xfe\x00"), r"is not JSON"),
    "manifest-deep": (lambda p: _with_manifest(p, b"[" * 100_000 + b"]" * 100_000),
                      r"is not JSON|not an object"),
    "manifest-empty": (lambda p: _with_manifest(p, b""), r"its manifest is not JSON"),
    "no-manifest": (_edit_archive(lambda a: a.pop("manifest")),
                    r"is not an optjax checkpoint .*: it has no manifest"),
    "no-leaf-data": (_edit_archive(lambda a: a.pop("leaf_2")), r"missing \['leaf_2.npy'\]"),
    "extra-member": (_edit_archive(lambda a: a.update(leaf_9=np.zeros(1, np.uint8))),
                     r"extra \['leaf_9.npy'\]"),
    "leaf-as-float32": (_edit_archive(lambda a: a.update(leaf_2=np.zeros(3, np.float32))),
                        r"member 'leaf_2' holds float32 \(3,\) in 12 bytes"),
    "leaf-too-short": (_edit_archive(lambda a: a.update(leaf_2=np.zeros(11, np.uint8))),
                       r"holds uint8 \(11,\) in 11 bytes; its manifest entry says 12"),
    "leaf-2d": (_edit_archive(lambda a: a.update(leaf_2=np.zeros((3, 4), np.uint8))),
                r"holds uint8 \(3, 4\)"),
    "manifest-as-int16": (_edit_archive(lambda a: a.update(manifest=a["manifest"].astype("<i2"))),
                          r"member 'manifest' holds int16"),
    "npy-declares-1e12": (lambda p: _replace_member(p, "leaf_2.npy", _npy(
        {"descr": "|u1", "fortran_order": False, "shape": (HUGE,)}, bytes(12))),
        r"holds uint8 \(1000000000000,\) in 12 bytes"),
    "npy-object": (lambda p: _replace_member(p, "leaf_2.npy", _npy(
        {"descr": "|O", "fortran_order": False, "shape": (1,)}, bytes(8))), r"holds object"),
    "npy-garbage-header": (lambda p: _replace_member(p, "leaf_2.npy", b"\x93NUMPY\x01\x00\x10\x00"
                           + b"{'descr': lambda" + b" " * 6), r"member 'leaf_2' cannot be read"),
    "npy-not-npy": (lambda p: _replace_member(p, "leaf_2.npy", b"hello"), r"cannot be read"),
    "compressed-member": (lambda p: _replace_member(p, "leaf_2.npy", bytes(10**6),
                          zipfile.ZIP_DEFLATED), r"'leaf_2.npy' is compressed or declares 1000000"),
}  # fmt: skip


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, TREE)
    return path


def _refused(path, fragment):
    """restore's error: exactly one ValueError, one line naming the file, in little memory."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=fragment) as info:
            checkpoint.restore(path, TREE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert type(info.value) is ValueError and info.value.__cause__ is None
    assert message.startswith(f"checkpoint {str(path)!r} ") and "\n" not in message, message
    assert peak < 4 << 20, f"{peak / 2**20:.0f} MiB held to refuse a bad file"
    return message


@pytest.mark.parametrize("case", MANIFESTS)
def test_a_crafted_manifest_gets_one_clear_error(saved, case):
    corrupt, fragment = MANIFESTS[case]
    _with_header(saved, corrupt)
    _refused(saved, fragment)


@pytest.mark.parametrize("case", ARCHIVES)
def test_a_damaged_archive_gets_one_clear_error(saved, case):
    damage, fragment = ARCHIVES[case]
    damage(saved)
    _refused(saved, fragment)


def test_duplicate_members_are_refused(saved):
    content = saved.read_bytes()
    with zipfile.ZipFile(saved, "a") as z, pytest.warns(UserWarning, match="Duplicate name"):
        z.writestr("leaf_2.npy", _npy({"descr": "|u1", "fortran_order": False, "shape": (12,)},
                                      bytes(12)))  # fmt: skip
    assert saved.read_bytes() != content
    _refused(saved, r"a member name appears twice in the archive")


def test_an_intact_checkpoint_still_round_trips_bit_for_bit(saved):
    assert _bits(checkpoint.restore(saved, TREE)) == _bits(TREE)


# ---------------------------------------------------------------- Checkpointer's manifest

STEP_MANIFESTS = [
    "bf16-as-int8", "header-list", "no-format", "extra-top-field", "leaves-null", "entry-null",
    "no-data-dtype", "path-number", "shape-negative", "shape-huge", "dtype-object",
    "number-as-float", "key-impl-unknown", "key-data-shape",
]  # fmt: skip


@pytest.fixture(scope="module")
def step_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("steps") / "run"
    with checkpoint.Checkpointer(directory, async_save=False) as ckpt:
        ckpt.save(1, TREE)
    return directory


@pytest.mark.parametrize("case", STEP_MANIFESTS)
def test_a_crafted_step_manifest_gets_one_clear_error(step_dir, tmp_path, case):
    corrupt, fragment = MANIFESTS[case]
    directory = tmp_path / "run"
    shutil.copytree(step_dir, directory)
    manifest = directory / "1" / "manifest" / "metadata"
    manifest.write_text(json.dumps(corrupt(json.loads(manifest.read_text()))))
    if case == "shape-huge":  # refused by the template's shape before orbax reads any array
        fragment = r"does not match the template at \['w'\]: expected shape \(6,\)"
    with checkpoint.Checkpointer(directory) as ckpt:
        with pytest.raises(ValueError) as info:
            ckpt.restore(TREE)
    message = str(info.value)
    assert type(info.value) is ValueError and "\n" not in message
    assert message.startswith(f"checkpoint {str(directory / '1')!r} "), message
    assert re.search(fragment, message), message


# orbax's reads still in flight when the restore fails call back into its closed event loop.
# The library drops those callbacks' errors with a sys.unraisablehook filter (tested below),
# but pytest swaps in its own hook around each test, so here they may reach pytest instead.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_damaged_step_directory_gets_one_clear_error(tmp_path):
    tree = {f"w{i}": jnp.full(1000, i, jnp.float32) for i in range(40)}  # reads in flight at once
    directory = tmp_path / "run"
    with checkpoint.Checkpointer(directory, async_save=False) as ckpt:
        ckpt.save(1, tree)
    for path in (directory / "1" / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with checkpoint.Checkpointer(directory) as ckpt:
        with pytest.raises(ValueError) as info:
            ckpt.restore(tree)
        time.sleep(1.0)  # orbax's other reads end within this test, whose warnings are ignored
        gc.collect()
    message = str(info.value)
    assert message.startswith(f"checkpoint {str(directory / '1')!r} is damaged and cannot be ")
    assert "\n" not in message and type(info.value) is ValueError


def test_only_callbacks_into_orbaxs_closed_loop_are_silenced(monkeypatch):
    """A failed restore's reads still in flight call back into the event loop orbax closed;
    Python would print each RuntimeError as a traceback. Those are dropped, nothing else."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    checkpoint._quiet_closed_loop_callbacks()
    checkpoint._quiet_closed_loop_callbacks()  # installed once

    def call_soon_threadsafe(message="Event loop is closed"):
        raise RuntimeError(message)

    def elsewhere():
        raise RuntimeError("Event loop is closed")

    def unraisable(raises, *args):
        try:
            raises(*args)
        except RuntimeError as error:
            return types.SimpleNamespace(
                exc_type=RuntimeError,
                exc_value=error,
                exc_traceback=error.__traceback__,
                err_msg=None,
                object=None,
            )

    for case in [(call_soon_threadsafe,), (call_soon_threadsafe, "other"), (elsewhere,)]:
        sys.unraisablehook(unraisable(*case))
    assert [str(u.exc_value) for u in seen] == ["other", "Event loop is closed"]


@pytest.mark.parametrize("where", ["{tmp}/a-file/run", "/proc/optjax-run"])
def test_a_checkpointer_where_no_directory_can_be_made_is_a_value_error(tmp_path, where):
    (tmp_path / "a-file").write_text("not a directory")
    where = where.replace("{tmp}", str(tmp_path))
    with pytest.raises(ValueError, match="directory must be a directory, or a path where one can"):
        checkpoint.Checkpointer(where)
