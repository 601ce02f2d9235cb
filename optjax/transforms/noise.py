"""Annealed gradient noise."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_integer, check_nonnegative, is_traced
from optjax._tree_util import normal_per_leaf
from optjax.base import GradientTransformation, StepCount
from optjax.flat import per_leaf

__all__ = [
    "AddNoiseState",
    "add_noise",
]


class AddNoiseState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
    rng_key: jax.Array  # raw uint32 key data (checkpointable)


def _is_typed_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _check_key(name: str, value) -> None:
    """A key is a jax.random key (``jax.random.key``), the raw uint32 data of one
    (``jax.random.PRNGKey``), or an int32 seed; a traced one of these kinds is accepted."""
    message = f"{name} must be an int32 integer or a jax.random key, got {name}={value!r}"
    if isinstance(value, jax.Array) or is_traced(value):
        shape, dtype = jnp.shape(value), value.dtype
        raw_shape = jax.random.key_data(jax.random.key(0)).shape  # from the default generator
        if _is_typed_key(value) and shape == ():
            return
        if dtype == jnp.uint32 and shape == raw_shape:
            return
        if is_traced(value):  # its kind is known, its value is not
            if shape == () and jnp.issubdtype(dtype, jnp.integer):
                return
            raise ValueError(message)
    try:
        check_integer(name, value)
    except ValueError:
        raise ValueError(message) from None


def add_noise(
    eta: float = 0.01,
    gamma: float = 0.55,
    key: jax.Array | int | None = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    r"""Add Gaussian noise whose variance anneals with the step count.

        sigma_t^2 = eta / t^gamma          (t = 1, 2, ...)
        u_t = g_t + N(0, sigma_t^2)

    ``key`` is a ``jax.random.key``, or an int seed (optax's signature; ``seed=`` is the older
    name of an int key, and None means 0). Each step splits the key as optax does, so a float32
    tree gets optax's noise for the same key; a bf16 or fp16 leaf draws its noise in float32.

    Example:
        >>> tx = optjax.add_noise(eta=0.0, key=jax.random.key(0))
        >>> tx.update(jnp.array([1.0]), tx.init(jnp.zeros(1)))[0]   # eta = 0 adds nothing
        Array([1.], dtype=float32)

    Reference: Neelakantan et al., "Adding Gradient Noise Improves Learning for Very Deep
    Networks", 2015, eq. 1.
    """
    check_nonnegative("eta", eta)
    check_nonnegative("gamma", gamma)
    if seed is not None:
        check_integer("seed", seed)
        if key is not None:
            raise ValueError(
                "give the random key once, as key (seed is its older name); got "
                f"key={key!r} and seed={seed!r}"
            )
        key = seed
    if key is None:
        key = 0
    _check_key("key", key)
    impl = jax.random.key_impl(key) if _is_typed_key(key) else None  # None: the default one

    def first_key():
        if _is_typed_key(key):
            return key
        if jnp.shape(key):  # raw key data
            return jax.random.wrap_key_data(key)
        return jax.random.key(key)

    def init(params):
        del params
        return AddNoiseState(jnp.zeros([], jnp.int32), jax.random.key_data(first_key()))

    def update(updates, state, params=None):
        del params
        count = tree.safe_increment(state.count)
        t = tree.step_as_float(count)
        variance = jnp.asarray(eta, t.dtype) / t ** jnp.asarray(gamma, t.dtype)
        key, sample = jax.random.split(jax.random.wrap_key_data(state.rng_key, impl=impl))
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(sample, len(leaves))

        noisy_leaves = []
        for g, noise in zip(leaves, normal_per_leaf(keys, leaves)):
            sigma = jnp.sqrt(variance).astype(noise.dtype)
            noisy_leaves.append((g.astype(noise.dtype) + sigma * noise).astype(g.dtype))
        return treedef.unflatten(noisy_leaves), AddNoiseState(count, jax.random.key_data(key))

    # One key per leaf, as on the tree path, and no noise in the flat layout's padding.
    return per_leaf(GradientTransformation(init, update))
