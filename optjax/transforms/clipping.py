"""Clipping: elementwise, by the global norm, and by each block's RMS."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_nonnegative, check_positive
from optjax.base import GradientTransformation
from optjax.core import stateless
from optjax.flat import flat_ready

__all__ = [
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
]


@flat_ready
def clip(max_delta: float) -> GradientTransformation:
    r"""Clip every coordinate to [-max_delta, max_delta]: ``u_t = clip(g_t, -c, c)``.

    Example:
        >>> optjax.clip(1.0).update(jnp.array([-3.0, 0.5, 2.0]), optjax.EmptyState())[0]
        Array([-1. ,  0.5,  1. ], dtype=float32)
    """
    check_nonnegative("max_delta", max_delta)
    return stateless(
        lambda updates, params: jax.tree.map(lambda g: jnp.clip(g, -max_delta, max_delta), updates)
    )


@flat_ready
def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    r"""Rescale all updates together so that their global l2 norm is at most max_norm.

        n_t = sqrt(sum_i ||g_t^i||^2)
        u_t = g_t                   if n_t <= max_norm
        u_t = g_t max_norm / n_t    otherwise

    A zero gradient with max_norm = 0 stays zero (no 0/0). Gradients whose squares overflow
    (float32 above ~1.8e19) are clipped right too: the norm is then taken rescaled.

    Example:
        >>> tx = optjax.clip_by_global_norm(1.0)
        >>> tx.update(jnp.array([3.0, 4.0]), tx.init(None))[0]
        Array([0.6, 0.8], dtype=float32)

    Reference: Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural
    networks", ICML 2013, Algorithm 1.
    """
    check_nonnegative("max_norm", max_norm)

    def clipped(updates, params):
        del params
        m, r = tree.global_norm_factors(updates)  # the norm is m r; m > 1 only past float32
        keep = m * r <= max_norm
        # g max_norm / (m r) as (g / m) (max_norm / r): 1 / (m r) can be subnormal (flushed).
        divisor = jnp.where(keep, 1.0, m)
        factor = jnp.where(keep, 1.0, max_norm / jnp.where(keep, 1.0, r))

        def clip_leaf(g):
            dtype = tree.compute_dtype(g.dtype)
            return (tree.wide(g) / divisor.astype(dtype) * factor.astype(dtype)).astype(g.dtype)

        return jax.tree.map(clip_leaf, updates)

    return stateless(clipped)


@flat_ready
def clip_by_block_rms(threshold: float) -> GradientTransformation:
    r"""Rescale each leaf so that its root mean square is at most threshold.

        u_t = g_t / max(1, rms(g_t) / threshold),   rms(x) = sqrt(mean(x^2))

    Example:
        >>> tx = optjax.clip_by_block_rms(1.0)
        >>> tx.update(jnp.array([2.0, -2.0]), tx.init(None))[0]
        Array([ 1., -1.], dtype=float32)

    Reference: Shazeer & Stern, "Adafactor", ICML 2018, Section 6 (update clipping).
    """
    check_positive("threshold", threshold)

    def clipped(updates, params):
        del params
        mean_squares = tree.leaf_mean(tree.abs_square, updates)
        denominators = jax.tree.map(
            lambda ms: jnp.maximum(1.0, jnp.sqrt(ms) / threshold), mean_squares
        )
        return tree.map_with_leaf_values(
            lambda g, d: (tree.wide(g) / d.astype(tree.compute_dtype(g.dtype))).astype(g.dtype),
            updates,
            denominators,
        )

    return stateless(clipped)
