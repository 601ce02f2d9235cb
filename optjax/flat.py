"""The flat fused path: parameters and optimizer state held in one contiguous buffer per dtype.

An optimizer step over a tree of many small leaves is bound by per-leaf overhead (one kernel, or
several, per leaf), and its first call by tracing and compiling per-leaf code. Packed into a few
contiguous buffers, the same elementwise chain runs as a few long loops and compiles in a blink.

``FlatBuffers`` is a pytree whose leaves are the buffers (one 1-D array per dtype) and whose static
data is the ``FlatLayout``, so a transform runs on it unchanged: ``tx.init(flat)``,
``tx.update(flat_grads, state, flat)``, ``apply_updates(flat, flat_updates)``; the state it builds
is flat too. The model still sees its pytree: ``layout.unflatten(flat)`` gives each leaf as a slice
of its buffer (under jit, a view that XLA fuses into its consumers; under ``grad``, the gradient of
a loss of the unflattened tree with respect to the buffers is itself flat)::

    flat_params, layout = optjax.flat.flatten(params)
    tx = optjax.adamw(1e-3)
    opt_state = tx.init(flat_params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(flat_params, opt_state, batch):
        loss, grads = jax.value_and_grad(lambda f: loss_fn(layout.unflatten(f), batch))(flat_params)
        updates, opt_state = tx.update(grads, opt_state, flat_params)
        return optjax.apply_updates(flat_params, updates), opt_state, loss

The flat path is a layout, not a second implementation. A transform writes its formula once:

- elementwise formulas (``jax.tree.map`` over the leaves) run on the buffers as they are;
- per-leaf reductions and broadcasts (a leaf's mean square, a per-leaf scale, the global norm, a
  per-leaf mask) go through the helpers of ``optjax.tree`` (``leaf_mean``, ``map_with_leaf_values``,
  ``global_norm``, ``where_leaves``), which accept a tree or FlatBuffers alike and keep the
  padding out of every reduction;
- a transform that needs each leaf on its own (its shape, a label, a random key per leaf) is
  wrapped in ``per_leaf``, which runs it on the tree of views (the tree path's numbers and state,
  without the flat speed-up).

A transform declares that it is correct on the buffers with ``@flat_ready`` (on its factory) or
``mark_flat_ready(tx)``. Every combinator (``chain``, ``named_chain``, the wrappers,
``flat_transform``) runs a transform that does not declare it, such as one from optax, on the
views, and so does ``optjax.stateless`` called on the buffers directly: a transform written
without the layout in mind is correct on it, just not faster. (A bare ``(init, update)`` pair
called directly on FlatBuffers sees the buffers: go through one of these.)

Elementwise transforms give the tree path's numbers (to the last bit, but for an ulp here and
there: XLA:CPU may round one formula differently in a loop's vector body and its scalar tail);
per-leaf reductions agree to rounding (the sums are taken in another order).

Each leaf starts on a block boundary: a buffer holds ``rows x block`` elements, every row belongs
to one leaf, and the few elements between a leaf's end and the next block, if any, are padding
(zeros, left out of every reduction). A per-leaf reduction is then a row reduction (one fused
pass over the buffer) and a small segment sum over rows; a per-leaf value reaches its elements
as one value per row. The padding stays zero whatever a formula computes there (0 / 0 with
eps = 0, say): a transform that runs on the buffers has the padding of its state and updates
set back to zero (``zero_padding``, one select per element, fused into the loop writing it).

On a mesh, the buffers are split on their row axis. ``flatten(params, row_multiple=n)`` pads
each buffer's row count up to a multiple of ``n`` (the devices of the axis it is split over)
with padding rows: zeros at the buffer's end that belong to no leaf, left out of every
reduction. A 1-D buffer laid out with ``NamedSharding(mesh, P("data"))`` then gives each device
whole rows, the state ``tx.init`` builds from it follows it, and a jitted update keeps it
there::

    flat_params, layout = optjax.flat.flatten(params, row_multiple=mesh.shape["data"])
    flat_params = jax.device_put(flat_params, NamedSharding(mesh, P("data")))
    opt_state = tx.init(flat_params)  # its buffers split like flat_params

A per-leaf reduction then sums each device's rows where they lie: only the per-leaf sums (and
the few partial rows at leaves' ends) cross devices, never a buffer. On a mesh with Explicit
axes, the per-leaf values and the views of ``unflatten`` come out replicated (each device gets
every leaf whole, which is what a data-parallel model reads), and so does the state of a
transform that runs on the views (``per_leaf``: e.g. Adafactor's once a leaf is factored); on
Auto axes XLA places them.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple, ParamSpec, Protocol, TypeVar, cast

import jax
import jax.numpy as jnp
import numpy as np

from optjax._checks import check_positive_int
from optjax.base import GradientTransformation

__all__ = [
    "FlatBuffers",
    "FlatLayout",
    "as_flat_ready",
    "as_tree",
    "flat_ready",
    "flat_transform",
    "flatten",
    "is_flat_ready",
    "mark_flat_ready",
    "per_leaf",
    "unflatten",
    "zero_padding",
]


class _Transform(Protocol):
    """Anything with optax's ``init`` and ``update`` (optjax's and optax's transforms)."""

    @property
    def init(self) -> Callable[..., Any]: ...

    @property
    def update(self) -> Callable[..., Any]: ...


