"""Sign methods: signSGD, Signum and Rprop (see optjax.transforms.sign for the update rules)."""

from __future__ import annotations

from optjax._checks import check_decay
from optjax.base import GradientTransformation, ScalarOrSchedule
from optjax.core import chain
from optjax.transforms.momentum import ema
from optjax.transforms.scaling import scale, scale_by_learning_rate
from optjax.transforms.sign import scale_by_rprop, scale_by_sign

__all__ = [
    "rprop",
    "sign_sgd",
    "signum",
]


def sign_sgd(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    """signSGD (Bernstein et al. 2018): scale_by_sign, then the learning rate,
    ``u_t = -lr sign(g_t)``.

    Example:
        >>> tx = optjax.sign_sgd(0.1)
        >>> tx.update(jnp.array([-3.0, 0.5]), tx.init(jnp.zeros(2)))[0]
        Array([ 0.1, -0.1], dtype=float32)
    """
    return chain(scale_by_sign(), scale_by_learning_rate(learning_rate))


def signum(
    learning_rate: ScalarOrSchedule, beta: float = 0.9, accumulator_dtype=None
) -> GradientTransformation:
    """Signum (Bernstein et al. 2018): momentum as a moving average of the gradients
    ``m_t = beta m_{t-1} + (1 - beta) g_t`` (ema, not debiased: its sign is all that is used),
    scale_by_sign, then the learning rate, ``u_t = -lr sign(m_t)``. ``accumulator_dtype`` is
    m_t's dtype (by default the parameter's).

    Example:
        >>> tx = optjax.signum(0.1, beta=0.5)
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([1.0]), state)       # m = 0.5
        >>> tx.update(jnp.array([-3.0]), state)[0]              # m = 0.25 - 1.5 < 0
        Array([0.1], dtype=float32)
    """
    check_decay("beta", beta)
    return chain(
        ema(beta, debias=False, accumulator_dtype=accumulator_dtype),
        scale_by_sign(),
        scale_by_learning_rate(learning_rate),
    )


def rprop(
    learning_rate: float,
    eta_minus: float = 0.5,
    eta_plus: float = 1.2,
    min_step_size: float = 1e-6,
    max_step_size: float = 50.0,
) -> GradientTransformation:
    """Rprop (Riedmiller & Braun 1993, as iRprop-): scale_by_rprop, then ``scale(-1)``.
    ``learning_rate`` is the initial step size of every coordinate.

    optax 0.2.8's rprop steps with the previous step's update (its first update is 0, and each
    later one lags the gradient by a step); this one steps on the current gradient.

    Example:
        >>> tx = optjax.rprop(0.1)
        >>> tx.update(jnp.array([3.0, -1.0]), tx.init(jnp.zeros(2)))[0]
        Array([-0.1,  0.1], dtype=float32)
    """
    return chain(
        scale_by_rprop(learning_rate, eta_minus, eta_plus, min_step_size, max_step_size),
        scale(-1.0),
    )
