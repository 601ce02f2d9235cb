"""Layer-wise scaling: trust ratios (LARS, LAMB, Fromage) and the norm of each parameter block.

A layer, or block, is one leaf of the params tree (a weight matrix, a bias vector). Each norm is
taken per leaf through optjax.tree's per-leaf helpers (`tree.leaf_sum`,
`tree.map_with_leaf_values`), so these transforms run on the flat layout (optjax.flat) as they are.
Norms and ratios are formed in float32 at least (a bf16 leaf's norm is not rounded to bf16), and
each update is rounded once to the gradient's dtype. A norm of 0 has a finite derivative (0), so
a step can be differentiated through (e.g. with respect to the learning rate) at zero parameters.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_nonnegative, check_positive, check_value, is_zero
from optjax.base import EmptyState, GradientTransformation, ScalarOrSchedule
from optjax.core import stateless
from optjax.flat import FlatBuffers, as_tree, flat_ready
from optjax.transforms.scaling import ScaleByScheduleState
from optjax.wrappers.masking import mask_leaves

__all__ = [
    "ScaleByTrustRatioState",
    "scale_by_lars",
    "scale_by_param_block_norm",
    "scale_by_trust_ratio",
]

# optax's name for this stateless transform's state.
ScaleByTrustRatioState = EmptyState

# A tree of bools shaped like the params (or a prefix of one: a bool for a whole subtree), or a
# function params -> such a tree.
Mask = Any


def _norm(squares, floor=0.0):
    """``max(sqrt(squares), floor)`` as optax's safe_norm: ``floor`` where the norm is at most
    ``floor``; the square root never sees 0, so its derivative stays finite."""
    positive = squares > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1)), 0)
    floor = jnp.asarray(floor).astype(norm.dtype)
    return jnp.where(norm <= floor, floor, norm)


def _scale_leaves(updates, factors):
    """``factor * u`` on each leaf, the factor its leaf's entry of the per-leaf ``factors``,
    formed in the compute dtype and rounded once."""
    return tree.map_with_leaf_values(
        lambda u, f: (tree.wide(u) * f.astype(tree.compute_dtype(u.dtype))).astype(u.dtype),
        updates,
        factors,
    )


def _needs_params(name: str, params) -> None:
    if params is None:
        raise ValueError(f"{name} needs params: call update(g, state, params)")


def mask_tree(mask: Mask, params) -> Any:
    """``mask`` as a full tree of Python bools shaped like ``params`` (a tree or FlatBuffers):
    ``mask`` is such a tree, a prefix of it (``True`` for every leaf), or a function of the
    params returning one, as optax's masks are. None means every leaf."""
    like = as_tree(params)
    keep = mask_leaves(True if mask is None else mask, like)
    treedef: Any = jax.tree.structure(like)  # a PyTreeDef (untyped in jaxlib)
    return treedef.unflatten(keep)


def _leaf_flags(keep, like):
    """The per-leaf bools ``keep`` (from `mask_tree`) as per-leaf values shaped like those of
    `tree.leaf_sum` on ``like``: the tree itself, or one bool array per dtype group when flat."""
    return like.layout.leaf_mask(keep) if isinstance(like, FlatBuffers) else keep


@flat_ready
def scale_by_trust_ratio(
    min_norm: float = 0.0, trust_coefficient: float = 1.0, eps: float = 0.0
) -> GradientTransformation:
    r"""Scale each leaf's update by its trust ratio, the norm of its parameter over its own norm.

        n_p = max(||p_t||, min_norm)            n_u = max(||u_t||, min_norm)
        r_t = trust_coefficient n_p / (n_u + eps)     (r_t = 1 where n_p = 0 or n_u = 0)
        u'_t = r_t u_t

    with ||.|| the l2 (Frobenius) norm of the whole leaf. The fallback r_t = 1 lets a leaf that
    is 0 (a bias initialised to zero) move at all. LAMB applies it to Adam's step plus the
    weight decay, Fromage to the gradient; LARS's own form is `scale_by_lars`.

    Example:
        >>> tx = optjax.scale_by_trust_ratio()
        >>> p = jnp.array([3.0, 4.0])                         # ||p|| = 5
        >>> tx.update(jnp.array([0.6, 0.8]), tx.init(p), p)[0]   # ||u|| = 1: r = 5
        Array([3., 4.], dtype=float32)

    Reference: You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes", ICLR 2020 (the layer-wise trust ratio, Algorithm 2).
    """
    check_nonnegative("min_norm", min_norm)
    check_nonnegative("trust_coefficient", trust_coefficient)
    check_nonnegative("eps", eps)

    def scaled(updates, params):
        _needs_params("scale_by_trust_ratio", params)

        def ratio(u_squares, p_squares):
            n_u, n_p = _norm(u_squares, min_norm), _norm(p_squares, min_norm)
            dtype = n_u.dtype
            zero = (n_p == 0) | (n_u == 0)
            denominator = jnp.where(zero, 1, n_u + jnp.asarray(eps).astype(dtype))
            r = jnp.asarray(trust_coefficient).astype(dtype) * n_p / denominator
            return jnp.where(zero, 1, r).astype(dtype)

        ratios = jax.tree.map(
            ratio,
            tree.leaf_sum(tree.abs_square, updates),
            tree.leaf_sum(tree.abs_square, params),
        )
        return _scale_leaves(updates, ratios)

    return stateless(scaled)


