"""optax.microbatching's names: `microbatch` and the maps built on it, `micro_vmap` (a vmap run
in sequential microbatches) and `micro_grad` (per-example gradients, transformed one by one,
then combined), with `reshape_batch_axis`, the split of a batch into microbatches they share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optjax._checks import check_integer, check_positive_int
from optjax.wrappers.microbatching import AccumulationType as AccumulationType
from optjax.wrappers.microbatching import Accumulator as Accumulator
from optjax.wrappers.microbatching import _as_ints, _canonical, _is_accumulator_leaf, _split_batch
from optjax.wrappers.microbatching import microbatch as microbatch

__all__ = [
    "AccumulationType",
    "Accumulator",
    "micro_grad",
    "micro_vmap",
    "microbatch",
    "reshape_batch_axis",
]


class IndividualOutputs(NamedTuple):
    """`micro_grad`'s per-example outputs, each stacked along axis 0 in the batch's order."""

    values: Any  # fun's value on each example
    metrics: Any  # metrics_fn of each example's gradient
    aux: Any  # fun's auxiliary output on each example (None without has_aux)


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {name}={value!r}")


def _check_callable(name: str, value) -> None:
    if not callable(value):
        raise ValueError(f"{name} must be a function, got {name}={value!r}")


def _check_accumulator(accumulator):
    """The accumulator tree with optjax's AccumulationType members; None is not one."""
    if accumulator is None:
        raise ValueError(
            "accumulator must be an AccumulationType, an Accumulator, or a tree of them, "
            "got accumulator=None"
        )
    return _canonical(accumulator)


def _check_axis(name: str, axis: int, x) -> None:
    if not -jnp.ndim(x) <= axis < jnp.ndim(x):
        raise ValueError(
            f"{name} must be an axis of the array it maps, in [-{jnp.ndim(x)}, {jnp.ndim(x)}) "
            f"for shape {jnp.shape(x)}, got {name}={axis!r}"
        )


def reshape_batch_axis(tree: Any, microbatch_size: int, axis: int = 0) -> Any:
    r"""Each leaf of ``tree`` with its batch ``axis`` (B rows) split into two axes,
    (B / microbatch_size, microbatch_size), in column-major order:

        out[..., a, j, ...] = x[..., a + j n, ...],   n = B / microbatch_size

    so microbatch ``a`` (``out[a]`` for axis 0) holds the rows a, a + n, a + 2n, ... A batch
    sharded in contiguous blocks along ``axis`` stays sharded along the new microbatch_size
    axis. ``axis`` may be negative.

    Example:
        >>> optjax.microbatching.reshape_batch_axis(jnp.arange(6), microbatch_size=2)
        Array([[0, 3],
               [1, 4],
               [2, 5]], dtype=int32)
    """
    check_positive_int("microbatch_size", microbatch_size)
    check_integer("axis", axis)

    def one(x):
        x = jnp.asarray(x)
        _check_axis("axis", axis, x)
        rows = x.shape[axis]
        if rows % microbatch_size:
            raise ValueError(
                f"microbatch_size must divide the batch axis ({rows} rows along axis {axis} of "
                f"shape {x.shape}), got microbatch_size={microbatch_size}"
            )
        return _split_batch(x, microbatch_size, axis)[0]

    return jax.tree.map(one, tree)


def _aggregate(accumulator: Any, values: Any) -> Any:
    """``values`` stacked on axis 0, reduced at once by each accumulator of the tree (a prefix of
    them): SUM sums, MEAN and RUNNING_MEAN average, CONCAT keeps."""

    def builtin(kind, x):
        if kind is AccumulationType.CONCAT:
            return x
        if kind is AccumulationType.SUM:
            return jnp.sum(x, axis=0)  # float16 and bfloat16 are summed in float32 by jnp.sum
        return jnp.mean(x, axis=0)

    def one(acc, part):
        if isinstance(acc, AccumulationType):
            return jax.tree.map(lambda x: builtin(acc, x), part)
        if not callable(getattr(acc, "aggregate", None)):
            raise ValueError(
                f"micro_vmap reduces each microbatch with the accumulator's aggregate; "
                f"accumulator={acc!r} has none"
            )
        return acc.aggregate(part)

    prefix: Any = jax.tree.structure(accumulator, is_leaf=_is_accumulator_leaf)
    accs = jax.tree.leaves(accumulator, is_leaf=_is_accumulator_leaf)
    return prefix.unflatten([one(a, p) for a, p in zip(accs, prefix.flatten_up_to(values))])


