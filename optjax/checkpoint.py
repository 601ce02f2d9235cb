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

import json
import os
import secrets
import stat
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
        entry, data = _stored("checkpoint.save", key_path, leaf, to_host=True)
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


def _check(where: str, flat_like, entries, has_data: Callable[[int, dict], bool]) -> None:
    """Raise ValueError at the first leaf where the checkpoint differs from the template: its
    path, shape or dtype, or its stored data (``has_data(i, entry)`` is false where the data of
    leaf ``i`` is missing or not what its manifest entry says)."""
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


def _in_archive(arrays: dict[str, np.ndarray]) -> Callable[[int, dict], bool]:
    def has_data(i: int, entry: dict) -> bool:
        data = arrays.get(f"leaf_{i}")
        try:
            size = (
                int(np.prod(entry["data_shape"], dtype=np.int64))
                * jnp.dtype(entry["data_dtype"]).itemsize
            )
        except (KeyError, TypeError):
            return False
        return data is not None and data.size == size

    return has_data


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
    """
    entries, arrays = _read(path)
    flat_like, treedef = jax.tree_util.tree_flatten_with_path(like)
    where = f"checkpoint {os.fspath(path)!r} does not match the template"
    _check(where, flat_like, entries, _in_archive(arrays))
    leaves = []
    for i, ((_, leaf), entry) in enumerate(zip(flat_like, entries, strict=True)):
        data = arrays[f"leaf_{i}"]
        array = np.frombuffer(data.tobytes(), jnp.dtype(entry["data_dtype"]))
        leaves.append(_place(leaf, entry, array.reshape(entry["data_shape"])))
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
        self._manager = ocp.CheckpointManager(path, options=options, handler_registry=registry)
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
            data = self._manager.restore(
                step, args=args.Composite(state=args.StandardRestore(targets))
            )["state"]
        leaves = [
            _from_target(leaf, entry, data[f"leaf_{i}"])
            for i, ((_, leaf), entry) in enumerate(zip(flat_like, entries, strict=True))
        ]
        return jax.tree_util.tree_unflatten(treedef, leaves)

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        """The ``metadata`` saved with ``step`` (the latest when None); ``{}`` if none was."""
        step = self._saved(step)
        return dict(self._manager.metadata(step).custom_metadata or {})

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
        not_ours = f"checkpoint {self._path(step)!r} is not an optjax checkpoint ({_STEP_FORMAT})"
        args = self._ocp.args
        try:
            items = self._manager.restore(step, args=args.Composite(manifest=args.JsonRestore()))
            found, leaves = items["manifest"]["format"], items["manifest"]["leaves"]
        except Exception as error:  # a missing or malformed manifest alike
            raise ValueError(not_ours) from error
        if found != _STEP_FORMAT:
            raise ValueError(f"{not_ours}: its format is {found!r}")
        return leaves

    def _stored_arrays(self, step: int) -> dict[str, tuple[tuple[int, ...], str]]:
        """Each stored array's shape and dtype, from the metadata orbax wrote (no data read)."""
        try:
            tree = self._manager.metadata(step).item_metadata["state"].tree
        except (KeyError, AttributeError, TypeError):
            return {}
        return {
            name: (tuple(int(d) for d in array.shape), str(np.dtype(array.dtype)))
            for name, array in tree.items()
        }


def _check_step(step) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got step={step!r}")
    return int(step)
