"""Sign methods: the sign of the gradient, and Rprop's per-coordinate step sizes adapted from
the signs of successive gradients."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_nonnegative, check_value, concrete
from optjax.base import GradientTransformation, Updates
from optjax.core import stateless
from optjax.flat import flat_ready

__all__ = [
    "ScaleByRpropState",
    "scale_by_rprop",
    "scale_by_sign",
]


class ScaleByRpropState(NamedTuple):
    step_sizes: Updates  # per-coordinate step size Δ_t (float32 at least, real)
    prev_updates: Updates  # the last step Δ_t sign(g_t), 0 where the sign had flipped


@flat_ready
def scale_by_sign() -> GradientTransformation:
    r"""Keep only the sign of each coordinate: ``u_t = sign(g_t)`` (0 where g_t = 0).

    A complex coordinate keeps its phase, ``g / |g|``.

    Example:
        >>> tx = optjax.scale_by_sign()
        >>> tx.update(jnp.array([-3.0, 0.0, 0.2]), tx.init(None))[0]
        Array([-1.,  0.,  1.], dtype=float32)

    Reference: Bernstein, Wang, Azizzadenesheli & Anandkumar, "signSGD: Compressed Optimisation
    for Non-Convex Problems", ICML 2018.
    """
    return stateless(lambda updates, params: jax.tree.map(jnp.sign, updates))


def _real_dtype(x) -> jnp.dtype:
    """Where a step size for ``x`` is kept: float32 at least, real even for a complex leaf (an
    integer leaf keeps its dtype: chain refuses its gradients)."""
    dtype = tree.wide_dtype(x)
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.inexact) else dtype


def _agreement(g, prev):
    """The sign of ``g_t prev_t``, from the two signs (a product of two small numbers would
    underflow to 0 and hide a flip); for complex leaves, of ``Re(g conj(prev))``."""
    if jnp.issubdtype(g.dtype, jnp.complexfloating):
        return jnp.sign((jnp.sign(g) * jnp.conj(jnp.sign(prev))).real)
    return jnp.sign(g) * jnp.sign(prev.astype(g.dtype))


@flat_ready
def scale_by_rprop(
    learning_rate: float,
    eta_minus: float = 0.5,
    eta_plus: float = 1.2,
    min_step_size: float = 1e-6,
    max_step_size: float = 50.0,
) -> GradientTransformation:
    r"""Rprop (iRprop-): a step size per coordinate, grown while the gradient keeps its sign and
    shrunk when it flips; only the sign of the gradient is used.

        s_t = sign(g_t) sign(g_{t-1})         (g_{t-1} taken as 0 after a flip, and at t = 1)
        Δ_t = clip(eta_plus Δ_{t-1}, min_step_size, max_step_size)     where s_t > 0
        Δ_t = clip(eta_minus Δ_{t-1}, min_step_size, max_step_size)    where s_t < 0
        Δ_t = Δ_{t-1}                                                  where s_t = 0
        u_t = Δ_t sign(g_t)   where s_t >= 0,    u_t = 0 (the step is skipped) where s_t < 0

    with Δ_0 = learning_rate. Descend by chaining ``scale(-1)`` (see `optjax.rprop`). The state
    keeps the step sizes (float32 at least: a bf16 Δ drifts as it is multiplied up and down) and
    u_t, whose sign stands for g_{t-1}'s. A complex coordinate keeps its phase, and its flips are
    where ``Re(g_t conj(g_{t-1})) < 0``.

    Example:
        >>> tx = optjax.scale_by_rprop(learning_rate=0.1)
        >>> state = tx.init(jnp.zeros(2))
        >>> u, state = tx.update(jnp.array([3.0, -1.0]), state)     # Δ_0 sign(g)
        >>> u, state = tx.update(jnp.array([2.0, 5.0]), state)      # same sign: 1.2 Δ; flip: skip
        >>> u, state.step_sizes
        (Array([0.12, 0.  ], dtype=float32), Array([0.12, 0.05], dtype=float32))

    Reference: Riedmiller & Braun, "A direct adaptive method for faster backpropagation learning:
    the RPROP algorithm", IEEE ICNN 1993; Igel & Hüsken, "Improving the Rprop learning
    algorithm", NC 2000 (iRprop-).
    """
    check_value("learning_rate", learning_rate, lambda x: x > 0, "a number > 0")
    check_value("eta_minus", eta_minus, lambda x: 0 < x <= 1, "in (0, 1]")
    check_value("eta_plus", eta_plus, lambda x: x >= 1, "a number >= 1")
    check_nonnegative("min_step_size", min_step_size)
    check_value("max_step_size", max_step_size, lambda x: x > 0, "a number > 0")
    low, high = concrete(min_step_size), concrete(max_step_size)
    if low is not None and high is not None and low > high:
        raise ValueError(
            "max_step_size must be >= min_step_size, got "
            f"min_step_size={min_step_size!r} and max_step_size={max_step_size!r}"
        )

    def init(params):
        return ScaleByRpropState(
            jax.tree.map(lambda p: jnp.full_like(p, learning_rate, _real_dtype(p)), params),
            tree.zeros_like(params),
        )

    def update(updates, state, params=None):
        del params

        def step(g, size, prev):
            s = _agreement(g, prev)
            eta = jnp.where(s > 0, eta_plus, eta_minus).astype(size.dtype)
            bounds = (jnp.asarray(min_step_size), jnp.asarray(max_step_size))
            grown = jnp.clip(size * eta, *(b.astype(size.dtype) for b in bounds))
            size = jnp.where(s == 0, size, grown)
            wide = tree.compute_dtype(g.dtype)
            u = jnp.where(s < 0, 0, size.astype(wide) * jnp.sign(g.astype(wide)))
            return u.astype(g.dtype), size, u.astype(prev.dtype)

        out = tree.map_like(
            step, updates, state.step_sizes, state.prev_updates, names=("updates", "state")
        )
        new_updates, step_sizes, prev_updates = tree.unzip(updates, out, 3)
        return new_updates, ScaleByRpropState(step_sizes, prev_updates)

    return GradientTransformation(init, update)
