"""Optimizer state on a mesh of devices: its shardings, built in place, and ZeRO stage 1.

optjax builds every state leaf from its parameter (``zeros_like``, or zeros like a reduction
for Adafactor's factored moments), so the state follows the parameters' sharding by itself:

- **FSDP** (parameters sharded over the devices) needs no wrapper. Shard the parameters and
  ``tx.init(params)`` shards the state the same way; a jitted ``tx.update`` keeps it there::

      mesh = jax.make_mesh((8,), ("data",))
      params = jax.device_put(params, NamedSharding(mesh, P("data")))  # each leaf split 8 ways
      state = tx.init(params)                                           # so is its state

- **ZeRO-1** (parameters replicated, state sharded): `zero1` wraps a transform so that it sees
  each large parameter split over the data axis, whatever the parameters' own layout: the state
  it builds from them (moments, traces) is split the same way, and each device updates only its
  slice. A statistic reduced over the split dimension (a factored moment of Adafactor) is whole
  on every device, like the parameter-free leaves (counts).

`state_sharding` finds the shardings of ``tx.init(params)`` by tracing, and `init_sharded`
builds the state directly in them. Both work on meshes with Auto or Explicit axes.
"""

from __future__ import annotations

import math
from typing import Any

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from optjax.base import GradientTransformation, OptState, Params
from optjax.core import extra_args_filter
from optjax.flat import as_flat_ready, mark_flat_ready

__all__ = ["init_sharded", "state_sharding", "zero1", "zero1_spec"]


def _sharding_of(x) -> NamedSharding | None:
    """The NamedSharding of an array, an abstract value, or a tracer whose type carries one (on
    Explicit axes); None where none is known (a tracer on Auto axes, a single device)."""
    sharding = None if isinstance(x, jax.core.Tracer) else getattr(x, "sharding", None)
    if not isinstance(sharding, NamedSharding):
        sharding = getattr(jax.typeof(x), "sharding", None)
    if isinstance(sharding, NamedSharding) and sharding.mesh.axis_names:
        return sharding
    return None


def _mesh_of(params):
    """The mesh the params are laid out on (the first NamedSharding among their leaves)."""
    for x in jax.tree.leaves(params):
        sharding = _sharding_of(x)
        if sharding is not None:
            return sharding.mesh
    return None


def _spec_of(x) -> PartitionSpec:
    """The PartitionSpec of a leaf (`_sharding_of`); replicated where none is known."""
    sharding = _sharding_of(x)
    return PartitionSpec() if sharding is None else sharding.spec


def _explicit(mesh) -> jax.sharding.AbstractMesh:
    """The same mesh with every axis Explicit, so that tracing propagates shardings as types."""
    return jax.sharding.AbstractMesh(
        mesh.axis_sizes, mesh.axis_names, axis_types=(AxisType.Explicit,) * len(mesh.axis_names)
    )


def state_sharding(tx: GradientTransformation, params: Params) -> Any:
    """The shardings of ``tx.init(params)``, a tree like the state, found by tracing ``init``
    (nothing is computed or allocated).

    ``params`` are arrays or ``jax.ShapeDtypeStruct``\\ s laid out with ``NamedSharding``\\ s on one
    mesh (Auto or Explicit axes). The state's layout is traced on the same mesh with Explicit
    axes, where each operation's output carries its sharding: a leaf built from a parameter
    gets the parameter's, scalars (step counts, hyperparameters) are replicated.

    Example:
        >>> mesh = jax.make_mesh((1,), ("data",))
        >>> params = jax.device_put(jnp.zeros(4), NamedSharding(mesh, P("data")))
        >>> optjax.sharding.state_sharding(optjax.adam(1e-3), params)[0].mu.spec
        P('data',)
    """
    mesh = _mesh_of(params)
    if mesh is None:
        raise ValueError(
            "state_sharding: no parameter has a NamedSharding; lay the params out on a mesh "
            "(jax.device_put(params, NamedSharding(mesh, spec))) first"
        )
    abstract = _explicit(mesh)
    typed = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=NamedSharding(abstract, _spec_of(x))
        ),
        params,
    )
    with jax.sharding.use_abstract_mesh(abstract):
        shapes = jax.eval_shape(tx.init, typed)
    return jax.tree.map(
        lambda s: NamedSharding(mesh, PartitionSpec() if s.sharding is None else s.sharding.spec),
        shapes,
    )


def init_sharded(tx: GradientTransformation, params: Params, shardings: Any = None) -> OptState:
    """``tx.init(params)`` built directly in its sharded layout (``shardings``, by default
    `state_sharding`): one jitted program whose outputs are placed on their devices, so no
    state leaf is ever gathered whole on one device.

    Example:
        >>> mesh = jax.make_mesh((1,), ("data",))
        >>> params = jax.device_put(jnp.zeros(4), NamedSharding(mesh, P("data")))
        >>> state = optjax.sharding.init_sharded(optjax.adam(1e-3), params)
        >>> state[0].mu.sharding.spec
        P('data',)
    """
    if shardings is None:
        shardings = state_sharding(tx, params)
    return jax.jit(tx.init, out_shardings=shardings)(params)


