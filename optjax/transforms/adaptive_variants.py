"""Adam's variants: AdaBelief, Adan, Yogi, NovoGrad and SM3, with optax's names and defaults.

Numerics as in optjax.transforms.adaptive: every ratio is formed in float32 at least and rounded
once to the gradient's dtype; first moments keep the parameter's dtype; second moments (AdaBelief's
s_t, Adan's n_t, Yogi's v_t, NovoGrad's per-layer norms, SM3's accumulators), and the fields optax
names like them (Adan's v, SM3's momentum nu), are kept in float32 for bf16 and fp16 parameters;
bias corrections ``1 - b^t`` are formed by `tree.one_minus_power` (float32 at least), accurate for
b near 1 and for any step count up to the saturated int32. Complex leaves use |g|^2 where the
papers square.

Where optax 0.2.8 is wrong, optjax follows the paper instead: Adan weighs the gradient difference
by b2 (optax by 1 - b2); SM3 takes scalar (shape ()) leaves and complex ones, which optax refuses.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import (
    check_decay,
    check_nonnegative,
    check_unit_interval,
    is_traced,
    is_zero,
)
from optjax.base import GradientTransformation, StepCount, Updates
from optjax.flat import flat_ready, per_leaf
from optjax.transforms.adaptive import (
    ScaleByAdamState,
    _div,
    _first_moment_corrections,
    _first_moment_hat,
)

__all__ = [
    "ScaleByAdanState",
    "ScaleByBeliefState",
    "ScaleByNovogradState",
    "ScaleBySM3State",
    "scale_by_adan",
    "scale_by_belief",
    "scale_by_novograd",
    "scale_by_sm3",
    "scale_by_yogi",
]


class ScaleByBeliefState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
    mu: Updates  # first moment m_t
    nu: Updates  # second moment of the prediction error, s_t


class ScaleByAdanState(NamedTuple):
    m: Updates  # moving average of the gradients
    v: Updates  # moving average of the gradient differences
    n: Updates  # moving average of the squared look-ahead gradient
    g: Updates  # the previous gradient
    t: StepCount  # int32 scalar: steps taken so far


class ScaleByNovogradState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
    mu: Updates  # first moment m_t, per element
    nu: Updates  # second moment v_t, one scalar per leaf (per layer)


class ScaleBySM3State(NamedTuple):
    mu: Updates  # per leaf, a list of accumulators: one per axis (one whole one if ndim <= 1)
    nu: Updates  # momentum of the scaled gradients


def _real(x: jax.Array) -> jax.Array:
    """The real part of a complex x (a second moment stored in a complex dtype); x otherwise."""
    return x.real if jnp.issubdtype(x.dtype, jnp.complexfloating) else x


def _times_real(x: jax.Array, r: jax.Array) -> jax.Array:
    """``x r`` for a real ``r`` (a scale), in x's dtype, complex or not."""
    return x * r.astype(x.dtype)


@flat_ready
def scale_by_belief(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""Rescale updates by AdaBelief's "belief": the spread of g_t around its moving average.

        m_t = b1 m_{t-1} + (1 - b1) g_t
        s_t = b2 s_{t-1} + (1 - b2) (g_t - m_t)^2 + eps_root
        u_t = m̂_t / (sqrt(ŝ_t) + eps)       m̂_t = m_t / (1 - b1^t),  ŝ_t = s_t / (1 - b2^t)

    With ``nesterov=True`` m̂_t is replaced by ``b1 m_t / (1 - b1^{t+1}) + (1 - b1) g_t /
    (1 - b1^t)``, as in scale_by_adam. A step that agrees with the prediction m_t is large, one
    that contradicts it is small. s_t is kept in float32 for bf16 and fp16 parameters.

    Example:
        >>> tx = optjax.scale_by_belief()
        >>> u, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> u.round(4)   # first step: the error g - m_1 is 0.9 g, so u = 1 / 0.9
        Array([1.1111], dtype=float32)

    Reference: Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in
    Observed Gradients", NeurIPS 2020, Algorithm 2.
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)

    def init(params):
        return ScaleByBeliefState(
            jnp.zeros([], jnp.int32), tree.zeros_like(params), tree.wide_zeros_like(params)
        )

    def update(updates, state, params=None):
        del params  # AdaBelief does not look at the parameters.
        count = tree.safe_increment(state.count)
        mu = tree.ema(updates, state.mu, b1)

        def belief(g, m, s):
            error = tree.abs_square(tree.wide(g) - tree.wide(m))
            wide_s = tree.wide(s)
            return (b2 * wide_s + ((1 - b2) * error + eps_root).astype(wide_s.dtype)).astype(
                s.dtype
            )

        nu = tree.map_like(belief, updates, mu, state.nu, names=("updates", "mu", "nu"))

        m_corrections = _first_moment_corrections(b1, count, nesterov)
        c2 = tree.one_minus_power(b2, count)

        def ratio(g, m, s):
            m_hat = _first_moment_hat(g, m, b1, m_corrections)
            return (m_hat / (jnp.sqrt(_div(s, c2)) + eps)).astype(g.dtype)

        updates = tree.map_like(ratio, updates, mu, nu, names=("updates", "mu", "nu"))
        return updates, ScaleByBeliefState(count, mu, nu)

    return GradientTransformation(init, update)


