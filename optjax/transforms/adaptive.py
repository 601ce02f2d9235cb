"""Adaptive scaling by running moments of the gradient: Adam and its family, RMSprop, Adagrad,
Adadelta, Lion.

Every ratio is formed in float32 at least and rounded once to the gradient's dtype. First moments
(momentum) have the parameter's dtype unless ``mu_dtype`` is given. Second moments (the averages and
sums of g^2, and Adamax's norm) have ``nu_dtype``, by default float32 for bf16 and fp16 parameters
(the parameter's dtype if it is wider): in bf16 a decay of 0.1% per step is below half an ulp, so
b2 = 0.999 would act as 1 (the moment never forgets a large gradient), and in fp16 a square below
6e-8 flushes to 0 (the step becomes m / eps). That costs 2 bytes more per parameter per second
moment than keeping it in bf16 (Adam on bf16 parameters: 6 bytes of state instead of 4); pass
``nu_dtype=jnp.bfloat16`` to keep the old, smaller, frozen-b2 state.

Complex parameters are stepped as optax documents: where the papers square g (or take |g|), the
square is of the modulus, |g|^2 = re(g)^2 + im(g)^2, so second moments are real (float32 for
complex64 parameters, float64 for complex128) while first moments stay complex (a real
``mu_dtype`` means its complex counterpart: tree.moment_dtype), and a step turns with the
gradient's phase. A complex value is divided by a real one cast to its dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_decay, check_finite, check_nonnegative
from optjax.base import GradientTransformation, StepCount, Updates
from optjax.flat import flat_ready

__all__ = [
    "ScaleByAdaDeltaState",
    "ScaleByAdamState",
    "ScaleByAmsgradState",
    "ScaleByLionState",
    "ScaleByRStdDevState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "scale_by_adadelta",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_amsgrad",
    "scale_by_lion",
    "scale_by_lion_single_read",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_stddev",
]


class ScaleByAdamState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
    mu: Updates  # first moment m_t
    nu: Updates  # second moment v_t


class ScaleByAmsgradState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
    mu: Updates  # first moment m_t
    nu: Updates  # second moment v_t
    nu_max: Updates  # running maximum of the second moment


class ScaleByRmsState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
    nu: Updates  # moving average of g^2


class ScaleByRStdDevState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
    mu: Updates  # moving average of g
    nu: Updates  # moving average of g^2


class ScaleByRssState(NamedTuple):
    sum_of_squares: Updates  # sum over steps of g^2


class ScaleByAdaDeltaState(NamedTuple):
    e_g: Updates  # moving average of g^2
    e_x: Updates  # moving average of the squared steps


class ScaleByLionState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
    mu: Updates  # momentum m_t


def _div(x, c):
    """``x / c`` in x's compute dtype, for a real c (a correction or a denominator, cast to that
    dtype: a complex x is divided by a real c without relying on promotion)."""
    x = tree.wide(x)
    return x / jnp.asarray(c).astype(x.dtype)


def _first_moment_corrections(b1, count, nesterov):
    """``1 - b1^t`` and, with Nesterov, ``1 - b1^(t+1)`` (else None): scalars, formed once per
    step rather than in each leaf's formula (where every leaf would trace its own copy)."""
    c1 = tree.one_minus_power(b1, count)
    return c1, tree.one_minus_power(b1, tree.safe_increment(count)) if nesterov else None


def _first_moment_hat(g, m, b1, corrections):
    """m̂_t; with Nesterov, Dozat's look-ahead b1 m̂_{t+1} + (1 - b1) ĝ_t. ``corrections`` are
    `_first_moment_corrections`'."""
    c1, c1_next = corrections
    m_hat = _div(m, c1)
    if c1_next is None:
        return m_hat
    return b1 * _div(m, c1_next) + (1 - b1) * _div(g, c1)


