"""Adafactor's factored second moment, and scaling by the parameters' own size."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optjax import tree
from optjax._checks import check_integer, check_nonnegative, check_positive, check_positive_int
from optjax.base import GradientTransformation, StepCount, Updates
from optjax.core import stateless
from optjax.flat import flat_ready, per_leaf

__all__ = [
    "FactoredState",
    "decay_rate_pow",
    "factored_dims",
    "scale_by_factored_rms",
    "scale_by_factored_rms_clipped",
    "scale_by_param_block_rms",
]


class FactoredState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
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
    return 1.0 - (tree.step_as_float(step) + 1) ** (-exponent)  # no int32 wrap at the last step


def _moments(g, r, c, v, decay, dims, epsilon):
    """One leaf's new statistics, in the compute dtype: ``(R_t, C_t, None)`` for a factored leaf
    (dims = (d_col, d_row): R is the mean over d_row, C over d_col), ``(r, c, V_t)`` otherwise."""
    decay = jnp.asarray(decay).astype(tree.real_wide_dtype(g))  # float64 under x64
    if dims is None:
        return r, c, decay * tree.wide(v) + (1 - decay) * (tree.abs_square(g) + epsilon)
    d_col, d_row = dims
    # The two means square g in two ways (the same numbers): XLA then fuses each reduction with
    # its own squaring instead of writing g^2 out once for both, a full-size temporary.
    # mean(|g| |g|) + eps is mean(g^2 + eps) to rounding.
    row_mean = jnp.mean(tree.abs_square(g) + epsilon, axis=d_row)
    col_mean = jnp.mean(jnp.abs(tree.wide(g)) * jnp.abs(tree.wide(g)), axis=d_col) + epsilon
    r_new = decay * tree.wide(r) + (1 - decay) * row_mean
    c_new = decay * tree.wide(c) + (1 - decay) * col_mean
    return r_new, c_new, None


def _inverse_roots(r, c, dims):
    """``rsqrt(R / mean(R))`` and ``rsqrt(C)``, shaped to broadcast against the leaf: their
    product is ``1 / sqrt(V̂)`` with ``V̂ = R C^T / mean(R)``, never formed at full size."""
    d_col, d_row = dims
    r_axis = d_col if d_col < d_row else d_col - 1  # d_col's place once d_row is gone
    r, c = tree.wide(r), tree.wide(c)
    r_norm = r / jnp.mean(r, axis=r_axis, keepdims=True)
    return jnp.expand_dims(jax.lax.rsqrt(r_norm), d_row), jnp.expand_dims(jax.lax.rsqrt(c), d_col)


def _times(g, *factors):
    """``g f_1 f_2 ...`` in g's compute dtype, each real factor cast to it (a complex g is scaled
    by real statistics without relying on promotion)."""
    g = tree.wide(g)
    for f in factors:
        g = g * f.astype(g.dtype)
    return g


def _div(g, d):
    """``g / d`` in g's compute dtype, the real d cast to it."""
    g = tree.wide(g)
    return g / d.astype(g.dtype)


def _real_product(a, b):
    """``a conj(b)``, real: ``a b`` for real leaves (|b|^2 scaled, for b's own a)."""
    if jnp.issubdtype(a.dtype, jnp.complexfloating):
        return (a * jnp.conj(b)).real
    return a * b


def _check_factored_args(decay_rate, min_dim_size_to_factor, epsilon, step_offset=0) -> None:
    check_positive_int("min_dim_size_to_factor", min_dim_size_to_factor)
    check_integer("step_offset", step_offset)
    check_nonnegative("decay_rate", decay_rate)
    check_nonnegative("epsilon", epsilon)


