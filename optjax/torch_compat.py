"""torch.optim's optimizers, step for step: the same arguments, defaults and numerics.

Each function takes the keyword arguments of the torch.optim class of the same name in torch
2.13 (all but ``params``, ``foreach``, ``fused``, ``capturable`` and ``differentiable``) and
returns a GradientTransformation whose parameter trajectory matches torch's to float32
precision; tests/golden holds trajectories recorded from torch (tests/golden/record_torch.py)
that prove it. Each is a chain of optjax primitives, the learning rate applied last, so ``lr``
may also be a schedule ``step -> lr`` (step counts from 0, like a torch LambdaLR stepped after
each optimizer step). Invalid arguments raise ValueError naming the argument, the value and the
range allowed. Complex parameters are refused at ``init``, naming the leaf: torch.optim steps a
complex tensor as a pair of real ones, which these presets do not reproduce; optjax's optimizer
of the same name steps them as optax does.

Example:
    >>> tx = optjax.torch_compat.SGD(lr=0.1, momentum=0.9)
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> state = tx.init(params)
    >>> grads = {"w": jnp.array([0.5, 0.5])}
    >>> updates, state = tx.update(grads, state, params)
    >>> optjax.apply_updates(params, updates)["w"]   # p - lr g: torch's momentum starts at g
    Array([ 0.95, -2.05], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from optjax._checks import (
    check_at_least,
    check_at_most,
    check_decay,
    check_learning_rate,
    check_nonnegative,
    check_positive,
    check_unit_interval,
    is_traced,
    is_zero,
)
from optjax._torch_more import ASGD as ASGD
from optjax._torch_more import LBFGS as LBFGS
from optjax._torch_more import ASGDState as ASGDState
from optjax._torch_more import LBFGSState as LBFGSState
from optjax._torch_more import Muon as Muon
from optjax._torch_more import MuonState as MuonState
from optjax._torch_more import Rprop as Rprop
from optjax._torch_more import RpropState as RpropState
from optjax._torch_more import asgd_average as asgd_average
from optjax.base import GradientTransformation, ScalarOrSchedule
from optjax.core import chain, identity
from optjax.transforms.adaptive import (
    scale_by_adadelta,
    scale_by_adam,
    scale_by_adamax,
    scale_by_amsgrad,
    scale_by_radam,
    scale_by_rms,
    scale_by_rss,
    scale_by_stddev,
)
from optjax.transforms.clipping import clip_by_block_rms
from optjax.transforms.factored import scale_by_param_block_rms
from optjax.transforms.momentum import trace
from optjax.transforms.regularization import add_decayed_weights
from optjax.transforms.scaling import scale, scale_by_learning_rate, scale_by_schedule
from optjax.transforms.torch_forms import (
    check_real_params,
    scale_by_factored_rms_torch,
    scale_by_nadam,
)

__all__ = [
    "ASGD",
    "LBFGS",
    "SGD",
    "ASGDState",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "LBFGSState",
    "Muon",
    "MuonState",
    "NAdam",
    "RAdam",
    "RMSprop",
    "Rprop",
    "RpropState",
    "asgd_average",
]

Betas = tuple[float, float]


# Argument checks, named like torch's arguments.


def _check_betas(betas) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got betas={betas!r}")
    check_decay("betas[0]", betas[0])
    check_decay("betas[1]", betas[1])
    return betas[0], betas[1]


def _check_common(lr, eps, weight_decay) -> None:
    check_learning_rate("lr", lr)
    check_nonnegative("eps", eps)
    check_nonnegative("weight_decay", weight_decay)


# The pieces every preset shares.


def _preset(name: str, tx: GradientTransformation) -> GradientTransformation:
    """torch.optim's ``name`` as ``tx``, whose ``init`` first refuses complex leaves
    (`check_real_params`). The update is tx's own, so the preset runs on flat buffers if tx
    does."""

    def init(params):
        check_real_params(params, name)
        return tx.init(params)

    return GradientTransformation(init, tx.update)


def _maximize(maximize: bool) -> GradientTransformation:
    """torch negates the gradient first, before weight decay and every moment."""
    return scale(-1.0) if maximize else identity()


def _l2(weight_decay: float) -> GradientTransformation:
    """``u + wd p``: coupled (L2) decay ahead of the moments, decoupled decay after them."""
    return identity() if is_zero(weight_decay) else add_decayed_weights(weight_decay)


def _weight_decay(weight_decay: float, decoupled: bool):
    """(before, after): wd p added to the gradient, or added to the step, where torch's
    ``p *= 1 - lr wd`` is ``-lr (u + wd p)`` once the learning rate multiplies last."""
    if decoupled:
        return identity(), _l2(weight_decay)
    return _l2(weight_decay), identity()


def _lr_times(lr: ScalarOrSchedule, factor: Callable) -> Callable:
    """The schedule ``t -> lr(t) * factor(t)`` (lr a float or a schedule), t counting from 0."""
    if callable(lr):
        return lambda count: lr(count) * factor(count)
    return lambda count: lr * factor(count)


def SGD(
    lr: ScalarOrSchedule = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""torch.optim.SGD (torch 2.13): weight decay, momentum, then the learning rate.

        g_t <- g_t + wd p_{t-1}
        b_1 = g_1,   b_t = momentum b_{t-1} + (1 - dampening) g_t      (t >= 2)
        u_t = -lr (g_t + momentum b_t)  (nesterov)   or   -lr b_t

    The buffer starts at g_1 undamped, so dampening scales g_t from the second step on (a
    schedule 1, 1 - dampening, 1 - dampening, ... ahead of ``trace``). ``momentum`` must lie
    in [0, 1] and ``dampening`` in [0, 1] (torch checks only momentum >= 0).

    Example:
        >>> tx = optjax.torch_compat.SGD(lr=0.5, momentum=0.5, dampening=0.5)
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([1.0]), state)
        >>> tx.update(jnp.array([1.0]), state)[0]   # -0.5 (0.5 * 1 + 0.5 * 1)
        Array([-0.5], dtype=float32)
    """
    check_learning_rate("lr", lr)
    check_unit_interval("momentum", momentum)
    check_unit_interval("dampening", dampening)
    check_nonnegative("weight_decay", weight_decay)
    known = not (is_traced(momentum) or is_traced(dampening))
    if nesterov and known and (momentum <= 0 or dampening != 0):
        raise ValueError(
            "nesterov=True requires momentum > 0 and dampening = 0, got "
            f"momentum={momentum!r}, dampening={dampening!r}"
        )
    dampen = not (is_zero(momentum) or is_zero(dampening))
    return _preset(
        "SGD",
        chain(
            _maximize(maximize),
            _l2(weight_decay),
            scale_by_schedule(lambda count: jnp.where(count == 0, 1.0, 1.0 - dampening))
            if dampen
            else identity(),
            identity() if is_zero(momentum) else trace(momentum, nesterov),
            scale_by_learning_rate(lr),
        ),
    )