@flat_ready
def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype=None,
    *,
    nesterov: bool = False,
    nu_dtype=None,
) -> GradientTransformation:
    r"""Rescale updates by Adam's bias-corrected moment estimates.

        m_t = b1 m_{t-1} + (1 - b1) g_t           v_t = b2 v_{t-1} + (1 - b2) g_t^2
        m̂_t = m_t / (1 - b1^t)                    v̂_t = v_t / (1 - b2^t)
        u_t = m̂_t / (sqrt(v̂_t + eps_root) + eps)

    With ``nesterov=True`` (NAdam, Dozat 2016) m̂_t is replaced by
    ``b1 m_t / (1 - b1^{t+1}) + (1 - b1) g_t / (1 - b1^t)``.

    m_t has the parameter's dtype unless ``mu_dtype`` is given; v_t has ``nu_dtype``, by default
    float32 for bf16 and fp16 parameters (see the module doc: a bf16 v_t cannot decay, an fp16
    one underflows).

    Example:
        >>> tx = optjax.scale_by_adam()
        >>> u, _ = tx.update(jnp.array([2.0]), tx.init(jnp.array([0.0])))
        >>> u.round(4)   # Adam's first step is sign(g)
        Array([1.], dtype=float32)

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2014, Algorithm 1;
    Dozat, "Incorporating Nesterov Momentum into Adam", 2016.
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)

    def init(params):
        return ScaleByAdamState(
            jnp.zeros([], jnp.int32),
            tree.moment_zeros_like(params, mu_dtype),
            tree.real_wide_zeros_like(params, nu_dtype),
        )

    def update(updates, state, params=None):
        del params  # Adam does not look at the parameters.
        count = tree.safe_increment(state.count)
        mu = tree.ema(updates, state.mu, b1)
        nu = tree.ema(updates, state.nu, b2, order=2)

        m_corrections = _first_moment_corrections(b1, count, nesterov)
        c2 = tree.one_minus_power(b2, count)

        def ratio(g, m, v):
            m_hat = _first_moment_hat(g, m, b1, m_corrections)
            return _div(m_hat, jnp.sqrt(_div(v, c2) + eps_root) + eps).astype(g.dtype)

        updates = tree.map_like(ratio, updates, mu, nu, names=("updates", "mu", "nu"))
        return updates, ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init, update)


@flat_ready
def scale_by_amsgrad(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype=None,
    *,
    max_of_raw_nu: bool = False,
    nu_dtype=None,
) -> GradientTransformation:
    r"""Adam with a non-decreasing second moment (AMSGrad).

        m_t, v_t, m̂_t, v̂_t as in scale_by_adam
        v^max_t = max(v^max_{t-1}, v̂_t)                     (default)
        u_t = m̂_t / (sqrt(v^max_t + eps_root) + eps)

    ``max_of_raw_nu=True`` keeps the maximum of the raw v_t and bias-corrects it afterwards,
    ``v^max_t = max(v^max_{t-1}, v_t)``, ``u_t = m̂_t / (sqrt(v^max_t / (1 - b2^t)) + eps)``,
    as torch.optim.Adam(amsgrad=True) does. v_t and v^max_t have ``nu_dtype`` (see
    scale_by_adam).

    Example:
        >>> tx = optjax.scale_by_amsgrad()
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([4.0]), state)
        >>> u.round(4)
        Array([1.], dtype=float32)

    Reference: Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018.
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)

    def init(params):
        return ScaleByAmsgradState(  # separate buffers for nu and nu_max, so both can be donated
            jnp.zeros([], jnp.int32),
            tree.moment_zeros_like(params, mu_dtype),
            tree.real_wide_zeros_like(params, nu_dtype),
            tree.real_wide_zeros_like(params, nu_dtype),
        )

    def update(updates, state, params=None):
        del params
        count = tree.safe_increment(state.count)
        mu = tree.ema(updates, state.mu, b1)
        nu = tree.ema(updates, state.nu, b2, order=2)
        c2 = tree.one_minus_power(b2, count)
        if max_of_raw_nu:
            nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)
            nu_hat_max = jax.tree.map(lambda v: _div(v, c2), nu_max)
        else:
            nu_max = jax.tree.map(
                lambda vm, v: jnp.maximum(tree.wide(vm), _div(v, c2)).astype(vm.dtype),
                state.nu_max,
                nu,
            )
            nu_hat_max = nu_max

        c1 = tree.one_minus_power(b1, count)

        def ratio(g, m, v):
            return _div(_div(m, c1), jnp.sqrt(tree.wide(v) + eps_root) + eps).astype(g.dtype)

        updates = tree.map_like(ratio, updates, mu, nu_hat_max, names=("updates", "mu", "nu_max"))
        return updates, ScaleByAmsgradState(count, mu, nu, nu_max)

    return GradientTransformation(init, update)


