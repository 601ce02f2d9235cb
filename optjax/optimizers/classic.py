"""The classic canon: SGD, Adagrad, Adadelta, RMSprop, the Adam family, Lion and Adafactor.

The update rule of each lives on its primitives (see optjax.transforms); the docstring here says
what is chained. Where optax's behaviour is a trap, optjax is right instead (documented inline).
"""

from __future__ import annotations

import jax.numpy as jnp

from optjax import tree
from optjax._checks import (
    check_integer,
    check_nonnegative,
    check_positive,
    check_unit_interval,
)
from optjax.base import GradientTransformation, ScalarOrSchedule
from optjax.core import chain, identity
from optjax.transforms.adaptive import (
    scale_by_adadelta,
    scale_by_adam,
    scale_by_adamax,
    scale_by_amsgrad,
    scale_by_lion_single_read,
    scale_by_radam,
    scale_by_rms,
    scale_by_rss,
    scale_by_stddev,
)
from optjax.transforms.factored import (
    scale_by_factored_rms,
    scale_by_factored_rms_clipped,
    scale_by_param_block_rms,
)
from optjax.transforms.momentum import ema, trace
from optjax.transforms.regularization import add_decayed_weights
from optjax.transforms.scaling import scale, scale_by_learning_rate, scale_by_schedule

__all__ = [
    "adadelta",
    "adafactor",
    "adafactor_relative_step",
    "adagrad",
    "adam",
    "adamax",
    "adamaxw",
    "adamw",
    "amsgrad",
    "lion",
    "nadam",
    "nadamw",
    "radam",
    "rmsprop",
    "sgd",
]


def _mask_alias(mask, weight_decay_mask):
    """The weight-decay mask, given as ``mask`` or by optax's older name ``weight_decay_mask``."""
    if mask is not None and weight_decay_mask is not None:
        raise ValueError(
            "give the weight-decay mask once, as mask (weight_decay_mask is its older name); "
            f"got mask={mask!r} and weight_decay_mask={weight_decay_mask!r}"
        )
    return weight_decay_mask if mask is None else mask


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float | None = None,
    nesterov: bool = False,
    accumulator_dtype=None,
) -> GradientTransformation:
    """Stochastic gradient descent, with heavy-ball or Nesterov momentum: trace, then the
    learning rate.

    Example:
        >>> tx = optjax.sgd(0.1, momentum=0.9)
        >>> tx.update(jnp.array([1.0]), tx.init(jnp.zeros(1)))[0]
        Array([-0.1], dtype=float32)
    """
    if momentum is not None:
        check_unit_interval("momentum", momentum)
    return chain(
        trace(momentum, nesterov, accumulator_dtype) if momentum is not None else identity(),
        scale_by_learning_rate(learning_rate),
    )


def adagrad(
    learning_rate: ScalarOrSchedule, initial_accumulator_value: float = 0.1, eps: float = 1e-7
) -> GradientTransformation:
    """Adagrad (Duchi et al. 2011): scale_by_rss, then the learning rate."""
    return chain(
        scale_by_rss(initial_accumulator_value, eps), scale_by_learning_rate(learning_rate)
    )


def adadelta(
    learning_rate: ScalarOrSchedule = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    mask=None,
    *,
    weight_decay_mask=None,
) -> GradientTransformation:
    """Adadelta (Zeiler 2012): coupled weight decay, scale_by_adadelta, then the learning rate.

    ``mask`` selects the leaves that are decayed, as for every optimizer with weight decay
    (``weight_decay_mask``, optax's name here, is accepted too).

    The default learning rate is 1.0 (the paper's algorithm, and torch's default), so the
    default optimizer descends; optax's default of None leaves the sign unflipped and ascends.

    Example:
        >>> tx = optjax.adadelta()
        >>> bool(tx.update(jnp.array([1.0]), tx.init(jnp.zeros(1)), jnp.zeros(1))[0][0] < 0)
        True
    """
    return chain(
        add_decayed_weights(weight_decay, _mask_alias(mask, weight_decay_mask)),
        scale_by_adadelta(rho, eps),
        scale_by_learning_rate(learning_rate),
    )


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: float | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> GradientTransformation:
    """RMSprop (Tieleman & Hinton 2012): scale_by_rms (or scale_by_stddev when centered), the
    learning rate, then an optional momentum trace."""
    if momentum is not None:
        check_unit_interval("momentum", momentum)
    scaling = scale_by_stddev if centered else scale_by_rms
    return chain(
        scaling(decay, eps, initial_scale, eps_in_sqrt, bias_correction),
        scale_by_learning_rate(learning_rate),
        trace(momentum, nesterov) if momentum is not None else identity(),
    )


