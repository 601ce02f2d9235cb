"""Annealed gradient noise."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_integer, check_nonnegative
from optjax.base import GradientTransformation, StepCount
from optjax.flat import per_leaf

__all__ = [
    "AddNoiseState",
    "add_noise",
]


class AddNoiseState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
    rng_key: jax.Array  # raw uint32 key data (checkpointable)


def add_noise(eta: float = 0.01, gamma: float = 0.55, seed: int = 0) -> GradientTransformation:
    r"""Add Gaussian noise whose variance anneals with the step count.

        sigma_t^2 = eta / t^gamma          (t = 1, 2, ...)
        u_t = g_t + N(0, sigma_t^2)

    Example:
        >>> tx = optjax.add_noise(eta=0.0)
        >>> tx.update(jnp.array([1.0]), tx.init(jnp.zeros(1)))[0]   # eta = 0 adds nothing
        Array([1.], dtype=float32)

    Reference: Neelakantan et al., "Adding Gradient Noise Improves Learning for Very Deep
    Networks", 2015, eq. 1.
    """
    check_nonnegative("eta", eta)
    check_nonnegative("gamma", gamma)
    check_integer("seed", seed)

    def init(params):
        del params
        return AddNoiseState(jnp.zeros([], jnp.int32), jax.random.key_data(jax.random.key(seed)))

    def update(updates, state, params=None):
        del params
        count = tree.safe_increment(state.count)
        sigma = jnp.sqrt(eta / count.astype(jnp.float32) ** gamma)
        key, sample = jax.random.split(jax.random.wrap_key_data(state.rng_key))
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(sample, len(leaves))
        noisy = [
            (tree.wide(g) + sigma * jax.random.normal(k, g.shape)).astype(g.dtype)
            for g, k in zip(leaves, keys)
        ]
        return treedef.unflatten(noisy), AddNoiseState(count, jax.random.key_data(key))

    # One key per leaf, as on the tree path, and no noise in the flat layout's padding.
    return per_leaf(GradientTransformation(init, update))
