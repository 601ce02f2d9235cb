"""MoMo: momentum methods with a Polyak-type step size from a model of the loss (optax.contrib's
names). Their ``update`` takes the loss at the params as ``value=`` (``chain`` passes it on):
``tx.update(grads, state, params, value=loss)``.

Numerics: the scalars of the model (the loss average f̄, gamma, the lower bound) are kept in
float32 at least (float64 for float64 parameters), where optax keeps them in the parameters'
lowest dtype: in bf16 a loss of 1000.3 is 1000, and the step size is a difference of such
numbers. Inner products over all leaves are formed in float32 at least; for complex leaves they
are those of the real vector of real and imaginary parts, <a, b> = Re sum(conj(a) b), and the
squares are |d|^2. A zero direction (d = 0, or a zero norm) gives no step rather than 0 / 0.

Where optax 0.2.8 is wrong, optjax follows the paper and the authors' code: with weight decay
lambda the step is the proximal one, x_{k+1} = (x_k - tau_k d_k) / (1 + alpha_k lambda); optax
divides only the decay by 1 + alpha_k lambda and takes the full tau_k d_k besides.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import (
    check_decay,
    check_finite,
    check_learning_rate,
    check_nonnegative,
)
from optjax._tree_util import signed_once
from optjax.base import GradientTransformation, ScalarOrSchedule, StepCount, Updates
from optjax.core import with_input_checks
from optjax.flat import flat_ready

__all__ = ["MomoAdamState", "MomoState", "momo", "momo_adam"]


class MomoState(NamedTuple):
    exp_avg: Updates  # d_k, the moving average of the gradients
    barf: Any  # f̄_k, the moving average of the losses (float32 at least)
    gamma: Any  # gamma_k, the moving average of <g_i, x_i> (float32 at least)
    lb: Any  # the lower bound of the loss in use (float32 at least)
    count: StepCount  # int32 scalar: steps taken so far


class MomoAdamState(NamedTuple):
    exp_avg: Updates  # d_k, the moving average of the gradients
    exp_avg_sq: Updates  # v_k, the moving average of |g|^2 (real, float32 at least)
    barf: Any  # f̄_k, the moving average of the losses (float32 at least)
    gamma: Any  # gamma_k, the moving average of <g_i, x_i> (float32 at least)
    lb: Any  # the lower bound of the loss in use (float32 at least)
    count: StepCount  # int32 scalar: steps taken so far


def _arrays(tree_):
    """Python-number leaves (``{"w": 1.0}``, as optax takes them) as arrays of their kind."""
    return jax.tree.map(
        lambda x: jnp.asarray(x, jnp.result_type(x)) if isinstance(x, (int, float)) else x, tree_
    )


def _scalar_dtype(params) -> jnp.dtype:
    """The real dtype of the model's scalars: float32, or wider for wider parameters."""
    dtypes = [jnp.result_type(x) for x in jax.tree.leaves(params)]
    return jnp.dtype(jnp.finfo(tree.compute_dtype(*dtypes)).dtype)


def _as(x, dtype):
    return jnp.asarray(x).astype(dtype)


def _total(per_leaf, dtype) -> jax.Array:
    """The sum of per-leaf values (from `tree.leaf_sum`), in ``dtype``."""
    return sum((jnp.sum(v).astype(dtype) for v in jax.tree.leaves(per_leaf)), jnp.zeros([], dtype))


def _real_product(a, b):
    """``Re(conj(a) b)`` elementwise, in the compute dtype of both."""
    wide = tree.compute_dtype(a.dtype, b.dtype)
    a, b = a.astype(wide), b.astype(wide)
    return (jnp.conj(a) * b).real if jnp.issubdtype(wide, jnp.complexfloating) else a * b


def _inner(a, b, dtype) -> jax.Array:
    """<a, b> = Re sum(conj(a) b) over every leaf, in ``dtype``."""
    return _total(tree.leaf_sum(_real_product, a, b), dtype)


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {name}={value!r}")


