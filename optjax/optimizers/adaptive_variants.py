"""Adam's variants: AdaBelief, Adan, Yogi, NovoGrad and SM3, with optax's arguments and defaults.

The update rule of each lives on its primitive (see optjax.transforms.adaptive_variants); the
docstring here says what is chained. Where optax 0.2.8 is wrong (Adan's weight on the gradient
difference, SM3 on scalar leaves or with ``momentum=None``, NovoGrad called without params),
optjax is right instead; the primitives' docstrings say how.
"""

from __future__ import annotations

from optjax._checks import check_decay
from optjax.base import GradientTransformation, ScalarOrSchedule
from optjax.core import chain
from optjax.transforms.adaptive_variants import (
    scale_by_adan,
    scale_by_belief,
    scale_by_novograd,
    scale_by_sm3,
    scale_by_yogi,
)
from optjax.transforms.regularization import add_decayed_weights
from optjax.transforms.scaling import scale_by_learning_rate

__all__ = ["adabelief", "adan", "novograd", "sm3", "yogi"]


def adabelief(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """AdaBelief (Zhuang et al. 2020): scale_by_belief, then the learning rate.

    The defaults are optax's; the paper's are ``eps=1e-8, eps_root=0.0``.
    """
    return chain(
        scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )


def adan(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 1e-8,
    weight_decay: float = 0.0,
    mask=None,
) -> GradientTransformation:
    """Adan (Xie et al. 2022): scale_by_adan, add_decayed_weights, then the learning rate.

    The weight decay is decoupled, ``p <- (1 - lr wd) p - lr u`` (the authors' ``no_prox=True``;
    the paper's proximal form divides by ``1 + lr wd`` instead, the same to first order).
    ``mask`` selects the leaves that are decayed.

    Example:
        >>> tx = optjax.adan(0.1)
        >>> tx.update(jnp.array([5.0]), tx.init(jnp.zeros(1)), jnp.zeros(1))[0].round(2)
        Array([-0.1], dtype=float32)
    """
    return chain(
        scale_by_adan(b1, b2, b3, eps, eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def yogi(
    learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-3
) -> GradientTransformation:
    """Yogi (Zaheer et al. 2018): scale_by_yogi, then the learning rate."""
    return chain(scale_by_yogi(b1, b2, eps), scale_by_learning_rate(learning_rate))


def novograd(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """NovoGrad (Ginsburg et al. 2019): scale_by_novograd (which adds the weight decay to the
    normalized gradient), then the learning rate. With ``weight_decay=0`` it needs no params."""
    return chain(
        scale_by_novograd(b1, b2, eps, eps_root, weight_decay),
        scale_by_learning_rate(learning_rate),
    )


def sm3(learning_rate: ScalarOrSchedule, momentum: float | None = 0.9) -> GradientTransformation:
    """SM3 (Anil et al. 2019): scale_by_sm3 with ``b1=momentum``, then the learning rate.

    ``momentum=None`` uses no momentum (optax 0.2.8 documents this but fails on it). The
    learning rate may be a schedule here (optax's sm3 takes only a number).

    Example:
        >>> tx = optjax.sm3(0.5)
        >>> tx.update(jnp.array(3.0), tx.init(jnp.array(1.0)))[0]   # a scalar leaf works
        Array(-0.05, dtype=float32)
    """
    if momentum is not None:
        check_decay("momentum", momentum)
    return chain(
        scale_by_sm3(0.0 if momentum is None else momentum), scale_by_learning_rate(learning_rate)
    )
