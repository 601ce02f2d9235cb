"""Evaluating a function over a large batch in sequential microbatches, to bound memory."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_integer, check_positive_int

__all__ = [
    "AccumulationType",
    "Accumulator",
    "microbatch",
]


class AccumulationType(enum.Enum):
    """How `microbatch` combines the microbatches' results."""

    MEAN = enum.auto()  # their mean over all microbatches (floating results only)
    SUM = enum.auto()  # their sum
    RUNNING_MEAN = enum.auto()  # their mean over the microbatches evaluated
    CONCAT = enum.auto()  # their concatenation along axis 0, in the batch's order


@dataclasses.dataclass(frozen=True)
class Accumulator:
    """A way to combine results, ``carry = init(shapes of one result)``, ``carry = update(carry,
    result_i, i)`` for each microbatch ``i``, ``finalize(carry)``; ``aggregate`` reduces results
    stacked on axis 0 at once (optax's micro_vmap uses it)."""

    init: Callable[[Any], Any]
    update: Callable[[Any, Any, jax.Array], Any]
    finalize: Callable[[Any], Any]
    aggregate: Callable[[Any], Any]


def _wide_zeros(s) -> jax.Array:
    """Zeros for a sum of values shaped like ``s``: float32 at least for floating values."""
    return jnp.zeros(s.shape, tree.wide_dtype(jnp.zeros((), s.dtype)))


def _builtin(kind: AccumulationType, n: int, shapes) -> Accumulator:
    """The accumulator ``kind`` for results shaped like ``shapes`` (a tree of ShapeDtypeStruct),
    over ``n`` microbatches; sums and means are formed in float32 at least and returned in the
    results' dtypes."""
    if kind in (AccumulationType.MEAN, AccumulationType.RUNNING_MEAN):
        for s in jax.tree.leaves(shapes):
            if not jnp.issubdtype(s.dtype, jnp.inexact):
                raise ValueError(
                    f"AccumulationType.{kind.name} averages floating results; a result has dtype "
                    f"{s.dtype} (use SUM or CONCAT)"
                )

    def each(fn):
        return lambda *trees: jax.tree.map(fn, *trees)

    def back(carry):  # to the results' dtypes
        return jax.tree.map(lambda c, s: c.astype(s.dtype), carry, shapes)

    if kind is AccumulationType.CONCAT:

        def concat_init(s):
            return jnp.zeros((n, *s.shape), s.dtype)

        def interleave(c):
            # Microbatch a holds the rows a, a + n, a + 2n, ... of the batch: put them back.
            return c if c.ndim < 2 else jnp.swapaxes(c, 0, 1).reshape(-1, *c.shape[2:])

        return Accumulator(
            each(concat_init),
            lambda carry, value, i: jax.tree.map(lambda c, v: c.at[i].set(v), carry, value),
            each(interleave),
            lambda values: values,
        )

    def add(c, v, i):
        del i
        return c + v.astype(c.dtype)

    def running_mean(c, v, i):
        keep = i.astype(c.dtype) / (i + 1).astype(c.dtype)  # i / (i + 1), then 1 / (i + 1)
        return c * keep + v.astype(c.dtype) * (1 - keep)

    def mean_of_sum(c):
        return c / jnp.asarray(n, c.dtype)

    step = running_mean if kind is AccumulationType.RUNNING_MEAN else add
    finish = mean_of_sum if kind is AccumulationType.MEAN else (lambda c: c)
    reduce = jnp.sum if kind is AccumulationType.SUM else jnp.mean
    return Accumulator(
        each(_wide_zeros),
        lambda carry, value, i: jax.tree.map(lambda c, v: step(c, v, i), carry, value),
        lambda carry: back(jax.tree.map(finish, carry)),
        each(lambda x: reduce(x, axis=0)),
    )


def _is_accumulator_leaf(x) -> bool:
    """An accumulator: an AccumulationType (optax's enum too, by member name), or any object with
    ``init``, ``update`` and ``finalize`` (optax's Accumulator too)."""
    if isinstance(x, enum.Enum):
        return x.name in AccumulationType.__members__
    return all(callable(getattr(x, f, None)) for f in ("init", "update", "finalize"))


def _canonical(accumulator):
    """The accumulator tree with each enum member as optjax's AccumulationType, after checking
    each leaf is an accumulator."""

    def one(x):
        if not _is_accumulator_leaf(x):
            raise ValueError(
                "accumulator must be an AccumulationType, an Accumulator, or a tree of them "
                f"(a prefix of fun's result), got {x!r} in accumulator={accumulator!r}"
            )
        return AccumulationType[x.name] if isinstance(x, enum.Enum) else x

    return jax.tree.map(one, accumulator, is_leaf=_is_accumulator_leaf)


def _as_ints(name: str, value) -> tuple:
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    for v in values:
        check_integer(name, v)
    return values


