"""Adafactor's factored second moment, and scaling by the parameters' own size."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optjax import tree
from optjax._checks import check_nonnegative, check_positive, check_positive_int
from optjax.core import GradientTransformation, Updates, stateless
from optjax.flat import FlatBuffers, is_flat, map_leafwise


class FactoredState(NamedTuple):
    count: jax.Array  # int32 scalar: steps taken so far
    v_row: Updates  # per-row moving average of g^2 (factored leaves; None otherwise)
    v_col: Updates  # per-column moving average of g^2 (factored leaves; None otherwise)
    v: Updates  # full moving average of g^2 (unfactored leaves; None otherwise)


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
    *,
    clipping_threshold: float | None = None,
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

    With ``clipping_threshold`` d, each leaf's update is then clipped by its RMS as in
    clip_by_block_rms(d), ``u_t <- u_t / max(1, rms(u_t) / d)``: the same as chaining the two up
    to rounding, but rms(u_t) is summed from g_t and the statistics (sum g^2 / (R C) for a
    factored leaf, sum g^2 / V otherwise) rather than from u_t, so XLA need not write u_t out
    to read it twice: Adafactor's step makes three passes over the gradient, no temporary.

    On the flat layout (optjax.flat) the step is elementwise over the buffers when no leaf is
    factored; otherwise it falls back to per-leaf code on each leaf's view, with the tree path's
    state.

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
    if clipping_threshold is not None:
        check_positive("clipping_threshold", clipping_threshold)

    def dims_of(shape):
        return factored_dims(shape, factored, min_dim_size_to_factor)

    def tree_init(params):
        def leaf(p):
            dims = dims_of(p.shape)
            if dims is None:  # None: an empty node, no buffer to pass or donate
                return None, None, jnp.zeros_like(p)
            d_col, d_row = dims  # reduce over d_row for rows, over d_col for columns
            row = jnp.zeros(np.delete(p.shape, d_row), p.dtype)
            col = jnp.zeros(np.delete(p.shape, d_col), p.dtype)
            return row, col, None

        v_row, v_col, v = tree.unzip(params, jax.tree.map(leaf, params), 3)
        return FactoredState(jnp.zeros([], jnp.int32), v_row, v_col, v)

    def leaf(g, r, c, v, decay, dims):
        """The unclipped update (compute dtype), the new statistics, update^2 formed without the
        update itself (elementwise for a full v, summed for a factored leaf; None when not
        clipping), and the full v in the compute dtype (None for a factored leaf)."""
        g_w = g.astype(tree.compute_dtype(g.dtype))
        g2 = jnp.square(g_w) + epsilon
        if dims is None:
            v_new = decay * v.astype(g2.dtype) + (1 - decay) * g2
            squares = (g_w / v_new) * g_w if clipping_threshold is not None else None
            return g_w / jnp.sqrt(v_new), r, c, v_new.astype(v.dtype), squares, v_new
        d_col, d_row = dims
        # Each reduction squares g in a distinct way (same numbers): XLA then fuses each with its
        # own squaring instead of writing g^2 (or even a broadcast eps) out once for all of them,
        # a full-size temporary. mean(|g|^2) + eps equals mean(|g|^2 + eps) unless |g| < 1e-11.
        if jnp.issubdtype(g_w.dtype, jnp.complexfloating):
            col_mean = jnp.mean(g2, axis=d_col)
        else:
            col_mean = jnp.mean(jnp.abs(g_w) * jnp.abs(g_w), axis=d_col) + epsilon
        r_new = decay * r.astype(g2.dtype) + (1 - decay) * jnp.mean(g2, axis=d_row)
        c_new = decay * c.astype(g2.dtype) + (1 - decay) * col_mean
        r_store, c_store = r_new.astype(r.dtype), c_new.astype(c.dtype)
        r_axis = d_col if d_col < d_row else d_col - 1  # d_col's place once d_row is gone
        r_norm = r_store.astype(g2.dtype) / jnp.mean(
            r_store.astype(g2.dtype), axis=r_axis, keepdims=True
        )
        c_wide = c_store.astype(g2.dtype)
        scale = jnp.expand_dims(jax.lax.rsqrt(r_norm), d_row) * jnp.expand_dims(
            jax.lax.rsqrt(c_wide), d_col
        )
        sum_sq = None
        if clipping_threshold is not None:  # sum_i (1 / R_i) sum_j g_ij^2 / C_j
            inner = jnp.sum((g_w * jnp.expand_dims(1 / c_wide, d_col)) * g_w, axis=d_row)
            sum_sq = jnp.sum(inner / r_norm)
        return g_w * scale, r_store, c_store, v, sum_sq, None

    def clip_denominator(sum_sq, size):
        return jnp.maximum(1.0, jnp.sqrt(sum_sq / size) / clipping_threshold)

    def finish(g, u, sum_sq):
        if clipping_threshold is not None:
            u = u / clip_denominator(sum_sq, g.size)
        return u.astype(g.dtype)

    def tree_update(updates, state, decay):
        def one(g, r, c, v):
            dims = dims_of(g.shape)
            u, r, c, v, squares, _ = leaf(g, r, c, v, decay, dims)
            sum_sq = jnp.sum(squares) if dims is None and squares is not None else squares
            return finish(g, u, sum_sq), r, c, v

        out = tree.map_like(one, updates, state.v_row, state.v_col, state.v)
        new_updates, v_row, v_col, v = tree.unzip(updates, out, 4)
        return new_updates, FactoredState(tree.safe_increment(state.count), v_row, v_col, v)

    def flat_update(updates, state, decay):
        """No leaf factored: v is flat; the clipping RMS by segment sums over the layout."""
        layout = updates.layout
        parts = [leaf(g, (), (), v, decay, None) for g, v in zip(updates.buffers, state.v.buffers)]
        v = FlatBuffers([part[3] for part in parts], layout)
        u = FlatBuffers([part[0] for part in parts], layout)
        if clipping_threshold is None:
            new_updates = jax.tree.map(lambda g, x: x.astype(g.dtype), updates, u)
        else:
            # Summed from g and v rather than from the terms computed above, so that XLA fuses
            # the terms into the reduction instead of writing them out.
            sums = layout.leaf_reduce(
                lambda g, v_new: (g.astype(v_new.dtype) / v_new) * g.astype(v_new.dtype),
                updates,
                [part[5] for part in parts],
            )
            sizes = layout.leaf_sizes()
            denominators = tuple(
                clip_denominator(s, jnp.asarray(n, s.dtype)) for s, n in zip(sums, sizes)
            )
            new_updates = map_leafwise(
                lambda x, d, g: (x / d).astype(g.dtype), u, denominators, others=(updates,)
            )
        return new_updates, FactoredState(tree.safe_increment(state.count), (), (), v)

    # On the flat layout (optjax.flat): when no leaf is factored, v is held flat and the step is
    # elementwise over the buffers; otherwise each leaf runs as in the tree path, on its view.
    def init(params):
        if not is_flat(params):
            return tree_init(params)
        layout = params.layout
        if any(dims_of(shape) is not None for shape in layout.shapes):
            return tree_init(layout.unflatten(params))
        return FactoredState(jnp.zeros([], jnp.int32), (), (), tree.zeros_like(params))

    def update(updates, state, params=None):
        del params
        decay = decay_rate_fn(state.count - step_offset, decay_rate)
        if not is_flat(updates):
            return tree_update(updates, state, decay)
        if is_flat(state.v):
            return flat_update(updates, state, decay)
        layout = updates.layout
        new_updates, state = tree_update(layout.unflatten(updates), state, decay)
        return layout.flatten(new_updates), state

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

        def scaled(u, rms):
            return (u.astype(rms.dtype) * rms).astype(u.dtype)

        def leaf(u, p):
            p_w = p.astype(tree.compute_dtype(p.dtype))
            return scaled(u, jnp.maximum(jnp.sqrt(jnp.mean(jnp.square(p_w))), min_scale))

        if is_flat(updates) or is_flat(params):
            if not (is_flat(updates) and is_flat(params) and updates.layout == params.layout):
                raise ValueError(
                    "scale_by_param_block_rms: updates and params must both be FlatBuffers of "
                    "one layout, or both trees"
                )
            mean_squares = params.layout.leaf_mean_square(params)
            rms = tuple(jnp.maximum(jnp.sqrt(ms), min_scale) for ms in mean_squares)
            return map_leafwise(scaled, updates, rms)
        return tree.map_like(leaf, updates, params, names=("updates", "params"))

    return stateless(scaled)
