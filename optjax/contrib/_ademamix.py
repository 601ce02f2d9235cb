"""AdEMAMix (Adam with a mixture of a fast and a very slow momentum) and its simplified form
(one momentum, a sum rather than an average, mixed with the current gradient).

First moments have the parameter's dtype unless ``mu_dtype`` is given, except AdEMAMix's slow
one, which is float32 for bf16 and fp16 parameters (with b3 = 0.9999 a bf16 average cannot move:
b3 itself rounds to 1 there). Second moments have ``nu_dtype``, by default float32 for bf16 and
fp16 parameters. For complex parameters the square is |g|^2 (a real second moment). The decays
and mixing coefficients are applied in float32 at least.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_decay, check_nonnegative, check_value
from optjax.base import GradientTransformation, ScalarOrSchedule, StepCount, Updates
from optjax.core import chain
from optjax.flat import flat_ready
from optjax.transforms.regularization import add_decayed_weights
from optjax.transforms.scaling import scale_by_learning_rate

__all__ = [
    "ScaleByAdemamixState",
    "ScaleBySimplifiedAdEMAMixState",
    "ademamix",
    "scale_by_ademamix",
    "scale_by_simplified_ademamix",
    "simplified_ademamix",
]


class ScaleByAdemamixState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far (fast moment and second moment)
    count_m2: StepCount  # int32 scalar: steps taken so far (the schedules of b3 and alpha)
    m1: Updates  # fast EMA of the gradients
    m2: Updates  # slow EMA of the gradients
    nu: Updates  # EMA of |g|^2


class ScaleBySimplifiedAdEMAMixState(NamedTuple):
    t: StepCount  # int32 scalar: steps taken so far
    m: Updates  # momentum sum m_t = b1 m_{t-1} + g_t
    n: Updates  # EMA of |g|^2


def _as(value, dtype):
    """A hyperparameter in ``dtype``: a Python number stays one (exact, weakly typed)."""
    return value if isinstance(value, (int, float)) else jnp.asarray(value).astype(dtype)


def _real(dtype) -> jnp.dtype:
    return jnp.dtype(jnp.finfo(dtype).dtype)


def _check_decay_or_schedule(name: str, value) -> None:
    check_value(name, value, lambda x: 0 <= x < 1, "in [0, 1) or a schedule", schedule=True)


def _check_alpha(value) -> None:
    check_value("alpha", value, lambda x: x >= 0, "a number >= 0 or a schedule", schedule=True)


@flat_ready
def scale_by_ademamix(
    b1: float = 0.9,
    b2: float = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 6.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype=None,
    *,
    nu_dtype=None,
) -> GradientTransformation:
    r"""Rescale updates by AdEMAMix's mixture of a fast and a slow momentum.

        m1_t = b1 m1_{t-1} + (1 - b1) g_t         m̂1_t = m1_t / (1 - b1^t)    (fast)
        m2_t = b3 m2_{t-1} + (1 - b3) g_t         (slow: not bias-corrected, it fills slowly)
        v_t = b2 v_{t-1} + (1 - b2) g_t^2         v̂_t = v_t / (1 - b2^t)
        u_t = (m̂1_t + alpha m2_t) / (sqrt(v̂_t + eps_root) + eps)

    ``b3`` and ``alpha`` may be schedules of the step count (0 on the first step), as the paper
    warms them up. m2 is float32 for bf16 and fp16 parameters (see the module doc).

    Example:
        >>> tx = optjax.contrib.scale_by_ademamix(b3=0.5, alpha=2.0)
        >>> u, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
        >>> u.round(4)   # m̂1 / sqrt(v̂) = 1, alpha m2 / sqrt(v̂) = 2 * 1.5 / 3
        Array([2.], dtype=float32)

    Reference: Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older",
    2024, Algorithm 1.
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    _check_decay_or_schedule("b3", b3)
    _check_alpha(alpha)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)

    def init(params):
        def slow(p):  # float32 for bf16 and fp16 params, unless mu_dtype says otherwise
            return jnp.zeros_like(p, tree.moment_dtype(p, tree.wide_dtype(p, mu_dtype)))

        return ScaleByAdemamixState(
            jnp.zeros([], jnp.int32),
            jnp.zeros([], jnp.int32),
            tree.moment_zeros_like(params, mu_dtype),
            jax.tree.map(slow, params),
            tree.real_wide_zeros_like(params, nu_dtype),
        )

    def update(updates, state, params=None):
        del params  # AdEMAMix does not look at the parameters.
        c_b3 = b3(state.count_m2) if callable(b3) else b3
        c_alpha = alpha(state.count_m2) if callable(alpha) else alpha
        count = tree.safe_increment(state.count)
        nu = tree.ema(updates, state.nu, b2, order=2)
        m1_correction = tree.one_minus_power(b1, count)
        nu_correction = tree.one_minus_power(b2, count)

        def step(g, m1, m2, v):
            wide = tree.compute_dtype(g.dtype, m1.dtype, m2.dtype)
            real = _real(wide)
            g_w, decay = g.astype(wide), _as(c_b3, wide)
            m1_new = b1 * m1.astype(wide) + (1 - b1) * g_w
            m2_new = decay * m2.astype(wide) + (1 - decay) * g_w
            m1_hat = m1_new / m1_correction.astype(wide)
            v_hat = v.astype(real) / nu_correction.astype(real)
            denominator = jnp.sqrt(v_hat + eps_root) + eps
            u = (m1_hat + _as(c_alpha, wide) * m2_new) / denominator.astype(wide)
            return u.astype(g.dtype), m1_new.astype(m1.dtype), m2_new.astype(m2.dtype)

        out = tree.map_like(
            step, updates, state.m1, state.m2, nu, names=("updates", "m1", "m2", "nu")
        )
        new_updates, m1, m2 = tree.unzip(updates, out, 3)
        count_m2 = tree.safe_increment(state.count_m2)
        return new_updates, ScaleByAdemamixState(count, count_m2, m1, m2, nu)

    return GradientTransformation(init, update)


