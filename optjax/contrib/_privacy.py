"""Differential privacy: per-example clipping and Gaussian noise (DP-SGD)."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from optjax._checks import check_integer, check_nonnegative, check_unit_interval
from optjax._tree_util import normal_per_leaf
from optjax.base import GradientTransformation, ScalarOrSchedule
from optjax.core import chain, identity
from optjax.flat import FlatBuffers, mark_flat_ready, zero_padding
from optjax.transforms.clipping import _batch_size, _check_clip_norm, per_example_global_norm_clip
from optjax.transforms.momentum import trace
from optjax.transforms.noise import _check_key, _is_typed_key
from optjax.transforms.scaling import scale_by_learning_rate

__all__ = [
    "DifferentiallyPrivateAggregateState",
    "differentially_private_aggregate",
    "dpsgd",
]


class DifferentiallyPrivateAggregateState(NamedTuple):
    rng_key: jax.Array  # raw uint32 key data (checkpointable)


def _split_on_explicit_axes(x) -> bool:
    """Whether ``x``'s type says it is split over a mesh's Explicit axes."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    mesh, spec = getattr(sharding, "mesh", None), getattr(sharding, "spec", ())
    explicit = mesh is not None and AxisType.Explicit in mesh.axis_types
    return explicit and any(axis is not None for axis in spec)


def _clipped_total(per_example, l2_norm_clip):
    """``per_example_global_norm_clip(per_example, l2_norm_clip)[0]``. Its per-example norm is a
    vmap of a cond, which JAX turns into a select that has no sharding rule for a leaf split over
    Explicit axes: there it runs with the axes made Auto (the numbers are the same), and each sum
    comes back split as its leaf is, less the examples' axis."""
    if not any(map(_split_on_explicit_axes, jax.tree.leaves(per_example))):
        return per_example_global_norm_clip(per_example, l2_norm_clip)[0]
    summed = jax.tree.map(
        lambda g: jax.typeof(g).sharding.update(spec=P(*jax.typeof(g).sharding.spec[1:])),
        per_example,
    )
    return jax.sharding.auto_axes(
        lambda u: per_example_global_norm_clip(u, l2_norm_clip)[0], out_sharding=summed
    )(per_example)