def _factored_init(dims_of, nu_dtype=None):
    """``init`` of the factored second moment: R and C for a factored leaf, V otherwise (the
    unused fields None, an empty node: nothing to pass or donate), in ``tree.real_wide_dtype`` of
    the parameter (float32 for bf16, fp16 and complex64 parameters unless ``nu_dtype`` is given)."""

    def init(params):
        def leaf(p):
            dims = dims_of(jnp.shape(p))
            dtype = tree.real_wide_dtype(p, nu_dtype)
            if dims is None:
                return None, None, jnp.zeros_like(p, dtype)
            d_col, d_row = dims  # R reduces over d_row, C over d_col
            # Zeros like a reduction of p: the parameter's sharding without the reduced axis.
            row = jnp.zeros_like(jnp.sum(p, axis=d_row), dtype)
            col = jnp.zeros_like(jnp.sum(p, axis=d_col), dtype)
            return row, col, None

        v_row, v_col, v = tree.unzip(params, jax.tree.map(leaf, params), 3)
        return FactoredState(jnp.zeros([], jnp.int32), v_row, v_col, v)

    return init


def _on_views_if_factored(tx: GradientTransformation, dims_of) -> GradientTransformation:
    """On the flat layout a factored leaf needs its own shape: the transform runs on the views
    when any leaf is factored, and on the buffers (elementwise, every leaf's V whole) otherwise."""
    return per_leaf(tx, when=lambda layout: any(dims_of(s) is not None for s in layout.shapes))


def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: float = 0.8,
    step_offset: int = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: float = 1e-30,
    decay_rate_fn=decay_rate_pow,
    *,
    nu_dtype=None,
) -> GradientTransformation:
    r"""Divide by a factored estimate of the root mean square gradient (Adafactor).

    For a matrix-shaped leaf (the two largest axes at least ``min_dim_size_to_factor`` long) only
    row and column means of g^2 are kept, O(n + m) memory instead of O(nm):

        b_t = 1 - max(t - step_offset, 1)^(-decay_rate)          (t = 1, 2, ...)
        R_t = b_t R_{t-1} + (1 - b_t) mean_col(g_t^2 + eps)      (one value per row)
        C_t = b_t C_{t-1} + (1 - b_t) mean_row(g_t^2 + eps)      (one value per column)
        V̂_t = R_t C_t^T / mean(R_t)
        u_t = g_t / sqrt(V̂_t)

    Other leaves keep the full ``V_t = b_t V_{t-1} + (1 - b_t)(g_t^2 + eps)``, and
    u_t = g_t / sqrt(V_t).
    A leaf with more than two axes is factored over its two largest, the others batch axes.
    R, C and V have ``nu_dtype``, by default float32 for bf16 and fp16 parameters: b_t tends to 1,
    and in bf16 a decay below half an ulp would freeze them (as it would Adam's v_t).

    Example:
        >>> tx = optjax.scale_by_factored_rms()
        >>> p = jnp.zeros(3)
        >>> tx.update(jnp.array([2.0, -2.0, 0.5]), tx.init(p), p)[0]   # step 1: b_1 = 0, u = g/|g|
        Array([ 1., -1.,  1.], dtype=float32)

    Reference: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
    ICML 2018, Algorithms 4 and 5.
    """
    _check_factored_args(decay_rate, min_dim_size_to_factor, epsilon, step_offset)

    def dims_of(shape):
        return factored_dims(shape, factored, min_dim_size_to_factor)

    def update(updates, state, params=None):
        del params
        decay = decay_rate_fn(jnp.maximum(state.count - step_offset, 0), decay_rate)  # no NaN

        def leaf(g, r, c, v):
            dims = dims_of(g.shape)
            r_new, c_new, v_new = _moments(g, r, c, v, decay, dims, epsilon)
            if dims is None:
                return _div(g, jnp.sqrt(v_new)).astype(g.dtype), r, c, v_new.astype(v.dtype)
            r, c = r_new.astype(r.dtype), c_new.astype(c.dtype)
            row, col = _inverse_roots(r, c, dims)
            return _times(g, row, col).astype(g.dtype), r, c, v

        out = tree.map_like(leaf, updates, state.v_row, state.v_col, state.v)
        new_updates, v_row, v_col, v = tree.unzip(updates, out, 4)
        return new_updates, FactoredState(tree.safe_increment(state.count), v_row, v_col, v)

    tx = GradientTransformation(_factored_init(dims_of, nu_dtype), update)
    return _on_views_if_factored(tx, dims_of)


