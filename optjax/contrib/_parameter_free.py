"""Learning-rate-free methods: Prodigy, D-Adaptation (AdamW), DoG, DoWG, layer-wise DoG and COCOB.

Each estimates the step size from what it sees (a distance travelled from the initial point, sums
of gradient norms, a bettor's wealth), so the ``learning_rate`` left to the user is a multiplier
around 1 (a schedule, e.g. a warmup and decay from 1.0). Mechanic, which tunes the scale of any
other optimizer, is `optjax.contrib.mechanize`.

Numerics: the global scalars (distance estimates, sums of norms, inner products, the step size)
are formed and kept in `tree.scalar_dtype` (float32 at least, float64 under ``jax_enable_x64``),
so bf16 or fp16 parameters never round a decay of 0.9995 to 1 or a sum of squares to inf. Slow
averages and sums per parameter (Prodigy's and D-Adaptation's s_t, COCOB's sums) are kept in
float32 for bf16 and fp16 parameters (`tree.wide_zeros_like`), second moments of |g|^2 likewise
(real for complex parameters); first moments keep the parameter's dtype, except Prodigy's and
D-Adaptation's m_t, averages of gradients scaled by d_t (1e-6 at first), which are float32 for
fp16 parameters (in fp16 they would flush to 0, and every step with them). Where a ratio's
denominator can be 0 (a zero gradient at the first step, eps = 0), the ratio is taken as 0:
the step is 0, not NaN. Copies of the initial parameters keep the parameters' dtype (layer-wise
DoG's has ``param_dtype``, as optax's). Sums over all leaves keep the flat layout's padding out
(optjax.flat), so every transform here runs on flat buffers as it does on trees.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import (
    check_choice,
    check_decay,
    check_finite,
    check_learning_rate,
    check_nonnegative,
    check_positive,
    is_traced,
    is_zero,
)
from optjax.base import GradientTransformation, Params, ScalarOrSchedule, StepCount, Updates
from optjax.core import _ExpectedState, _numbers_as_arrays, chain, extra_args_filter, identity
from optjax.flat import FlatBuffers, flat_ready
from optjax.transforms.regularization import add_decayed_weights
from optjax.transforms.scaling import scale_by_learning_rate

__all__ = [
    "COCOBState",
    "DAdaptAdamWState",
    "DoGState",
    "DoWGState",
    "ProdigyState",
    "ScaleByDistanceOverGradientsState",
    "cocob",
    "dadapt_adamw",
    "dog",
    "dowg",
    "prodigy",
    "scale_by_cocob",
    "scale_by_distance_over_gradients",
    "scale_by_dog",
    "scale_by_dowg",
]


# Shared helpers: scalars, sums over every leaf, and guarded ratios.


def _scalar(x) -> jax.Array:
    """A hyperparameter or a global scalar as a `tree.scalar_dtype` array."""
    return jnp.asarray(x, tree.scalar_dtype())


def _like(c, x: jax.Array):
    """``c`` (a Python number, or an array: a traced or injected hyperparameter, a global scalar)
    ready to combine with ``x``, an array in its compute dtype: an array is cast to x's dtype (a
    real scalar to a complex x's), a Python number is left to weak typing."""
    return c if isinstance(c, (int, float)) else jnp.asarray(c).astype(x.dtype)


def _total(f: Callable, x, *rest) -> jax.Array:
    """``sum f(x, *rest)`` over every element of every leaf (the flat layout's padding left out),
    each leaf summed in its compute dtype and the leaves added in `tree.scalar_dtype`."""
    if isinstance(x, FlatBuffers):
        parts = list(x.layout.reduce(f, x, *rest))
    else:
        leaves = zip(jax.tree.leaves(x), *(jax.tree.leaves(r) for r in rest), strict=True)
        parts = [jnp.sum(f(*xs)) for xs in leaves]
    return sum((p.astype(tree.scalar_dtype()) for p in parts), _scalar(0.0))


def _re_dot(a, b) -> jax.Array:
    """``Re(conj(a) b)`` elementwise in the compute dtype: the terms of the real inner product
    <a, b> (a b for real arrays)."""
    a, b = tree.wide(a), tree.wide(b)
    if jnp.iscomplexobj(a) or jnp.iscomplexobj(b):
        return jnp.real(jnp.conj(a) * b)
    return a * b


def _abs(x) -> jax.Array:
    return jnp.abs(tree.wide(x))