def micro_vmap(
    fun: Callable,
    in_axes: int | Sequence[int | None] | None = 0,
    out_axes: Any = 0,
    *,
    microbatch_size: int | None = None,
    vmap_fn: Callable = jax.vmap,
    accumulator: Any = AccumulationType.CONCAT,
    num_real_microbatches: int | jax.Array | None = None,
) -> Callable:
    r"""``vmap_fn(fun, in_axes, out_axes)`` (``jax.vmap``) evaluated on the batch in microbatches
    of ``microbatch_size`` rows, one after another, with the mapped results combined by
    ``accumulator`` over the whole batch:

        y_b = fun(example b),   b = 0 .. B-1
        CONCAT (default): [y_0, ..., y_{B-1}] stacked on axis 0, as jax.vmap returns
        SUM: sum_b y_b        MEAN, RUNNING_MEAN: (1 / B) sum_b y_b

    (with ``num_real_microbatches`` = m, only the first m microbatches are evaluated: SUM and
    MEAN leave the others out, RUNNING_MEAN averages the m, CONCAT leaves zeros.) As in
    ``jax.vmap``, ``in_axes`` is one axis (or None, not mapped) for every positional argument
    or one per positional argument, and keyword arguments are mapped along axis 0;
    ``out_axes`` must be 0. ``accumulator`` is one `AccumulationType` or `Accumulator` or a
    tree of them (a prefix of ``fun``'s result); each microbatch is reduced by its
    ``aggregate``. Peak memory is that of one microbatch; ``microbatch_size=None`` maps the
    whole batch at once.

    Example:
        >>> square = optjax.microbatching.micro_vmap(lambda x: x**2, microbatch_size=2)
        >>> square(jnp.arange(6.0))
        Array([ 0.,  1.,  4.,  9., 16., 25.], dtype=float32)
        >>> total = optjax.microbatching.micro_vmap(
        ...     lambda x: x**2, microbatch_size=2,
        ...     accumulator=optjax.microbatching.AccumulationType.SUM)
        >>> total(jnp.arange(6.0))   # 0 + 1 + 4 + 9 + 16 + 25
        Array(55., dtype=float32)
    """
    _check_callable("fun", fun)
    _check_callable("vmap_fn", vmap_fn)
    axes_given = tuple(in_axes) if isinstance(in_axes, (list, tuple)) else None
    for ax in (in_axes,) if axes_given is None else axes_given:
        if ax is not None:
            check_integer("in_axes", ax)
    if not (isinstance(out_axes, int) and not isinstance(out_axes, bool) and out_axes == 0):
        raise ValueError(
            f"out_axes must be 0 (the results are stacked along axis 0), got out_axes={out_axes!r}"
        )
    if microbatch_size is not None:
        check_positive_int("microbatch_size", microbatch_size)
    if num_real_microbatches is not None:
        check_integer("num_real_microbatches", num_real_microbatches, low=0)
    accumulator = _check_accumulator(accumulator)

    def vmap_then_reduce(*args, axes, kwargs):
        return _aggregate(accumulator, vmap_fn(fun, axes, out_axes)(*args, **kwargs))

    def mapped(*args, **kwargs):
        axes = (in_axes,) * len(args) if axes_given is None else axes_given
        if len(axes) != len(args):
            raise ValueError(
                f"in_axes must be one axis or one per positional argument ({len(args)}), "
                f"got in_axes={in_axes!r}"
            )
        positions = tuple(i for i, ax in enumerate(axes) if ax is not None)
        for i in positions:
            for x in jax.tree.leaves(args[i]):
                _check_axis(f"in_axes[{i}]", axes[i], x)
        for key, value in kwargs.items():
            for x in jax.tree.leaves(value):
                _check_axis(f"the axis of keyword argument {key!r} (0, as in jax.vmap)", 0, x)
        run = microbatch(
            lambda *a, kwargs: vmap_then_reduce(*a, axes=axes, kwargs=kwargs),
            positions,
            microbatch_size,
            accumulator,
            argnames="kwargs",
            in_axes=(*(axes[i] for i in positions), 0),
            num_real_microbatches=num_real_microbatches,
        )
        return run(*args, kwargs=kwargs)

    return mapped