def Adam(
    lr: ScalarOrSchedule = 1e-3,
    betas: Betas = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
) -> GradientTransformation:
    r"""torch.optim.Adam (torch 2.13): scale_by_adam, or scale_by_amsgrad with the maximum of
    the raw second moment, then the learning rate; weight decay added to the gradient, or with
    ``decoupled_weight_decay`` to the step (``p <- p (1 - lr wd)``, as AdamW).

    Example:
        >>> tx = optjax.torch_compat.Adam(lr=0.1)
        >>> tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))[0]   # -lr sign(g) at step 1
        Array([-0.1], dtype=float32)
    """
    b1, b2 = _check_betas(betas)
    _check_common(lr, eps, weight_decay)
    before, after = _weight_decay(weight_decay, decoupled_weight_decay)
    moments = (
        scale_by_amsgrad(b1, b2, eps, max_of_raw_nu=True) if amsgrad else scale_by_adam(b1, b2, eps)
    )
    return _preset(
        "Adam", chain(_maximize(maximize), before, moments, after, scale_by_learning_rate(lr))
    )


def AdamW(
    lr: ScalarOrSchedule = 1e-3,
    betas: Betas = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""torch.optim.AdamW (torch 2.13): Adam with decoupled weight decay, default 1e-2.

    Example:
        >>> tx = optjax.torch_compat.AdamW(lr=0.1, weight_decay=0.5)
        >>> p = jnp.array([2.0])
        >>> tx.update(jnp.array([3.0]), tx.init(p), p)[0]   # -lr (sign(g) + wd p)
        Array([-0.2], dtype=float32)
    """
    return _preset(
        "AdamW",
        Adam(lr, betas, eps, weight_decay, amsgrad, maximize=maximize, decoupled_weight_decay=True),
    )


def NAdam(
    lr: ScalarOrSchedule = 2e-3,
    betas: Betas = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""torch.optim.NAdam (torch 2.13): scale_by_nadam (Dozat's momentum schedule
    ``mu_t = b1 (1 - 0.5 * 0.96^(t momentum_decay))``), then the learning rate; weight decay
    coupled, or decoupled with ``decoupled_weight_decay`` (NAdamW).

    Example:
        >>> tx = optjax.torch_compat.NAdam(lr=0.1)
        >>> tx.update(jnp.array([-2.0]), tx.init(jnp.zeros(1)))[0].round(4)
        Array([0.1056], dtype=float32)
    """
    b1, b2 = _check_betas(betas)
    _check_common(lr, eps, weight_decay)
    check_nonnegative("momentum_decay", momentum_decay)
    before, after = _weight_decay(weight_decay, decoupled_weight_decay)
    return _preset(
        "NAdam",
        chain(
            _maximize(maximize),
            before,
            scale_by_nadam(b1, b2, eps, momentum_decay),
            after,
            scale_by_learning_rate(lr),
        ),
    )


def RAdam(
    lr: ScalarOrSchedule = 1e-3,
    betas: Betas = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""torch.optim.RAdam (torch 2.13): scale_by_radam with torch's eps on the raw second
    moment (``eps_on_raw_nu=True``) and threshold 5, then the learning rate; weight decay
    coupled, or decoupled with ``decoupled_weight_decay``. (torch rectifies where rho_t > 5,
    optjax where rho_t >= 5: the same steps unless some rho_t is exactly 5.)

    Example:
        >>> tx = optjax.torch_compat.RAdam(lr=0.1)
        >>> tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))[0]   # early: -lr m̂_t
        Array([-0.3], dtype=float32)
    """
    b1, b2 = _check_betas(betas)
    _check_common(lr, eps, weight_decay)
    before, after = _weight_decay(weight_decay, decoupled_weight_decay)
    return _preset(
        "RAdam",
        chain(
            _maximize(maximize),
            before,
            scale_by_radam(b1, b2, eps, threshold=5.0, eps_on_raw_nu=True),
            after,
            scale_by_learning_rate(lr),
        ),
    )


def Adagrad(
    lr: ScalarOrSchedule = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""torch.optim.Adagrad (torch 2.13): weight decay, scale_by_rss with eps outside the root,
    then the learning rate ``lr / (1 + (t - 1) lr_decay)`` at step t = 1, 2, ...

    Example:
        >>> tx = optjax.torch_compat.Adagrad(lr=0.5)
        >>> tx.update(jnp.array([-4.0]), tx.init(jnp.zeros(1)))[0]   # -lr g / |g|
        Array([0.5], dtype=float32)
    """
    _check_common(lr, eps, weight_decay)
    check_nonnegative("lr_decay", lr_decay)
    check_nonnegative("initial_accumulator_value", initial_accumulator_value)
    step_size = (
        _lr_times(lr, lambda count: 1.0 / (1.0 + count.astype(jnp.float32) * lr_decay))
        if not is_zero(lr_decay)
        else lr
    )
    return _preset(
        "Adagrad",
        chain(
            _maximize(maximize),
            _l2(weight_decay),
            scale_by_rss(initial_accumulator_value, eps, eps_in_sqrt=False),
            scale_by_learning_rate(step_size),
        ),
    )