@flat_ready
def scale_by_adan(
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 0.0,
) -> GradientTransformation:
    r"""Rescale updates by Adan's Nesterov momentum estimates.

        d_t = g_t - g_{t-1}   (d_1 = 0)
        m_t = b1 m_{t-1} + (1 - b1) g_t
        v_t = b2 v_{t-1} + (1 - b2) d_t
        n_t = b3 n_{t-1} + (1 - b3) (g_t + b2 d_t)^2
        u_t = (m̂_t + b2 v̂_t) / (sqrt(n̂_t + eps_root) + eps)      x̂_t = x_t / (1 - b^t)

    The b's are the decays (the paper's 1 - beta's: b2 = 0.92 is its beta_2 = 0.08), so the
    paper's weight (1 - beta_2) on the difference is b2, as in the authors' code. optax 0.2.8
    weighs it by 1 - b2 instead (0.08 where the paper has 0.92). v_t and n_t are kept in float32
    for bf16 and fp16 parameters (a bf16 v_t would round away the small differences it averages);
    the state also keeps the last gradient, in the parameter's dtype.

    Example:
        >>> tx = optjax.scale_by_adan()
        >>> u, _ = tx.update(jnp.array([2.0, -3.0]), tx.init(jnp.zeros(2)))
        >>> u.round(4)   # first step: no difference yet, m̂ = g, n̂ = g^2
        Array([ 1., -1.], dtype=float32)

    Reference: Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing
    Deep Models", 2022 (IEEE TPAMI 2024), Algorithm 1.
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_decay("b3", b3)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)

    def init(params):
        return ScaleByAdanState(
            tree.zeros_like(params),
            tree.wide_zeros_like(params),
            tree.wide_zeros_like(params),
            tree.zeros_like(params),
            jnp.zeros([], jnp.int32),
        )

    def update(updates, state, params=None):
        del params
        t = tree.safe_increment(state.t)
        first = state.t == 0
        diff = tree.map_like(
            lambda g, g_prev: jnp.where(first, 0.0, tree.wide(g) - tree.wide(g_prev)),
            updates,
            state.g,
            names=("updates", "g"),
        )
        m = tree.ema(updates, state.m, b1)
        v = tree.ema(diff, state.v, b2)
        n = tree.map_like(
            lambda g, d, n: (
                b3 * tree.wide(n)
                + ((1 - b3) * tree.abs_square(tree.wide(g) + b2 * d)).astype(tree.wide(n).dtype)
            ).astype(n.dtype),
            updates,
            diff,
            state.n,
            names=("updates", "diff", "n"),
        )
        c1, c2, c3 = (tree.one_minus_power(b, t) for b in (b1, b2, b3))

        def ratio(g, m, v, n):
            direction = _div(m, c1) + b2 * _div(v, c2)
            return (direction / (jnp.sqrt(_div(n, c3) + eps_root) + eps)).astype(g.dtype)

        new_updates = tree.map_like(ratio, updates, m, v, n, names=("updates", "m", "v", "n"))
        return new_updates, ScaleByAdanState(m, v, n, tree.cast_like(updates, state.g), t)

    return GradientTransformation(init, update)


@flat_ready
def scale_by_yogi(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
    eps_root: float = 0.0,
    initial_accumulator_value: float = 1e-6,
) -> GradientTransformation:
    r"""Rescale updates by Yogi's moments: Adam with an additive second-moment update.

        m_t = b1 m_{t-1} + (1 - b1) g_t
        v_t = v_{t-1} - (1 - b2) sign(v_{t-1} - g_t^2) g_t^2
        m̂_t = m_t / (1 - b1^t)                    v̂_t = v_t / (1 - b2^t)
        u_t = m̂_t / (sqrt(v̂_t + eps_root) + eps)

    v_t moves towards g_t^2 by at most (1 - b2) g_t^2 per step, so the effective step size
    cannot grow fast when gradients shrink. Both moments start at ``initial_accumulator_value``
    and are bias-corrected as in Adam (optax's form). v_t stays >= 0, and is kept in float32 for
    bf16 and fp16 parameters.

    Example:
        >>> tx = optjax.scale_by_yogi(eps=0.0, initial_accumulator_value=0.0)
        >>> u, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> u.round(4)   # from zero moments the first step is sign(g), as Adam's
        Array([1.], dtype=float32)

    Reference: Zaheer et al., "Adaptive Methods for Nonconvex Optimization", NeurIPS 2018,
    Algorithm 2.
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)
    check_nonnegative("initial_accumulator_value", initial_accumulator_value)

    def init(params):
        return ScaleByAdamState(
            jnp.zeros([], jnp.int32),
            tree.full_like(params, initial_accumulator_value),
            tree.wide_full_like(params, initial_accumulator_value),
        )

    def update(updates, state, params=None):
        del params
        count = tree.safe_increment(state.count)
        mu = tree.ema(updates, state.mu, b1)

        def second(g, v):
            g2, wide_v = tree.abs_square(g), tree.wide(v)
            step = (1 - b2) * jnp.sign(_real(wide_v) - g2) * g2
            return (wide_v - step.astype(wide_v.dtype)).astype(v.dtype)

        nu = tree.map_like(second, updates, state.nu, names=("updates", "nu"))

        c1, c2 = tree.one_minus_power(b1, count), tree.one_minus_power(b2, count)

        def ratio(g, m, v):
            return (_div(m, c1) / (jnp.sqrt(_div(v, c2) + eps_root) + eps)).astype(g.dtype)

        updates = tree.map_like(ratio, updates, mu, nu, names=("updates", "mu", "nu"))
        return updates, ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init, update)