def _split_batch(x, size: int, axis: int):
    """``x`` with its batch axis split into (microbatches, size): microbatch a holds the rows
    a, a + n, a + 2n, ... (n microbatches), so that a batch sharded in contiguous blocks along
    its axis stays sharded along the microbatch's own axis."""
    axis %= x.ndim
    rows = x.shape[axis]
    x = x.reshape(*x.shape[:axis], size, rows // size, *x.shape[axis + 1 :])
    return jnp.swapaxes(x, axis, axis + 1), axis


def microbatch(
    fun: Callable,
    argnums: int | Sequence[int],
    microbatch_size: int | None,
    accumulator: Any = AccumulationType.SUM,
    *,
    argnames: str | Sequence[str] = (),
    in_axes: int | Sequence[int] = 0,
    num_real_microbatches: int | jax.Array | None = None,
) -> Callable:
    r"""``fun`` evaluated on the batch in microbatches of ``microbatch_size`` rows, one after
    another (a ``lax.fori_loop``), with their results combined by ``accumulator``.

        r_a = fun(microbatch a),   a = 0 .. n-1,   n = batch / microbatch_size
        SUM: sum_a r_a     MEAN: (sum_a r_a) / n     RUNNING_MEAN: mean of r_0 .. r_{m-1}
        CONCAT: the r_a joined along axis 0, in the order of the batch

    The arguments at ``argnums`` (positions) and ``argnames`` (keywords) are batched along
    ``in_axes`` (one axis for all, or one per argument in the order ``argnums + argnames``);
    the others are passed whole. Microbatch a takes the rows a, a + n, a + 2n, ... (as optax's,
    so that a batch sharded along its axis stays sharded). ``accumulator`` is one
    `AccumulationType` or `Accumulator`, or a tree of them (a prefix of ``fun``'s result);
    sums and means are formed in float32 at least. With ``num_real_microbatches`` = m, only
    the first m microbatches are evaluated (a traced m does not recompile). Peak memory is that
    of one microbatch. ``microbatch_size=None`` returns ``fun`` itself.

    Example:
        >>> f = optjax.microbatch(lambda x: jnp.sum(x**2), argnums=0, microbatch_size=2)
        >>> f(jnp.arange(6.0))   # 0 + 1 + 4 + 9 + 16 + 25, two rows at a time
        Array(55., dtype=float32)
    """
    if not callable(fun):
        raise ValueError(f"fun must be a function, got fun={fun!r}")
    if microbatch_size is None:
        return fun
    check_positive_int("microbatch_size", microbatch_size)
    positions = _as_ints("argnums", argnums)
    names = (argnames,) if isinstance(argnames, str) else tuple(argnames)
    if not positions and not names:
        raise ValueError("microbatch needs a batched argument: argnums and argnames are empty")
    batched = len(positions) + len(names)
    axes = _as_ints("in_axes", in_axes)
    if not isinstance(in_axes, (list, tuple)):
        axes = axes * batched
    if len(axes) != batched:
        raise ValueError(
            f"in_axes must be one axis or one per batched argument ({batched}), got "
            f"in_axes={in_axes!r}"
        )
    accumulator = _canonical(accumulator)
    if num_real_microbatches is not None:
        check_integer("num_real_microbatches", num_real_microbatches, low=0)

    def microbatched(*args, **kwargs):
        slots = [(True, p) for p in positions] + [(False, k) for k in names]

        def batched_arg(slot):
            positional, key = slot
            return args[key] if positional else kwargs[key]

        sizes = {
            jnp.shape(x)[ax % jnp.ndim(x)]
            for slot, ax in zip(slots, axes)
            for x in jax.tree.leaves(batched_arg(slot))
        }
        if len(sizes) != 1:
            raise ValueError(
                f"the batched arguments must share one batch size, got {sorted(sizes)}"
            )
        size = sizes.pop()
        if size % microbatch_size:
            raise ValueError(
                f"the batch size {size} is not a multiple of microbatch_size={microbatch_size}"
            )
        n = size // microbatch_size
        if num_real_microbatches is not None:
            check_integer("num_real_microbatches", num_real_microbatches, high=n)
        split = {}  # slot -> (the argument split into microbatches, the microbatch axis)
        for slot, ax in zip(slots, axes):
            x = batched_arg(slot)
            pairs = jax.tree.map(lambda leaf, ax=ax: _split_batch(leaf, microbatch_size, ax), x)
            split[slot] = tree.unzip(x, pairs, 2)

        def call(i):
            new_args, new_kwargs = list(args), dict(kwargs)
            for (positional, key), (parts, part_axes) in split.items():
                part = jax.tree.map(
                    lambda x, a: jax.lax.dynamic_index_in_dim(x, i, a, keepdims=False),
                    parts,
                    part_axes,
                )
                if positional:
                    new_args[key] = part
                else:
                    new_kwargs[key] = part
            return fun(*new_args, **new_kwargs)

        shapes = jax.eval_shape(call, jnp.zeros([], jnp.int32))
        combine = _compose(accumulator, n, shapes)
        count = n if num_real_microbatches is None else num_real_microbatches
        carry = jax.lax.fori_loop(
            0, count, lambda i, c: combine.update(c, call(i), i), combine.init(shapes)
        )
        return combine.finalize(carry)

    return microbatched


def _compose(accumulator, n: int, shapes) -> Accumulator:
    """One Accumulator over ``fun``'s whole result from the tree (a prefix of it) of
    AccumulationTypes and Accumulators, each given its own subtree."""
    prefix: Any = jax.tree.structure(accumulator, is_leaf=_is_accumulator_leaf)
    parts = prefix.flatten_up_to(shapes)
    accs: list[Any] = [
        _builtin(a, n, s) if isinstance(a, AccumulationType) else a
        for a, s in zip(jax.tree.leaves(accumulator, is_leaf=_is_accumulator_leaf), parts)
    ]

    def over(method, *trees):
        columns = [prefix.flatten_up_to(t) for t in trees]
        return prefix.unflatten([method(a, *xs) for a, *xs in zip(accs, *columns)])

    return Accumulator(
        lambda s: over(lambda a, x: a.init(x), s),
        lambda carry, value, i: over(lambda a, c, v: a.update(c, v, i), carry, value),
        lambda carry: over(lambda a, c: a.finalize(c), carry),
        lambda values: over(lambda a, v: a.aggregate(v), values),
    )
