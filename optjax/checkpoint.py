"""Saving and restoring optimizer states (or any pytree of arrays).

Two formats, with the same promises: leaves round-trip bit for bit (int32 counters, bf16 and
fp8 arrays, PRNG keys, Python numbers), a checkpoint appears whole or not at all, and a
restore checks the stored paths, shapes and dtypes against a template before it reads any
array, so a mismatch fails with the first differing path and nothing is half-loaded.

- `save` / `restore`: one NumPy ``.npz`` file, each leaf's raw bytes and a manifest of its
  path, shape and dtype. Every leaf is copied to the host that writes it: for one process and
  a state that fits in its memory.
- `Checkpointer`: a directory of numbered steps written with orbax-checkpoint (installed with
  ``optjax[train]``), for state sharded over a mesh, in one process or many. Each device's
  shards are written where they are, in the background while training goes on; old steps are
  removed beyond ``max_to_keep``; a restore reads each shard straight into the template's
  shardings, on the same mesh or another one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import re
import secrets
import socket
import stat
import struct
import sys
import traceback
import zipfile
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["FORMAT", "Checkpointer", "restore", "save"]

FORMAT = "optjax-checkpoint/1"
_MANIFEST = "manifest"
_STEP_FORMAT = "optjax-sharded-checkpoint/1"  # a Checkpointer step's manifest


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _describe(x) -> tuple[tuple[int, ...], str]:
    """A leaf's shape and dtype name, for an array, an abstract array or a Python number."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return tuple(int(d) for d in x.shape), str(x.dtype)
    if isinstance(x, (bool, int, float, complex)):
        return (), type(x).__name__
    raise ValueError(f"expected an array or a number, got {type(x).__name__} {x!r}")


def _where(path) -> str:
    return jax.tree_util.keystr(path) or "<root>"


def _stored(who: str, path, x, *, to_host: bool) -> tuple[dict, Any]:
    """A leaf as it is stored: its manifest entry, and its data (the key data of a PRNG key, a
    0-d array for a Python number). With ``to_host`` the data is a NumPy array on this host;
    otherwise a jax.Array stays on its devices, and a NumPy leaf is copied (an asynchronous
    write may end after the caller has changed it in place)."""
    try:
        shape, dtype = _describe(x)
    except ValueError as error:
        raise ValueError(f"{who}: leaf {_where(path)}: {error}") from None
    if isinstance(x, jax.core.Tracer):
        raise ValueError(f"{who}: leaf {_where(path)} is traced; save outside jit")
    data = jax.random.key_data(x) if _is_key(x) else x
    if to_host:
        data = np.asarray(jax.device_get(data), order="C")  # keeps 0-d arrays 0-d
    elif not isinstance(data, jax.Array):
        data = np.array(data, order="C")
    entry = {
        "path": jax.tree_util.keystr(path),
        "shape": list(shape),
        "dtype": dtype,
        "data_shape": [int(d) for d in data.shape],
        "data_dtype": str(data.dtype),
    }
    if _is_key(x):
        entry["key_impl"] = str(jax.random.key_impl(x))
    return entry, data


