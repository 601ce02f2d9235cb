"""Operations on the gradient itself: centring, normalising, cleaning NaNs, keeping the
parameters non-negative, and scaling a gradient on its way back through the model."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_finite, check_nonnegative, concrete
from optjax.base import EmptyState, GradientTransformation, Updates
from optjax.core import stateless
from optjax.flat import flat_ready, per_leaf

__all__ = [
    "NonNegativeParamsState",
    "ZeroNansState",
    "centralize",
    "keep_params_nonnegative",
    "normalize_by_update_norm",
    "scale_gradient",
    "zero_nans",
]

# optax's name for this stateless transform's state.
NonNegativeParamsState = EmptyState


def _centred(g: jax.Array) -> jax.Array:
    """``g`` minus its mean over every axis but the first (a leaf of rank < 2 as it is)."""
    if g.ndim < 2:
        return g
    wide = tree.wide(g)
    centred = wide - jnp.mean(wide, axis=tuple(range(1, g.ndim)), keepdims=True)
    # An integer gradient comes back as a float, as its mean is one.
    return centred.astype(g.dtype if jnp.issubdtype(g.dtype, jnp.inexact) else wide.dtype)


def centralize() -> GradientTransformation:
    r"""Gradient centralization: subtract from each leaf of rank >= 2 its mean over all axes
    but the first.

        u_t[i, ...] = g_t[i, ...] - mean_{j, ...} g_t[i, j, ...]     (leaves of rank >= 2)
        u_t = g_t                                                     (scalars and vectors)

    The first axis indexes the units (torch's ``(out, in, ...)`` layout, as in the paper and in
    optax). Leaves of rank < 2 (biases, scales) pass unchanged.

    Example:
        >>> tx = optjax.centralize()
        >>> tx.update(jnp.array([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]]), tx.init(None))[0]
        Array([[-2., -1.,  3.],
               [-1., -1.,  2.]], dtype=float32)

    Reference: Yong, Huang, Hua & Zhang, "Gradient Centralization: A New Optimization Technique
    for Deep Neural Networks", ECCV 2020, eq. 4.
    """
    # Each leaf's shape decides its axes: on the flat layout it runs on the views.
    return per_leaf(stateless(lambda updates, params: jax.tree.map(_centred, updates)))


@flat_ready
def normalize_by_update_norm(
    scale_factor: float = 1.0, eps: float = 1e-6
) -> GradientTransformation:
    r"""Divide the updates by their global norm (plus eps), times scale_factor.

        u_t = scale_factor g_t / (||g_t|| + eps),    ||g|| = sqrt(sum_i ||g^i||^2)

    A zero gradient with eps = 0 gives a zero update (no 0/0). A negative ``scale_factor``
    makes it a descent direction on its own (``chain`` it with no learning rate).

    Example:
        >>> tx = optjax.normalize_by_update_norm(eps=0.0)
        >>> tx.update(jnp.array([3.0, 4.0]), tx.init(None))[0]
        Array([0.6, 0.8], dtype=float32)

    Reference: normalized gradient descent, e.g. Hazan, Levy & Shalev-Shwartz, "Beyond Convexity:
    Stochastic Quasi-Convex Optimization", NeurIPS 2015, Algorithm 1.
    """
    check_finite("scale_factor", scale_factor)
    check_nonnegative("eps", eps)

    def normalized(updates, params):
        del params
        norm = tree.global_norm(updates)
        denominator = norm + jnp.asarray(eps, norm.dtype)
        positive = denominator > 0
        factor = jnp.asarray(scale_factor, norm.dtype) / jnp.where(positive, denominator, 1)
        return tree.scaled(updates, jnp.where(positive, factor, 0))

    return stateless(normalized)


@flat_ready
def keep_params_nonnegative() -> GradientTransformation:
    r"""Change each update that would take its parameter below zero into one that lands on zero.

        u_t = -p_t    where p_t + g_t < 0
        u_t = g_t     elsewhere

    Place it last in a chain: it sees the final update. A parameter that is already negative is
    moved to 0 by any update that would leave it negative.

    Example:
        >>> tx = optjax.keep_params_nonnegative()
        >>> p = jnp.array([0.5, 0.5, 2.0])
        >>> tx.update(jnp.array([-1.0, -0.25, 1.0]), tx.init(p), p)[0]
        Array([-0.5 , -0.25,  1.  ], dtype=float32)
    """

    def nonnegative(updates, params):
        if params is None:
            raise ValueError("keep_params_nonnegative needs params: call update(g, state, params)")

        def step(u, p):
            if p is None:
                return u
            below = tree.wide(p) + tree.wide(u) < 0
            return jnp.where(below, -tree.wide(p), tree.wide(u)).astype(u.dtype)

        return tree.map_like(step, updates, params, names=("updates", "params"))

    return stateless(nonnegative)


class ZeroNansState(NamedTuple):
    """Per leaf of the updates, a bool scalar: whether the last update had a NaN there (on the
    flat layout, one bool per leaf in an array per dtype group)."""

    found_nan: Any


def _nan_counts(updates: Updates):
    return tree.leaf_sum(lambda g: jnp.isnan(g).astype(jnp.int32), updates)


@flat_ready
def zero_nans() -> GradientTransformation:
    r"""Replace every NaN in the updates by 0, and record which leaves had one.

        u_t = 0      where g_t is NaN
        u_t = g_t    elsewhere
        found_nan^i = any(isnan(g_t^i))   for each leaf i (the state, for the user to read)

    Example:
        >>> tx = optjax.zero_nans()
        >>> u, state = tx.update(jnp.array([1.0, jnp.nan]), tx.init(jnp.zeros(2)))
        >>> u, state.found_nan
        (Array([1., 0.], dtype=float32), Array(True, dtype=bool))
    """

    def init(params):
        # Built from the params: a False per leaf (padding and NaNs in params play no part).
        no_nans = tree.leaf_sum(lambda p: jnp.zeros(jnp.shape(p), jnp.int32), params)
        return ZeroNansState(jax.tree.map(lambda n: n > 0, no_nans))

    def update(updates, state, params=None):
        del params, state
        found = jax.tree.map(lambda n: n > 0, _nan_counts(updates))
        cleaned = jax.tree.map(
            lambda g: jnp.where(jnp.isnan(g), jnp.zeros((), g.dtype), g), updates
        )
        return cleaned, ZeroNansState(found)

    return GradientTransformation(init, update)


@jax.custom_vjp
def _scale_gradient(inputs, scale):
    del scale  # the forward pass is the identity
    return inputs


def _scale_gradient_forward(inputs, scale):
    return inputs, scale


def _scale_gradient_backward(scale, cotangents):
    def scaled(g):
        if g.dtype == jax.dtypes.float0:  # the cotangent of an integer input
            return g
        return tree.scaled(g, scale)  # formed in float32 at least, in the cotangent's dtype

    return jax.tree.map(scaled, cotangents), None  # no gradient for the scale itself


_scale_gradient.defvjp(_scale_gradient_forward, _scale_gradient_backward)


def scale_gradient(inputs: Any, scale: float | jax.Array) -> Any:
    r"""The identity on the forward pass; multiplies the gradient by ``scale`` on the way back.

        y = x,        dL/dx = scale * dL/dy

    ``inputs`` is any pytree of arrays. A scale of 1 returns the inputs as they are, a scale of
    0 stops the gradient; a traced scale (under jit or vmap) is applied as it is.

    Example:
        >>> jax.grad(lambda x: optjax.scale_gradient(x, 0.5) ** 2)(jnp.array(3.0))   # 0.5 * 2x
        Array(3., dtype=float32)
    """
    check_finite("scale", scale)
    known = concrete(scale)
    if known is not None and known == 1:
        return inputs
    if known is not None and known == 0:
        return jax.lax.stop_gradient(inputs)
    return _scale_gradient(inputs, scale)