@flat_ready
def scale_by_novograd(
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mu_dtype=None,
) -> GradientTransformation:
    r"""NovoGrad: per-layer second moments, and momentum of the normalized gradient.

    For each leaf (layer) l, with ||.|| the l2 norm over the leaf's elements:

        v_1 = ||g_1||^2,   v_t = b2 v_{t-1} + (1 - b2) ||g_t||^2
        m_t = b1 m_{t-1} + g_t / (sqrt(v_t + eps_root) + eps) + weight_decay p_t,   m_0 = 0
        u_t = m_t

    The weight decay is added to the normalized gradient (as in the paper), so ``update`` needs
    ``params`` when ``weight_decay`` is not 0. v_t is one float32-or-wider scalar per leaf (on
    optjax.flat's buffers, one per leaf of each buffer); m_t has ``mu_dtype``, by default the
    parameter's.

    Example:
        >>> tx = optjax.scale_by_novograd(eps=0.0)
        >>> u, _ = tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))
        >>> u   # first step: g / ||g||
        Array([0.6, 0.8], dtype=float32)

    Reference: Ginsburg et al., "Stochastic Gradient Methods with Layer-wise Adaptive Moments
    for Training of Deep Networks", 2019, Algorithm 1.
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)
    check_nonnegative("weight_decay", weight_decay)
    decays = not is_zero(weight_decay)

    def init(params):
        zeros = tree.leaf_sum(lambda x: jnp.zeros_like(x, tree.real_wide_dtype(x)), params)
        return ScaleByNovogradState(
            jnp.zeros([], jnp.int32), tree.zeros_like(params, mu_dtype), zeros
        )

    def update(updates, state, params=None):
        if decays and params is None:
            raise ValueError(
                "scale_by_novograd with weight_decay > 0 needs params: "
                "call update(g, state, params)"
            )
        count = tree.safe_increment(state.count)
        norms = tree.leaf_sum(tree.abs_square, updates)
        nu = jax.tree.map(
            lambda s, v: jnp.where(count == 1, s, b2 * v + (1 - b2) * s).astype(v.dtype),
            norms,
            state.nu,
        )
        inverse = jax.tree.map(lambda v: 1 / (jnp.sqrt(v + eps_root) + eps), nu)
        if decays:
            normalized = tree.map_with_leaf_values(
                lambda g, r, p: _times_real(tree.wide(g), r) + weight_decay * tree.wide(p),
                updates,
                inverse,
                params,
            )
        else:
            normalized = tree.map_with_leaf_values(
                lambda g, r: _times_real(tree.wide(g), r), updates, inverse
            )
        mu = tree.map_like(
            lambda a, m: (b1 * tree.wide(m) + a).astype(m.dtype),
            normalized,
            state.mu,
            names=("updates", "mu"),
        )
        return tree.cast_like(mu, updates), ScaleByNovogradState(count, mu, nu)

    return GradientTransformation(init, update)


def _sm3_accumulators(x) -> list:
    """Zeros for SM3's cover of a leaf: one accumulator per axis, shaped like the reduction of
    the leaf over its other axes (so it carries that reduction's sharding); a leaf with at most
    one axis has a single accumulator shaped like itself (a scalar leaf too)."""
    dtype = tree.real_wide_dtype(x)
    if jnp.ndim(x) <= 1:
        return [jnp.zeros_like(x, dtype)]
    # A reduction of x itself, as the factored moments' zeros: under Auto axes it carries x's
    # sharding without the reduced axes (an abstract eval_shape would not).
    return [jnp.zeros_like(jnp.sum(x, axis=_other_axes(i, x.ndim)), dtype) for i in range(x.ndim)]


def _other_axes(axis: int, ndim: int) -> tuple[int, ...]:
    return tuple(i for i in range(ndim) if i != axis)


def _sm3_new_weight(b2):
    """The weight of g_t^2 in SM3's accumulator: 1 when b2 = 1 (a running sum), else 1 - b2."""
    if is_traced(b2):
        return jnp.where(b2 == 1, 1.0, 1 - b2)
    return 1.0 if b2 == 1 else 1 - b2


def scale_by_sm3(b1: float = 0.9, b2: float = 1.0, eps: float = 1e-8) -> GradientTransformation:
    r"""SM3: Adagrad with one accumulator per row and per column (per axis) of each leaf.

    For a leaf with axes 1..k, the accumulator mu^r of axis r holds one value per index along
    that axis. Each step, per element i = (i_1, ..., i_k):

        nu'_t(i) = b2 min_r mu^r_{t-1}(i_r) + c g_t(i)^2        c = 1 if b2 = 1, else 1 - b2
        mu^r_t(j) = max over elements i with i_r = j of nu'_t(i)
        m_t = b1 m_{t-1} + (1 - b1) g_t / sqrt(nu'_t + eps)     (0 where nu'_t = 0)
        u_t = m_t

    With b2 = 1 this is the paper's SM3-II: memory proportional to the sum of the leaf's
    dimensions instead of their product. A leaf with at most one axis (a vector, or a scalar,
    which optax 0.2.8 refuses) has a full accumulator: Adagrad. The accumulators, and the
    momentum (optax's field ``nu``), are kept in float32 for bf16 and fp16 parameters; complex
    leaves accumulate |g|^2.

    Example:
        >>> tx = optjax.scale_by_sm3()
        >>> state = tx.init(jnp.zeros((2, 3)))
        >>> [a.shape for a in state.mu]   # 2 + 3 numbers instead of 2 x 3
        [(2,), (3,)]
        >>> tx.update(jnp.full((2, 3), -4.0), state)[0][0]   # (1 - b1) g / |g|
        Array([-0.1, -0.1, -0.1], dtype=float32)

    Reference: Anil, Gupta, Koren & Singer, "Memory-Efficient Adaptive Optimization", NeurIPS
    2019, Algorithm SM3-II.
    """
    check_decay("b1", b1)
    check_unit_interval("b2", b2)
    check_nonnegative("eps", eps)

    def init(params):
        return ScaleBySM3State(
            jax.tree.map(_sm3_accumulators, params), tree.wide_zeros_like(params)
        )

    def update(updates, state, params=None):
        del params
        weight = _sm3_new_weight(b2)

        def leaf(g, accumulators, m):
            g2 = tree.abs_square(g)
            if g.ndim <= 1:
                previous = accumulators[0]
            else:
                shapes = [
                    [g.shape[r] if i == r else 1 for i in range(g.ndim)] for r in range(g.ndim)
                ]
                previous = functools.reduce(
                    jnp.minimum, [a.reshape(s) for a, s in zip(accumulators, shapes)]
                )
            nu = b2 * previous + weight * g2
            positive = nu > 0
            scale = jnp.where(positive, jax.lax.rsqrt(jnp.where(positive, nu, 1.0) + eps), 0.0)
            scaled = _times_real(tree.wide(g), scale)
            m_new = (b1 * tree.wide(m) + (1 - b1) * scaled).astype(m.dtype)
            if g.ndim <= 1:
                new_accumulators = [nu.astype(accumulators[0].dtype)]
            else:
                new_accumulators = [
                    jnp.max(nu, axis=_other_axes(r, g.ndim)).astype(a.dtype)
                    for r, a in enumerate(accumulators)
                ]
            return m_new.astype(g.dtype), new_accumulators, m_new

        out = jax.tree.map(leaf, updates, state.mu, state.nu)
        new_updates, mu, nu = tree.unzip(updates, out, 3)
        return new_updates, ScaleBySM3State(mu, nu)

    # Each leaf's own axes: on optjax.flat's buffers it runs on the tree of their views.
    return per_leaf(GradientTransformation(init, update))
