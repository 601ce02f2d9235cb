"""ACProp: AdaBelief's centred second moment, used one step late (optax.contrib's names).

Numerics as in optjax.transforms.adaptive_variants' AdaBelief: the first moment keeps the
parameter's dtype, the centred second moment s_t is real and kept in float32 for bf16 and fp16
parameters, and the bias correction ``1 - b2^(t-1)`` is formed by `tree.one_minus_power`.

Where optax 0.2.8 is wrong, optjax follows the paper and the authors' code: the prediction error
is g_t - m_t, with the momentum m_t that includes g_t (as optax's own docstring writes it);
optax's code takes g_t - m_{t-1}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_decay, check_nonnegative
from optjax.base import GradientTransformation, ScalarOrSchedule
from optjax.core import chain
from optjax.flat import flat_ready
from optjax.transforms.adaptive_variants import ScaleByBeliefState
from optjax.transforms.regularization import add_decayed_weights
from optjax.transforms.scaling import scale_by_learning_rate

__all__ = ["acprop", "scale_by_acprop"]


@flat_ready
def scale_by_acprop(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
) -> GradientTransformation:
    r"""Rescale updates by ACProp: the gradient over the centred second moment of the step before.

        m_t = b1 m_{t-1} + (1 - b1) g_t
        u_t = g_t / (sqrt(ŝ_{t-1}) + eps)            ŝ_{t-1} = s_{t-1} / (1 - b2^(t-1)),  ŝ_0 = 1
        s_t = b2 s_{t-1} + (1 - b2) |g_t - m_t|^2 + eps_root

    The denominator uses only what was known before g_t arrived ("asynchronous"), so it is
    independent of the numerator; the first step is g_1 / (1 + eps). The state is AdaBelief's
    (count, mu = m_t, nu = s_t).

    Example:
        >>> tx = optjax.contrib.scale_by_acprop()
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([2.0]), state)     # first step: g itself
        >>> u, state = tx.update(jnp.array([2.0]), state)     # s_1 = (1 - b2) (0.9 * 2)^2
        >>> u.round(4)                                        # 2 / sqrt(3.24)
        Array([1.1111], dtype=float32)

    Reference: Zhuang, Ding, Tang, Dvornek, Tatikonda & Duncan, "Momentum Centering and
    Asynchronous Update for Adaptive Gradient Methods", NeurIPS 2021, Algorithm 2.
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)

    def init(params):
        return ScaleByBeliefState(
            jnp.zeros([], jnp.int32), tree.zeros_like(params), tree.real_wide_zeros_like(params)
        )

    def update(updates, state, params=None):
        del params  # ACProp does not look at the parameters.
        first = state.count == 0
        # s_{t-1} bias-corrected by 1 - b2^(t-1); at t = 1 there is no s_0 and ŝ_0 is 1.
        correction = tree.one_minus_power(b2, jnp.where(first, 1, state.count))

        def ratio(g, s):
            wide = tree.compute_dtype(g.dtype, s.dtype)
            real = jnp.finfo(wide).dtype
            s_hat = jnp.where(first, 1, s.astype(real) / correction.astype(real))
            denominator = jnp.sqrt(s_hat) + jnp.asarray(eps).astype(real)
            return (g.astype(wide) / denominator.astype(wide)).astype(g.dtype)

        new_updates = tree.map_like(ratio, updates, state.nu, names=("updates", "nu"))
        mu = tree.ema(updates, state.mu, b1)

        def centred(g, m, s):
            wide_s = tree.wide(s)
            error = tree.abs_square(tree.wide(g) - tree.wide(m)).astype(wide_s.dtype)
            decay, floor = (jnp.asarray(x).astype(wide_s.dtype) for x in (b2, eps_root))
            return (decay * wide_s + (1 - decay) * error + floor).astype(s.dtype)

        nu = tree.map_like(centred, updates, mu, state.nu, names=("updates", "mu", "nu"))
        count = tree.safe_increment(state.count)
        return new_updates, ScaleByBeliefState(count, mu, nu)

    return GradientTransformation(init, update)


def acprop(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    weight_decay: float = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformation:
    """ACProp (Zhuang et al. 2021): scale_by_acprop, add_decayed_weights (decoupled, scaled by
    the learning rate; ``mask`` selects the decayed leaves), then the learning rate. Update rule:
    see scale_by_acprop.

    Example:
        >>> tx = optjax.contrib.acprop(learning_rate=0.1)
        >>> tx.update(jnp.array([5.0]), tx.init(jnp.zeros(1)), jnp.zeros(1))[0]   # -lr g first
        Array([-0.5], dtype=float32)
    """
    return chain(
        scale_by_acprop(b1=b1, b2=b2, eps=eps, eps_root=eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