def _loss(who: str, params, value):
    if params is None:
        raise ValueError(f"{who} needs params: call update(g, state, params, value=loss)")
    if value is None:
        raise ValueError(
            f"{who} needs the loss at the params: call update(g, state, params, value=loss) "
            "(jax.value_and_grad gives both)"
        )


def _step_size(barf, gamma, iprod, norm, alpha, weight_decay, lb, lower_bound, bc1, adapt):
    """``(tau, new lb)``: the Polyak-type step min(alpha / bc1, gap_+ / norm) of MoMo's model
    ``f̄ + <d, x> - gamma`` clipped below at the lower bound, and the next lower bound (when
    it is adapted). ``bc1`` is the bias correction 1 - b1^k (1 for MoMo's own averages)."""
    c = 1 + alpha * weight_decay
    this_lb = lb
    if adapt:  # a model below the bound means the bound was too high: lower it
        cap = c * (barf - gamma) + iprod
        below = signed_once(cap - c * bc1 * lb) < 0  # cap < c bc1 lb, computed once
        this_lb = jnp.where(below, jnp.maximum(cap / (2 * bc1 * c), lower_bound), lb)
    gap = jnp.maximum(c * (barf - bc1 * this_lb - gamma) + iprod, 0)
    positive = signed_once(norm) > 0  # norm > 0, computed once
    t1 = jnp.where(positive, gap / jnp.where(positive, norm, 1), 0)
    tau = jnp.minimum(alpha / bc1, t1)
    new_lb = lb
    if adapt:
        new_lb = jnp.maximum((barf + iprod - gamma - tau * norm / 2) / bc1, lower_bound)
    return tau, new_lb


def _proximal_step(tau, alpha, weight_decay):
    """``u = -(alpha lambda x + tau d) / (1 + alpha lambda)``: x + u = (x - tau d) / (1 + alpha
    lambda), each leaf formed in float32 at least and rounded to its gradient's dtype."""

    def step(d, x, like):
        wide = tree.compute_dtype(d.dtype, x.dtype, like.dtype)
        decay, t = (_as(v, wide) for v in (alpha * weight_decay, tau))
        return (-(decay * x.astype(wide) + t * d.astype(wide)) / (1 + decay)).astype(like.dtype)

    return step


def _check(learning_rate, lower_bound, weight_decay, adapt_lower_bound):
    check_learning_rate("learning_rate", learning_rate)
    check_finite("lower_bound", lower_bound)
    check_nonnegative("weight_decay", weight_decay)
    _check_bool("adapt_lower_bound", adapt_lower_bound)