def _sq_dist(a, b) -> jax.Array:
    """``|a - b|^2`` elementwise in the compute dtype of both."""
    wide = tree.compute_dtype(a.dtype, b.dtype)
    return tree.abs_square(a.astype(wide) - b.astype(wide))


def _ratio(num, den):
    """``num / den``, 0 where ``den`` is 0 (the derivative finite there too)."""
    positive = den > 0
    return jnp.where(positive, num / jnp.where(positive, den, 1), 0)


def _divide(x, den):
    """``x / den`` elementwise for a real ``den`` (cast to x's dtype, which may be complex), 0
    where ``den`` is 0."""
    positive = den > 0
    return jnp.where(positive, x / jnp.where(positive, den, 1).astype(x.dtype), 0)


def _sqrt(x):
    """``sqrt(x)`` for x >= 0, with a finite derivative (0) at x = 0."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1)), 0)


def _copy(params, dtype=None):
    """A copy of the params (its own buffers, so a step may donate params and state together)."""
    return jax.tree.map(
        lambda x: jnp.array(x, dtype=tree.moment_dtype(x, dtype), copy=True), params
    )


def _scaled_moment_zeros_like(params):
    """Zeros for a first moment of d_t-scaled gradients (Prodigy's and D-Adaptation's m_t): in
    the params' dtype, but float32 for fp16 params. fp16's range (nothing nonzero below 6e-8)
    flushes (1 - b1) d_t g_t to 0 while d_t is near d_0 = 1e-6: every step would be 0, x would
    never leave x_0 and d_t never grow. bf16 has float32's range: its m_t stays bf16."""

    def dtype(x):
        return jnp.float32 if jnp.result_type(x) == jnp.float16 else jnp.result_type(x)

    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype(x)), params)


def _as_optimizer(name: str, tx: GradientTransformation) -> GradientTransformation:
    """``tx`` checked at its boundary as a chain is (its state stays unnested): Python-number
    leaves become arrays, and integer or bool gradients and a state made for other params are
    refused naming the leaf."""
    expected, keep = _ExpectedState(name, tx.init), extra_args_filter(tx.update)

    def init(params):
        return tx.init(_numbers_as_arrays(params))

    def update(updates, state, params=None, **extra_args):
        updates, params = _numbers_as_arrays(updates), _numbers_as_arrays(params)
        expected.check(updates, state, params)
        return tx.update(updates, state, params, **keep(extra_args))

    return GradientTransformation(init, update)


def _needs_params(name: str, params) -> None:
    if params is None:
        raise ValueError(f"{name} needs params: call update(g, state, params)")


def _check_betas(betas) -> tuple[Any, Any]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got betas={betas!r}")
    check_decay("betas[0]", betas[0])
    check_decay("betas[1]", betas[1])
    return betas[0], betas[1]


def _schedule_value(learning_rate, count) -> jax.Array:
    return _scalar(learning_rate(count) if callable(learning_rate) else learning_rate)


def _adam_bias_correction(b1, b2, count) -> jax.Array:
    """``sqrt(1 - b2^t) / (1 - b1^t)``, in `tree.scalar_dtype`."""
    return jnp.sqrt(tree.one_minus_power(b2, count)) / tree.one_minus_power(b1, count)


# Prodigy and D-Adaptation: AdamW whose step size is a lower bound d_t on the distance to the
# solution, estimated from the inner products of the gradients with the path travelled.


class ProdigyState(NamedTuple):
    exp_avg: Updates  # m_t, an average of d_k g_k
    exp_avg_sq: Updates  # v_t, an average of d_k^2 |g_k|^2
    grad_sum: Updates  # s_t, a weighted sum of d_k g_k
    params0: Params  # x_0
    estim_lr: jax.Array  # d_t, the distance estimate (scalar_dtype)
    numerator_weighted: jax.Array  # r_t, the estimate's numerator (scalar_dtype)
    count: StepCount  # int32 scalar: steps taken so far