def micro_grad(
    fun: Callable,
    has_aux: bool = False,
    argnums: int | Sequence[int] = 0,
    *,
    batch_argnums: int | Sequence[int] = 1,
    keep_batch_dim: bool = True,
    microbatch_size: int | None = None,
    accumulator: Any = AccumulationType.SUM,
    transform_fn: Callable = lambda x: x,
    metrics_fn: Callable = lambda x: None,
    num_real_microbatches: int | jax.Array | None = None,
) -> Callable:
    r"""Per-example gradients of ``fun``, each transformed by ``transform_fn``, then combined by
    ``accumulator`` (SUM by default), computed in microbatches of ``microbatch_size`` examples:

        g_b = grad_{argnums} fun(..., example b of the batch_argnums, ...),   b = 0 .. B-1
        result = sum_b transform_fn(g_b)            (SUM; MEAN divides by B)
        aux = IndividualOutputs(values=[fun_b], metrics=[metrics_fn(g_b)], aux=[aux_b])

    ``transform_fn`` acts on one example's gradient: clip it (differentially private SGD), or
    return ``(g, g**2)`` for the gradients' moments; ``metrics_fn`` returns a small per-example
    summary (a norm). The arguments at ``batch_argnums`` are split along axis 0; the other
    positional arguments are passed whole; keyword arguments are split along axis 0 too (as in
    `micro_vmap`). With ``keep_batch_dim``, ``fun`` sees each example with a batch axis of 1
    row (so a batch loss applies unchanged); otherwise without it. ``has_aux``: ``fun`` returns
    ``(value, aux)``. ``accumulator`` may be a tree of them (a prefix of transform_fn's result).
    With ``num_real_microbatches`` = m, only the first m microbatches are evaluated. Returns
    ``(result, aux)``, the per-example outputs stacked along axis 0 in the batch's order.

    Example:
        >>> loss = lambda w, x, y: 0.5 * jnp.sum((w * x - y) ** 2)
        >>> grad_fn = optjax.microbatching.micro_grad(
        ...     loss, batch_argnums=(1, 2), microbatch_size=2,
        ...     transform_fn=lambda g: jnp.clip(g, -2.0, 2.0), metrics_fn=jnp.abs)
        >>> g, aux = grad_fn(jnp.zeros(()), jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.ones(4))
        >>> g   # per-example gradients (w x - y) x = -1, -2, -3, -4, clipped to -2: summed
        Array(-7., dtype=float32)
        >>> aux.values, aux.metrics   # the losses (w x - y)^2 / 2 and |g| of each example
        (Array([0.5, 0.5, 0.5, 0.5], dtype=float32), Array([1., 2., 3., 4.], dtype=float32))
    """
    _check_callable("fun", fun)
    _check_bool("has_aux", has_aux)
    _as_ints("argnums", argnums)
    batch_positions = _as_ints("batch_argnums", batch_argnums)
    if not batch_positions:
        raise ValueError("batch_argnums must name at least one argument, got batch_argnums=()")
    for i in batch_positions:
        check_integer("batch_argnums", i, low=0)
    _check_bool("keep_batch_dim", keep_batch_dim)
    _check_callable("transform_fn", transform_fn)
    _check_callable("metrics_fn", metrics_fn)
    accumulator = _check_accumulator(accumulator)
    with_aux = fun if has_aux else lambda *a, **k: (fun(*a, **k), None)
    value_and_grad = jax.value_and_grad(with_aux, argnums, has_aux=True)

    def one_example(*args, **kwargs):
        if keep_batch_dim:
            args = tuple(
                jax.tree.map(lambda x: jnp.expand_dims(x, 0), a) if i in batch_positions else a
                for i, a in enumerate(args)
            )
        (value, aux), grad = value_and_grad(*args, **kwargs)
        return transform_fn(grad), IndividualOutputs(value, metrics_fn(grad), aux)

    if microbatch_size is not None:
        check_positive_int("microbatch_size", microbatch_size)
    if num_real_microbatches is not None:
        check_integer("num_real_microbatches", num_real_microbatches, low=0)

    def grads(*args, **kwargs):
        if max(batch_positions) >= len(args):
            raise ValueError(
                f"batch_argnums must name positional arguments (the call has {len(args)}), "
                f"got batch_argnums={batch_argnums!r}"
            )
        per_example = micro_vmap(
            one_example,
            in_axes=[0 if i in batch_positions else None for i in range(len(args))],
            microbatch_size=microbatch_size,
            accumulator=(accumulator, AccumulationType.CONCAT),
            num_real_microbatches=num_real_microbatches,
        )
        return per_example(*args, **kwargs)

    return grads