@flat_ready
def scale_by_adamax(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    eps_in_max: bool = True,
    nu_dtype=None,
) -> GradientTransformation:
    r"""Adamax: Adam with the infinity norm in place of the second moment.

        m_t = b1 m_{t-1} + (1 - b1) g_t        n_t = max(b2 n_{t-1}, |g_t| + eps)
        u_t = m_t / (1 - b1^t) / n_t

    The paper has no eps; like optax and torch.optim.Adamax, eps enters inside the max so that
    n_t > 0. ``eps_in_max=False`` uses ``n_t = max(b2 n_{t-1}, |g_t|)`` and divides by
    ``n_t + eps`` instead. n_t has ``nu_dtype`` (float32 for bf16 and fp16 parameters by
    default: in bf16, b2 n_{t-1} rounds back to n_{t-1} and the norm would never decay).

    Example:
        >>> tx = optjax.scale_by_adamax()
        >>> tx.update(jnp.array([-3.0]), tx.init(jnp.zeros(1)))[0].round(4)
        Array([-1.], dtype=float32)

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2014, Algorithm 2.
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)

    def init(params):
        return ScaleByAdamState(
            jnp.zeros([], jnp.int32),
            tree.zeros_like(params),
            tree.real_wide_zeros_like(params, nu_dtype),
        )

    def update(updates, state, params=None):
        del params
        count = tree.safe_increment(state.count)
        mu = tree.ema(updates, state.mu, b1)
        shift = eps if eps_in_max else 0.0
        nu = tree.map_like(
            lambda g, v: jnp.maximum(b2 * tree.wide(v), jnp.abs(tree.wide(g)) + shift).astype(
                v.dtype
            ),
            updates,
            state.nu,
            names=("updates", "nu"),
        )
        denom_eps = 0.0 if eps_in_max else eps

        c1 = tree.one_minus_power(b1, count)

        def ratio(g, m, v):
            return _div(_div(m, c1), tree.wide(v) + denom_eps).astype(g.dtype)

        updates = tree.map_like(ratio, updates, mu, nu)
        return updates, ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init, update)


def _rms_denominator(v, eps, eps_in_sqrt):
    return jnp.sqrt(v + eps) if eps_in_sqrt else jnp.sqrt(v) + eps


@flat_ready
def scale_by_rms(
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
    *,
    nu_dtype=None,
) -> GradientTransformation:
    r"""Divide by the root of a moving average of squared gradients (RMSprop).

        v_t = decay v_{t-1} + (1 - decay) g_t^2,   v_0 = initial_scale
        u_t = g_t / sqrt(v_t + eps)        (eps_in_sqrt=True)
        u_t = g_t / (sqrt(v_t) + eps)      (eps_in_sqrt=False: torch.optim.RMSprop's form)

    With ``bias_correction`` v_t is replaced by v_t / (1 - decay^t). v_t has ``nu_dtype``
    (float32 for bf16 and fp16 parameters by default; see scale_by_adam).

    Example:
        >>> tx = optjax.scale_by_rms(decay=0.75, eps=0.0)
        >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]   # 2 / sqrt(0.25 * 4)
        Array([2.], dtype=float32)

    Reference: Tieleman & Hinton, "Lecture 6.5 - RMSProp", COURSERA: Neural Networks for
    Machine Learning, 2012.
    """
    check_decay("decay", decay)
    check_nonnegative("eps", eps)
    check_nonnegative("initial_scale", initial_scale)

    def init(params):
        return ScaleByRmsState(
            jnp.zeros([], jnp.int32), tree.real_wide_full_like(params, initial_scale, nu_dtype)
        )

    def update(updates, state, params=None):
        del params
        count = tree.safe_increment(state.count)
        nu = tree.ema(updates, state.nu, decay, order=2)
        c = tree.one_minus_power(decay, count) if bias_correction else 1.0

        def ratio(g, v):
            return _div(g, _rms_denominator(_div(v, c), eps, eps_in_sqrt)).astype(g.dtype)

        return tree.map_like(ratio, updates, nu), ScaleByRmsState(count, nu)

    return GradientTransformation(init, update)


@flat_ready
def scale_by_stddev(
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
    *,
    nu_dtype=None,
) -> GradientTransformation:
    r"""Divide by a moving estimate of the gradient's standard deviation (centered RMSprop).

        m_t = decay m_{t-1} + (1 - decay) g_t      v_t = decay v_{t-1} + (1 - decay) g_t^2
        u_t = g_t / sqrt(v_t - m_t^2 + eps)        (eps_in_sqrt=True)
        u_t = g_t / (sqrt(v_t - m_t^2) + eps)      (eps_in_sqrt=False: torch's centered form)

    With ``bias_correction`` m_t and v_t are divided by (1 - decay^t) first. Both averages have
    ``nu_dtype`` (float32 for bf16 and fp16 parameters by default): v_t - m_t^2 cancels, and
    needs them at one precision.

    Example:
        >>> tx = optjax.scale_by_stddev(decay=0.5, eps=0.0)
        >>> tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))[0]   # 2 / sqrt(2 - 1)
        Array([2.], dtype=float32)

    Reference: Graves, "Generating Sequences With Recurrent Neural Networks", 2013, eq. 38-45.
    """
    check_decay("decay", decay)
    check_nonnegative("eps", eps)
    check_nonnegative("initial_scale", initial_scale)

    def init(params):
        return ScaleByRStdDevState(
            jnp.zeros([], jnp.int32),
            jax.tree.map(  # m_t: complex for a complex parameter, whatever nu_dtype says
                lambda p: jnp.zeros_like(p, tree.moment_dtype(p, tree.wide_dtype(p, nu_dtype))),
                params,
            ),
            tree.real_wide_full_like(params, initial_scale, nu_dtype),
        )

    def update(updates, state, params=None):
        del params
        count = tree.safe_increment(state.count)
        mu = tree.ema(updates, state.mu, decay)
        nu = tree.ema(updates, state.nu, decay, order=2)
        c = tree.one_minus_power(decay, count) if bias_correction else 1.0

        def ratio(g, m, v):
            # >= 0 in exact arithmetic; rounding can dip below (at step 1 with bias correction)
            variance = jnp.maximum(_div(v, c) - tree.abs_square(_div(m, c)), 0.0)
            return _div(g, _rms_denominator(variance, eps, eps_in_sqrt)).astype(g.dtype)

        return tree.map_like(ratio, updates, mu, nu), ScaleByRStdDevState(count, mu, nu)

    return GradientTransformation(init, update)


@flat_ready
def scale_by_rss(
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
    *,
    eps_in_sqrt: bool = True,
    nu_dtype=None,
) -> GradientTransformation:
    r"""Divide by the root of the sum of squared gradients so far (Adagrad).

        s_t = s_{t-1} + g_t^2,   s_0 = initial_accumulator_value
        u_t = g_t / sqrt(s_t + eps)       (eps_in_sqrt=True)
        u_t = g_t / (sqrt(s_t) + eps)     (eps_in_sqrt=False: torch.optim.Adagrad's form)

    A coordinate whose s_t is still 0 gets u_t = 0. s_t has ``nu_dtype`` (float32 for bf16 and
    fp16 parameters by default: in bf16 a sum stops growing once g^2 is below half its ulp).

    Example:
        >>> tx = optjax.scale_by_rss(initial_accumulator_value=0.0, eps=0.0)
        >>> tx.update(jnp.array([-3.0, 0.0]), tx.init(jnp.zeros(2)))[0]
        Array([-1.,  0.], dtype=float32)

    Reference: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
    Stochastic Optimization", JMLR 2011.
    """
    check_nonnegative("initial_accumulator_value", initial_accumulator_value)
    check_nonnegative("eps", eps)

    def init(params):
        return ScaleByRssState(
            tree.real_wide_full_like(params, initial_accumulator_value, nu_dtype)
        )

    def update(updates, state, params=None):
        del params
        s = tree.accumulate(updates, state.sum_of_squares)

        def ratio(g, s):
            s = tree.wide(s)
            denom = _rms_denominator(s, eps, eps_in_sqrt)
            safe = jnp.where(s > 0, denom, 1.0)
            return jnp.where(s > 0, _div(g, safe), 0.0).astype(g.dtype)

        return tree.map_like(ratio, updates, s), ScaleByRssState(s)

    return GradientTransformation(init, update)


@flat_ready
def scale_by_adadelta(
    rho: float = 0.9, eps: float = 1e-6, *, nu_dtype=None
) -> GradientTransformation:
    r"""Adadelta: scale by the ratio of the RMS of past steps to the RMS of past gradients.

        E[g^2]_t = rho E[g^2]_{t-1} + (1 - rho) g_t^2
        u_t = sqrt(E[x^2]_{t-1} + eps) / sqrt(E[g^2]_t + eps) g_t
        E[x^2]_t = rho E[x^2]_{t-1} + (1 - rho) u_t^2

    Both averages have ``nu_dtype`` (float32 for bf16 and fp16 parameters by default).

    Example:
        >>> tx = optjax.scale_by_adadelta(rho=0.0, eps=1.0)
        >>> tx.update(jnp.array([0.0]), tx.init(jnp.zeros(1)))[0]
        Array([0.], dtype=float32)

    Reference: Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012, Algorithm 1.
    """
    check_decay("rho", rho)
    check_nonnegative("eps", eps)

    def init(params):
        return ScaleByAdaDeltaState(
            tree.real_wide_zeros_like(params, nu_dtype), tree.real_wide_zeros_like(params, nu_dtype)
        )

    def update(updates, state, params=None):
        del params
        e_g = tree.ema(updates, state.e_g, rho, order=2)

        def step(g, eg, ex):
            return tree.scaled(g, jnp.sqrt(tree.wide(ex) + eps) / jnp.sqrt(tree.wide(eg) + eps))

        updates = tree.map_like(step, updates, e_g, state.e_x)
        e_x = tree.ema(updates, state.e_x, rho, order=2)
        return updates, ScaleByAdaDeltaState(e_g, e_x)

    return GradientTransformation(init, update)


@flat_ready
def scale_by_lion(b1: float = 0.9, b2: float = 0.99, mu_dtype=None) -> GradientTransformation:
    r"""Lion: the sign of an interpolation of momentum and gradient.

        u_t = sign(b1 m_{t-1} + (1 - b1) g_t)
        m_t = b2 m_{t-1} + (1 - b2) g_t

    ``optjax.lion`` runs the same step through `scale_by_lion_single_read`, which reads m_{t-1}
    once instead of twice.

    Example:
        >>> tx = optjax.scale_by_lion()
        >>> tx.update(jnp.array([0.3, -2.0]), tx.init(jnp.zeros(2)))[0]
        Array([ 1., -1.], dtype=float32)

    Reference: Chen et al., "Symbolic Discovery of Optimization Algorithms", 2023, Algorithm 2.
    """
    check_decay("b1", b1)
    check_decay("b2", b2)

    def init(params):
        return ScaleByLionState(jnp.zeros([], jnp.int32), tree.moment_zeros_like(params, mu_dtype))

    def update(updates, state, params=None):
        del params
        direction = tree.map_like(
            lambda g, m: jnp.sign(b1 * tree.wide(m) + (1 - b1) * tree.wide(g)).astype(g.dtype),
            updates,
            state.mu,
            names=("updates", "mu"),
        )
        mu = tree.ema(updates, state.mu, b2)
        return direction, ScaleByLionState(tree.safe_increment(state.count), mu)

    return GradientTransformation(init, update)


@flat_ready
def scale_by_lion_single_read(
    b1: float = 0.9, b2: float = 0.99, mu_dtype=None
) -> GradientTransformation:
    r"""`scale_by_lion`'s step reading the momentum once: its fast path (same state, same signs).

    When 0 < b2, b1 <= b2 are numbers and the momentum is kept at full precision, the direction
    is formed from the new momentum, ``u_t = sign(a m_t + (1 - a) g_t)`` with a = b1 / b2: the
    same interpolation (substitute m_t = b2 m_{t-1} + (1 - b2) g_t), still a convex combination,
    so it rounds no worse. The step then reads m_{t-1} only once: XLA:CPU fuses no two outputs
    into one loop, and a second reader of m_{t-1} would force a copy of the whole momentum before
    it is updated in place. Other arguments, and leaves whose momentum is stored in a lower
    precision, take scale_by_lion's formula.
    """
    static = isinstance(b1, (int, float)) and isinstance(b2, (int, float))
    if not (static and 0 < b2 and b1 <= b2):
        return scale_by_lion(b1, b2, mu_dtype)
    paper = scale_by_lion(b1, b2, mu_dtype)  # checks the arguments; its init is this one's
    a = b1 / b2

    def update(updates, state, params=None):
        del params
        mu = tree.ema(updates, state.mu, b2)

        def direction(g, m, m_new):
            if m.dtype == tree.compute_dtype(m.dtype):
                c = a * m_new + (1 - a) * tree.wide(g).astype(m.dtype)
            else:
                c = b1 * tree.wide(m) + (1 - b1) * tree.wide(g)
            return jnp.sign(c).astype(g.dtype)

        direction = tree.map_like(direction, updates, state.mu, mu, names=("updates", "mu", "mu"))
        return direction, ScaleByLionState(tree.safe_increment(state.count), mu)

    return GradientTransformation(paper.init, update)


def _radam_rho(b2, count):
    """RAdam's rho_t = rho_inf - 2 t b2^t / (1 - b2^t) without its catastrophic cancellation.

    With L = -log b2 and x = t L: rho_t = (rho_inf - 2/L) + (2/L)(1 - x/expm1(x)). The bracket is
    a constant (formed on the host for a Python b2) and 1 - x/expm1(x) takes its Taylor series
    x/2 - x^2/12 + x^4/720 - x^6/30240 for small x, so rho_t keeps float32's relative precision
    where the direct form in float32 is off by 0.3% near the threshold.
    """
    log_b2 = tree.log_decay(b2)
    offset = (1.0 + b2) / (1.0 - b2) + 2.0 / log_b2
    x = -tree.step_as_float(count) * log_b2
    series = x / 2 - x**2 / 12 + x**4 / 720 - x**6 / 30240
    direct = 1 - x / jnp.expm1(jnp.where(x < 0.1, 1.0, x))
    return offset - (2.0 / log_b2) * jnp.where(x < 0.1, series, direct)


@flat_ready
def scale_by_radam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    *,
    nesterov: bool = False,
    eps_on_raw_nu: bool = False,
    nu_dtype=None,
) -> GradientTransformation:
    r"""Rectified Adam: Adam's step rescaled by r_t once the variance estimate is trustworthy.

        rho_inf = 2 / (1 - b2) - 1        rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        u_t = r_t m̂_t / (sqrt(v̂_t + eps_root) + eps)   if rho_t >= threshold,   else m̂_t

    ``eps_on_raw_nu=True`` adds eps to the root of the raw v_t and bias-corrects afterwards,
    ``u_t = r_t m̂_t sqrt(1 - b2^t) / (sqrt(v_t + eps_root) + eps)`` in the rectified phase,
    as torch.optim.RAdam does (in the default form's terms, an eps of eps / sqrt(1 - b2^t)).
    v_t has ``nu_dtype`` (see scale_by_adam).

    Example:
        >>> tx = optjax.scale_by_radam()
        >>> tx.update(jnp.array([0.5]), tx.init(jnp.zeros(1)))[0]   # early steps: plain momentum
        Array([0.5], dtype=float32)

    Reference: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020.
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)
    check_finite("threshold", threshold)
    rho_inf = (1.0 + b2) / (1.0 - b2)

    def init(params):
        return ScaleByAdamState(
            jnp.zeros([], jnp.int32),
            tree.zeros_like(params),
            tree.real_wide_zeros_like(params, nu_dtype),
        )

    def update(updates, state, params=None):
        del params
        count = tree.safe_increment(state.count)
        mu = tree.ema(updates, state.mu, b1)
        nu = tree.ema(updates, state.nu, b2, order=2)
        rho = _radam_rho(b2, count)
        rectified = rho >= threshold
        safe_rho = jnp.where(rectified, rho, rho_inf)  # keeps the unused branch finite
        r = jnp.sqrt(
            (safe_rho - 4) * (safe_rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * safe_rho)
        )

        m_corrections = _first_moment_corrections(b1, count, nesterov)
        c2 = tree.one_minus_power(b2, count)

        def step(g, m, v):
            m_hat = _first_moment_hat(g, m, b1, m_corrections)
            v_hat = _div(v, c2)
            if eps_on_raw_nu:  # torch.optim.RAdam's form
                root_c2 = jnp.sqrt(c2).astype(v_hat.dtype)
                denom = (jnp.sqrt(tree.wide(v) + eps_root) + eps) / root_c2
            else:
                denom = jnp.sqrt(v_hat + eps_root) + eps
            adam = _div(r.astype(m_hat.dtype) * m_hat, denom)
            return jnp.where(rectified, adam, m_hat).astype(g.dtype)

        return tree.map_like(step, updates, mu, nu), ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init, update)