def zero1_spec(
    shape: tuple[int, ...], spec: PartitionSpec, axis: str, axis_size: int, min_size: int
) -> PartitionSpec:
    """Where ZeRO-1 splits a leaf of this shape over ``axis``, given its own ``spec``.

    The rule: the largest dimension that ``axis_size`` divides and that no mesh axis shards yet
    (the first of equals) takes ``axis``. A leaf with fewer than ``min_size`` elements, with no
    such dimension, or already sharded over ``axis`` keeps its spec (replicated over ``axis``).

    Example:
        >>> optjax.sharding.zero1_spec((6, 16), P(), "data", 8, min_size=1)
        P(None, 'data')
        >>> optjax.sharding.zero1_spec((6, 10), P(), "data", 8, min_size=1)   # 8 divides neither
        P()
    """
    entries = list(spec) + [None] * (len(shape) - len(spec))
    used = {a for e in entries for a in ((e,) if isinstance(e, str) else (e or ()))}
    if axis in used or math.prod(shape) < min_size:
        return spec
    free = [d for d in range(len(shape)) if entries[d] is None and shape[d] % axis_size == 0]
    if not free:
        return spec
    best = max(free, key=lambda d: (shape[d], -d))
    entries[best] = axis
    return PartitionSpec(*entries)


def _constrain(x, sharding: NamedSharding):
    """``x`` laid out as ``sharding``: a resharding on Explicit axes, a constraint on Auto."""
    if any(t == AxisType.Explicit for t in sharding.mesh.axis_types):
        return jax.sharding.reshard(x, sharding)
    return jax.lax.with_sharding_constraint(x, sharding)


def zero1(
    tx: GradientTransformation,
    axis: str = "data",
    *,
    mesh: jax.sharding.Mesh | None = None,
    min_size: int = 1024,
) -> GradientTransformation:
    r"""ZeRO stage 1: ``tx`` with its state split over the mesh axis ``axis``.

    Each leaf of the updates and the parameters is resharded to its `zero1_spec` (its largest
    dimension that the axis divides takes the axis) before ``tx`` sees it, so ``tx`` builds and
    updates its state on those slices: each device holds and updates 1/n of every large state
    leaf shaped like its parameter, even when the parameters are replicated (a statistic
    reduced over the split dimension, like Adafactor's factored moments, is whole on each).
    The updates are then gathered back to the parameters' layout, once per leaf. Leaves with
    fewer than ``min_size`` elements, or with no dimension the axis divides, stay as they are.

    The numbers are ``tx``'s: the same to the bit for elementwise transforms; a transform that
    reduces over a leaf or the whole tree (global-norm clipping, trust ratios) sums in another
    order, equal to rounding.

    The mesh is ``mesh``, else the one the parameters are laid out on (their NamedShardings),
    else the one set with ``jax.set_mesh``. Under ``jit`` on a mesh with Auto axes, parameters
    other than the ones ``init`` saw are assumed replicated over ``axis``.

    Example:
        >>> mesh = jax.make_mesh((1,), ("data",))
        >>> params = jax.device_put(jnp.zeros(4096), NamedSharding(mesh, P()))
        >>> tx = optjax.sharding.zero1(optjax.adam(1e-3), "data", mesh=mesh)
        >>> tx.init(params)[0].mu.sharding.spec
        P('data',)

    Reference: Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion
    Parameter Models", SC 2020 (stage 1: optimizer state partitioning).
    """
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
        raise ValueError(f"min_size must be an integer >= 1, got min_size={min_size!r}")
    inner = as_flat_ready(tx)
    keep = extra_args_filter(inner.update)

    def mesh_for(params):
        found = mesh or _mesh_of(params) or jax.sharding.get_abstract_mesh()
        if found is None or not found.axis_names:
            raise ValueError(
                "zero1: no mesh: pass mesh=, lay the params out with NamedShardings, or set one "
                "with jax.set_mesh(mesh)"
            )
        if axis not in found.axis_names:
            raise ValueError(
                f"zero1: axis must be one of the mesh's axes {tuple(found.axis_names)}, "
                f"got axis={axis!r}"
            )
        return found

    def layouts(like, m):
        """(the leaves' own shardings, their ZeRO-1 shardings), trees like ``like``."""
        size = dict(zip(m.axis_names, m.axis_sizes))[axis]
        own = jax.tree.map(lambda x: NamedSharding(m, _spec_of(x)), like)
        split = jax.tree.map(
            lambda x, o: NamedSharding(m, zero1_spec(x.shape, o.spec, axis, size, min_size)),
            like,
            own,
        )
        return own, split

    def to(tree, shardings):
        return jax.tree.map(_constrain, tree, shardings)

    def init(params):
        m = mesh_for(params)
        _, split = layouts(params, m)
        return inner.init(to(params, split))

    def update(updates, state, params=None, **extra_args):
        m = mesh_for(params if params is not None else updates)
        own, split = layouts(params if params is not None else updates, m)
        sliced_params = None if params is None else to(params, split)
        new_updates, state = inner.update(
            to(updates, split), state, sliced_params, **keep(extra_args)
        )
        return to(new_updates, own), state

    return mark_flat_ready(GradientTransformation(init, update))