def Adadelta(
    lr: ScalarOrSchedule = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""torch.optim.Adadelta (torch 2.13): weight decay, scale_by_adadelta, then the learning
    rate. ``rho`` must lie in [0, 1) (torch also accepts 1, where nothing is averaged).

    Example:
        >>> tx = optjax.torch_compat.Adadelta(rho=0.0, eps=1.0)
        >>> tx.update(jnp.array([1.0]), tx.init(jnp.zeros(1)))[0]   # -sqrt(1) / sqrt(1 + 1)
        Array([-0.70710677], dtype=float32)
    """
    _check_common(lr, eps, weight_decay)
    check_decay("rho", rho)
    return _preset(
        "Adadelta",
        chain(
            _maximize(maximize),
            _l2(weight_decay),
            scale_by_adadelta(rho, eps),
            scale_by_learning_rate(lr),
        ),
    )


def Adamax(
    lr: ScalarOrSchedule = 2e-3,
    betas: Betas = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""torch.optim.Adamax (torch 2.13): weight decay, scale_by_adamax with eps inside the max
    (``u_t = max(b2 u_{t-1}, |g_t| + eps)``), then the learning rate.

    Example:
        >>> tx = optjax.torch_compat.Adamax(lr=0.1, eps=1.0)
        >>> tx.update(jnp.array([1.0]), tx.init(jnp.zeros(1)))[0]   # -lr g / (|g| + eps)
        Array([-0.05], dtype=float32)
    """
    b1, b2 = _check_betas(betas)
    _check_common(lr, eps, weight_decay)
    return _preset(
        "Adamax",
        chain(
            _maximize(maximize),
            _l2(weight_decay),
            scale_by_adamax(b1, b2, eps, eps_in_max=True),
            scale_by_learning_rate(lr),
        ),
    )


def RMSprop(
    lr: ScalarOrSchedule = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""torch.optim.RMSprop (torch 2.13): weight decay, scale_by_rms (scale_by_stddev when
    centered) with eps outside the root, a momentum trace of the scaled gradient, then the
    learning rate. ``alpha`` must lie in [0, 1) and ``momentum`` in [0, 1] (torch checks only
    that both are >= 0).

    Example:
        >>> tx = optjax.torch_compat.RMSprop(lr=0.1, alpha=0.75, eps=0.0)
        >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]   # -lr 2 / sqrt(0.25 * 4)
        Array([-0.2], dtype=float32)
    """
    _check_common(lr, eps, weight_decay)
    check_decay("alpha", alpha)
    check_unit_interval("momentum", momentum)
    scaling = scale_by_stddev if centered else scale_by_rms
    return _preset(
        "RMSprop",
        chain(
            _maximize(maximize),
            _l2(weight_decay),
            scaling(alpha, eps, 0.0, eps_in_sqrt=False),
            identity() if is_zero(momentum) else trace(momentum),
            scale_by_learning_rate(lr),
        ),
    )


def Adafactor(
    lr: ScalarOrSchedule = 1e-2,
    beta2_decay: float = -0.8,
    eps: tuple[float | None, float] = (None, 1e-3),
    d: float = 1.0,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""torch.optim.Adafactor (torch 2.13): torch's factored second moment, update clipping
    at RMS d, the relative step, then decoupled weight decay and the learning rate.

        U_t = G_t / max(sqrt(V̂_t), eps[0])          (scale_by_factored_rms_torch)
        Û_t = U_t / max(1, RMS(U_t) / d)              (clip_by_block_rms)
        p_t = p_{t-1} - min(lr_t, 1/sqrt(t)) max(eps[1], RMS(p_{t-1})) Û_t - lr_t wd p_{t-1}

    The step is written ``-lr_t (min(1, 1/(lr_t sqrt(t))) max(eps[1], RMS(p)) Û_t + wd p)`` so
    that the learning rate multiplies last. ``eps[1]`` must be > 0 (torch also accepts 0).

    Example:
        >>> tx = optjax.torch_compat.Adafactor(lr=0.1)
        >>> p = jnp.full((2, 2), 4.0)
        >>> tx.update(jnp.ones((2, 2)), tx.init(p), p)[0]   # -lr RMS(p) sign(g) at step 1
        Array([[-0.4, -0.4],
               [-0.4, -0.4]], dtype=float32)
    """
    check_learning_rate("lr", lr)
    check_at_most("beta2_decay", beta2_decay, 0)
    if not isinstance(eps, (tuple, list)) or len(eps) != 2:
        raise ValueError(f"eps must be a pair (eps1 or None, eps2), got eps={eps!r}")
    if eps[0] is not None:
        check_nonnegative("eps[0]", eps[0])
    check_positive("eps[1]", eps[1])
    check_at_least("d", d, 1)
    check_nonnegative("weight_decay", weight_decay)

    def relative_step(count):  # min(lr_t, 1/sqrt(t)) / lr_t, t = count + 1
        t = count.astype(jnp.float32) + 1.0
        lr_t = lr(count) if callable(lr) else lr
        return jnp.minimum(1.0, 1.0 / (lr_t * jnp.sqrt(t)))

    return _preset(
        "Adafactor",
        chain(
            _maximize(maximize),
            scale_by_factored_rms_torch(beta2_decay, eps[0]),
            clip_by_block_rms(d),
            scale_by_param_block_rms(eps[1]),
            scale_by_schedule(relative_step),
            _l2(weight_decay),
            scale_by_learning_rate(lr),
        ),
    )
