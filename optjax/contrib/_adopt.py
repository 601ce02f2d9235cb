"""ADOPT: Adam with the second moment taken before the current gradient enters it, and the
normalised gradient (rather than the raw one) averaged into the momentum.

First moments have the parameter's dtype unless ``mu_dtype`` is given; the second moment has
``nu_dtype``, by default float32 for bf16 and fp16 parameters (b2 = 0.9999 would round to 1 in
bf16). For complex parameters the square is |g|^2 (a real second moment) and the clipping
bounds the modulus of the normalised gradient, keeping its phase.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_decay, check_nonnegative
from optjax.base import GradientTransformation, ScalarOrSchedule
from optjax.core import chain
from optjax.flat import flat_ready
from optjax.transforms.adaptive import ScaleByAdamState
from optjax.transforms.scaling import scale_by_learning_rate

__all__ = ["adopt", "scale_by_adopt"]


def _clip(x: jax.Array, bound: jax.Array) -> jax.Array:
    """``x`` clipped to [-bound, bound]; for a complex x, its modulus clipped to ``bound``."""
    bound = bound.astype(jnp.finfo(x.dtype).dtype)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        modulus = jnp.abs(x)
        shrink = jnp.where(modulus > bound, bound / jnp.where(modulus > bound, modulus, 1), 1)
        return x * shrink.astype(x.dtype)
    return jnp.clip(x, -bound, bound)


@flat_ready
def scale_by_adopt(
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype=None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = lambda x: x**0.25,
    nu_dtype=None,
) -> GradientTransformation:
    r"""Rescale updates by ADOPT's momentum of normalised gradients.

        step 0:   v_0 = g_0^2,  m_0 = 0,  u_0 = 0               (the first gradient only fills v)
        step t:   n_t = clip(g_t / max(sqrt(v_{t-1}), eps), c_t),   c_t = clip_value_fn(t)
                  m_t = b1 m_{t-1} + (1 - b1) n_t
                  v_t = b2 v_{t-1} + (1 - b2) g_t^2
                  u_t = m_t        (nesterov: b1 m_t + (1 - b1) n_t)

    v_{t-1} does not hold g_t, so the normalisation is independent of the gradient it divides:
    that is what lets ADOPT converge for any b2. Without ``use_clipping`` n_t is not clipped;
    the clipping bound c_t = t^(1/4) by default, ``clip_value_fn`` given the step t (0 on the
    first call) as a float.

    Example:
        >>> tx = optjax.contrib.scale_by_adopt(b1=0.5)
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([2.0]), state)     # fills v with 4
        >>> u, state = tx.update(jnp.array([1.0]), state)     # n = 1 / 2, m = 0.5 n
        >>> u
        Array([0.25], dtype=float32)

    Reference: Taniguchi, Harada, Minegishi, Oshima, Jeong, Nagahara, Iiyama, Suzuki, Iwasawa
    & Matsuo, "ADOPT: Modified Adam Can Converge with Any beta2 with the Optimal Rate", NeurIPS
    2024, Algorithm 2 (with clipping).
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)

    def init(params):
        return ScaleByAdamState(
            jnp.zeros([], jnp.int32),
            tree.moment_zeros_like(params, mu_dtype),
            tree.real_wide_zeros_like(params, nu_dtype),
        )

    def update(updates, state, params=None):
        del params  # ADOPT does not look at the parameters.
        first = state.count == 0
        bound = jnp.asarray(clip_value_fn(tree.step_as_float(state.count)))
        nu = tree.ema(updates, state.nu, b2, order=2)
        nu = tree.map_like(  # the first gradient replaces v: v_0 = g_0^2
            lambda fresh, later: jnp.where(first, fresh, later),
            tree.ema(updates, state.nu, 0.0, order=2),
            nu,
        )

        def step(g, m, v):
            wide = tree.compute_dtype(g.dtype, m.dtype)
            v = v.astype(jnp.finfo(wide).dtype)
            n = tree.wide(g).astype(wide) / jnp.maximum(jnp.sqrt(v), eps).astype(wide)
            n = _clip(n, bound) if use_clipping else n
            m_w = m.astype(wide)
            m_new = jnp.where(first, m_w, b1 * m_w + (1 - b1) * n)
            u = jnp.where(first, m_w, b1 * m_new + (1 - b1) * n) if nesterov else m_new
            return u.astype(g.dtype), m_new.astype(m.dtype)

        out = tree.map_like(step, updates, state.mu, state.nu, names=("updates", "mu", "nu"))
        new_updates, mu = tree.unzip(updates, out, 2)
        return new_updates, ScaleByAdamState(tree.safe_increment(state.count), mu, nu)

    return GradientTransformation(init, update)


def adopt(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype=None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = lambda x: x**0.25,
    nu_dtype=None,
) -> GradientTransformation:
    """ADOPT (Taniguchi et al. 2024): scale_by_adopt, then the learning rate. Its first step
    is 0 (the first gradient only fills the second moment).

    Example:
        >>> tx = optjax.contrib.adopt(0.1)
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([3.0]), state)   # fills v: u = 0
        >>> tx.update(jnp.array([3.0]), state)[0].round(4)   # -lr (1 - b1) 3 / 3
        Array([-0.01], dtype=float32)
    """
    return chain(
        scale_by_adopt(
            b1,
            b2,
            eps,
            mu_dtype,
            nesterov=nesterov,
            use_clipping=use_clipping,
            clip_value_fn=clip_value_fn,
            nu_dtype=nu_dtype,
        ),
        scale_by_learning_rate(learning_rate),
    )