@flat_ready
def momo(
    learning_rate: ScalarOrSchedule = 1.0,
    beta: float = 0.9,
    lower_bound: float = 0.0,
    weight_decay: float = 0.0,
    adapt_lower_bound: bool = False,
) -> GradientTransformation:
    r"""SGD with momentum and MoMo's adaptive step size (the loss is passed as ``value=``).

        d_k = beta d_{k-1} + (1 - beta) g_k          f̄_k = beta f̄_{k-1} + (1 - beta) f(x_k)
        gamma_k = beta gamma_{k-1} + (1 - beta) <g_k, x_k>      (at k = 0: d_0 = g_0, f̄_0 = f(x_0),
                                                                 gamma_0 = <g_0, x_0>)
        h_k = (1 + alpha_k lambda) (f̄_k - lb - gamma_k) + <d_k, x_k>
        tau_k = min(alpha_k, max(h_k, 0) / ||d_k||^2)
        x_{k+1} = (x_k - tau_k d_k) / (1 + alpha_k lambda)            u_k = x_{k+1} - x_k

    alpha_k is ``learning_rate`` (a cap on the step: the method needs little tuning of it),
    lambda is ``weight_decay`` and lb ``lower_bound``, a lower bound of the loss (0 for most
    losses). With ``adapt_lower_bound`` the bound is estimated on the fly (the paper's
    MoMo*): lowered to half the model's value where the model drops below it, then set to
    ``max(f̄_k + <d_k, x_k> - gamma_k - tau_k ||d_k||^2 / 2, lower_bound)`` after each step.
    The update includes the step size and the descent sign: apply it as it is.

    Example:
        >>> tx = optjax.contrib.momo()
        >>> f = lambda x: jnp.sum(x**2)
        >>> x = jnp.array([1.0, 2.0, 3.0])
        >>> loss, g = jax.value_and_grad(f)(x)
        >>> tx.update(g, tx.init(x), x, value=loss)[0]   # tau = (14 - 28 + 28) / 56 = 1/4
        Array([-0.5, -1. , -1.5], dtype=float32)

    Reference: Schaipp, Ohana, Eickenberg, Defazio & Gower, "MoMo: Momentum Models for Adaptive
    Learning Rates", ICML 2024 (arXiv 2023), Algorithm 1 (MoMo), Algorithm 5 (MoMo*), and the
    weight-decay variant of its section 3.
    """
    _check(learning_rate, lower_bound, weight_decay, adapt_lower_bound)
    check_decay("beta", beta)

    def init(params):
        params = _arrays(params)
        dtype = _scalar_dtype(params)
        zero = jnp.zeros([], dtype)
        return MomoState(
            tree.zeros_like(params), zero, zero, _as(lower_bound, dtype), jnp.zeros([], jnp.int32)
        )

    def update(updates, state, params=None, *, value=None, **extra_args):
        del extra_args  # optax's signature: other extras are taken and ignored
        _loss("momo", params, value)
        updates, params = _arrays(updates), _arrays(params)
        dtype = state.barf.dtype
        first = state.count == 0  # the averages start from the first values
        bt = jnp.where(first, 0, _as(beta, dtype))
        ct = jnp.where(first, 1, _as(1 - beta, dtype))  # 1 - beta rounded once
        barf = bt * state.barf + ct * _as(value, dtype)
        gamma = bt * state.gamma + ct * _inner(updates, params, dtype)

        def average(g, d):
            wide = tree.compute_dtype(g.dtype, d.dtype)
            return (bt.astype(wide) * d.astype(wide) + ct.astype(wide) * g.astype(wide)).astype(
                d.dtype
            )

        exp_avg = tree.map_like(average, updates, state.exp_avg, names=("updates", "exp_avg"))
        alpha = _as(learning_rate(state.count) if callable(learning_rate) else learning_rate, dtype)
        wd = _as(weight_decay, dtype)
        norm = tree.sum_of_squares(exp_avg).astype(dtype)
        iprod = _inner(exp_avg, params, dtype)
        tau, lb = _step_size(
            barf, gamma, iprod, norm, alpha, wd, state.lb, _as(lower_bound, dtype), 1,
            adapt_lower_bound,
        )  # fmt: skip
        step = _proximal_step(tau, alpha, wd)
        new_updates = tree.map_like(
            step, exp_avg, params, updates, names=("exp_avg", "params", "updates")
        )
        count = tree.safe_increment(state.count)
        return new_updates, MomoState(exp_avg, barf, gamma, lb, count)

    return with_input_checks("momo", GradientTransformation(init, update))