def scale_by_factored_rms_clipped(
    clipping_threshold: float,
    factored: bool = True,
    decay_rate: float = 0.8,
    step_offset: int = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: float = 1e-30,
    decay_rate_fn=decay_rate_pow,
    *,
    nu_dtype=None,
) -> GradientTransformation:
    r"""``chain(scale_by_factored_rms(...), clip_by_block_rms(clipping_threshold))`` in fewer
    passes over memory: Adafactor's fast path (the same numbers, to rounding).

    The clipping needs rms(u_t) of each leaf before u_t is scaled; here it is summed from g_t and
    the statistics (sum g^2 / (R C) for a factored leaf, sum g^2 / V otherwise) rather than from
    u_t, so XLA need not write u_t out to read it twice: Adafactor's step makes three passes over
    the gradient and no full-size temporary. The state is scale_by_factored_rms's.
    """
    _check_factored_args(decay_rate, min_dim_size_to_factor, epsilon, step_offset)
    check_positive("clipping_threshold", clipping_threshold)

    def dims_of(shape):
        return factored_dims(shape, factored, min_dim_size_to_factor)

    def update(updates, state, params=None):
        del params
        decay = decay_rate_fn(jnp.maximum(state.count - step_offset, 0), decay_rate)  # no NaN

        def statistics(g, r, c, v):
            dims = dims_of(g.shape)
            r_new, c_new, v_new = _moments(g, r, c, v, decay, dims, epsilon)
            if dims is None:
                return r, c, v_new
            return r_new.astype(r.dtype), c_new.astype(c.dtype), v

        stats = tree.map_like(statistics, updates, state.v_row, state.v_col, state.v)
        v_row, v_col, v_wide = tree.unzip(updates, stats, 3)

        # A factored leaf is one without a full V (only the tree path has them: on the flat
        # layout this runs on the buffers only when no leaf is factored, and sees rows of them).
        def unclipped(g, r, c, v):
            if v is not None:
                return _div(g, jnp.sqrt(v))
            row, col = _inverse_roots(r, c, dims_of(g.shape))
            return _times(g, row, col)

        def squares(g, r, c, v):  # |u|^2 from g and the statistics, not from u (see above)
            g_w = tree.wide(g)
            if v is not None:
                return _real_product(_div(g_w, v), g_w)
            row, col = _inverse_roots(r, c, dims_of(g.shape))
            return _real_product(_times(g_w, jnp.square(col)), g_w) * jnp.square(row)

        mean_squares = tree.leaf_mean(squares, updates, v_row, v_col, v_wide)
        denominators = jax.tree.map(
            lambda ms: jnp.maximum(1.0, jnp.sqrt(ms) / clipping_threshold), mean_squares
        )
        new_updates = tree.map_with_leaf_values(
            lambda g, d, r, c, v: _div(unclipped(g, r, c, v), d).astype(g.dtype),
            updates,
            denominators,
            v_row,
            v_col,
            v_wide,
        )
        v = tree.map_like(lambda old, new: new.astype(old.dtype), state.v, v_wide)
        return new_updates, FactoredState(tree.safe_increment(state.count), v_row, v_col, v)

    init = _factored_init(dims_of, nu_dtype)
    return _on_views_if_factored(GradientTransformation(init, update), dims_of)


@flat_ready
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
        mean_squares = tree.leaf_mean(tree.abs_square, params)
        scales = jax.tree.map(lambda ms: jnp.maximum(jnp.sqrt(ms), min_scale), mean_squares)
        return tree.map_with_leaf_values(
            lambda u, s: (tree.wide(u) * s.astype(tree.compute_dtype(u.dtype))).astype(u.dtype),
            updates,
            scales,
        )

    return stateless(scaled)