P = ParamSpec("P")
Tx = TypeVar("Tx", bound=_Transform)

_MAX_BLOCK = 1024
_MIN_BLOCK = 16
_MAX_UNEVEN_ROWS = 1 << 15  # rows of leaves of unequal sizes, for one segment sum
_MAX_PADDING = 1 / 64  # padding allowed, as a fraction of a group's elements


class _Group(NamedTuple):
    """The leaves of one dtype: their places in one buffer of ``rows * block`` elements. The first
    ``leaf_rows`` rows hold the leaves; the rest, if any, are padding rows (zeros, no leaf's)."""

    dtype: np.dtype
    block: int
    rows: int
    leaves: tuple[int, ...]  # indices into the layout's leaves, in tree order
    sizes: tuple[int, ...]  # elements of each leaf
    row_starts: tuple[int, ...]  # first row of each leaf
    leaf_rows: int  # rows that hold leaves; rows - leaf_rows padding rows follow them

    @property
    def size(self) -> int:
        return self.rows * self.block


def _choose_block(sizes: list[int]) -> int:
    """The block: the largest power of two (at most _MAX_BLOCK) that divides every leaf, so there
    is no padding at all, when it is at least _MIN_BLOCK and the rows stay few or evenly split
    between the leaves (cheap segment sums); else the largest block whose padding stays small."""
    block = _MAX_BLOCK
    while block > 1 and any(s % block for s in sizes):
        block //= 2
    rows = [s // block for s in sizes]
    if block >= _MIN_BLOCK and (sum(rows) <= _MAX_UNEVEN_ROWS or len(set(rows)) == 1):
        return block
    total, padded_block = sum(sizes), _MAX_BLOCK
    while padded_block > block:
        padded = sum(-(-s // padded_block) * padded_block for s in sizes)
        if padded - total <= total * _MAX_PADDING:
            break
        padded_block //= 2
    return padded_block


class FlatLayout:
    """Where each leaf of a pytree lives in a few contiguous buffers (one per dtype).

    Built from shapes and dtypes only (``FlatLayout.of(tree)`` accepts arrays, tracers or
    ``jax.ShapeDtypeStruct``), hashable, and compared by value, so it is static data under jit.

    With ``row_multiple=n``, each buffer's row count is padded up to a multiple of ``n`` with
    padding rows (zeros that belong to no leaf), so that a buffer split ``n`` ways on its row
    axis gives each device whole rows (see the module doc).

    Example:
        >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
        >>> layout = optjax.flat.FlatLayout.of(params)
        >>> flat = layout.flatten(params)
        >>> [b.shape for b in flat.buffers], layout.num_params
        ([(9,)], 9)
        >>> layout.unflatten(flat)["w"].shape
        (2, 3)
    """

    def __init__(
        self,
        treedef,
        shapes: tuple[tuple[int, ...], ...],
        dtypes: tuple[np.dtype, ...],
        row_multiple: int = 1,
    ):
        check_positive_int("row_multiple", row_multiple)
        self.row_multiple = int(row_multiple)
        self.treedef = treedef
        self.shapes = tuple(tuple(int(d) for d in s) for s in shapes)
        self.dtypes = tuple(np.dtype(d) for d in dtypes)
        order: dict[np.dtype, list[int]] = {}
        for i, dtype in enumerate(self.dtypes):
            order.setdefault(dtype, []).append(i)
        groups = []
        for dtype, leaves in order.items():
            sizes = [math.prod(self.shapes[i]) for i in leaves]
            block = _choose_block(sizes)
            starts, row = [], 0
            for s in sizes:
                starts.append(row)
                row += -(-s // block)
            rows = -(-row // self.row_multiple) * self.row_multiple
            groups.append(
                _Group(dtype, block, rows, tuple(leaves), tuple(sizes), tuple(starts), row)
            )
        self.groups = tuple(groups)
        self._key = (treedef, self.shapes, self.dtypes, self.row_multiple)

    @classmethod
    def of(cls, tree, *, row_multiple: int = 1) -> FlatLayout:
        """The layout of ``tree`` (arrays, tracers or ShapeDtypeStructs), each buffer's rows padded
        up to a multiple of ``row_multiple`` (an integer >= 1: the devices the rows are split
        over)."""
        leaves, treedef = jax.tree.flatten(tree)
        shapes = tuple(jnp.shape(x) for x in leaves)
        dtypes = tuple(jnp.result_type(x) for x in leaves)
        return cls(treedef, shapes, dtypes, row_multiple)

    def __eq__(self, other) -> bool:
        return isinstance(other, FlatLayout) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        groups = ", ".join(
            f"{g.dtype.name}: {len(g.leaves)} leaves in {g.rows}x{g.block}"
            + (f" ({_count(g.rows - g.leaf_rows, 'padding row')})" if g.rows > g.leaf_rows else "")
            for g in self.groups
        )
        multiple = f"; row_multiple={self.row_multiple}" if self.row_multiple > 1 else ""
        return (
            f"FlatLayout({len(self.shapes)} leaves, {self.num_params} params; {groups}{multiple})"
        )

    @property
    def num_params(self) -> int:
        """Elements of the original tree (the buffers hold these plus padding)."""
        return sum(math.prod(s) for s in self.shapes)

    def flatten(self, tree) -> FlatBuffers:
        """Pack ``tree`` (this layout's structure, shapes and dtypes) into fresh buffers."""
        leaves = self.treedef.flatten_up_to(tree)
        for i, (x, shape, dtype) in enumerate(zip(leaves, self.shapes, self.dtypes)):
            if jnp.shape(x) != shape or jnp.result_type(x) != dtype:
                raise ValueError(
                    f"flatten: leaf {i} has shape {jnp.shape(x)} and dtype {jnp.result_type(x)}, "
                    f"but the layout expects shape {shape} and dtype {dtype}"
                )
        buffers = []
        for group in self.groups:
            parts = []
            for k, (i, size) in enumerate(zip(group.leaves, group.sizes)):
                parts.append(jnp.ravel(jnp.asarray(leaves[i])))
                pad = -(-size // group.block) * group.block - size
                if k == len(group.leaves) - 1:  # and the padding rows
                    pad += (group.rows - group.leaf_rows) * group.block
                if pad:
                    parts.append(jnp.zeros((pad,), group.dtype))
            buffers.append(jnp.concatenate(parts) if len(parts) > 1 else parts[0])
        return FlatBuffers(tuple(buffers), self)

    def unflatten(self, flat: FlatBuffers | tuple | list) -> Any:
        """The tree, each leaf a reshaped slice of its buffer (buffers may hold another dtype than
        the layout's, e.g. a bf16 moment). On a mesh with Explicit axes, the leaves of a split
        buffer come out replicated."""
        buffers = flat.buffers if isinstance(flat, FlatBuffers) else tuple(flat)
        if len(buffers) != len(self.groups):
            raise ValueError(
                f"unflatten: got {len(buffers)} buffers, the layout has {len(self.groups)}"
            )
        leaves: list[Any] = [None] * len(self.shapes)
        for group, buf in zip(self.groups, buffers):
            if jnp.shape(buf) != (group.size,):
                raise ValueError(
                    f"unflatten: the {group.dtype.name} buffer has shape {jnp.shape(buf)}, "
                    f"the layout expects ({group.size},)"
                )
            cuts = []
            for size, row in zip(group.sizes, group.row_starts):
                cuts += [row * group.block, row * group.block + size]

            def cut(buf, cuts=cuts, group=group):
                pieces = jnp.split(buf, cuts[1:])  # leaves, the gaps between them, the tail
                return [pieces[2 * k].reshape(self.shapes[i]) for k, i in enumerate(group.leaves)]

            for i, leaf in zip(group.leaves, _on_auto_axes(cut, buf)):
                leaves[i] = leaf
        return self.treedef.unflatten(leaves)

    # Segment reductions: one value per leaf, and back to one value per element.

    def _row_sums(self, group: _Group, f, buffers) -> jax.Array:
        """``sum(f(*buffers))`` over each row's valid elements (none in a padding row, whose sum
        is 0). Full rows are summed as they are; each leaf's partial last row is summed again
        from a masked copy and put in its place, so no mask touches the bulk of the buffer (XLA
        then fuses f into one streaming reduction). A None buffer (an unused state field)
        reaches f as None."""
        rows = [None if b is None else b.reshape(group.rows, group.block) for b in buffers]
        sums = jnp.sum(f(*rows), axis=1)
        lengths = _row_lengths(group)
        if lengths is None:
            return sums
        partial = np.flatnonzero((lengths > 0) & (lengths < group.block))
        if partial.size:
            tails = f(*(None if r is None else r[partial] for r in rows))
            col = jax.lax.broadcasted_iota(jnp.int32, tails.shape, 1)
            fixed = jnp.sum(jnp.where(col < lengths[partial][:, None], tails, 0), axis=1)
            sums = sums.at[partial].set(fixed)
        if group.rows > group.leaf_rows:
            sums = jnp.where(np.arange(group.rows) < group.leaf_rows, sums, 0)
        return sums

    def leaf_reduce(self, f, *flats: FlatBuffers | tuple) -> tuple[jax.Array, ...]:
        """For each group, ``sum(f(x, ...))`` over each leaf's elements (padding left out), with
        ``x, ...`` the matching buffers of ``flats`` (or plain tuples of buffers): one array of
        shape (leaves in the group,) per dtype group. ``f`` is elementwise."""
        buffers = [_buffers(fl) for fl in flats]
        out = []
        for g, group in enumerate(self.groups):

            def sums(*bufs, group=group):
                return _rows_to_leaves(group, self._row_sums(group, f, bufs))

            out.append(_on_auto_axes(sums, *(b[g] for b in buffers)))
        return tuple(out)

    def reduce(self, f, *flats: FlatBuffers | tuple) -> tuple[jax.Array, ...]:
        """For each group, ``sum(f(x, ...))`` over all its leaves' elements (padding left out):
        one scalar per dtype group, with no segment sum."""
        buffers = [_buffers(fl) for fl in flats]
        out = []
        for g, group in enumerate(self.groups):

            def total(*bufs, group=group):
                return jnp.sum(self._row_sums(group, f, bufs))

            out.append(_on_auto_axes(total, *(b[g] for b in buffers)))
        return tuple(out)

    def leaf_sizes(self) -> tuple[np.ndarray, ...]:
        """Elements of each leaf, per dtype group (NumPy int arrays)."""
        return tuple(np.asarray(g.sizes, np.int64) for g in self.groups)

    def expand(self, per_leaf: tuple) -> tuple[jax.Array, ...]:
        """One value per leaf (per group) to one value per element, as (rows, 1) arrays that
        broadcast against a buffer reshaped with ``as_rows``. Padding rows get the value of the
        group's last leaf that has rows, so that a formula sees there what it sees on that leaf's
        padding elements (zeros stay zero under ``x * value``, and no empty leaf's NaN mean
        reaches them)."""
        return tuple(
            _leaves_to_rows(group, jnp.asarray(v))[:, None]
            for group, v in zip(self.groups, per_leaf)
        )

    def as_rows(self, flat: FlatBuffers | tuple) -> tuple[Any, ...]:
        """Each buffer reshaped to (rows, block) (a free reshape); None stays None. A buffer split
        over a mesh's Explicit axes must be split on row boundaries (see ``row_multiple``)."""
        return tuple(
            None if b is None else _as_rows(g, b) for g, b in zip(self.groups, _buffers(flat))
        )

    def from_rows(self, rows: tuple) -> FlatBuffers:
        return FlatBuffers(tuple(r.reshape(-1) for r in rows), self)

    def map_leaves(self, f, flat: FlatBuffers, per_leaf: Any, *others: FlatBuffers) -> FlatBuffers:
        """``f(x, value, *other)`` on each buffer viewed as (rows, block), ``value`` the leaf's
        entry of ``per_leaf`` (one array per group, as from ``leaf_reduce``) on each of its
        elements and ``others`` more FlatBuffers of this layout, also as rows."""
        if not isinstance(per_leaf, tuple) or len(per_leaf) != len(self.groups):
            raise ValueError(
                "flat layout: per-leaf values must hold one array per dtype group of the buffers "
                f"({len(self.groups)}); got {type(per_leaf).__name__}. Were they computed from a "
                "tree while the updates are flat? Pass params and updates both flat, or both trees"
            )
        values = self.expand(per_leaf)
        other_rows = [self.as_rows(o) for o in others]
        out = [
            f(x, values[g], *(o[g] for o in other_rows)) for g, x in enumerate(self.as_rows(flat))
        ]
        return self.from_rows(tuple(out))

    def where_leaves(self, keep, on_true: FlatBuffers, on_false: FlatBuffers) -> FlatBuffers:
        """Each leaf taken whole from ``on_true`` where ``keep`` (a tree of Python bools shaped
        like the params) says True, else from ``on_false`` (padding rows go with the group's
        last leaf that has rows, as in ``expand``)."""
        out = []
        pairs = zip(on_true.buffers, on_false.buffers)
        for group, flags, (a, b) in zip(self.groups, self.leaf_mask(keep), pairs):
            if flags.all():
                out.append(a)
            elif not flags.any():
                out.append(b)
            else:
                rows = flags[_row_leaf_ids(group)][:, None]
                picked = jnp.where(rows, _as_rows(group, a), _as_rows(group, b))
                out.append(picked.reshape(-1))
        return FlatBuffers(tuple(out), self)

    def leaf_mask(self, keep) -> tuple[np.ndarray, ...]:
        """Per-leaf booleans from a tree of Python bools shaped like the params, per group."""
        flags = self.treedef.flatten_up_to(keep)
        out = []
        for group in self.groups:
            values = []
            for i in group.leaves:
                flag = flags[i]
                if isinstance(flag, jax.core.Tracer):
                    raise ValueError(
                        "flat layout: a per-leaf mask must hold Python bools (known when tracing), "
                        f"got a traced value at leaf {i}"
                    )
                values.append(bool(np.asarray(flag)))
            out.append(np.asarray(values, bool))
        return tuple(out)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _buffers(flat: FlatBuffers | tuple | list) -> tuple:
    return flat.buffers if isinstance(flat, FlatBuffers) else tuple(flat)


def _split_ways(x) -> int:
    """How many ways the first axis of ``x`` is split over a mesh, as its type says (on Explicit
    axes; 1 where the type carries no split)."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    spec = getattr(sharding, "spec", None)
    if sharding is None or not spec or spec[0] is None:
        return 1
    axes = spec[0] if isinstance(spec[0], tuple) else (spec[0],)
    return math.prod(sharding.mesh.shape[a] for a in axes)


def _as_rows(group: _Group, buf) -> Any:
    """``buf`` reshaped to (rows, block), after checking that a split over a mesh's Explicit axes
    falls on row boundaries."""
    ways = _split_ways(buf)
    if group.rows % ways:
        raise ValueError(
            f"flat layout: the {group.dtype.name} buffer is split {ways} ways on a mesh, which "
            f"does not divide its {group.rows} rows; build the layout with row_multiple={ways} "
            "(e.g. optjax.flat.flatten(params, row_multiple=n) for n devices)"
        )
    return buf.reshape(group.rows, group.block)


def _on_auto_axes(fn, *arrays):
    """``fn(*arrays)``, for the few ops that mix rows (a segment sum over rows, a gather of
    partial rows, the slices cutting out each leaf). On a mesh with Explicit axes no sharding
    rule types them on a split buffer: they run with the axes made Auto, as on an Auto mesh
    (each device reduces its own rows; only per-leaf values cross devices), and their outputs
    come back replicated. Elsewhere ``fn`` runs as it is."""
    for x in arrays:
        if x is not None and _split_ways(x) > 1:
            mesh = jax.typeof(x).sharding.mesh
            whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
            return jax.sharding.auto_axes(fn, out_sharding=whole)(*arrays)
    return fn(*arrays)


def _split_like(flat: FlatBuffers, like: FlatBuffers) -> FlatBuffers:
    """``flat`` with each buffer split over the mesh as ``like``'s is, where ``like``'s type says
    it is split (Explicit axes): buffers packed from replicated views go back to their rows."""
    buffers = []
    for new, old in zip(flat.buffers, like.buffers):
        if _split_ways(old) > 1:
            new = jax.sharding.reshard(new, jax.typeof(old).sharding)
        buffers.append(new)
    return FlatBuffers(tuple(buffers), flat.layout)


def _row_lengths(group: _Group) -> np.ndarray | None:
    """Valid elements in each row (0 in a padding row), or None when every row is full."""
    if group.rows == group.leaf_rows and all(s % group.block == 0 for s in group.sizes):
        return None
    lengths = np.full(group.rows, group.block, np.int32)
    for size, start in zip(group.sizes, group.row_starts):
        if size % group.block:
            lengths[start + size // group.block] = size % group.block
    return lengths


def _zero_padding_of(flat: FlatBuffers) -> FlatBuffers:
    """``flat`` with every padding element (a leaf's partial last row, the padding rows) set to
    0, whatever the arithmetic put there (e.g. 0/0 where a formula divides by a moment that is 0
    only in the padding). One select per element, fused into the loop that produced the buffer;
    a group without padding is left as it is."""
    buffers = []
    for group, buf in zip(flat.layout.groups, flat.buffers):
        lengths = _row_lengths(group)
        if buf is None or lengths is None:
            buffers.append(buf)
            continue
        lengths = np.where(np.arange(group.rows) < group.leaf_rows, lengths, 0)
        rows = _as_rows(group, buf)
        col = jax.lax.broadcasted_iota(jnp.int32, (1, group.block), 1)
        valid = col < lengths[:, None].astype(np.int32)
        buffers.append(jnp.where(valid, rows, jnp.zeros((), rows.dtype)).reshape(-1))
    return FlatBuffers(tuple(buffers), flat.layout)


def zero_padding(tree, layout: FlatLayout) -> Any:
    """``tree`` (updates, a state, anything holding FlatBuffers) with the padding of each
    FlatBuffers of ``layout`` in it set to 0 (`_zero_padding_of`); other nodes as they are."""

    def fix(x):
        if isinstance(x, FlatBuffers) and x.layout == layout:
            return _zero_padding_of(x)
        return x

    return jax.tree.map(fix, tree, is_leaf=lambda x: isinstance(x, FlatBuffers))


def _on_buffers(tx):
    """``tx`` (a transform run on the buffers themselves) keeping the padding zero: the state
    ``init`` builds and the updates and state ``update`` returns have zeros there, so no formula
    (an eps of 0, an initial value, a future transform) can leave anything else in the padding,
    where a later reduction or ``apply_updates`` would pick it up. Trees pass through."""

    def init(params):
        state = tx.init(params)
        return zero_padding(state, params.layout) if isinstance(params, FlatBuffers) else state

    @functools.wraps(tx.update)  # chain forwards only the keyword extras tx.update accepts
    def update(updates, state, params=None, **extra_args):
        new_updates, new_state = tx.update(updates, state, params, **extra_args)
        if not isinstance(updates, FlatBuffers):
            return new_updates, new_state
        return zero_padding((new_updates, new_state), updates.layout)

    return GradientTransformation(init, update)


def _rows_per_leaf(group: _Group) -> np.ndarray:
    return np.asarray([-(-s // group.block) for s in group.sizes], np.int64)


def _row_leaf_ids(group: _Group) -> np.ndarray:
    """The leaf (its index in the group) of each row; padding rows count as the last leaf that
    has rows."""
    counts = _rows_per_leaf(group)
    ids = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    padding = group.rows - group.leaf_rows
    return np.concatenate([ids, np.full(padding, ids[-1] if padding else 0, np.int32)])


def _rows_to_leaves(group: _Group, row_values: jax.Array) -> jax.Array:
    """Sum per-row values over each leaf's rows (padding rows left out)."""
    if group.rows > group.leaf_rows:
        row_values = row_values[: group.leaf_rows]
    counts = _rows_per_leaf(group)
    if len(counts) and np.all(counts == counts[0]) and counts[0] > 0:
        return row_values.reshape(len(counts), int(counts[0])).sum(axis=1)
    ids = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    return jax.ops.segment_sum(row_values, ids, len(counts), indices_are_sorted=True)


def _leaves_to_rows(group: _Group, leaf_values: jax.Array) -> jax.Array:
    """Repeat each leaf's value over its rows (and the last one over the padding rows)."""
    counts = _rows_per_leaf(group)
    if group.rows == group.leaf_rows and len(counts) and np.all(counts == counts[0]) and counts[0]:
        return jnp.broadcast_to(leaf_values[:, None], (len(counts), int(counts[0]))).reshape(-1)
    return leaf_values[_row_leaf_ids(group)]


@jax.tree_util.register_pytree_with_keys_class
class FlatBuffers:
    """The leaves of a pytree packed into one contiguous 1-D buffer per dtype.

    A pytree itself: its children are the buffers and its static data the layout, so any
    transform maps over it as over any tree, and two FlatBuffers match only when their layouts
    do. ``unflatten()`` gives back the original tree as views.
    """

    __slots__ = ("buffers", "layout")

    def __init__(self, buffers, layout: FlatLayout):
        self.buffers = tuple(buffers)
        self.layout = layout

    def unflatten(self) -> Any:
        return self.layout.unflatten(self)

    def tree_flatten_with_keys(self):
        keys = [jax.tree_util.DictKey(g.dtype.name) for g in self.layout.groups]
        return list(zip(keys, self.buffers)), self.layout

    @classmethod
    def tree_unflatten(cls, layout, buffers):
        return cls(buffers, layout)

    def __repr__(self) -> str:
        return f"FlatBuffers({list(self.buffers)!r}, {self.layout!r})"


def flatten(tree, *, row_multiple: int = 1) -> tuple[FlatBuffers, FlatLayout]:
    """Pack a pytree of arrays into flat buffers: ``(flat, layout)``, ``layout = flat.layout``.

    ``row_multiple`` (an integer >= 1) pads each buffer's row count up to a multiple of it with
    padding rows, so that the buffers split that many ways on their row axis (a mesh axis of
    that many devices) give each device whole rows.

    Example:
        >>> flat, layout = optjax.flat.flatten({"a": jnp.ones(2), "b": jnp.arange(3.0)})
        >>> flat.buffers[0]
        Array([1., 1., 0., 1., 2.], dtype=float32)
        >>> layout.unflatten(flat)["b"]
        Array([0., 1., 2.], dtype=float32)
    """
    layout = FlatLayout.of(tree, row_multiple=row_multiple)
    return layout.flatten(tree), layout


def unflatten(flat: FlatBuffers) -> Any:
    """The pytree that ``flat`` packs, each leaf a view of its buffer."""
    return flat.layout.unflatten(flat)


def as_tree(params) -> Any:
    """``params`` as the model's pytree: the views of a FlatBuffers, anything else as it is.

    The one line a loss function needs to accept flat params. Under ``jax.vmap`` (many runs
    stacked on a leading axis, the buffers of shape (runs, size)) it unflattens each run::

        layout = FlatLayout.of(jax.tree.map(lambda x: x[0], stacked_params))
        flat_params = jax.vmap(layout.flatten)(stacked_params)

    Example:
        >>> flat_params, _ = optjax.flat.flatten({"w": jnp.ones(2)})
        >>> optjax.flat.as_tree(flat_params)["w"]
        Array([1., 1.], dtype=float32)
    """
    return params.unflatten() if isinstance(params, FlatBuffers) else params


# Which transforms run on the buffers themselves. A transform is "flat-ready" when its formula is
# correct on FlatBuffers: elementwise, or reducing per leaf only through optjax.tree's helpers.
# The mark is kept beside the update function (a method marks its class), not on it: wrappers
# copy a function's attributes with functools.wraps, and a wrapper is not ready because what it
# wraps is.
_FLAT_READY: weakref.WeakSet = weakref.WeakSet()


def _update_function(tx):
    update = tx.update
    return getattr(update, "__func__", update)  # a bound method: its class's function


def mark_flat_ready(tx: Tx) -> Tx:
    """Declare ``tx`` correct on FlatBuffers, and return it (see `flat_ready`)."""
    _FLAT_READY.add(_update_function(tx))
    return tx


def flat_ready(factory: Callable[P, Tx]) -> Callable[P, Tx]:
    """Decorate a transform's factory: the transforms it builds are correct on FlatBuffers.

    Declare it for a transform whose formula is elementwise over the leaves, or that reduces or
    broadcasts per leaf only through ``optjax.tree``'s helpers (``leaf_mean``, ``leaf_sum``,
    ``map_with_leaf_values``, ``global_norm``, ``where_leaves``). Combinators run a transform
    without the mark on the tree of views (`per_leaf`), so leaving it off is never wrong, only
    slower; the flat-against-tree trajectory tests check the mark where it is set.

    Its state and updates on FlatBuffers keep zeros in the padding whatever the formula computes
    there (`zero_padding`): a transform need not make its arithmetic safe where only the padding
    could divide 0 by 0.
    """

    @functools.wraps(factory)
    def build(*args: P.args, **kwargs: P.kwargs) -> Tx:
        tx = factory(*args, **kwargs)
        if is_flat_ready(tx):  # built from another flat-ready transform: already keeps it zero
            return tx
        mark_flat_ready(tx)  # e.g. optjax.stateless asks whether its own transform is ready
        return cast(Tx, mark_flat_ready(_on_buffers(tx)))

    return build


def is_flat_ready(tx) -> bool:
    """Whether ``tx`` declared itself correct on FlatBuffers (`flat_ready`, `mark_flat_ready`)."""
    try:
        return _update_function(tx) in _FLAT_READY
    except TypeError:  # an update that cannot be weakly referenced is never marked
        return False


def per_leaf(
    tx: _Transform, when: Callable[[FlatLayout], bool] | None = None
) -> GradientTransformation:
    """``tx`` that, given FlatBuffers, runs on the tree of their views.

    For a transform that needs each leaf on its own (its shape, a mask or label, one random key
    per leaf): ``init`` builds the tree path's state from the views and ``update`` packs the
    updates back into buffers, with the tree path's numbers and without the flat path's speed.
    With ``when``, only layouts for which ``when(layout)`` is true take the views; others run on
    the buffers (``tx`` must then be correct there). Trees pass through unchanged.
    """

    def views(x) -> bool:
        return isinstance(x, FlatBuffers) and (when is None or when(x.layout))

    on_buffers = _on_buffers(tx)  # keeps the padding zero where tx runs on the buffers

    def init(params):
        return tx.init(params.unflatten()) if views(params) else on_buffers.init(params)

    @functools.wraps(tx.update)  # chain forwards only the keyword extras tx.update accepts
    def update(updates, state, params=None, **extra_args):
        if not views(updates):
            return on_buffers.update(updates, state, params, **extra_args)
        layout = updates.layout
        new_updates, state = tx.update(
            layout.unflatten(updates), state, as_tree(params), **extra_args
        )
        return _split_like(layout.flatten(new_updates), updates), state

    return mark_flat_ready(GradientTransformation(init, update))


def as_flat_ready(tx: Tx) -> Tx | GradientTransformation:
    """``tx`` itself if it is flat-ready, else ``per_leaf(tx)``: what combinators run."""
    return tx if is_flat_ready(tx) else per_leaf(tx)


def flat_transform(tx: _Transform) -> GradientTransformation:
    """Run ``tx`` with its state held flat, as a drop-in for code that passes pytrees.

    ``init`` and ``update`` accept either FlatBuffers (the fast path: nothing is copied) or the
    ordinary tree (packed on entry; the updates come back as a tree of views). Keeping the params
    flat across steps, as in this module's example, saves the packing copy of params and grads.
    A transform that is not flat-ready runs on the views.

    Example:
        >>> tx = optjax.flat.flat_transform(optjax.sgd(0.1))
        >>> params = {"a": jnp.ones(2), "b": jnp.ones(3)}
        >>> u, state = tx.update(params, tx.init(params), params)
        >>> u["b"]
        Array([-0.1, -0.1, -0.1], dtype=float32)
    """
    inner = as_flat_ready(tx)

    def pack(x, layout):
        if x is None or isinstance(x, FlatBuffers):
            return x
        return layout.flatten(x)

    def init(params):
        if not isinstance(params, FlatBuffers):
            params = FlatLayout.of(params).flatten(params)
        return inner.init(params)

    @functools.wraps(inner.update)
    def update(updates, state, params=None, **extra_args):
        if isinstance(updates, FlatBuffers):
            return inner.update(updates, state, pack(params, updates.layout), **extra_args)
        layout = FlatLayout.of(updates)
        flat_updates, state = inner.update(
            layout.flatten(updates), state, pack(params, layout), **extra_args
        )
        return layout.unflatten(flat_updates), state

    return mark_flat_ready(GradientTransformation(init, update))