def ademamix(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 5.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype=None,
    weight_decay: float = 0.0,
    mask=None,
    *,
    nu_dtype=None,
) -> GradientTransformation:
    """AdEMAMix (Pagliardini et al. 2024): scale_by_ademamix, decoupled weight decay
    (add_decayed_weights, ``mask`` selecting the decayed leaves), then the learning rate.

    Example:
        >>> tx = optjax.contrib.ademamix(0.1, alpha=2.0, b3=0.5)
        >>> tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)), jnp.zeros(1))[0].round(4)
        Array([-0.2], dtype=float32)
    """
    return chain(
        scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, mu_dtype, nu_dtype=nu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@flat_ready
def scale_by_simplified_ademamix(
    b1: float = 0.99,
    b2: float = 0.95,
    alpha: ScalarOrSchedule = 0.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    *,
    mu_dtype=None,
    nu_dtype=None,
) -> GradientTransformation:
    r"""Rescale updates by Simplified AdEMAMix: a momentum sum mixed with the current gradient.

        m_t = b1 m_{t-1} + g_t                       (a sum: no 1 - b1, no bias correction)
        v_t = b2 v_{t-1} + (1 - b2) g_t^2            v̂_t = v_t / (1 - b2^t)
        u_t = (m_t + alpha g_t) / (sqrt(v̂_t + eps_root) + eps)

    ``alpha`` may be a schedule of the step count (0 on the first step). With alpha = 0 this is
    Adam without the first moment's bias correction, its steps 1 / (1 - b1) times larger.

    Example:
        >>> tx = optjax.contrib.scale_by_simplified_ademamix(b1=0.5, alpha=1.0)
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([2.0]), state)     # (2 + 2) / 2
        >>> u, tx.update(jnp.array([2.0]), state)[0]          # (2 + 0.5 * 2 + 2) / 2
        (Array([2.], dtype=float32), Array([2.5], dtype=float32))

    Reference: Morwani, Vyas, Ko, Janson, Kakade et al., "Connections between Schedule-Free
    Optimizers, AdEMAMix, and Accelerated SGD Variants", 2025.
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    _check_alpha(alpha)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)

    def init(params):
        return ScaleBySimplifiedAdEMAMixState(
            jnp.zeros([], jnp.int32),
            tree.moment_zeros_like(params, mu_dtype),
            tree.real_wide_zeros_like(params, nu_dtype),
        )

    def update(updates, state, params=None):
        del params  # Simplified AdEMAMix does not look at the parameters.
        c_alpha = alpha(state.t) if callable(alpha) else alpha
        t = tree.safe_increment(state.t)
        n = tree.ema(updates, state.n, b2, order=2)
        correction = tree.one_minus_power(b2, t)

        def step(g, m, v):
            wide = tree.compute_dtype(g.dtype, m.dtype)
            real = _real(wide)
            g_w = g.astype(wide)
            m_new = b1 * m.astype(wide) + g_w
            denominator = jnp.sqrt(v.astype(real) / correction.astype(real) + eps_root) + eps
            u = (m_new + _as(c_alpha, wide) * g_w) / denominator.astype(wide)
            return u.astype(g.dtype), m_new.astype(m.dtype)

        out = tree.map_like(step, updates, state.m, n, names=("updates", "m", "n"))
        new_updates, m = tree.unzip(updates, out, 2)
        return new_updates, ScaleBySimplifiedAdEMAMixState(t, m, n)

    return GradientTransformation(init, update)


def simplified_ademamix(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.99,
    b2: float = 0.95,
    alpha: ScalarOrSchedule = 0.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mask=None,
    *,
    mu_dtype=None,
    nu_dtype=None,
) -> GradientTransformation:
    """Simplified AdEMAMix (Morwani et al. 2025): scale_by_simplified_ademamix, decoupled weight
    decay (add_decayed_weights), then the learning rate.

    Example:
        >>> tx = optjax.contrib.simplified_ademamix(0.1)
        >>> tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)), jnp.zeros(1))[0].round(4)
        Array([-0.1], dtype=float32)
    """
    return chain(
        scale_by_simplified_ademamix(
            b1, b2, alpha, eps, eps_root, mu_dtype=mu_dtype, nu_dtype=nu_dtype
        ),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