@flat_ready
def momo_adam(
    learning_rate: ScalarOrSchedule = 1e-2,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    lower_bound: float = 0.0,
    weight_decay: float = 0.0,
    adapt_lower_bound: bool = False,
) -> GradientTransformation:
    r"""Adam with MoMo's adaptive step size (the loss is passed as ``value=``).

        d_k = b1 d_{k-1} + (1 - b1) g_k              v_k = b2 v_{k-1} + (1 - b2) |g_k|^2
        f̄_k = b1 f̄_{k-1} + (1 - b1) f(x_k)          gamma_k = b1 gamma_{k-1} + (1 - b1) <g_k, x_k>
        D_k = sqrt(v_k / (1 - b2^k)) + eps           (all averages start at 0; k = 1, 2, ...)
        h_k = (1 + alpha_k lambda) (f̄_k - (1 - b1^k) lb - gamma_k) + <d_k, x_k>
        tau_k = min(alpha_k / (1 - b1^k), max(h_k, 0) / <d_k, d_k / D_k>)
        x_{k+1} = (x_k - tau_k d_k / D_k) / (1 + alpha_k lambda)     u_k = x_{k+1} - x_k

    alpha_k is ``learning_rate``, lambda ``weight_decay`` and lb ``lower_bound``; with
    ``adapt_lower_bound`` the bound is estimated as in `momo`, bias-corrected by 1 - b1^k. Its
    first step is Adam's, -alpha sign(g), unless the model's step is shorter. The update includes
    the step size and the descent sign: apply it as it is.

    Example:
        >>> tx = optjax.contrib.momo_adam()
        >>> f = lambda x: jnp.sum(x**2)
        >>> x = jnp.array([1.0, 2.0, 3.0])
        >>> loss, g = jax.value_and_grad(f)(x)
        >>> tx.update(g, tx.init(x), x, value=loss)[0]   # tau = alpha / (1 - b1): -alpha sign(g)
        Array([-0.01, -0.01, -0.01], dtype=float32)

    Reference: Schaipp, Ohana, Eickenberg, Defazio & Gower, "MoMo: Momentum Models for Adaptive
    Learning Rates", ICML 2024 (arXiv 2023), Algorithm 2 (MoMo-Adam).
    """
    _check(learning_rate, lower_bound, weight_decay, adapt_lower_bound)
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)

    def init(params):
        params = _arrays(params)
        dtype = _scalar_dtype(params)
        zero = jnp.zeros([], dtype)
        return MomoAdamState(
            tree.zeros_like(params),
            tree.real_wide_zeros_like(params),
            zero,
            zero,
            _as(lower_bound, dtype),
            jnp.zeros([], jnp.int32),
        )

    def update(updates, state, params=None, *, value=None, **extra_args):
        del extra_args  # optax's signature: other extras are taken and ignored
        _loss("momo_adam", params, value)
        updates, params = _arrays(updates), _arrays(params)
        dtype = state.barf.dtype
        count = tree.safe_increment(state.count)
        decay, rest = _as(b1, dtype), _as(1 - b1, dtype)  # 1 - b1 rounded once
        barf = decay * state.barf + rest * _as(value, dtype)
        gamma = decay * state.gamma + rest * _inner(updates, params, dtype)
        exp_avg = tree.ema(updates, state.exp_avg, b1)
        exp_avg_sq = tree.ema(updates, state.exp_avg_sq, b2, order=2)
        bc1 = tree.one_minus_power(b1, count).astype(dtype)
        bc2 = tree.one_minus_power(b2, count)

        def scaled(d, v):  # d / D, in the compute dtype; 0 where D = 0 (then d = 0 too)
            wide = tree.compute_dtype(d.dtype, v.dtype)
            real = jnp.finfo(wide).dtype
            denominator = jnp.sqrt(v.astype(real) / bc2.astype(real)) + _as(eps, real)
            safe = jnp.where(denominator > 0, denominator, 1).astype(wide)
            return d.astype(wide) / safe

        direction = tree.map_like(scaled, exp_avg, exp_avg_sq, names=("exp_avg", "exp_avg_sq"))
        alpha = _as(learning_rate(state.count) if callable(learning_rate) else learning_rate, dtype)
        wd = _as(weight_decay, dtype)
        norm = _inner(exp_avg, direction, dtype)
        iprod = _inner(exp_avg, params, dtype)
        tau, lb = _step_size(
            barf, gamma, iprod, norm, alpha, wd, state.lb, _as(lower_bound, dtype), bc1,
            adapt_lower_bound,
        )  # fmt: skip
        step = _proximal_step(tau, alpha, wd)
        new_updates = tree.map_like(
            step, direction, params, updates, names=("direction", "params", "updates")
        )
        return new_updates, MomoAdamState(exp_avg, exp_avg_sq, barf, gamma, lb, count)

    return with_input_checks("momo_adam", GradientTransformation(init, update))