@flat_ready
def prodigy(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    beta3: float | None = None,
    eps: float = 1e-8,
    estim_lr0: float = 1e-6,
    estim_lr_coef: float = 1.0,
    weight_decay: float = 0.0,
    safeguard_warmup: bool = False,
) -> GradientTransformation:
    r"""Prodigy: AdamW at the learning rate d_t lr_t, d_t estimated as it goes.

    With lr_t = learning_rate(t - 1), b3 = beta3 (default sqrt(b2)), d_0 = estim_lr0 and
    c_t = sqrt(1 - b2^t) / (1 - b1^t):

        m_t = b1 m_{t-1} + (1 - b1) d_t g_t          v_t = b2 v_{t-1} + (1 - b2) d_t^2 |g_t|^2
        s_t = b3 s_{t-1} + (d_t / d_0) lr_t c_t d_t g_t     (safeguard_warmup: d_t in place of
        r_t = b3 r_{t-1} + (d_t / d_0) lr_t c_t d_t <g_t, x_0 - x_t>     lr_t c_t d_t in s_t)
        d_{t+1} = max(d_t, estim_lr_coef r_t / ||s_t||_1)                 (d_t if s_t = 0)
        u_t = -lr_t c_t d_t (m_t / (sqrt(v_t) + d_{t+1} eps) + weight_decay x_t)

    as the authors' implementation (and optax) step. The first step is -lr_t d_0 sign(g), as
    Adam's is -lr sign(g). ``update`` needs the params.

    Example:
        >>> tx = optjax.contrib.prodigy()
        >>> p = jnp.array([1.0, -2.0])
        >>> u, state = tx.update(jnp.array([3.0, -0.5]), tx.init(p), p)
        >>> (u / 1e-6).round(4)                  # -d_0 sign(g), d_0 = estim_lr0 = 1e-6
        Array([-1.,  1.], dtype=float32)

    Reference: Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free
    Learner", 2023 (Algorithm 3; the d_{t+1} eps and the weights of s_t and r_t as the authors'
    code).
    """
    check_learning_rate("learning_rate", learning_rate)
    b1, b2 = _check_betas(betas)
    if beta3 is not None:
        check_decay("beta3", beta3)
    check_nonnegative("eps", eps)
    check_positive("estim_lr0", estim_lr0)
    check_positive("estim_lr_coef", estim_lr_coef)
    check_nonnegative("weight_decay", weight_decay)
    check_choice("safeguard_warmup", safeguard_warmup, (False, True))
    if beta3 is not None:
        b3: Any = beta3
    else:
        b3 = math.sqrt(b2) if isinstance(b2, (int, float)) else jnp.sqrt(_scalar(b2))

    def init(params):
        return ProdigyState(
            _scaled_moment_zeros_like(params),
            tree.real_wide_zeros_like(params),
            tree.wide_zeros_like(params),
            _copy(params),
            _scalar(estim_lr0),
            _scalar(0.0),
            jnp.zeros([], jnp.int32),
        )

    def update(updates, state, params=None):
        _needs_params("prodigy", params)
        count = tree.safe_increment(state.count)
        d, d0 = state.estim_lr, _scalar(estim_lr0)
        dlr = d * _schedule_value(learning_rate, state.count) * _adam_bias_correction(b1, b2, count)
        weight = (d if safeguard_warmup else dlr) / d0  # of d_t g_t in s_t

        def moments(g, m, v, s):
            g = tree.wide(g)
            dg = _like(d, g) * g
            m = (_like(b1, g) * m.astype(g.dtype) + _like(1 - b1, g) * dg).astype(m.dtype)
            v_new = _like(b2, v) * v + _like(1 - b2, v) * tree.abs_square(_like(d, g) * g)
            s_wide = s.astype(tree.compute_dtype(s.dtype, g.dtype))
            s = (_like(b3, s_wide) * s_wide + _like(weight, s_wide) * dg).astype(s.dtype)
            return m, v_new.astype(v.dtype), s

        out = tree.map_like(moments, updates, state.exp_avg, state.exp_avg_sq, state.grad_sum)
        mu, nu, s = tree.unzip(updates, out, 3)
        inner = _total(lambda g, x0, x: _re_dot(g, tree.wide(x0) - tree.wide(x)), updates,
                       state.params0, params)  # fmt: skip
        r = _scalar(b3) * state.numerator_weighted + (d / d0) * dlr * inner
        d_new = jnp.maximum(d, _ratio(_scalar(estim_lr_coef) * r, _total(_abs, s)))

        def step(g, m, v, x):
            m, x, v = tree.wide(m), tree.wide(x), tree.wide(v)
            den = jnp.sqrt(v) + _like(d_new * eps, v)
            direction = _divide(m, den) + _like(weight_decay, m) * x.astype(m.dtype)
            return (-_like(dlr, m) * direction).astype(g.dtype)

        updates = tree.map_like(step, updates, mu, nu, params)
        return updates, ProdigyState(mu, nu, s, state.params0, d_new, r, count)

    return _as_optimizer("prodigy", GradientTransformation(init, update))


