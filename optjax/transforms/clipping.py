"""Clipping: elementwise, by the global norm, by each block's RMS, unit-wise relative to the
parameters (AGC), and per example (for differential privacy)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optjax import tree
from optjax._checks import as_number, check_nonnegative, check_positive, is_traced
from optjax.base import EmptyState, GradientTransformation
from optjax.core import stateless
from optjax.flat import flat_ready, per_leaf

__all__ = [
    "AdaptiveGradClipState",
    "ClipByGlobalNormState",
    "ClipState",
    "adaptive_grad_clip",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "per_example_global_norm_clip",
    "per_example_layer_norm_clip",
    "unitwise_clip",
    "unitwise_norm",
]

# optax's names for the states of these stateless transforms.
ClipState = AdaptiveGradClipState = ClipByGlobalNormState = EmptyState


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


Axes = int | tuple[int, ...]  # an axis or axes of a leaf (structural: not a hyperparameter)


def _check_axes(name: str, value) -> None:
    def is_int(a) -> bool:
        return isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_))

    if not (
        value is None or is_int(value) or (isinstance(value, tuple) and all(map(is_int, value)))
    ):
        raise ValueError(
            f"{name} must be None, an integer or a tuple of integers, got {name}={value!r}"
        )


def _unit_axes(x: jax.Array, axis: Axes | None) -> Axes | None:
    """The axes a unit's norm sums over: ``axis`` if given, else by the leaf's rank (a vector or
    any leaf with at most one non-unit axis: all of it; a (in, out) or (heads, in, out) matrix:
    axis 0; an HWIO or DHWIO kernel: all axes but the last)."""
    if axis is not None:
        return axis
    if sum(d != 1 for d in x.shape) <= 1:
        return None
    if x.ndim in (2, 3):
        return 0
    if x.ndim in (4, 5):
        return tuple(range(x.ndim - 1))
    raise ValueError(
        f"adaptive_grad_clip: no default unit for a leaf of shape {x.shape} (rank 1 to 5 have "
        "one); pass axis= to name the axes a unit's norm sums over"
    )


def _unit_norms(x: jax.Array, axes: Axes | None) -> jax.Array:
    """The l2 norm of each unit of ``x`` (in x's compute dtype), broadcastable against x."""
    return jnp.sqrt(jnp.sum(tree.abs_square(x), axis=axes, keepdims=True))


def unitwise_norm(x: jax.Array, axis: Axes | None = None) -> jax.Array:
    """The l2 norm of each unit of ``x`` (a unit as `adaptive_grad_clip` takes it: ``axis`` if
    given, else by the rank), broadcast back to ``x``'s shape, in x's compute dtype.

    Example:
        >>> optjax.unitwise_norm(jnp.array([[3.0, 1.0], [4.0, 0.0]]))   # rank 2: per column
        Array([[5., 1.],
               [5., 1.]], dtype=float32)
    """
    _check_axes("axis", axis)
    x = jnp.asarray(x)
    return jnp.broadcast_to(_unit_norms(x, _unit_axes(x, axis)), x.shape)


def unitwise_clip(
    g_norm: jax.Array, max_norm: jax.Array, grad: jax.Array, div_eps: float = 1e-6
) -> jax.Array:
    """``grad`` where ``g_norm < max_norm``, else ``grad * max_norm / max(g_norm, div_eps)``:
    each unit scaled down to ``max_norm`` (the three arrays of one shape, as `unitwise_norm`
    gives them; ``div_eps`` only keeps a zero norm from dividing).

    Example:
        >>> g = jnp.array([6.0, 8.0])
        >>> optjax.unitwise_clip(optjax.unitwise_norm(g), jnp.full(2, 5.0), g)
        Array([3., 4.], dtype=float32)
    """
    g_norm, max_norm, grad = jnp.asarray(g_norm), jnp.asarray(max_norm), jnp.asarray(grad)
    if not g_norm.shape == max_norm.shape == grad.shape:
        raise ValueError(
            "unitwise_clip: g_norm, max_norm and grad must have one shape, got "
            f"{g_norm.shape}, {max_norm.shape} and {grad.shape}"
        )
    dtype = tree.compute_dtype(g_norm.dtype, max_norm.dtype)
    g_norm, max_norm = g_norm.astype(dtype), max_norm.astype(dtype)
    factor = max_norm / jnp.maximum(g_norm, jnp.asarray(div_eps, dtype))
    clipped = (tree.wide(grad) * factor.astype(tree.compute_dtype(grad.dtype))).astype(grad.dtype)
    return jnp.where(g_norm < max_norm, grad, clipped)


def adaptive_grad_clip(
    clipping: float, eps: float = 1e-3, axis: Axes | None = None
) -> GradientTransformation:
    r"""Adaptive gradient clipping (AGC): clip each unit's gradient to a fraction of its weights.

        W*_i = max(||W_i||, eps)                      (unit i: a slice of a leaf, see below)
        u_t,i = g_t,i                                 if ||g_t,i|| < clipping W*_i
        u_t,i = g_t,i clipping W*_i / ||g_t,i||       otherwise

    Norms are l2 norms over the unit's axes: ``axis`` if given, else by the leaf's rank, as in
    the paper (one unit per output channel): a scalar or vector is one unit; a rank-2 (in, out)
    or rank-3 (heads, in, out) kernel sums over axis 0; an HWIO or DHWIO convolution kernel sums
    over all axes but the last. Needs the params.

    Example:
        >>> tx = optjax.adaptive_grad_clip(0.1)
        >>> p = jnp.array([30.0, 40.0])             # ||W|| = 50: the update's norm stays <= 5
        >>> tx.update(jnp.array([6.0, 8.0]), tx.init(p), p)[0]
        Array([3., 4.], dtype=float32)

    Reference: Brock, De, Smith & Simonyan, "High-Performance Large-Scale Image Recognition
    Without Normalization", ICML 2021, Section 4, eq. 3.
    """
    check_nonnegative("clipping", clipping)
    check_nonnegative("eps", eps)
    _check_axes("axis", axis)

    def clipped(updates, params):
        if params is None:
            raise ValueError("adaptive_grad_clip needs params: call update(g, state, params)")

        def clip_leaf(g, p):
            axes = _unit_axes(g, axis)
            g_norm, p_norm = _unit_norms(g, axes), _unit_norms(p, axes)
            dtype = tree.compute_dtype(g_norm.dtype, p_norm.dtype)
            g_norm, p_norm = g_norm.astype(dtype), p_norm.astype(dtype)
            max_norm = jnp.asarray(clipping, dtype) * jnp.maximum(p_norm, jnp.asarray(eps, dtype))
            keep = g_norm < max_norm
            factor = jnp.where(keep, 1, max_norm / jnp.where(keep | (g_norm == 0), 1, g_norm))
            return (tree.wide(g) * factor.astype(tree.compute_dtype(g.dtype))).astype(g.dtype)

        return tree.map_like(clip_leaf, updates, params, names=("updates", "params"))

    # A unit is a slice of a leaf's own shape: on the flat layout it runs on the views.
    return per_leaf(stateless(clipped))


def _check_clip_norm(name: str, value) -> None:
    """A clipping norm: a number >= 0, finite or +inf (no clipping); traced values accepted."""
    if is_traced(value) or as_number(value) != math.inf:
        check_nonnegative(name, value)


def _batch_size(grads: Any, who: str) -> int:
    """The number of examples, the size of axis 0 that every leaf of ``grads`` must share."""
    leaves = jax.tree_util.tree_flatten_with_path(grads)[0]
    first = None
    for path, g in leaves:
        shape = jnp.shape(g)
        where = f"grads{jax.tree_util.keystr(path)}"
        if not shape:
            raise ValueError(
                f"{who} expects one gradient per example, stacked on axis 0 of every leaf; "
                f"{where} is a scalar"
            )
        if first is None:
            first = (where, shape[0])
        elif shape[0] != first[1]:
            raise ValueError(
                f"{who} expects one gradient per example, stacked on axis 0 of every leaf; "
                f"{where} has {shape[0]} examples but {first[0]} has {first[1]}"
            )
    return 0 if first is None else first[1]


def _clipped_sum(grads: Any, l2_norm_clip) -> tuple[Any, jax.Array]:
    """Each example's gradient (a slice of axis 0 of every leaf) rescaled so that its l2 norm is
    at most l2_norm_clip, summed over the examples; and how many examples were rescaled."""
    leaves, treedef = jax.tree.flatten(grads)
    if not leaves:
        return grads, jnp.zeros([], jnp.int32)
    norms = jax.vmap(tree.global_norm)(leaves)  # one per example, in float32 at least
    limit = jnp.asarray(l2_norm_clip, norms.dtype)
    keep = norms <= limit  # a zero gradient with a zero limit is kept (no 0/0)
    # A quotient, not where(keep, 1, limit / norms): XLA computes a division once, where it would
    # copy the comparison, with the norms' reduction over every leaf, into each leaf's sum
    # (`tree.signed_once` says more).
    multipliers = jnp.where(keep, 1, limit) / jnp.where(keep, 1, norms)
    clipped = jnp.sum(multipliers < 1, dtype=jnp.int32)

    def summed(g):
        wide = tree.wide(g)
        m = multipliers.astype(wide.dtype).reshape((-1,) + (1,) * (g.ndim - 1))
        total = jnp.sum(m * wide, axis=0)
        return total.astype(g.dtype if jnp.issubdtype(g.dtype, jnp.inexact) else wide.dtype)

    return jax.tree.unflatten(treedef, [summed(g) for g in leaves]), clipped


def per_example_global_norm_clip(grads: Any, l2_norm_clip: float) -> tuple[Any, jax.Array]:
    r"""Clip each example's gradient to a global l2 norm, then sum over the examples.

        g_i = the i-th example's gradient (index i of axis 0 of every leaf)
        u = sum_i g_i min(1, C / ||g_i||),      n_clipped = #{i : ||g_i|| > C}

    Returns ``(u, n_clipped)``: a tree like one example's gradient, and an int32 count. ``C``
    (``l2_norm_clip``) may be +inf (nothing is clipped); a zero gradient is never clipped.
    Every leaf needs the examples on axis 0; a leaf without (a scalar) is refused.

    Example:
        >>> grads = [jnp.array([[0.0, 0.0], [3.0, 4.0], [0.75, 1.0]])]   # norms 0, 5, 1.25
        >>> optjax.per_example_global_norm_clip(grads, 2.5)      # (1.5, 2) + (0.75, 1)
        ([Array([2.25, 3.  ], dtype=float32)], Array(1, dtype=int32))

    Reference: Abadi et al., "Deep Learning with Differential Privacy", CCS 2016, Algorithm 1.
    """
    _check_clip_norm("l2_norm_clip", l2_norm_clip)
    _batch_size(grads, "per_example_global_norm_clip")
    return _clipped_sum(grads, l2_norm_clip)


def per_example_layer_norm_clip(
    grads: Any, global_l2_norm_clip: float, uniform: bool = True
) -> tuple[Any, Any]:
    r"""Clip each example's gradient leaf by leaf (layer by layer), then sum over the examples.

    Leaf k of each example is clipped as by `per_example_global_norm_clip`, to its own norm C_k:

        C_k = C / sqrt(K)            (uniform=True; K leaves)
        C_k = C sqrt(D_k / D)        (uniform=False; D_k the leaf's size per example, D the sum)

    so that the example's whole gradient has norm at most C either way. Returns two trees shaped
    like ``grads``: the clipped sums, and each leaf's int32 count of clipped examples.

    Example:
        >>> grads = {"a": jnp.array([[3.0, 4.0], [0.75, 1.0]]), "b": jnp.array([[1.0], [0.5]])}
        >>> sums, clipped = optjax.per_example_layer_norm_clip(grads, 5.0 * 2**0.5)
        >>> sums["a"], clipped["a"]                  # C_a = 5 sqrt(2) / sqrt(2) = 5: none clipped
        (Array([3.75, 5.  ], dtype=float32), Array(0, dtype=int32))
        >>> optjax.per_example_layer_norm_clip(grads, 2.5 * 2**0.5)[0]["a"]   # C_a = 2.5
        Array([2.25, 3.  ], dtype=float32)

    Reference: McMahan, Ramage, Talwar & Zhang, "Learning Differentially Private Recurrent
    Language Models", ICLR 2018, Section 3 (per-layer clipping).
    """
    _check_clip_norm("global_l2_norm_clip", global_l2_norm_clip)
    _batch_size(grads, "per_example_layer_norm_clip")
    leaves, treedef = jax.tree.flatten(grads)
    sizes = [math.prod(jnp.shape(g)[1:]) for g in leaves]
    if uniform:
        fractions = [1.0 / len(leaves)] * len(leaves)
    else:
        fractions = [size / max(sum(sizes), 1) for size in sizes]
    sums, counts = [], []
    for g, fraction in zip(leaves, fractions):
        total, clipped = _clipped_sum(g, global_l2_norm_clip * math.sqrt(fraction))
        sums.append(total)
        counts.append(clipped)
    return jax.tree.unflatten(treedef, sums), jax.tree.unflatten(treedef, counts)
