"""Beyond the plain gradient: noisy SGD, optimistic methods (for min-max games) and SGD with
Polyak's step size.

The update rule of each lives on its primitives (see optjax.transforms); the docstring here says
what is chained. Where optax's behaviour is a trap, optjax is right instead (documented inline).
"""

from __future__ import annotations

import jax

from optjax._checks import check_learning_rate
from optjax.base import GradientTransformation, ScalarOrSchedule
from optjax.core import chain
from optjax.transforms.adaptive import scale_by_adam
from optjax.transforms.noise import add_noise
from optjax.transforms.optimistic import scale_by_optimistic_gradient, scale_by_polyak
from optjax.transforms.scaling import scale_by_learning_rate

__all__ = [
    "noisy_sgd",
    "optimistic_adam",
    "optimistic_adam_v2",
    "optimistic_gradient_descent",
    "polyak_sgd",
]


def noisy_sgd(
    learning_rate: ScalarOrSchedule,
    eta: float = 0.01,
    gamma: float = 0.55,
    key: jax.Array | int | None = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    """SGD on gradients with annealed Gaussian noise (Neelakantan et al. 2015): add_noise, then
    the learning rate. ``key`` is a jax.random key or an int seed (``seed=``, its older name).

    Example:
        >>> tx = optjax.noisy_sgd(0.1, eta=0.0, key=0)
        >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]
        Array([-0.2], dtype=float32)
    """
    return chain(add_noise(eta, gamma, key, seed=seed), scale_by_learning_rate(learning_rate))


def optimistic_gradient_descent(
    learning_rate: ScalarOrSchedule,
    alpha: ScalarOrSchedule = 1.0,
    beta: ScalarOrSchedule = 1.0,
) -> GradientTransformation:
    """Optimistic gradient descent (Mokhtari et al. 2020): scale_by_optimistic_gradient, then
    the learning rate: ``x_{t+1} = x_t - lr ((alpha + beta) g_t - beta g_{t-1})``.

    ``alpha`` and ``beta`` may be schedules, as optax's signature says (optax's own step fails
    on one).

    Example:
        >>> tx = optjax.optimistic_gradient_descent(0.1)
        >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]   # first step: -lr alpha g
        Array([-0.2], dtype=float32)
    """
    return chain(
        scale_by_optimistic_gradient(alpha=alpha, beta=beta),
        scale_by_learning_rate(learning_rate),
    )


def optimistic_adam(
    learning_rate: ScalarOrSchedule,
    optimism: ScalarOrSchedule | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype=None,
    *,
    nesterov: bool = True,
) -> GradientTransformation:
    """Optimistic Adam (Daskalakis et al. 2018), optax's first interface: scale_by_adam (with
    Nesterov momentum by default), scale_by_optimistic_gradient with alpha = learning_rate and
    beta = optimism (learning_rate when None), then a descent sign:
    ``u_t = -lr r_t - optimism (r_t - r_{t-1})``, r_t Adam's step.

    `optimistic_adam_v2` is the same algorithm with a learning rate apart from alpha and beta.
    Unlike optax, which deprecates this interface and refuses a schedule here, the learning rate
    (and the optimism) may be schedules.

    Example:
        >>> tx = optjax.optimistic_adam(0.1)
        >>> tx.update(jnp.array([5.0]), tx.init(jnp.zeros(1)))[0]   # -lr sign(g) at first
        Array([-0.1], dtype=float32)
    """
    check_learning_rate("learning_rate", learning_rate)
    if optimism is None:
        optimism = learning_rate
    else:
        check_learning_rate("optimism", optimism)
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(alpha=learning_rate, beta=optimism),
        scale_by_learning_rate(1.0),  # the descent sign
    )


def optimistic_adam_v2(
    learning_rate: ScalarOrSchedule,
    *,
    alpha: ScalarOrSchedule = 1.0,
    beta: ScalarOrSchedule = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype=None,
    nesterov: bool = True,
) -> GradientTransformation:
    """Optimistic Adam (Daskalakis et al. 2018): scale_by_adam (with Nesterov momentum by
    default), scale_by_optimistic_gradient(alpha, beta), then the learning rate:
    ``u_t = -lr ((alpha + beta) r_t - beta r_{t-1})``, r_t Adam's step.

    Example:
        >>> tx = optjax.optimistic_adam_v2(0.1)
        >>> tx.update(jnp.array([5.0]), tx.init(jnp.zeros(1)))[0]   # -lr alpha sign(g) at first
        Array([-0.1], dtype=float32)
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(alpha=alpha, beta=beta),
        scale_by_learning_rate(learning_rate),
    )


def polyak_sgd(
    max_learning_rate: float = 1.0,
    scaling: ScalarOrSchedule = 1.0,
    f_min: float = 0.0,
    eps: float = 0.0,
    variant: str = "sps",
) -> GradientTransformation:
    """SGD with Polyak's step size (Loizou et al. 2021): scale_by_polyak, then ``scaling`` as a
    learning rate: ``u_t = -scaling_t min((f(x_t) - f_min) / (||g_t||^2 + eps),
    max_learning_rate) g_t``. Its update takes the loss as ``value=``.

    optax chains these the other way round, so its Polyak step sees the gradient already
    multiplied by ``scaling``: it takes ``-min(gap / (s ||g||^2 + eps / s), s max_lr) g`` for
    its documented ``-s min(gap / (||g||^2 + eps), max_lr) g``, so a scaling s < 1 makes
    optax's step larger (1 / s times) instead of s times smaller. optjax takes the documented
    step.

    Example:
        >>> tx = optjax.polyak_sgd()
        >>> x = jnp.array([1.0, 2.0])
        >>> loss, g = jax.value_and_grad(lambda x: jnp.sum(x**2))(x)
        >>> tx.update(g, tx.init(x), x, value=loss)[0]   # gamma = 5 / ||2x||^2 = 1/4
        Array([-0.5, -1. ], dtype=float32)
    """
    check_learning_rate("scaling", scaling)
    return chain(
        scale_by_polyak(f_min, max_learning_rate, eps, variant),
        scale_by_learning_rate(scaling),
    )