def save(path: str | os.PathLike, tree: Any) -> None:
    """Write ``tree`` (e.g. ``{"params": params, "opt_state": state, "step": step}``) to ``path``.

    The file is written under a temporary name in the same directory and renamed into place,
    so ``path`` holds either the previous checkpoint or the new one, never a partial file. A
    save killed before the rename (SIGKILL, power loss) leaves its temporary file behind; the
    next `save` or `restore` of the same ``path`` deletes it. Temporary files are named
    ``.<name>.<host>.<pid>.<random>.tmp``, and only those of this very ``path``, written from
    this machine by a process that no longer exists, are deleted: a save in progress in another
    process keeps its file, and so does one from another machine sharing the directory.

    Example:
        >>> import os, tempfile
        >>> state = optjax.adam(0.1).init({"w": jnp.ones(3, jnp.bfloat16)})
        >>> path = os.path.join(tempfile.mkdtemp(), "opt.npz")
        >>> optjax.checkpoint.save(path, state)
        >>> optjax.checkpoint.restore(path, like=state)[0].mu["w"]
        Array([0, 0, 0], dtype=bfloat16)
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    manifest: list[dict] = []
    arrays: dict[str, Any] = {}  # "leaf_i" -> its bytes (uint8); Any, as np.savez(**arrays) wants
    for i, (key_path, leaf) in enumerate(flat):
        entry, data = _stored("checkpoint.save", key_path, leaf, to_host=True)
        manifest.append(entry)
        arrays[f"leaf_{i}"] = data.reshape(-1).view(np.uint8)
    header = json.dumps({"format": FORMAT, "leaves": manifest}).encode()
    arrays[_MANIFEST] = np.frombuffer(header, np.uint8)

    target = os.fspath(path)
    _remove_stale_temporaries(target)
    fd, tmp = _create_beside(target)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# A temporary file is named ``.<name>.<host>.<pid>.<random>.tmp`` beside its target ``<name>``:
# <host> is a short hash of this machine's host name, <pid> the writer's process id.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _temporary_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(name)}\.{_HOST}\.([0-9]{{1,10}})\.[0-9a-f]{{12}}\.tmp")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie, or one of another user, does;
    where that cannot be told, it is assumed to)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):  # EPERM: it exists; others: cannot tell
        return True
    return True


def _remove_stale_temporaries(target: str) -> None:
    """Delete the temporary files that killed saves of ``target`` left behind.

    Only files named as `_create_beside` names them for this very target are considered, and of
    those only the ones written from this machine (the host hash in the name) by a process that
    no longer exists (the pid in the name): a save still in progress, in this process or another
    one on this machine, keeps its file. Files written from other machines (a shared file
    system) are left alone, as their writer's liveness cannot be told from here. A pid reused
    by an unrelated process keeps a stale file until that process ends too: the rule errs
    towards keeping files. Errors (a read-only directory, a file deleted meanwhile) are ignored.
    """
    directory, name = os.path.split(os.path.abspath(target))
    pattern = _temporary_pattern(name)
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        found = pattern.fullmatch(entry)
        if found is not None and not _alive(int(found[1])):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, entry))


def _create_beside(target: str) -> tuple[int, str]:
    """A new file in ``target``'s directory, open for writing: ``(fd, name)``, named
    ``.<name>.<host>.<pid>.<random>.tmp`` (see `_remove_stale_temporaries`). Its mode is what
    ``open(target, "w")`` would give: ``target``'s own where it exists, else 0o666 less the
    umask (tempfile.mkstemp would make it 0o600 whatever the umask)."""
    directory, name = os.path.split(os.path.abspath(target))
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None
    while True:
        tmp = os.path.join(directory, f".{name}.{_HOST}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # another writer's temporary file: draw another name
            continue
        if mode is not None:
            os.fchmod(fd, mode)
        return fd, tmp


# Validating what a file says, before anything is built from it -------------------------------


class _Invalid(ValueError):
    """A manifest field that is not what optjax writes (the caller adds which file)."""


# The dtypes a leaf's data may be stored as: NumPy's and ml_dtypes' numbers, nothing else (no
# object, string, structured or void dtypes).
_DTYPE_NAMES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128", "bfloat16",
    "float8_e3m4", "float8_e4m3", "float8_e4m3b11fnuz", "float8_e4m3fn", "float8_e4m3fnuz",
    "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn", "float6_e2m3fn",
    "float6_e3m2fn", "int2", "int4", "uint2", "uint4",
)  # fmt: skip


def _known_dtypes() -> dict[str, np.dtype]:
    known = {}
    for name in _DTYPE_NAMES:
        try:
            dtype = jnp.dtype(name)
        except TypeError:  # not in this version of ml_dtypes
            continue
        if str(dtype) == name:
            known[name] = dtype
    return known


_DTYPES = _known_dtypes()
_NUMBERS = {"bool": "b", "int": "iu", "float": "f", "complex": "c"}  # Python types: dtype kinds
_FIELDS = {"path", "shape", "dtype", "data_shape", "data_dtype"}
_MAX_NDIM = 64  # NumPy's limit


@functools.lru_cache(maxsize=16)
def _key_layout(impl: str) -> tuple[str, tuple[int, ...], str]:
    """A PRNG implementation's key dtype name, and its key data's trailing shape and dtype;
    ValueError for a name that is not one."""
    try:
        key = jax.eval_shape(lambda: jax.random.key(0, impl=impl))
        data = jax.eval_shape(jax.random.key_data, key)
    except Exception as error:  # noqa: BLE001 -- jax raises several kinds for a bad name
        raise _Invalid(f"key_impl {impl!r} is not a PRNG implementation ({error})") from None
    return str(key.dtype), tuple(data.shape), str(data.dtype)


def _shape(field: str, value: Any) -> tuple[int, ...]:
    ok = (
        isinstance(value, list)
        and len(value) <= _MAX_NDIM
        and all(type(d) is int and d >= 0 for d in value)
    )
    if not ok:
        raise _Invalid(
            f"{field} must be a list of at most {_MAX_NDIM} integers >= 0, got {_brief(value)}"
        )
    return tuple(value)


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _validate_entry(entry: Any) -> int:
    """Check one leaf's manifest entry field by field; return its data's size in bytes."""
    if not isinstance(entry, dict):
        raise _Invalid(f"must be an object, got {_brief(entry)}")
    keys = set(entry)
    if not _FIELDS <= keys or not keys <= _FIELDS | {"key_impl"}:
        missing, extra = sorted(_FIELDS - keys), sorted(keys - _FIELDS - {"key_impl"})
        raise _Invalid(f"fields missing {missing}, unexpected {extra}")
    if not isinstance(entry["path"], str):
        raise _Invalid(f"path must be a string, got {_brief(entry['path'])}")
    shape, data_shape = _shape("shape", entry["shape"]), _shape("data_shape", entry["data_shape"])
    dtype, data_dtype = entry["dtype"], entry["data_dtype"]
    if not isinstance(data_dtype, str) or data_dtype not in _DTYPES:
        raise _Invalid(f"data_dtype must be one of {sorted(_DTYPES)}, got {_brief(data_dtype)}")
    if not isinstance(dtype, str):
        raise _Invalid(f"dtype must be a string, got {_brief(dtype)}")
    if "key_impl" in entry:
        impl = entry["key_impl"]
        if not isinstance(impl, str) or len(impl) > 100:
            raise _Invalid(f"key_impl must be a PRNG implementation's name, got {_brief(impl)}")
        key_dtype, key_shape, key_data_dtype = _key_layout(impl)
        expected = (key_dtype, shape + key_shape, key_data_dtype)
        what = "a PRNG key's dtype, data_shape (shape + the key's own) and data_dtype"
    elif dtype in _NUMBERS:
        kind = _DTYPES[data_dtype].kind
        expected = (dtype, (), data_dtype if kind in _NUMBERS[dtype] else f"a {dtype} dtype")
        what = "a Python number's shape [], data_shape [] and data_dtype of its kind"
        if shape != ():
            raise _Invalid(f"{what}: got shape {list(shape)}")
    elif dtype in _DTYPES:
        expected = (dtype, shape, dtype)
        what = "an array's data_shape and data_dtype, its shape and dtype"
    else:
        raise _Invalid(
            f"dtype must be one of {sorted(_DTYPES)}, a Python number type {sorted(_NUMBERS)} "
            f"or a PRNG key's (with key_impl), got {_brief(dtype)}"
        )
    if (dtype, data_shape, data_dtype) != expected:
        raise _Invalid(
            f"expected {what}: dtype {expected[0]}, data_shape {list(expected[1])}, data_dtype "
            f"{expected[2]}; got dtype {dtype}, data_shape {list(data_shape)}, data_dtype "
            f"{data_dtype}"
        )
    return math.prod(data_shape) * _DTYPES[data_dtype].itemsize


def _validate(header: Any, fmt: str) -> tuple[list[dict], list[int]]:
    """The leaves of a manifest, each checked, and each one's data size in bytes. Raises
    _Invalid saying what is wrong (`_not_ours` for a header of another format)."""
    if not isinstance(header, dict) or "format" not in header:
        raise _not_ours(f"its manifest is not an object with a format, got {_brief(header)}")
    if header["format"] != fmt:
        raise _not_ours(f"its format is {_brief(header['format'])}")
    if set(header) != {"format", "leaves"}:
        raise _Invalid(
            f"its manifest has fields {sorted(map(str, header))}, expected ['format', 'leaves']"
        )
    leaves = header["leaves"]
    if not isinstance(leaves, list):
        raise _Invalid(f"its manifest's leaves must be a list, got {_brief(leaves)}")
    sizes = []
    for i, entry in enumerate(leaves):
        try:
            sizes.append(_validate_entry(entry))
        except _Invalid as error:
            where = entry.get("path") if isinstance(entry, dict) else None
            name = f" ({where or '<root>'})" if isinstance(where, str) else ""
            raise _Invalid(f"leaf {i}{name} in its manifest: {error}") from None
    return leaves, sizes


def _damaged(path: str, fmt: str, error: _Invalid) -> ValueError:
    """The one error a hostile or damaged checkpoint gets: which file, and what is wrong."""
    if getattr(error, "not_ours", False):
        return ValueError(f"checkpoint {path!r} is not an optjax checkpoint ({fmt}): {error}")
    return ValueError(f"checkpoint {path!r} is damaged or not written by optjax ({fmt}): {error}")


# The errors that reading a damaged zip file or .npy header can raise.
_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    TypeError,
    SyntaxError,
    OverflowError,
    RecursionError,
    NotImplementedError,
    struct.error,
    zipfile.BadZipFile,
)


class _Archive:
    """An optjax ``.npz`` checkpoint, open and checked before any leaf's data is read: its
    zip structure (stored members only, each no larger than the file itself), its manifest
    (`_validate`), and each leaf's ``.npy`` header against the size its manifest entry gives.
    So a damaged or hostile file raises one ValueError naming it, in memory bounded by its size.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._file = open(path, "rb")  # closed by close()
        except OSError as error:
            raise ValueError(f"checkpoint {path!r} cannot be read: {error}") from None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        path = self.path
        try:
            size = os.fstat(self._file.fileno()).st_size
            self._zip = zipfile.ZipFile(self._file)
            members = self._zip.infolist()
        except _READ_ERRORS as error:
            raise ValueError(f"checkpoint {path!r} cannot be read: {error}") from None
        names = [info.filename for info in members]
        if len(set(names)) != len(names):
            raise _damaged(path, FORMAT, _Invalid("a member name appears twice in the archive"))
        for info in members:
            if info.compress_type != zipfile.ZIP_STORED or not (
                info.file_size == info.compress_size <= size
            ):
                raise _damaged(
                    path,
                    FORMAT,
                    _Invalid(
                        f"member {info.filename!r} is compressed or declares {info.file_size} "
                        f"bytes in a file of {size}; optjax stores members uncompressed"
                    ),
                )
        self._members = {info.filename: info for info in members}
        if f"{_MANIFEST}.npy" not in self._members:
            raise _damaged(path, FORMAT, _not_ours("it has no manifest"))
        try:
            text = self._bytes(_MANIFEST).decode()
            header = json.loads(text)
        except _Invalid as error:
            raise _damaged(path, FORMAT, error) from None
        except (UnicodeDecodeError, RecursionError, ValueError) as error:
            raise _damaged(path, FORMAT, _not_ours(f"its manifest is not JSON ({error})")) from None
        try:
            self.entries, self._sizes = _validate(header, FORMAT)
        except _Invalid as error:
            raise _damaged(path, FORMAT, error) from None
        expected = {f"leaf_{i}.npy" for i in range(len(self.entries))} | {f"{_MANIFEST}.npy"}
        if set(self._members) != expected:
            extra, missing = sorted(set(self._members) - expected), sorted(expected - set(names))
            raise _damaged(
                path,
                FORMAT,
                _Invalid(
                    f"its members do not match its manifest: extra {extra}, missing {missing}"
                ),
            )
        for i, size in enumerate(self._sizes):  # every header checked before any data is read
            try:
                self._header(f"leaf_{i}", size).close()
            except _Invalid as error:
                raise _damaged(path, FORMAT, _Invalid(f"leaf {i}: {error}")) from None

    def _header(self, name: str, size: int | None) -> Any:
        """Member ``name`` open just past its ``.npy`` header, which must declare a 1-d uint8
        array of ``size`` bytes (of the rest of the member where ``size`` is None)."""
        info = self._members[f"{name}.npy"]
        try:
            f = self._zip.open(info)
            version = np.lib.format.read_magic(f)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if read_header is None:
                raise _Invalid(f"its .npy version {version} is not 1.0 or 2.0")
            shape, _, dtype = read_header(f)
            rest = info.file_size - f.tell()
        except _Invalid:
            raise
        except Exception as error:  # noqa: BLE001 -- NumPy's header parser raises many kinds
            raise _Invalid(f"member {name!r} cannot be read ({_first_line(error)})") from None
        wanted = rest if size is None else size
        if dtype != np.uint8 or tuple(shape) != (wanted,) or rest != wanted:
            f.close()
            raise _Invalid(
                f"member {name!r} holds {dtype} {tuple(shape)} in {rest} bytes; its manifest "
                f"entry says {wanted} bytes (uint8 ({wanted},))"
            )
        return f

    def _bytes(self, name: str, size: int | None = None) -> bytes:
        with self._header(name, size) as f:
            rest = self._members[f"{name}.npy"].file_size - f.tell()
            try:
                data = f.read(rest)  # the CRC is checked on reaching the end
            except _READ_ERRORS as error:
                raise _Invalid(f"member {name!r} cannot be read ({error})") from None
        if len(data) != rest:
            raise _Invalid(f"member {name!r} is truncated")
        return data

    def read(self, i: int) -> np.ndarray:
        """Leaf ``i``'s data, as its manifest entry says (checked when the file was opened)."""
        entry = self.entries[i]
        try:
            data = self._bytes(f"leaf_{i}", self._sizes[i])
        except _Invalid as error:
            raise _damaged(self.path, FORMAT, _Invalid(f"leaf {i}: {error}")) from None
        array = np.frombuffer(data, _DTYPES[entry["data_dtype"]])
        return array.reshape(entry["data_shape"])

    def close(self) -> None:
        zip_file = getattr(self, "_zip", None)
        if zip_file is not None:
            zip_file.close()
        self._file.close()

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _first_line(error: BaseException) -> str:
    """An error from a library, shortened to its type and first line for a one-line message."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _not_ours(what: str) -> _Invalid:
    error = _Invalid(what)
    error.not_ours = True  # type: ignore[attr-defined]
    return error


def _check(where: str, flat_like, entries, has_data: Callable[[int, dict], bool]) -> None:
    """Raise ValueError at the first leaf where the checkpoint differs from the template: its
    path, shape or dtype, or its stored data (``has_data(i, entry)`` is false where the data of
    leaf ``i`` is missing or not what its manifest entry says). The entries were validated."""
    for i, ((key_path, leaf), entry) in enumerate(zip(flat_like, entries, strict=False)):
        name = jax.tree_util.keystr(key_path)
        if name != entry["path"]:
            raise ValueError(
                f"{where}: structure differs at leaf {i}: the template has {_where(key_path)} "
                f"where the checkpoint has {entry['path'] or '<root>'}"
            )
        shape, dtype = _describe(leaf)
        found = (tuple(entry["shape"]), entry["dtype"])
        if (shape, dtype) != found:
            raise ValueError(
                f"{where} at {_where(key_path)}: expected shape {shape} dtype {dtype}, found "
                f"shape {found[0]} dtype {found[1]}"
            )
        if not has_data(i, entry):
            raise ValueError(
                f"{where} at {_where(key_path)}: the stored data is missing or does not match "
                "the manifest"
            )
    if len(flat_like) != len(entries):
        if len(flat_like) > len(entries):
            missing = _where(flat_like[len(entries)][0])
            raise ValueError(f"{where}: the template has {missing}, which the checkpoint lacks")
        raise ValueError(
            f"{where}: the checkpoint has {entries[len(flat_like)]['path'] or '<root>'}, which "
            "the template lacks"
        )


def _place(leaf, entry, array: np.ndarray):
    """A leaf like ``leaf`` from its data on this host: a Python number, a PRNG key, a NumPy
    array, or a jax.Array placed as ``leaf`` is (see `restore`)."""
    if isinstance(leaf, (bool, int, float, complex)):
        return type(leaf)(array.item())
    if "key_impl" in entry:
        return jax.random.wrap_key_data(jnp.asarray(array), impl=entry["key_impl"])
    if isinstance(leaf, np.ndarray):
        return array.copy()
    if isinstance(leaf, np.generic):
        return array[()]
    if isinstance(leaf, jax.Array) and not leaf.committed:
        return jnp.asarray(array)  # uncommitted like the template: a jitted step is not recompiled
    sharding = getattr(leaf, "sharding", None)
    return jax.device_put(array, sharding) if sharding is not None else jnp.asarray(array)


def restore(path: str | os.PathLike, like: Any) -> Any:
    """Read the tree saved at ``path``, checked against the template ``like``.

    ``like`` has the structure, shapes and dtypes expected, e.g. ``tx.init(params)`` or
    ``jax.eval_shape(tx.init, params)``; its values are not used. Restored arrays take the
    template's placement: its sharding where it is committed to one (or is an abstract array
    with one), uncommitted otherwise, so a jitted step compiled for the template's arrays runs
    the restored ones without compiling again. If any path, shape or dtype differs, ValueError names
    the first differing path with the expected and found shape and dtype, and nothing is built.

    The file is checked before any array is read or allocated: its zip structure, every field
    of its manifest (types, dtypes, shapes, sizes against the bytes really stored). A damaged or
    crafted file raises one ValueError naming it and what is wrong, in memory bounded by its
    size.
    """
    target = os.fspath(path)
    _remove_stale_temporaries(target)
    flat_like, treedef = jax.tree_util.tree_flatten_with_path(like)
    where = f"checkpoint {target!r} does not match the template"
    with _Archive(target) as archive:
        _check(where, flat_like, archive.entries, lambda i, entry: True)
        data = [archive.read(i) for i in range(len(flat_like))]  # all read before any is built
    leaves = [
        _place(leaf, entry, array)
        for (_, leaf), entry, array in zip(flat_like, archive.entries, data, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves)


# A directory of steps, through orbax-checkpoint ----------------------------------------------


def _orbax():
    try:
        import orbax.checkpoint as ocp  # type: ignore[import-untyped]  # only Checkpointer needs it
    except ImportError as error:
        raise ImportError(
            "optjax.checkpoint.Checkpointer needs orbax-checkpoint: pip install "
            "orbax-checkpoint (it comes with optjax[train])"
        ) from error
    return ocp


def _target(leaf, entry):
    """What orbax reads leaf data into: an abstract array in the template's sharding, so each
    device reads only its own shards; or, for a leaf with no sharding to follow (a Python
    number, a NumPy array, an uncommitted jax.Array, an abstract array without one), a NumPy
    array on this host that `_place` then puts where `restore` would."""
    shape, dtype = tuple(entry["data_shape"]), jnp.dtype(entry["data_dtype"])
    sharding = getattr(leaf, "sharding", None)
    if sharding is None or (isinstance(leaf, jax.Array) and not leaf.committed):
        return np.empty(shape, dtype)
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def _from_target(leaf, entry, data):
    if isinstance(data, np.ndarray):
        return _place(leaf, entry, data)
    if "key_impl" in entry:
        return jax.random.wrap_key_data(data, impl=entry["key_impl"])
    return data


class Checkpointer:
    r"""Numbered checkpoints of a tree (e.g. sharded params and optimizer state) in
    ``directory``, written with orbax-checkpoint: each array by the devices that hold it.

    ``save(step, tree)`` writes the directory ``<directory>/<step>``: each array's shards from
    the devices that hold them (no array is gathered on one host or device), the key data of
    PRNG keys, Python numbers as 0-d arrays, and a manifest of each leaf's path, shape and
    dtype. The step is written under a temporary name (``<step>.orbax-checkpoint-tmp``) and
    renamed once complete, so a killed or failed save leaves no step behind: its temporary
    directory is ignored, and replaced if that step is saved again. With ``async_save`` (the
    default) ``save`` returns once the arrays are copied to host memory, and the files are
    written in the background: training goes on, may donate the saved buffers, and a later
    ``save`` first waits for this one. Once a step is complete, the oldest steps beyond
    ``max_to_keep`` are deleted (``None`` keeps every step).

    ``restore(like)`` reads the latest step (or ``step``) into the template ``like``, whose
    arrays or ``jax.ShapeDtypeStruct``\ s carry the shardings wanted: the mesh the step was
    saved from or another (fewer devices, another split, replicated), each device reading just
    its own shards. Other leaves are restored as `optjax.checkpoint.restore` does. The
    manifest, and the shape and dtype that orbax recorded for each array, are checked against
    the template first: another structure, shape or dtype raises ValueError naming the first
    differing path, and no array is read.

    In a job of several processes (``jax.distributed``), every process makes the Checkpointer
    and calls each method with the same arguments; orbax has each process write its own shards
    and one of them the shared files. Use one Checkpointer per directory, closed at the end
    (``with``, or `close`), which waits for the last save.

    Example:
        >>> import tempfile
        >>> params = {"w": jnp.ones(3, jnp.bfloat16)}
        >>> tx = optjax.adam(0.1)
        >>> run = {"params": params, "opt_state": tx.init(params), "step": 0}
        >>> with optjax.checkpoint.Checkpointer(tempfile.mkdtemp(), max_to_keep=2) as ckpt:
        ...     for step in (10, 20, 30):
        ...         ckpt.save(step, {**run, "step": step}, metadata={"learning_rate": 0.1})
        ...     ckpt.wait()
        ...     print(ckpt.all_steps(), ckpt.metadata())
        ...     restored = ckpt.restore(like=run)
        [20, 30] {'learning_rate': 0.1}
        >>> restored["step"], restored["opt_state"][0].mu["w"]
        (30, Array([0, 0, 0], dtype=bfloat16))
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        max_to_keep: int | None = 3,
        async_save: bool = True,
    ) -> None:
        try:
            path = os.fspath(directory)
        except TypeError:
            path = None
        if not isinstance(path, str) or not path:
            raise ValueError(
                f"directory must be a path (a non-empty str or os.PathLike), got "
                f"directory={directory!r}"
            )
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(
                f"directory must be a directory, or a path where one can be made; got "
                f"directory={path!r}, which is a file"
            )
        if max_to_keep is not None and (
            isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int) or max_to_keep < 1
        ):
            raise ValueError(
                "max_to_keep must be an integer >= 1, or None to keep every step; got "
                f"max_to_keep={max_to_keep!r}"
            )
        if not isinstance(async_save, bool):
            raise ValueError(f"async_save must be True or False, got async_save={async_save!r}")
        if "://" not in path:  # a local path (orbax wants it absolute), not a URL like gs://
            path = os.path.abspath(path)
        self.directory, self.max_to_keep, self.async_save = path, max_to_keep, async_save
        self._ocp = ocp = _orbax()
        # A step holds two items: "manifest" (JSON: each leaf's path, shape, dtype) and "state"
        # (the arrays, named leaf_0, leaf_1, ... in the order of the tree's leaves).
        registry = ocp.DefaultCheckpointHandlerRegistry()
        manifest, arrays = ocp.JsonCheckpointHandler(), ocp.StandardCheckpointHandler()
        registry.add("manifest", ocp.args.JsonSave, manifest)
        registry.add("manifest", ocp.args.JsonRestore, manifest)
        registry.add("state", ocp.args.StandardSave, arrays)
        registry.add("state", ocp.args.StandardRestore, arrays)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(max_to_keep),
            enable_async_checkpointing=async_save,
        )
        try:
            self._manager = ocp.CheckpointManager(path, options=options, handler_registry=registry)
        except OSError as error:  # a file on the way, a place where nothing can be made
            raise ValueError(
                f"directory must be a directory, or a path where one can be made; got "
                f"directory={path!r} ({error.strerror or error})"
            ) from None
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"Checkpointer({self.directory!r}, max_to_keep={self.max_to_keep}, "
            f"async_save={self.async_save})"
        )

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def save(self, step: int, tree: Any, *, metadata: dict[str, Any] | None = None) -> None:
        """Write ``tree`` as the step numbered ``step``, greater than every step saved before.

        ``metadata``, a JSON-serialisable dict (e.g. the run's configuration), is stored with
        the step; `Checkpointer.metadata` reads it back as JSON gives it (tuples become lists).
        Everything is checked before anything is written: a leaf that is not an array or a
        number, or is traced (``save`` runs outside ``jit``), raises ValueError.
        """
        step = _check_step(step)
        latest = self._manager.latest_step()  # a save still being written counts
        if latest is not None and step <= latest:
            raise ValueError(
                f"step must be greater than the latest saved step {latest}, got step={step}"
            )
        metadata = {} if metadata is None else metadata
        if not isinstance(metadata, dict):
            raise ValueError(
                f"metadata must be a JSON-serialisable dict or None, got "
                f"{type(metadata).__name__} {metadata!r}"
            )
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"metadata must be a JSON-serialisable dict or None ({error}), got "
                f"metadata={metadata!r}"
            ) from None
        manifest: list[dict] = []
        arrays: dict[str, Any] = {}
        for i, (key_path, leaf) in enumerate(jax.tree_util.tree_flatten_with_path(tree)[0]):
            entry, data = _stored("Checkpointer.save", key_path, leaf, to_host=False)
            manifest.append(entry)
            arrays[f"leaf_{i}"] = data
        args = self._ocp.args
        items = {"manifest": args.JsonSave({"format": _STEP_FORMAT, "leaves": manifest})}
        if arrays:  # orbax refuses an empty tree; the manifest alone says it is empty
            items["state"] = args.StandardSave(arrays)
        self._manager.save(step, args=args.Composite(**items), custom_metadata=metadata, force=True)

    def restore(self, like: Any, step: int | None = None) -> Any:
        """The tree saved at ``step`` (the latest when None), checked against ``like``, with
        the template's shardings (see the class docstring). Waits for a save in progress."""
        step = self._saved(step)
        where = f"checkpoint {self._path(step)!r} does not match the template"
        flat_like, treedef = jax.tree_util.tree_flatten_with_path(like)
        entries = self._manifest(step)
        stored = self._stored_arrays(step) if entries else {}

        def has_data(i: int, entry: dict) -> bool:
            return stored.get(f"leaf_{i}") == (tuple(entry["data_shape"]), entry["data_dtype"])

        _check(where, flat_like, entries, has_data)
        targets = {
            f"leaf_{i}": _target(leaf, entry)
            for i, ((_, leaf), entry) in enumerate(zip(flat_like, entries, strict=True))
        }
        data = {}
        if targets:
            args = self._ocp.args
            try:
                data = self._manager.restore(
                    step, args=args.Composite(state=args.StandardRestore(targets))
                )["state"]
            except Exception as error:  # noqa: BLE001 -- damaged files: orbax raises many kinds
                _quiet_closed_loop_callbacks()
                raise self._unreadable(step, error) from None
        leaves = [
            _from_target(leaf, entry, data[f"leaf_{i}"])
            for i, ((_, leaf), entry) in enumerate(zip(flat_like, entries, strict=True))
        ]
        return jax.tree_util.tree_unflatten(treedef, leaves)

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        """The ``metadata`` saved with ``step`` (the latest when None); ``{}`` if none was."""
        step = self._saved(step)
        try:
            metadata = self._manager.metadata(step).custom_metadata or {}
        except Exception as error:  # noqa: BLE001 -- damaged files: orbax raises many kinds
            raise self._unreadable(step, error) from None
        if not isinstance(metadata, dict):
            raise self._unreadable(step, TypeError(f"its metadata is {_brief(metadata)}"))
        return dict(metadata)

    def all_steps(self) -> list[int]:
        """The steps saved and complete, in increasing order: those in ``directory`` when this
        Checkpointer was made and those it has saved since, less any deleted by
        ``max_to_keep``. A step still being written is not listed until it is complete."""
        steps = sorted(self._manager.all_steps())
        if steps and self._manager.is_saving_in_progress():
            steps.pop()  # the newest step, still being written
        return steps

    def latest_step(self) -> int | None:
        """The last of `all_steps`, or None where there is none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def wait(self) -> None:
        """Wait until a save in progress is complete; raise its error if it failed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for a save in progress, then release orbax's threads and files."""
        if not self._closed:
            self._closed = True
            self._manager.close()

    def _path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _saved(self, step: int | None) -> int:
        """``step``, checked to be a saved step; the latest where it is None."""
        self.wait()
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise ValueError(
                    f"step=None asks for the latest checkpoint, but directory "
                    f"{self.directory!r} holds none"
                )
            return steps[-1]
        step = _check_step(step)
        if step not in steps:
            raise ValueError(f"step must be one of the saved steps {steps}, got step={step}")
        return step

    def _manifest(self, step: int) -> list[dict]:
        path = self._path(step)
        args = self._ocp.args
        try:
            items = self._manager.restore(step, args=args.Composite(manifest=args.JsonRestore()))
            header = items["manifest"]
        except Exception as error:  # noqa: BLE001 -- a missing or unreadable manifest alike
            what = _not_ours(f"its manifest cannot be read ({_first_line(error)})")
            raise _damaged(path, _STEP_FORMAT, what) from None
        try:
            return _validate(header, _STEP_FORMAT)[0]
        except _Invalid as error:
            raise _damaged(path, _STEP_FORMAT, error) from None

    def _stored_arrays(self, step: int) -> dict[str, tuple[tuple[int, ...], str]]:
        """Each stored array's shape and dtype, from the metadata orbax wrote (no data read)."""
        try:
            tree = self._manager.metadata(step).item_metadata["state"].tree
        except (KeyError, AttributeError, TypeError):
            return {}
        except Exception as error:  # noqa: BLE001 -- damaged files: orbax raises many kinds
            raise self._unreadable(step, error) from None
        try:
            return {
                name: (tuple(int(d) for d in array.shape), str(np.dtype(array.dtype)))
                for name, array in tree.items()
            }
        except Exception as error:  # noqa: BLE001 -- metadata orbax wrote, damaged
            raise self._unreadable(step, error) from None

    def _unreadable(self, step: int, error: BaseException) -> ValueError:
        return ValueError(
            f"checkpoint {self._path(step)!r} is damaged and cannot be read: {_first_line(error)}"
        )


def _is_closed_loop_callback(unraisable) -> bool:
    error = unraisable.exc_value
    if not isinstance(error, RuntimeError) or str(error) != "Event loop is closed":
        return False
    frames = traceback.extract_tb(unraisable.exc_traceback)
    return any(frame.name == "call_soon_threadsafe" for frame in frames)


def _quiet_closed_loop_callbacks() -> None:
    """After a failed orbax restore, its other reads still in flight finish later and call back
    into the event loop the failed restore has closed; Python would print each such
    RuntimeError("Event loop is closed") as a traceback after the one clear error. Drop those,
    and only those: every other unraisable exception goes to the hook installed before."""
    previous = sys.unraisablehook
    if getattr(previous, "_optjax_quiet", False):
        return

    def hook(unraisable) -> None:
        if not _is_closed_loop_callback(unraisable):
            previous(unraisable)

    hook._optjax_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _check_step(step) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got step={step!r}")
    return int(step)
