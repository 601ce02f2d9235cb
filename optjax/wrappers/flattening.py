"""Running a transform on all the parameters as one vector."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optjax import tree
from optjax.base import GradientTransformation
from optjax.core import extra_args_filter

__all__ = ["flatten"]


def _vector_dtype(leaves) -> jnp.dtype:
    """The one dtype of the leaves, or, where they differ, the one their arithmetic runs in."""
    dtypes = {jnp.result_type(x) for x in leaves}
    return dtypes.pop() if len(dtypes) == 1 else tree.compute_dtype(*dtypes)


def _split_on_mesh(x) -> bool:
    """Whether ``x``'s type says it is split over a mesh's Explicit axes."""
    spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None) or ()
    return any(axis is not None for axis in spec)


def _whole(x) -> jax.Array:
    """``x`` gathered on every device where it is split over Explicit axes (a reshape merging a
    split axis into others has no sharding rule); elsewhere ``x`` as it is."""
    if not _split_on_mesh(x):
        return x
    sharding = jax.typeof(x).sharding
    return jax.sharding.reshard(x, sharding.update(spec=jax.sharding.PartitionSpec()))


def _concatenate(x) -> jax.Array:
    """Every leaf of ``x`` raveled and joined into one vector (empty for a tree with none)."""
    leaves = jax.tree.leaves(x)
    if not leaves:
        return jnp.zeros((0,), jnp.float32)
    dtype = _vector_dtype(leaves)
    return jnp.concatenate([jnp.ravel(_whole(leaf)).astype(dtype) for leaf in leaves])


def _split(vector: jax.Array, like):
    """``vector`` cut back into a tree shaped like ``like``, each leaf in its dtype there."""
    leaves, treedef_ = jax.tree.flatten(like)
    treedef: Any = treedef_  # a PyTreeDef (untyped in jaxlib)
    offsets = np.cumsum([np.size(leaf) for leaf in leaves])[:-1]
    parts = jnp.split(vector, offsets) if leaves else []

    def back(part, leaf):
        part = part.reshape(jnp.shape(leaf)).astype(jnp.result_type(leaf))
        return (
            jax.sharding.reshard(part, jax.typeof(leaf).sharding) if _split_on_mesh(leaf) else part
        )

    return treedef.unflatten([back(p, leaf) for p, leaf in zip(parts, leaves)])


def flatten(inner: GradientTransformation) -> GradientTransformation:
    """Run ``inner`` on one vector holding every parameter: fewer, larger operations.

        u_t = unravel(inner(ravel(g_t)))      ravel: every leaf raveled and concatenated

    ``inner`` sees a single 1-D array (and its state is built from one), so a transform that
    reduces over its input (a norm, a block RMS) reduces over all parameters at once. Where the
    leaves' dtypes differ, the vector has the widest of them (float32 at least) and each update
    comes back in its own leaf's dtype (optax returns them all in the vector's dtype); an empty
    tree gives an empty vector (optax fails to concatenate nothing). On a mesh with Explicit
    axes the vector (and so the inner state) is replicated, and each update goes back to its
    parameter's sharding (a reshape cannot merge a split axis). For a layout that keeps one
    buffer per dtype and the per-leaf results of the tree path, see `optjax.flat.flat_transform`.

    Example:
        >>> tx = optjax.flatten(optjax.clip_by_block_rms(1.0))   # one block: all parameters
        >>> g = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}
        >>> tx.update(g, tx.init(g))[0]   # rms of (3, 4) is sqrt(12.5)
        {'a': Array([0.8485281], dtype=float32), 'b': Array([1.1313709], dtype=float32)}
    """
    keep = extra_args_filter(inner.update)

    def init(params):
        return inner.init(_concatenate(params))

    def update(updates, state, params=None, **extra_args):
        flat_params = None if params is None else _concatenate(params)
        vector, state = inner.update(_concatenate(updates), state, flat_params, **keep(extra_args))
        return _split(vector, updates), state

    return GradientTransformation(init, update)