def differentially_private_aggregate(
    l2_norm_clip: float,
    noise_multiplier: float,
    key: jax.Array | int | None = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    r"""Aggregate per-example gradients as DP-SGD does: clip each, sum, add noise, average.

        g_i = the i-th example's gradient (index i of axis 0 of every leaf), i = 1..B
        u_t = (sum_i g_i min(1, C / ||g_i||) + N(0, sigma^2 C^2 I)) / B

    with C = ``l2_norm_clip`` (the norm is each example's global l2 norm, over all leaves) and
    sigma = ``noise_multiplier``. The updates must be per-example gradients (``jax.vmap`` of
    ``jax.grad``), every leaf with the examples on axis 0; the result is shaped like one
    example's. Use it first, before any other transform (and not under gradient accumulation,
    which would average the noise away). In an ``optjax.chain`` that is given params, the
    chain's shape check refuses per-example gradients: pass no params, or use `dpsgd`.

    ``key`` is a ``jax.random.key``, its raw data (``jax.random.PRNGKey``, which optax refuses)
    or an int seed (``seed=`` is its older name). The key is split as optax splits it, so
    float32 and float64 gradients get optax's noise for the same key; bf16 and fp16 ones draw
    it in float32. Without a key the noise comes from the key 0, which anyone can reproduce and
    subtract: a warning says so. Per-example norms whose squares overflow float32 are taken
    rescaled (optax's turn inf and zero the example's gradient). On the flat layout
    (optjax.flat: per-example FlatBuffers, each buffer with the examples on axis 0) the noise
    is drawn per buffer rather than per leaf (other draws, the same distribution), and none
    goes into the padding.

    Example:
        >>> tx = optjax.contrib.differentially_private_aggregate(2.5, 0.0, key=0)
        >>> g = jnp.array([[3.0, 4.0], [0.75, 1.0]])   # two examples, norms 5 and 1.25
        >>> tx.update(g, tx.init(None))[0]              # ((1.5, 2) + (0.75, 1)) / 2
        Array([1.125, 1.5  ], dtype=float32)

    Reference: Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar & Zhang, "Deep Learning with
    Differential Privacy", CCS 2016, Algorithm 1.
    """
    _check_clip_norm("l2_norm_clip", l2_norm_clip)
    check_nonnegative("noise_multiplier", noise_multiplier)
    if seed is not None:
        check_integer("seed", seed)
        if key is not None:
            raise ValueError(
                "give the random key once, as key (seed is its older name); got "
                f"key={key!r} and seed={seed!r}"
            )
        key = seed
    if key is None:
        warnings.warn(
            "differentially_private_aggregate: no key given, so the noise is drawn from the "
            "key 0, which anyone can reproduce; pass key= (a jax.random.key or an int seed)",
            stacklevel=2,
        )
        key = 0
    _check_key("key", key)
    impl = jax.random.key_impl(key) if _is_typed_key(key) else None

    def first_key():
        if _is_typed_key(key):
            return jax.random.key_data(key)
        if jnp.shape(key):
            return jnp.asarray(key, jnp.uint32)
        return jax.random.key_data(jax.random.key(key))

    def init(params):
        del params
        return DifferentiallyPrivateAggregateState(first_key())

    def update(updates, state, params=None):
        del params
        batch = _batch_size(updates, "differentially_private_aggregate")
        clipped = _clipped_total(updates, l2_norm_clip)
        leaves, treedef = jax.tree.flatten(clipped)
        keys = jax.random.split(jax.random.wrap_key_data(state.rng_key, impl=impl), len(leaves) + 1)
        key, keys = keys[0], keys[1:]

        def noised(g, noise):
            wide = noise.dtype
            std = jnp.asarray(l2_norm_clip, wide) * jnp.asarray(noise_multiplier, wide)
            return ((g.astype(wide) + std * noise) / jnp.asarray(batch, wide)).astype(g.dtype)

        noise = normal_per_leaf(keys, leaves)
        out = treedef.unflatten([noised(g, n) for g, n in zip(leaves, noise)])
        if isinstance(out, FlatBuffers):  # no noise in the flat layout's padding
            out = zero_padding(out, out.layout)
        return out, DifferentiallyPrivateAggregateState(jax.random.key_data(key))

    return mark_flat_ready(GradientTransformation(init, update))


def dpsgd(
    learning_rate: ScalarOrSchedule,
    l2_norm_clip: float,
    noise_multiplier: float,
    seed: jax.Array | int,
    momentum: float | None = None,
    nesterov: bool = False,
) -> GradientTransformation:
    """DP-SGD (Abadi et al. 2016): differentially_private_aggregate (the update rule is there;
    ``seed`` is its key), then momentum (trace, if ``momentum`` is not None), then the
    learning rate. Its ``update`` takes per-example gradients, with or without the params; the
    state is the tuple of the three states, as optax's (whose dpsgd warns of a deprecated
    argument at every construction).

    Example:
        >>> tx = optjax.contrib.dpsgd(0.5, l2_norm_clip=2.5, noise_multiplier=0.0, seed=0)
        >>> p = jnp.zeros(2)
        >>> tx.update(jnp.array([[3.0, 4.0], [0.75, 1.0]]), tx.init(p), p)[0]   # -0.5 (1.125, 1.5)
        Array([-0.5625, -0.75  ], dtype=float32)
    """
    _check_key("seed", seed)
    if momentum is not None:
        check_unit_interval("momentum", momentum)
    aggregate = differentially_private_aggregate(l2_norm_clip, noise_multiplier, key=seed)
    rest = chain(
        trace(momentum, nesterov) if momentum is not None else identity(),
        scale_by_learning_rate(learning_rate),
    )

    def init(params):
        return (aggregate.init(params), *rest.init(params))

    def update(updates, state, params=None):
        # The aggregate first, on its own: a chain would refuse per-example gradients as
        # shaped unlike the params.
        updates, aggregate_state = aggregate.update(updates, state[0], params)
        updates, rest_state = rest.update(updates, tuple(state[1:]), params)
        return updates, (aggregate_state, *rest_state)

    return mark_flat_ready(GradientTransformation(init, update))
