"""MADGRAD: momentumized, adaptive, dual-averaged gradient descent (optax.contrib's names).

Numerics: the weighted sums G_k (of |g|^2, real) and s_k (of g) are kept in float32 for bf16 and
fp16 parameters (`tree.wide_zeros_like`: a sum that grows every step freezes in bf16), and x_0
in the parameters' own dtype; lambda_k = (lr + eps) sqrt(k + 1) is formed from the step count as
a float, so a saturated int32 count gives a finite step (optax's ``sqrt(count + 1)`` wraps to
sqrt(-2^31) = NaN there). The step ``(1 - momentum) (z_{k+1} - x_k)`` is formed in float32 at
least and rounded once. With ``eps = 0`` an entry whose gradients were all 0 keeps
z = x_0 (s = 0 over a zero cube root: optax divides 0 by 0 there).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_decay, check_learning_rate, check_nonnegative
from optjax.base import GradientTransformation, Params, ScalarOrSchedule, StepCount, Updates
from optjax.core import chain
from optjax.flat import flat_ready
from optjax.transforms.regularization import add_decayed_weights

__all__ = ["MadgradState", "madgrad", "scale_by_madgrad"]


class MadgradState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far (k)
    grad_sum_sq: Updates  # G_k = sum_i lambda_i |g_i|^2, real
    s: Updates  # s_k = sum_i lambda_i g_i
    x0: Params  # the initial parameters x_0


@flat_ready
def scale_by_madgrad(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.9,
    eps: float = 1e-6,
) -> GradientTransformation:
    r"""MADGRAD's step: dual averaging with a cube-root adaptive scale, then momentum.

        lambda_k = (lr_k + eps) sqrt(k + 1)                    k = 0, 1, ... the step count
        s_{k+1} = s_k + lambda_k g_k                           G_{k+1} = G_k + lambda_k |g_k|^2
        z_{k+1} = x_0 - s_{k+1} / (G_{k+1}^{1/3} + eps)
        u_k = (1 - momentum) (z_{k+1} - x_k)                   so x_{k+1} = momentum x_k
                                                                         + (1 - momentum) z_{k+1}

    The update includes the learning rate and the descent sign: apply it as it is. ``update``
    needs the params. eps is added to the learning rate too, as the authors' PyTorch code does.
    ``momentum = 0`` steps to z_{k+1} itself.

    Example:
        >>> tx = optjax.contrib.scale_by_madgrad(learning_rate=8.0, eps=0.0)
        >>> x = jnp.array([1.0])
        >>> u, _ = tx.update(jnp.array([1.0]), tx.init(x), x)
        >>> u   # lambda = 8, s = 8, G = 8: z = 1 - 8 / 2 = -3, u = 0.1 (z - x)
        Array([-0.4], dtype=float32)

    Reference: Defazio & Jelassi, "Adaptivity without Compromise: A Momentumized, Adaptive, Dual
    Averaged Gradient Method for Stochastic Optimization", JMLR 2022 (arXiv 2021), Algorithm 1.
    """
    check_learning_rate("learning_rate", learning_rate)
    check_decay("momentum", momentum)
    check_nonnegative("eps", eps)

    def init(params):
        return MadgradState(
            jnp.zeros([], jnp.int32),
            tree.real_wide_zeros_like(params),
            tree.wide_zeros_like(params),
            jax.tree.map(jnp.copy, params),
        )

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_madgrad needs params: call update(g, state, params)")
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        k = tree.step_as_float(state.count)  # a float: k + 1 cannot wrap at the largest int32
        lamb = (jnp.asarray(lr).astype(k.dtype) + jnp.asarray(eps).astype(k.dtype)) * jnp.sqrt(
            k + 1
        )

        def add(total, x):
            wide = tree.compute_dtype(total.dtype)
            return (total.astype(wide) + lamb.astype(wide) * x).astype(total.dtype)

        grad_sum_sq = tree.map_like(
            lambda g, G: add(G, tree.abs_square(g).astype(G.dtype)),
            updates,
            state.grad_sum_sq,
            names=("updates", "grad_sum_sq"),
        )
        s = tree.map_like(
            lambda g, s: add(s, g.astype(s.dtype)), updates, state.s, names=("updates", "s")
        )

        def step(g, G, s, x0, x):
            wide = tree.compute_dtype(g.dtype, s.dtype, x.dtype)
            real = jnp.finfo(wide).dtype
            sigma = jnp.cbrt(G.astype(real)) + jnp.asarray(eps).astype(real)
            # G = 0 only where every lambda g was 0, so s = 0 there too: z = x_0 (not 0 / 0).
            ratio = s.astype(wide) / jnp.where(sigma > 0, sigma, 1).astype(wide)
            z = x0.astype(wide) - ratio
            c = 1 - jnp.asarray(momentum).astype(wide)
            return (c * (z - x.astype(wide))).astype(g.dtype)

        new_updates = tree.map_like(
            step,
            updates,
            grad_sum_sq,
            s,
            state.x0,
            params,
            names=("updates", "grad_sum_sq", "s", "x0", "params"),
        )
        count = tree.safe_increment(state.count)
        return new_updates, MadgradState(count, grad_sum_sq, s, state.x0)

    return GradientTransformation(init, update)


def madgrad(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    eps: float = 1e-6,
) -> GradientTransformation:
    """MADGRAD (Defazio & Jelassi 2021): add_decayed_weights (L2, added to the gradient as the
    authors' default does), then scale_by_madgrad, whose update already carries the learning
    rate and the descent sign. Update rule: see scale_by_madgrad.

    Example:
        >>> tx = optjax.contrib.madgrad(learning_rate=8.0, eps=0.0)
        >>> x = jnp.array([1.0])
        >>> tx.update(jnp.array([1.0]), tx.init(x), x)[0]
        Array([-0.4], dtype=float32)
    """
    return chain(
        add_decayed_weights(weight_decay),
        scale_by_madgrad(learning_rate=learning_rate, momentum=momentum, eps=eps),
    )