def adam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype=None,
    *,
    nesterov: bool = False,
    nu_dtype=None,
) -> GradientTransformation:
    """Adam (Kingma & Ba 2014): scale_by_adam, then the learning rate.

    ``mu_dtype`` and ``nu_dtype`` choose the moments' dtypes: by default m has the parameter's
    dtype and v float32 for bf16 and fp16 parameters (see scale_by_adam).

    Example:
        >>> tx = optjax.adam(1e-3)
        >>> tx.update(jnp.array([5.0]), tx.init(jnp.zeros(1)))[0].round(6)
        Array([-0.001], dtype=float32)
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype=None,
    weight_decay: float = 1e-4,
    mask=None,
    *,
    nesterov: bool = False,
    nu_dtype=None,
) -> GradientTransformation:
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): scale_by_adam,
    add_decayed_weights, then the learning rate."""
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def nadam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype=None,
    *,
    nu_dtype=None,
) -> GradientTransformation:
    """NAdam (Dozat 2016): scale_by_adam(nesterov=True), then the learning rate. For torch's
    momentum-decay schedule use optjax.torch_compat.NAdam."""
    return adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=True, nu_dtype=nu_dtype)


def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype=None,
    weight_decay: float = 1e-4,
    mask=None,
    *,
    nu_dtype=None,
) -> GradientTransformation:
    """NAdam with decoupled weight decay: adamw with nesterov=True."""
    return adamw(
        learning_rate,
        b1,
        b2,
        eps,
        eps_root,
        mu_dtype,
        weight_decay,
        mask,
        nesterov=True,
        nu_dtype=nu_dtype,
    )


def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype=None,
    *,
    nu_dtype=None,
) -> GradientTransformation:
    """AMSGrad (Reddi et al. 2018): scale_by_amsgrad, then the learning rate."""
    return chain(
        scale_by_amsgrad(b1, b2, eps, eps_root, mu_dtype, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


def adamax(
    learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> GradientTransformation:
    """Adamax (Kingma & Ba 2014, Section 7.1): scale_by_adamax, then the learning rate."""
    return chain(scale_by_adamax(b1, b2, eps), scale_by_learning_rate(learning_rate))


def adamaxw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    mask=None,
) -> GradientTransformation:
    """Adamax with decoupled weight decay: scale_by_adamax, add_decayed_weights, then the
    learning rate."""
    return chain(
        scale_by_adamax(b1, b2, eps),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def radam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """Rectified Adam (Liu et al. 2020): scale_by_radam, then the learning rate."""
    return chain(
        scale_by_radam(b1, b2, eps, eps_root, threshold, nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )


def lion(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype=None,
    weight_decay: float = 1e-3,
    mask=None,
) -> GradientTransformation:
    """Lion (Chen et al. 2023): scale_by_lion, add_decayed_weights, then the learning rate."""
    return chain(
        scale_by_lion_single_read(b1, b2, mu_dtype),  # scale_by_lion's step, one read of m
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def adafactor_relative_step(count):
    """Adafactor's relative step size ``rho_t = min(1e-2, 1 / sqrt(t))`` at zero-based step."""
    return jnp.minimum(1e-2, 1.0 / jnp.sqrt(tree.step_as_float(count) + 1))  # no int32 wrap


def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: float = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: float | None = 1.0,
    momentum: float | None = None,
    dtype_momentum=jnp.float32,
    weight_decay_rate: float | None = None,
    eps: float = 1e-30,
    factored: bool = True,
    mask=None,
    *,
    weight_decay_mask=None,
) -> GradientTransformation:
    """Adafactor (Shazeer & Stern 2018): scale_by_factored_rms (with its update clipping), the step
    size, scale_by_param_block_rms, optional momentum and weight decay, then a descent sign.

    With ``learning_rate=None`` the step size is the paper's relative step
    ``min(1e-2, 1/sqrt(t))`` (optax instead applies no step size at all, a step as large as
    the parameters themselves). ``mask`` selects the leaves that are decayed
    (``weight_decay_mask``, optax's name here, is accepted too).
    """
    mask = _mask_alias(mask, weight_decay_mask)
    check_integer("decay_offset", decay_offset)
    check_nonnegative("eps", eps)
    check_nonnegative("decay_rate", decay_rate)
    if clipping_threshold is not None:
        check_positive("clipping_threshold", clipping_threshold)
    if momentum is not None:
        check_unit_interval("momentum", momentum)
    if weight_decay_rate is not None:
        check_nonnegative("weight_decay_rate", weight_decay_rate)
    factored_args = (factored, decay_rate, decay_offset, min_dim_size_to_factor, eps)
    factored_rms = (
        scale_by_factored_rms(*factored_args)
        if clipping_threshold is None  # else with clip_by_block_rms folded in: fewer passes
        else scale_by_factored_rms_clipped(clipping_threshold, *factored_args)
    )
    step_size = (
        scale_by_schedule(adafactor_relative_step)
        if learning_rate is None
        else scale_by_learning_rate(learning_rate, flip_sign=False)
    )
    return chain(
        factored_rms,
        step_size,
        scale_by_param_block_rms() if multiply_by_parameter_scale else identity(),
        ema(momentum, debias=False, accumulator_dtype=dtype_momentum)
        if momentum is not None
        else identity(),
        add_decayed_weights(weight_decay_rate, mask)
        if weight_decay_rate is not None
        else identity(),
        scale(-1.0),
    )