@flat_ready
def scale_by_param_block_norm(min_scale: float = 1e-3) -> GradientTransformation:
    r"""Scale each leaf's update by its parameter's norm: ``u_t = max(||p_t||, min_scale) g_t``.

    ||.|| is the l2 (Frobenius) norm of the whole leaf; `scale_by_param_block_rms` divides it by
    the square root of the leaf's size.

    Example:
        >>> tx = optjax.scale_by_param_block_norm()
        >>> p = jnp.array([3.0, -4.0])                        # ||p|| = 5
        >>> tx.update(jnp.array([1.0, 2.0]), tx.init(p), p)[0]
        Array([ 5., 10.], dtype=float32)

    Reference: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
    ICML 2018, Section 8 (steps relative to the parameters' scale).
    """
    check_positive("min_scale", min_scale)

    def scaled(updates, params):
        _needs_params("scale_by_param_block_norm", params)
        squares = tree.leaf_sum(tree.abs_square, params)
        return _scale_leaves(updates, jax.tree.map(lambda s: _norm(s, min_scale), squares))

    return stateless(scaled)


def check_weight_decay(weight_decay) -> None:
    """A weight decay rate: a finite number >= 0, or a schedule ``step -> rate``."""
    check_value(
        "weight_decay",
        weight_decay,
        lambda x: x >= 0,
        "a finite number >= 0 or a schedule",
        schedule=True,
    )


@flat_ready
def scale_by_lars(
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: Mask = True,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    trust_ratio_mask: Mask = True,
) -> GradientTransformation:
    r"""LARS's layer-wise step direction: weight decay, scaled by the paper's trust ratio.

        d_t = g_t + wd p_t                                 (wd = 0 on leaves not decayed)
        r_t = trust_coefficient ||p_t|| / (||g_t|| + wd ||p_t|| + eps)
        u_t = r_t d_t

    per leaf, with ||.|| the l2 (Frobenius) norm of the whole leaf; r_t = 1 where ||p_t|| = 0 (a
    leaf that is 0 still moves), where the denominator is 0, and on the leaves
    ``trust_ratio_mask`` leaves out. ``weight_decay`` may be a schedule ``step -> wd``; the masks
    are trees of bools shaped like the params (or a prefix of one: ``True`` means every leaf), or
    functions ``params -> such a tree``.

    The denominator is the paper's ``||g|| + wd ||p||``. optax.lars applies its generic trust
    ratio to the decayed gradient instead, ``||g + wd p||``, which is smaller (by the triangle
    inequality): with weight decay its steps are larger than the paper's.

    Example:
        >>> tx = optjax.scale_by_lars(weight_decay=0.5, trust_coefficient=1.0)
        >>> p = jnp.array([3.0, 4.0])                  # ||p|| = 5, wd ||p|| = 2.5
        >>> g = jnp.array([1.5, 2.0])                  # ||g|| = 2.5: r = 5 / 5 = 1
        >>> tx.update(g, tx.init(p), p)[0]             # d = g + 0.5 p
        Array([3., 4.], dtype=float32)

    Reference: You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks", 2017,
    Algorithm 1 and equation (6).
    """
    check_weight_decay(weight_decay)
    check_nonnegative("trust_coefficient", trust_coefficient)
    check_nonnegative("eps", eps)
    scheduled = callable(weight_decay)

    def init(params):
        del params
        return ScaleByScheduleState(jnp.zeros([], jnp.int32)) if scheduled else EmptyState()

    def update(updates, state, params=None):
        _needs_params("scale_by_lars", params)
        if scheduled:
            wd = jnp.asarray(weight_decay(state.count))
            wd = wd.astype(tree.compute_dtype(wd.dtype))
            state = ScaleByScheduleState(tree.safe_increment(state.count))
        else:
            wd = weight_decay
        decayed = mask_tree(weight_decay_mask, params)
        trusted = mask_tree(trust_ratio_mask, params)

        def ratio(g_squares, p_squares, decays, trusts):
            n_g, n_p = _norm(g_squares), _norm(p_squares)
            dtype = n_g.dtype
            rate = jnp.where(decays, jnp.asarray(wd).astype(dtype), 0)
            denominator = n_g + rate * n_p + jnp.asarray(eps).astype(dtype)
            zero = (n_p == 0) | (denominator == 0)
            r = jnp.asarray(trust_coefficient).astype(dtype) * n_p / jnp.where(zero, 1, denominator)
            return jnp.where(jnp.logical_and(trusts, ~zero), r, 1).astype(dtype)

        ratios = jax.tree.map(
            ratio,
            tree.leaf_sum(tree.abs_square, updates),
            tree.leaf_sum(tree.abs_square, params),
            _leaf_flags(decayed, params),
            _leaf_flags(trusted, params),
        )

        def with_decay(g, r, p):  # r (g + wd p), rounded once
            wide = tree.compute_dtype(g.dtype, p.dtype)
            d = g.astype(wide) + jnp.asarray(wd).astype(wide) * p.astype(wide)
            return (d * r.astype(wide)).astype(g.dtype)

        if is_zero(weight_decay):  # no decay: no second pass over the parameters
            return _scale_leaves(updates, ratios), state
        new_updates = tree.where_leaves(
            decayed,
            tree.map_with_leaf_values(with_decay, updates, ratios, params),
            _scale_leaves(updates, ratios),
        )
        return new_updates, state

    return GradientTransformation(init, update)
