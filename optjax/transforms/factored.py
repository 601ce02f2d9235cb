"""Adafactor's factored second moment, and scaling by the parameters' own size."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optjax import tree
from optjax._checks import check_nonnegative, check_positive, check_positive_int
from optjax.core import GradientTransformation, Updates, stateless


class FactoredState(NamedTuple):
    count: jax.Array  # int32 scalar: steps taken so far
    v_row: Updates  # per-row moving average of g^2 (factored leaves; shape (1,) otherwise)
    v_col: Updates  # per-column moving average of g^2 (factored leaves; shape (1,) otherwise)
    v: Updates  # full moving average of g^2 (unfactored leaves; shape (1,) otherwise)


def factored_dims(shape, factored: bool, min_dim_size_to_factor: int):
    """The two largest axes (second largest first) to factor over, or None to keep v whole."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def decay_rate_pow(step, exponent: float = 0.8):
    """Adafactor's second-moment decay ``1 - (t + 1)^(-exponent)`` at zero-based step t."""
    return 1.0 - (step.astype(jnp.float32) + 1) ** (-exponent)  # no int32 wrap at the last step


def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: float = 0.8,
    step_offset: int = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: float = 1e-30,
    decay_rate_fn=decay_rate_pow,
) -> GradientTransformation:
    r"""Divide by a factored estimate of the root mean square gradient (Adafactor).

    For a matrix-shaped leaf (the two largest axes at least ``min_dim_size_to_factor`` long) only
    row and column means of g^2 are kept, O(n + m) memory instead of O(nm):

        b_t = 1 - (t - step_offset)^(-decay_rate)                (t = 1, 2, ...)
        R_t = b_t R_{t-1} + (1 - b_t) mean_col(g_t^2 + eps)      (one value per row)
        C_t = b_t C_{t-1} + (1 - b_t) mean_row(g_t^2 + eps)      (one value per column)
        V̂_t = R_t C_t^T / mean(R_t)
        u_t = g_t / sqrt(V̂_t)

    Other leaves keep the full ``V_t = b_t V_{t-1} + (1 - b_t)(g_t^2 + eps)``, u_t = g_t / sqrt(V_t).

    Example:
        >>> tx = optjax.scale_by_factored_rms()
        >>> p = jnp.zeros(3)
        >>> tx.update(jnp.array([2.0, -2.0, 0.5]), tx.init(p), p)[0]   # step 1: b_1 = 0, u = g/|g|
        Array([ 1., -1.,  1.], dtype=float32)

    Reference: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
    ICML 2018, Algorithms 4 and 5.
    """
    check_positive_int("min_dim_size_to_factor", min_dim_size_to_factor)
    check_nonnegative("decay_rate", decay_rate)
    check_nonnegative("epsilon", epsilon)

    def init(params):
        def leaf(p):
            one = jnp.zeros((1,), p.dtype)
            dims = factored_dims(p.shape, factored, min_dim_size_to_factor)
            if dims is None:
                return one, one, jnp.zeros_like(p)
            d_col, d_row = dims  # reduce over d_row for rows, over d_col for columns
            row = jnp.zeros(np.delete(p.shape, d_row), p.dtype)
            col = jnp.zeros(np.delete(p.shape, d_col), p.dtype)
            return row, col, one

        v_row, v_col, v = tree.unzip(params, jax.tree.map(leaf, params), 3)
        return FactoredState(jnp.zeros([], jnp.int32), v_row, v_col, v)

    def update(updates, state, params=None):
        del params
        decay = decay_rate_fn(state.count - step_offset, decay_rate)

        def leaf(g, r, c, v):
            g_w = g.astype(tree.compute_dtype(g.dtype))
            g2 = jnp.square(g_w) + epsilon
            dims = factored_dims(g.shape, factored, min_dim_size_to_factor)
            if dims is None:
                v_new = decay * v.astype(g2.dtype) + (1 - decay) * g2
                return (g_w / jnp.sqrt(v_new)).astype(g.dtype), r, c, v_new.astype(v.dtype)
            d_col, d_row = dims
            r_new = decay * r.astype(g2.dtype) + (1 - decay) * jnp.mean(g2, axis=d_row)
            c_new = decay * c.astype(g2.dtype) + (1 - decay) * jnp.mean(g2, axis=d_col)
            r_store, c_store = r_new.astype(r.dtype), c_new.astype(c.dtype)
            r_axis = d_col if d_col < d_row else d_col - 1  # d_col's place once d_row is gone
            r_norm = r_store.astype(g2.dtype) / jnp.mean(
                r_store.astype(g2.dtype), axis=r_axis, keepdims=True
            )
            scale = jnp.expand_dims(jax.lax.rsqrt(r_norm), d_row) * jnp.expand_dims(
                jax.lax.rsqrt(c_store.astype(g2.dtype)), d_col
            )
            return (g_w * scale).astype(g.dtype), r_store, c_store, v

        out = tree.map_like(leaf, updates, state.v_row, state.v_col, state.v)
        new_updates, v_row, v_col, v = tree.unzip(updates, out, 4)
        return new_updates, FactoredState(tree.safe_increment(state.count), v_row, v_col, v)

    return GradientTransformation(init, update)


def scale_by_param_block_rms(min_scale: float = 1e-3) -> GradientTransformation:
    r"""Scale each leaf's update by the RMS of its parameter: ``u_t = max(rms(p), min_scale) g_t``.

    Example:
        >>> tx = optjax.scale_by_param_block_rms()
        >>> p = jnp.array([3.0, -3.0])
        >>> tx.update(jnp.array([1.0, 2.0]), tx.init(p), p)[0]
        Array([3., 6.], dtype=float32)

    Reference: Shazeer & Stern, "Adafactor", ICML 2018, Section 8 (relative step size).
    """
    check_positive("min_scale", min_scale)

    def scaled(updates, params):
        if params is None:
            raise ValueError("scale_by_param_block_rms needs params: call update(g, state, params)")

        def leaf(u, p):
            p_w = p.astype(tree.compute_dtype(p.dtype))
            rms = jnp.maximum(jnp.sqrt(jnp.mean(jnp.square(p_w))), min_scale)
            return (u.astype(rms.dtype) * rms).astype(u.dtype)

        return tree.map_like(leaf, updates, params, names=("updates", "params"))

    return stateless(scaled)