class DAdaptAdamWState(NamedTuple):
    exp_avg: Updates  # m_t, an average of lr_k c_k d_k g_k
    exp_avg_sq: Updates  # v_t, an average of |g_k|^2
    grad_sum: Updates  # s_t, an average of lr_k c_k d_k g_k (slower)
    estim_lr: jax.Array  # d_t, the distance estimate (scalar_dtype)
    numerator_weighted: jax.Array  # r_t, the estimate's numerator (scalar_dtype)
    count: StepCount  # int32 scalar: steps taken so far


@flat_ready
def dadapt_adamw(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    estim_lr0: float = 1e-6,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    r"""D-Adaptation AdamW: AdamW at the learning rate d_t lr_t, d_t estimated as it goes.

    With lr_t = learning_rate(t - 1), c_t = sqrt(1 - b2^t) / (1 - b1^t), e_t = lr_t c_t d_t,
    b = sqrt(b2) and d_0 = estim_lr0:

        r_t = b r_{t-1} + (1 - b) e_t <g_t, s_{t-1} / (sqrt(v_{t-1}) + eps)>
        m_t = b1 m_{t-1} + (1 - b1) e_t g_t          v_t = b2 v_{t-1} + (1 - b2) |g_t|^2
        s_t = b s_{t-1} + (1 - b) e_t g_t
        d_{t+1} = max(d_t, r_t / ((1 - b) ||s_t||_1))                    (d_t if s_t = 0)
        u_t = -m_t / (sqrt(v_t) + eps) - weight_decay e_t x_t

    The first step is -lr_t d_0 sign(g). ``update`` needs the params.

    Example:
        >>> tx = optjax.contrib.dadapt_adamw()
        >>> p = jnp.array([1.0, -2.0])
        >>> u, state = tx.update(jnp.array([3.0, -0.5]), tx.init(p), p)
        >>> (u / 1e-6).round(4)                  # -d_0 sign(g), d_0 = estim_lr0 = 1e-6
        Array([-1.,  1.], dtype=float32)

    Reference: Defazio & Mishchenko, "Learning-Rate-Free Learning by D-Adaptation", ICML 2023
    (Algorithm 4, Adam with D-Adaptation).
    """
    check_learning_rate("learning_rate", learning_rate)
    b1, b2 = _check_betas(betas)
    check_nonnegative("eps", eps)
    check_positive("estim_lr0", estim_lr0)
    check_nonnegative("weight_decay", weight_decay)
    sb2: Any = math.sqrt(b2) if isinstance(b2, (int, float)) else jnp.sqrt(_scalar(b2))

    def init(params):
        return DAdaptAdamWState(
            _scaled_moment_zeros_like(params),
            tree.real_wide_zeros_like(params),
            tree.wide_zeros_like(params),
            _scalar(estim_lr0),
            _scalar(0.0),
            jnp.zeros([], jnp.int32),
        )

    def update(updates, state, params=None):
        _needs_params("dadapt_adamw", params)
        count = tree.safe_increment(state.count)
        d = state.estim_lr
        dlr = d * _schedule_value(learning_rate, state.count) * _adam_bias_correction(b1, b2, count)
        inner = _total(
            lambda g, s, v: _re_dot(g, _divide(tree.wide(s), jnp.sqrt(tree.wide(v)) + eps)),
            updates,
            state.grad_sum,
            state.exp_avg_sq,
        )

        def moments(g, m, v, s):
            g = tree.wide(g)
            eg = _like(dlr, g) * g
            m = (_like(b1, g) * m.astype(g.dtype) + _like(1 - b1, g) * eg).astype(m.dtype)
            v_new = _like(b2, v) * v + _like(1 - b2, v) * tree.abs_square(g)
            s_wide = s.astype(tree.compute_dtype(s.dtype, g.dtype))
            s = (_like(sb2, s_wide) * s_wide + _like(1 - sb2, s_wide) * eg).astype(s.dtype)
            return m, v_new.astype(v.dtype), s

        out = tree.map_like(moments, updates, state.exp_avg, state.exp_avg_sq, state.grad_sum)
        mu, nu, s = tree.unzip(updates, out, 3)
        r = _scalar(sb2) * state.numerator_weighted + _scalar(1 - sb2) * dlr * inner
        d_new = jnp.maximum(d, _ratio(r, _scalar(1 - sb2) * _total(_abs, s)))

        def step(g, m, v, x):
            m, x, v = tree.wide(m), tree.wide(x), tree.wide(v)
            decay = _like(weight_decay, m) * _like(dlr, m) * x.astype(m.dtype)
            return (-_divide(m, jnp.sqrt(v) + eps) - decay).astype(g.dtype)

        updates = tree.map_like(step, updates, mu, nu, params)
        return updates, DAdaptAdamWState(mu, nu, s, d_new, r, count)

    return _as_optimizer("dadapt_adamw", GradientTransformation(init, update))


# Distance over gradients: the step size is the largest distance travelled from x_0 over the
# root of the summed squared gradient norms (DoG), or weighted by the squared distances (DoWG).


class DoGState(NamedTuple):
    is_init_step: jax.Array  # bool scalar: no step taken yet
    init_params: Params  # x_0
    max_dist: jax.Array  # max_k ||x_k - x_0||, at least r_eps (scalar_dtype)
    sum_sq_norm_grads: jax.Array  # sum_k ||g_k||^2 (scalar_dtype)


_INIT_STEPS = ("distance", "learning_rate", "heuristic")


def _check_init_step(init_step) -> tuple[str, Any]:
    if not isinstance(init_step, (tuple, list)) or len(init_step) != 2:
        raise ValueError(
            f"init_step must be a pair (kind, value), kind one of {list(_INIT_STEPS)}, got "
            f"init_step={init_step!r}"
        )
    kind, value = init_step
    check_choice("init_step[0]", kind, _INIT_STEPS)
    check_positive("init_step[1]", value)  # 0 would leave x_0 forever: no step, no distance
    return kind, value


@flat_ready
def scale_by_dog(
    init_step: tuple[str, float] = ("heuristic", 1e-6), eps: float = 1e-8
) -> GradientTransformation:
    r"""Scale by Distance over Gradients (DoG): one step size for all parameters.

        rbar_t = max(r_eps, max_{k <= t} ||x_k - x_0||)        G_t = sum_{k <= t} ||g_k||^2
        eta_t = rbar_t / sqrt(G_t + eps)                        u_t = eta_t g_t

    (a positive step along g: `dog` negates it). ``init_step = (kind, value)`` sets r_eps: to
    ``value`` ("distance"), to ``value (1 + ||x_0||)`` ("heuristic", from the params ``init``
    is given: pass the real ones), or ("learning_rate") r_eps = 0 and eta_1 = ``value``. eta_t
    is 0 while every gradient so far is 0 (eps = 0). ``update`` needs the params.

    Example:
        >>> tx = optjax.contrib.scale_by_dog(("distance", 1.0))
        >>> p = jnp.array([1.0, 2.0])
        >>> tx.update(jnp.array([3.0, 4.0]), tx.init(p), p)[0]   # eta_1 = 1 / ||g|| = 0.2
        Array([0.6, 0.8], dtype=float32)

    Reference: Ivgi, Hinder & Carmon, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step
    Size Schedule", ICML 2023 (Algorithm 1).
    """
    kind, value = _check_init_step(init_step)
    check_nonnegative("eps", eps)

    def init(params):
        if kind == "distance":
            r_eps = _scalar(value)
        elif kind == "heuristic":
            r_eps = _scalar(value) * (1 + jnp.sqrt(_scalar(tree.sum_of_squares(params))))
        else:
            r_eps = _scalar(0.0)
        return DoGState(jnp.ones([], bool), _copy(params), r_eps, _scalar(0.0))

    def update(updates, state, params=None):
        _needs_params("scale_by_dog", params)
        dist = _sqrt(_total(_sq_dist, params, state.init_params))
        max_dist = jnp.maximum(state.max_dist, dist)
        sum_sq = state.sum_sq_norm_grads + _scalar(tree.sum_of_squares(updates))
        eta = _ratio(max_dist, jnp.sqrt(sum_sq + _scalar(eps)))
        if kind == "learning_rate":
            eta = jnp.where(state.is_init_step, _scalar(value), eta)
        new_state = DoGState(jnp.zeros([], bool), state.init_params, max_dist, sum_sq)
        return tree.scaled(updates, eta), new_state

    return GradientTransformation(init, update)


def _decayed_weights(weight_decay, mask) -> GradientTransformation:
    """add_decayed_weights, or nothing where the decay is None or 0."""
    if weight_decay is None or is_zero(weight_decay):
        return identity()
    return add_decayed_weights(weight_decay, mask)


def dog(
    learning_rate: ScalarOrSchedule = 1.0,
    init_step: tuple[str, float] = ("heuristic", 1e-6),
    eps: float = 1e-8,
    weight_decay: float | None = None,
    mask: Any = None,
) -> GradientTransformation:
    """DoG: add_decayed_weights (where ``weight_decay`` is given), scale_by_dog, then the
    learning rate (a multiplier, 1 by default). The update rule is on `scale_by_dog`; the
    authors recommend averaging the iterates (e.g. optjax.wrappers' parameter averaging).

    Example:
        >>> tx = optjax.contrib.dog(init_step=("distance", 1.0))
        >>> p = jnp.array([1.0, 2.0])
        >>> tx.update(jnp.array([3.0, 4.0]), tx.init(p), p)[0]
        Array([-0.6, -0.8], dtype=float32)
    """
    check_learning_rate("learning_rate", learning_rate)
    if weight_decay is not None:
        check_nonnegative("weight_decay", weight_decay)
    return chain(
        _decayed_weights(weight_decay, mask),
        scale_by_dog(init_step, eps),
        scale_by_learning_rate(learning_rate),
    )


class DoWGState(NamedTuple):
    init_params: Params  # x_0
    weighted_sq_norm_grads: jax.Array  # v_t = sum_k rbar_k^2 ||g_k||^2 (scalar_dtype)
    estim_sq_dist: jax.Array  # rbar_t^2 (scalar_dtype)


@flat_ready
def scale_by_dowg(init_estim_sq_dist: float | None = None, eps: float = 1e-4):
    r"""Scale by Distance over Weighted Gradients (DoWG): one step size for all parameters.

        rbar_t^2 = max(rbar_{t-1}^2, ||x_t - x_0||^2)       rbar_0^2 = init_estim_sq_dist (or eps)
        v_t = v_{t-1} + rbar_t^2 ||g_t||^2
        eta_t = rbar_t^2 / (sqrt(v_t) + eps)                 u_t = eta_t g_t

    (a positive step along g: `dowg` negates it). eta_t is 0 while every gradient so far is 0
    (eps = 0). ``update`` needs the params.

    Example:
        >>> tx = optjax.contrib.scale_by_dowg(init_estim_sq_dist=1.0, eps=0.0)
        >>> p = jnp.array([1.0, 2.0])
        >>> tx.update(jnp.array([3.0, 4.0]), tx.init(p), p)[0]   # eta_1 = 1 / ||g|| = 0.2
        Array([0.6, 0.8], dtype=float32)

    Reference: Khaled, Mishchenko & Jin, "DoWG Unleashed: An Efficient Universal Parameter-Free
    Gradient Descent Method", NeurIPS 2023 (Algorithm 1).
    """
    check_nonnegative("eps", eps)
    if init_estim_sq_dist is None:
        # The estimate starts at eps: 0 would leave x_0 forever (no step, no distance).
        if not is_traced(eps) and is_zero(eps):
            raise ValueError(
                "init_estim_sq_dist must be a number > 0 where eps = 0 (it defaults to eps), got "
                "init_estim_sq_dist=None"
            )
        init_sq_dist: Any = eps
    else:
        check_positive("init_estim_sq_dist", init_estim_sq_dist)
        init_sq_dist = init_estim_sq_dist

    def init(params):
        return DoWGState(_copy(params), _scalar(0.0), _scalar(init_sq_dist))

    def update(updates, state, params=None):
        _needs_params("scale_by_dowg", params)
        sq_dist = jnp.maximum(state.estim_sq_dist, _total(_sq_dist, params, state.init_params))
        v = state.weighted_sq_norm_grads + sq_dist * _scalar(tree.sum_of_squares(updates))
        eta = _ratio(sq_dist, jnp.sqrt(v) + _scalar(eps))
        return tree.scaled(updates, eta), DoWGState(state.init_params, v, sq_dist)

    return GradientTransformation(init, update)


def dowg(
    learning_rate: ScalarOrSchedule = 1.0,
    init_estim_sq_dist: float | None = None,
    eps: float = 1e-4,
    weight_decay: float | None = None,
    mask: Any = None,
) -> GradientTransformation:
    """DoWG: add_decayed_weights (where ``weight_decay`` is given), scale_by_dowg, then the
    learning rate (a multiplier, 1 by default). The update rule is on `scale_by_dowg`.

    Example:
        >>> tx = optjax.contrib.dowg(init_estim_sq_dist=1.0, eps=0.0)
        >>> p = jnp.array([1.0, 2.0])
        >>> tx.update(jnp.array([3.0, 4.0]), tx.init(p), p)[0]
        Array([-0.6, -0.8], dtype=float32)
    """
    check_learning_rate("learning_rate", learning_rate)
    if weight_decay is not None:
        check_nonnegative("weight_decay", weight_decay)
    return chain(
        _decayed_weights(weight_decay, mask),
        scale_by_dowg(init_estim_sq_dist, eps),
        scale_by_learning_rate(learning_rate),
    )


class ScaleByDistanceOverGradientsState(NamedTuple):
    max_dist: Any  # per leaf: max_k ||x_k - x_0||, at least reps_rel (1 + ||x_0||)
    grad_sum_of_squares: Any  # per leaf: sum_k ||g_k||^2
    init_params: Params  # x_0, in param_dtype


@flat_ready
def scale_by_distance_over_gradients(
    reps_rel: float = 1e-6, eps: float = 1e-8, param_dtype=jnp.float32, global_scale: float = 1.0
) -> GradientTransformation:
    r"""Layer-wise DoG (LDoG): DoG's step size for each leaf (layer) of the params on its own.

    For each leaf x with gradient g (norms of the whole leaf):

        rbar_t = max(reps_rel (1 + ||x_0||), max_{k <= t} ||x_k - x_0||)
        G_t = sum_{k <= t} ||g_k||^2
        u_t = global_scale rbar_t / sqrt(G_t + eps) g_t      (0 while G_t + eps = 0)

    (a positive step along g for global_scale = 1: chain a negative learning rate, or pass
    global_scale = -1). x_0 is kept in ``param_dtype`` (float32 by default, as optax; None keeps
    each leaf's dtype); the per-leaf scalars in `tree.scalar_dtype`. ``update`` needs the params.

    Example:
        >>> tx = optjax.scale_by_distance_over_gradients(reps_rel=0.1, eps=0.0)
        >>> p = {"w": jnp.array([3.0, 4.0]), "b": jnp.array(0.0)}   # ||w|| = 5, ||b|| = 0
        >>> g = {"w": jnp.array([0.6, 0.8]), "b": jnp.array(2.0)}
        >>> u, _ = tx.update(g, tx.init(p), p)
        >>> u["w"] / g["w"], u["b"] / g["b"]     # 0.1 (1 + 5) / ||g_w|| and 0.1 (1 + 0) / ||g_b||
        (Array([0.6, 0.6], dtype=float32), Array(0.05, dtype=float32))

    Reference: Ivgi, Hinder & Carmon, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step
    Size Schedule", ICML 2023 (Section 4: layer-wise DoG).
    """
    check_positive("reps_rel", reps_rel)
    check_nonnegative("eps", eps)
    check_finite("global_scale", global_scale)
    if param_dtype is not None:
        try:
            ok = jnp.issubdtype(jnp.dtype(param_dtype), jnp.floating)
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(
                f"param_dtype must be a floating dtype or None, got param_dtype={param_dtype!r}"
            )

    def leaf_norms(*trees):
        return jax.tree.map(lambda s: _sqrt(_scalar(s)), tree.leaf_sum(*trees))

    def init(params):
        max_dist = jax.tree.map(lambda n: _scalar(reps_rel) * (1 + n),
                                leaf_norms(tree.abs_square, params))  # fmt: skip
        zeros = jax.tree.map(jnp.zeros_like, max_dist)
        return ScaleByDistanceOverGradientsState(max_dist, zeros, _copy(params, param_dtype))

    def update(updates, state, params=None):
        _needs_params("scale_by_distance_over_gradients", params)
        dist = leaf_norms(_sq_dist, params, state.init_params)
        max_dist = jax.tree.map(jnp.maximum, state.max_dist, dist)
        sums = jax.tree.map(
            lambda total, s: total + _scalar(s),
            state.grad_sum_of_squares,
            tree.leaf_sum(tree.abs_square, updates),
        )
        etas = jax.tree.map(
            lambda r, total: _scalar(global_scale) * _ratio(r, jnp.sqrt(total + _scalar(eps))),
            max_dist,
            sums,
        )
        updates = tree.map_with_leaf_values(
            lambda g, eta: (tree.wide(g) * eta.astype(tree.compute_dtype(g.dtype))).astype(g.dtype),
            updates,
            etas,
        )
        return updates, ScaleByDistanceOverGradientsState(max_dist, sums, state.init_params)

    return GradientTransformation(init, update)


# COCOB: each coordinate bets a fraction of its wealth (the initial stake plus the reward from
# its past bets) on the sign of the negative gradient.


class COCOBState(NamedTuple):
    init_particles: Params  # w_1
    cumulative_gradients: Updates  # -theta_t = -sum_k g_k
    scale: Updates  # L_t = max(eps, max_k |g_k|)
    subgradients: Updates  # G_t = sum_k |g_k|
    reward: Updates  # Reward_t


@flat_ready
def scale_by_cocob(alpha: float = 100.0, eps: float = 1e-8) -> GradientTransformation:
    r"""COCOB-Backprop: coordinate-wise coin betting on the gradients, with no learning rate.

    For each coordinate, with L_0 = eps and G_0 = Reward_0 = theta_0 = 0:

        L_t = max(L_{t-1}, |g_t|)              G_t = G_{t-1} + |g_t|
        Reward_t = max(Reward_{t-1} - g_t (w_t - w_1), 0)       theta_t = theta_{t-1} + g_t
        w_{t+1} = w_1 - theta_t / (L_t max(G_t + L_t, alpha L_t)) (L_t + Reward_t)
        u_t = w_{t+1} - w_t                     (0 where L_t = 0: every g_k was 0, eps = 0)

    The update is already a descent step (it is not negated afterwards). The first step is
    -sign(g) / alpha. ``update`` needs the params.

    Example:
        >>> tx = optjax.contrib.scale_by_cocob()
        >>> p = jnp.zeros(2)
        >>> tx.update(jnp.array([3.0, -0.5]), tx.init(p), p)[0]    # -sign(g) / alpha
        Array([-0.01,  0.01], dtype=float32)

    Reference: Orabona & Tommasi, "Training Deep Networks without Learning Rates Through Coin
    Betting", NeurIPS 2017 (Algorithm 2, COCOB-Backprop).
    """
    check_positive("alpha", alpha)
    check_nonnegative("eps", eps)

    def init(params):
        zeros = tree.real_wide_zeros_like(params)
        return COCOBState(
            _copy(params),
            tree.wide_zeros_like(params),
            tree.real_wide_full_like(params, eps),
            zeros,
            zeros,
        )

    def update(updates, state, params=None):
        _needs_params("scale_by_cocob", params)

        def bet(g, w, w1, theta, big_l, big_g, reward):
            wide = tree.compute_dtype(g.dtype, w.dtype, theta.dtype)
            real = jnp.finfo(wide).dtype
            g_w, w_w, w1_w = g.astype(wide), w.astype(wide), w1.astype(wide)
            big_l_new = jnp.maximum(big_l.astype(real), jnp.abs(g_w))
            big_g_new = big_g.astype(real) + jnp.abs(g_w)
            reward_new = jnp.maximum(reward.astype(real) - _re_dot(g_w, w_w - w1_w), 0)
            theta_new = theta.astype(wide) - g_w
            den = big_l_new * jnp.maximum(
                big_g_new + big_l_new, _like(alpha, big_l_new) * big_l_new
            )
            step = _divide(theta_new, den) * (big_l_new + reward_new).astype(wide)
            u = ((w1_w + step) - w_w).astype(g.dtype)  # w_{t+1} - w_t
            return (
                u,
                theta_new.astype(theta.dtype),
                big_l_new.astype(big_l.dtype),
                big_g_new.astype(big_g.dtype),
                reward_new.astype(reward.dtype),
            )

        out = tree.map_like(
            bet,
            updates,
            params,
            state.init_particles,
            state.cumulative_gradients,
            state.scale,
            state.subgradients,
            state.reward,
        )
        u, theta, big_l, big_g, reward = tree.unzip(updates, out, 5)
        return u, COCOBState(state.init_particles, theta, big_l, big_g, reward)

    return GradientTransformation(init, update)


def cocob(
    learning_rate: ScalarOrSchedule = 1.0,
    alpha: float = 100.0,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    mask: Any = None,
) -> GradientTransformation:
    """COCOB: add_decayed_weights (L2 on the gradient), the gradient times the learning rate
    (not negated: a multiplier, 1 by default), then scale_by_cocob, where the update rule is.

    Example:
        >>> tx = optjax.contrib.cocob()
        >>> p = jnp.zeros(2)
        >>> tx.update(jnp.array([3.0, -0.5]), tx.init(p), p)[0]
        Array([-0.01,  0.01], dtype=float32)
    """
    check_learning_rate("learning_rate", learning_rate)
    check_nonnegative("weight_decay", weight_decay)
    return chain(
        _decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate, flip_sign=False),
        scale_by_cocob(alpha, eps),
    )
