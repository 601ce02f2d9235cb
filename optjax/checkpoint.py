"""Saving and restoring optimizer states (or any pytree of arrays) to and from a file.

The file is a NumPy ``.npz`` archive: each leaf's raw bytes, and a manifest of its path, shape
and dtype. Leaves round-trip bit for bit, including int32 counters, bf16 and fp8 arrays and PRNG
keys. ``restore`` checks the whole file against a template before building anything, so a
mismatch fails with the first differing path and nothing is half-loaded.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["FORMAT", "restore", "save"]

FORMAT = "optjax-checkpoint/1"
_MANIFEST = "manifest"


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


def _host_data(path, x) -> np.ndarray:
    """The leaf's data on the host: key data for a PRNG key, a 0-d array for a Python number."""
    if isinstance(x, jax.core.Tracer):
        raise ValueError(f"checkpoint.save: leaf {_where(path)} is traced; save outside jit")
    if _is_key(x):
        x = jax.random.key_data(x)
    return np.asarray(jax.device_get(x), order="C")  # keeps 0-d arrays 0-d


def save(path: str | os.PathLike, tree: Any) -> None:
    """Write ``tree`` (e.g. ``{"params": params, "opt_state": state, "step": step}``) to ``path``.

    The file is written under a temporary name in the same directory and renamed into place,
    so ``path`` holds either the previous checkpoint or the new one, never a partial file.

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
        try:
            shape, dtype = _describe(leaf)
        except ValueError as error:
            raise ValueError(f"checkpoint.save: leaf {_where(key_path)}: {error}") from None
        data = _host_data(key_path, leaf)
        entry = {
            "path": jax.tree_util.keystr(key_path),
            "shape": list(shape),
            "dtype": dtype,
            "data_shape": list(data.shape),
            "data_dtype": str(data.dtype),
        }
        if _is_key(leaf):
            entry["key_impl"] = str(jax.random.key_impl(leaf))
        manifest.append(entry)
        arrays[f"leaf_{i}"] = data.reshape(-1).view(np.uint8)
    header = json.dumps({"format": FORMAT, "leaves": manifest}).encode()
    arrays[_MANIFEST] = np.frombuffer(header, np.uint8)

    target = os.fspath(path)
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


def _create_beside(target: str) -> tuple[int, str]:
    """A new file in ``target``'s directory, open for writing: ``(fd, name)``. Its mode is what
    ``open(target, "w")`` would give: ``target``'s own where it exists, else 0o666 less the
    umask (tempfile.mkstemp would make it 0o600 whatever the umask)."""
    directory, name = os.path.split(os.path.abspath(target))
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None
    while True:
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # another writer's temporary file: draw another name
            continue
        if mode is not None:
            os.fchmod(fd, mode)
        return fd, tmp


def _read(path) -> tuple[list[dict], dict[str, np.ndarray]]:
    try:
        with open(os.fspath(path), "rb") as f, np.load(f, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"checkpoint {os.fspath(path)!r} cannot be read: {error}") from None
    not_ours = f"checkpoint {os.fspath(path)!r} is not an optjax checkpoint ({FORMAT})"
    try:
        header = json.loads(arrays.pop(_MANIFEST).tobytes().decode())
        found, leaves = header["format"], header["leaves"]
    except Exception:  # noqa: BLE001 -- any malformed manifest gets the same message
        raise ValueError(not_ours) from None
    if found != FORMAT:  # a real check: not an assert, which python -O removes
        raise ValueError(f"{not_ours}: its format is {found!r}")
    return leaves, arrays


def _check(path, flat_like, entries, arrays) -> None:
    """Raise ValueError at the first leaf where the checkpoint differs from the template."""
    where = f"checkpoint {os.fspath(path)!r} does not match the template"
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
        data = arrays.get(f"leaf_{i}")
        try:
            size = (
                int(np.prod(entry["data_shape"], dtype=np.int64))
                * jnp.dtype(entry["data_dtype"]).itemsize
            )
        except (KeyError, TypeError):
            size = -1
        if data is None or data.size != size:
            raise ValueError(
                f"{where} at {_where(key_path)}: the stored data is missing or truncated"
            )
    if len(flat_like) != len(entries):
        if len(flat_like) > len(entries):
            missing = _where(flat_like[len(entries)][0])
            raise ValueError(f"{where}: the template has {missing}, which the checkpoint lacks")
        raise ValueError(
            f"{where}: the checkpoint has {entries[len(flat_like)]['path'] or '<root>'}, which "
            "the template lacks"
        )


def _rebuild(leaf, entry, data: np.ndarray):
    array = np.frombuffer(data.tobytes(), jnp.dtype(entry["data_dtype"])).reshape(
        entry["data_shape"]
    )
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
    """
    entries, arrays = _read(path)
    flat_like, treedef = jax.tree_util.tree_flatten_with_path(like)
    _check(path, flat_like, entries, arrays)
    leaves = [
        _rebuild(leaf, entry, arrays[f"leaf_{i}"])
        for i, ((_, leaf), entry) in enumerate(zip(flat_like, entries, strict=True))
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves)
