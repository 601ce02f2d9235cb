"""torch.optim's Rprop, ASGD, LBFGS and Muon, step for step (re-exported by optjax.torch_compat).

Each keeps the state torch keeps, under torch's names where they are not optjax's (``count`` is
torch's ``step``), and forms each step in torch's order, so that a float32 trajectory matches
torch's to a few ulps per step (tests/golden holds the proof). Where torch forms a scalar
coefficient in double precision from Python numbers (``1 - lr wd``), so do these when the
hyperparameters are Python numbers; a traced or scheduled one is formed in float32.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from optjax import tree
from optjax._checks import (
    check_integer,
    check_learning_rate,
    check_nonnegative,
    check_value,
    concrete,
    is_traced,
    is_zero,
)
from optjax.base import GradientTransformation, ScalarOrSchedule, StepCount, Updates
from optjax.contrib._muon import _explicit_sharding
from optjax.core import with_input_checks
from optjax.flat import per_leaf
from optjax.transforms.torch_forms import check_real_params

__all__ = [
    "ASGD",
    "LBFGS",
    "ASGDState",
    "LBFGSState",
    "Muon",
    "MuonState",
    "Rprop",
    "RpropState",
    "asgd_average",
]


def _pair(name: str, value) -> tuple[Any, Any]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a pair of numbers, got {name}={value!r}")
    return value[0], value[1]


def _check_option(name: str, value, options: tuple) -> None:
    """``value`` one of ``options`` (which may include None, unlike check_choice's sorted list)."""
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {name}={value!r}")


def _lr_at(lr: ScalarOrSchedule, count) -> jax.Array:
    """The learning rate of the step counted ``count`` (from 0), in float32 at least."""
    value = lr(count) if callable(lr) else lr
    return jnp.asarray(value, tree.scalar_dtype())


def _python(*values) -> bool:
    """Whether every value is a Python number (torch then forms its coefficients in double)."""
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


# ---------------------------------------------------------------------------------------------
# Rprop


class RpropState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far (torch's ``step``)
    prev: Updates  # torch's ``prev``: g_{t-1}, set to 0 where its sign flipped
    step_size: Updates  # torch's ``step_size``: Δ_t per element (float32 at least)


def Rprop(
    lr: ScalarOrSchedule = 1e-2,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50),
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""torch.optim.Rprop (torch 2.13): a step size per element, grown while the gradient keeps
    its sign, shrunk (and the step skipped) where it flips.

        s_t = sign(g_t g_{t-1})                        (the product's sign; g_0 = 0)
        Δ_t = clip(η_t Δ_{t-1}, step_sizes)    η_t = etas[1] (s_t > 0), etas[0] (s_t < 0), 1
        g_t <- 0 where s_t < 0,   p_t = p_{t-1} - Δ_t sign(g_t)

    with Δ_0 = lr. Unlike `optjax.scale_by_rprop` (iRprop- as optax writes it): Δ is clipped
    also where s_t = 0 (so at step 1: Δ_1 = clip(lr)), the flip is read from the product
    g_t g_{t-1} (an underflow to 0 counts as no flip, as in torch), and ``lr`` is only the
    initial step size (torch reads ``group["lr"]`` once, when it creates the state): a schedule
    is read at step 0. ``etas`` must satisfy 0 < etas[0] < 1 < etas[1] (torch's check) and
    ``step_sizes`` 0 <= min <= max.

    Example:
        >>> tx = optjax.torch_compat.Rprop(lr=0.1)
        >>> state = tx.init(jnp.zeros(2))
        >>> u, state = tx.update(jnp.array([3.0, -1.0]), state)   # -lr sign(g)
        >>> tx.update(jnp.array([2.0, 5.0]), state)[0]   # same sign: 1.2 lr; flip: skipped
        Array([-0.12,  0.  ], dtype=float32)
    """
    check_learning_rate("lr", lr)
    eta_minus, eta_plus = _pair("etas", etas)
    check_value("etas[0]", eta_minus, lambda x: 0 < x < 1, "in (0, 1)")
    check_value("etas[1]", eta_plus, lambda x: x > 1, "a number > 1")
    low, high = _pair("step_sizes", step_sizes)
    check_nonnegative("step_sizes[0]", low)
    check_nonnegative("step_sizes[1]", high)
    if concrete(low) is not None and concrete(high) is not None and low > high:
        raise ValueError(
            f"step_sizes must be (min, max) with min <= max, got step_sizes={step_sizes!r}"
        )

    def init(params):
        check_real_params(params, "Rprop")
        lr0 = _lr_at(lr, jnp.zeros([], jnp.int32))
        return RpropState(
            jnp.zeros([], jnp.int32),
            tree.zeros_like(params),
            jax.tree.map(lambda p: jnp.full_like(p, lr0, tree.wide_dtype(p)), params),
        )

    def update(updates, state, params=None):
        del params

        def leaf(g, prev, size):
            g = -g if maximize else g
            s = jnp.sign(g * prev)
            eta = jnp.where(s > 0, eta_plus, jnp.where(s < 0, eta_minus, 1)).astype(size.dtype)
            size = jnp.clip(size * eta, jnp.asarray(low, size.dtype), jnp.asarray(high, size.dtype))
            g = jnp.where(s < 0, jnp.zeros_like(g), g)
            u = -(jnp.sign(g).astype(size.dtype) * size)
            return u.astype(g.dtype), g, size

        out = tree.map_like(leaf, updates, state.prev, state.step_size, names=("updates", "state"))
        new_updates, prev, size = tree.unzip(updates, out, 3)
        return new_updates, RpropState(tree.safe_increment(state.count), prev, size)

    # On the flat layout: the views.
    return with_input_checks("Rprop", per_leaf(GradientTransformation(init, update)))


# ---------------------------------------------------------------------------------------------
# ASGD


class ASGDState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far (torch's ``step``)
    eta: jax.Array  # float32 scalar: the step size of the next step
    mu: jax.Array  # float32 scalar: the averaging weight of the next step
    ax: Updates  # the averaged parameters (0 before the first step)


def ASGD(
    lr: ScalarOrSchedule = 1e-2,
    lambd: float = 1e-4,
    alpha: float = 0.75,
    t0: float = 1e6,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""torch.optim.ASGD (torch 2.13): SGD with a decaying step size and a running average of
    the iterates (Polyak-Ruppert averaging), which the state keeps and `asgd_average` reads.

        g_t <- g_t + wd p_{t-1}
        p_t = p_{t-1} (1 - λ η_t) - η_t g_t
        ax_t = p_t   where μ_t = 1,   else ax_{t-1} + μ_t (p_t - ax_{t-1})
        η_1 = lr_0,  η_{t+1} = lr_{t-1} / (1 + λ lr_{t-1} t)^alpha,  μ_{t+1} = 1 / max(1, t - t0)

    (lr_k the learning rate of the step counted k from 0: torch computes η_{t+1} and μ_{t+1} at
    the end of step t from that step's ``lr``). The parameters themselves are the SGD iterates;
    the average is a by-product (torch's ``state["ax"]``), to be read at the end of training.
    With the default t0 = 1e6, μ stays 1 and ax is the last iterate. optjax has no optax-style
    counterpart. ``lambd``, ``alpha`` and ``t0`` must be >= 0.

    Example:
        >>> tx = optjax.torch_compat.ASGD(lr=0.1, lambd=0.0)
        >>> p = jnp.array([1.0])
        >>> u, state = tx.update(jnp.array([2.0]), tx.init(p), p)
        >>> u, optjax.torch_compat.asgd_average(state)   # -lr g; ax = p_1 while μ = 1
        (Array([-0.2], dtype=float32), Array([0.8], dtype=float32))
    """
    check_learning_rate("lr", lr)
    check_nonnegative("lambd", lambd)
    check_nonnegative("alpha", alpha)
    check_nonnegative("t0", t0)
    check_nonnegative("weight_decay", weight_decay)

    def init(params):
        check_real_params(params, "ASGD")
        dtype = tree.scalar_dtype()
        return ASGDState(
            jnp.zeros([], jnp.int32),
            _lr_at(lr, jnp.zeros([], jnp.int32)),
            jnp.ones([], dtype),
            tree.zeros_like(params),
        )

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("torch_compat.ASGD.update needs params (p_t = p_{t-1} (1 - λη) - η g)")
        eta, mu = state.eta, state.mu
        shrink = 1 - jnp.asarray(lambd, eta.dtype) * eta

        def leaf(g, p, ax):
            wide = tree.compute_dtype(g.dtype, p.dtype)
            g, p_ = g.astype(wide), p.astype(wide)
            g = -g if maximize else g
            if not is_zero(weight_decay):
                g = g + jnp.asarray(weight_decay, wide) * p_
            new = p_ * shrink.astype(wide) - eta.astype(wide) * g
            ax_w = ax.astype(wide)
            average = jnp.where(mu == 1, new, ax_w + (new - ax_w) * mu.astype(wide))
            return new - p_, average.astype(ax.dtype)

        out = tree.map_like(leaf, updates, params, state.ax, names=("updates", "params", "state"))
        new_updates, ax = tree.unzip(updates, out, 2)
        new_updates = tree.cast_like(new_updates, updates)
        count = tree.safe_increment(state.count)
        t = count.astype(eta.dtype)
        lr_t = _lr_at(lr, state.count)
        new_eta = lr_t / (1 + jnp.asarray(lambd, eta.dtype) * lr_t * t) ** jnp.asarray(
            alpha, eta.dtype
        )
        new_mu = 1 / jnp.maximum(1, t - jnp.asarray(t0, eta.dtype))
        return new_updates, ASGDState(count, new_eta.astype(eta.dtype), new_mu.astype(mu.dtype), ax)

    # On the flat layout: the views.
    return with_input_checks("ASGD", per_leaf(GradientTransformation(init, update)))


def asgd_average(state) -> Updates:
    """The averaged parameters ``ax`` that torch_compat.ASGD keeps (torch's ``state["ax"]``),
    found in ``state`` (ASGD's own, or a chain's holding exactly one ASGD state).

    Example:
        >>> tx = optjax.torch_compat.ASGD(lr=0.5, lambd=0.0, t0=0)
        >>> p, state = jnp.array([4.0]), tx.init(jnp.array([4.0]))
        >>> for _ in range(3):   # p: 4, 2, 1, 0.5 (g = p); μ: 1, 1, 1/2
        ...     u, state = tx.update(p, state, p)
        ...     p = p + u
        >>> p, optjax.torch_compat.asgd_average(state)   # ax: 2, 1, then 1 + (0.5 - 1) / 2
        (Array([0.5], dtype=float32), Array([0.75], dtype=float32))
    """
    found = [
        x
        for x in jax.tree_util.tree_leaves(state, is_leaf=lambda x: isinstance(x, ASGDState))
        if isinstance(x, ASGDState)
    ]
    if len(found) != 1:
        raise ValueError(
            f"asgd_average: the state must hold exactly one torch_compat.ASGD state, found "
            f"{len(found)}"
        )
    return found[0].ax


# ---------------------------------------------------------------------------------------------
# Muon


class MuonState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
    momentum_buffer: (
        Updates  # torch's ``momentum_buffer`` B_t, float32 at least (torch: the parameters' dtype)
    )


_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def _lerp(start, end, weight):
    """torch.lerp with a scalar weight, as torch forms it: ``start + w (end - start)`` for
    |w| < 0.5, else ``end - (end - start) (1 - w)``, w rounded to start's dtype first."""
    w = jnp.asarray(weight, start.dtype)
    small = start + w * (end - start)
    large = end - (end - start) * (1 - w)
    return jnp.where(jnp.abs(w) < 0.5, small, large)


def _newton_schulz_bf16(m: jax.Array, coefficients, steps: int, eps) -> jax.Array:
    """torch's Muon orthogonalisation, in bfloat16 as torch runs it: X = M / max(||M||_F, eps)
    (M transposed first if it has more rows than columns), then ``steps`` times

        A = X X^T,   X <- a X + (b A + c A A) X

    each product accumulated in float32 and each of A, b A + c A A and X rounded to bfloat16
    (torch's bf16 ``@`` and ``addmm``)."""
    f32, bf16 = jnp.float32, jnp.bfloat16
    a, b, c = (jnp.asarray(k, f32) for k in coefficients)

    def mm(u, v, out_sharding=None):
        return jnp.matmul(u, v, preferred_element_type=f32, out_sharding=out_sharding)

    x = m.astype(bf16)
    transposed = m.shape[0] > m.shape[1]
    if transposed:
        x = x.T
    norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(f32)))).astype(bf16)
    norm = jnp.maximum(norm, jnp.asarray(eps, bf16))
    x = (x.astype(f32) / norm.astype(f32)).astype(bf16)
    # On explicit mesh axes, X X^T contracts a sharded axis: it is made whole on every device,
    # and (b A + c A A) X keeps X's sharding.
    sharding = _explicit_sharding(x)
    whole = None if sharding is None else P()
    for _ in range(steps):
        gram = mm(x, x.T, whole).astype(bf16)
        poly = (b * gram.astype(f32) + c * mm(gram, gram)).astype(bf16)
        x = (a * x.astype(f32) + mm(poly, x, sharding)).astype(bf16)
    return x.T if transposed else x


def _lr_ratio(adjust_lr_fn: str | None, shape: tuple[int, ...]) -> float:
    """torch's ``_adjust_lr`` factor for a (rows, cols) matrix."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1, rows / cols))
    return 0.2 * math.sqrt(max(rows, cols))  # "match_rms_adamw"


def Muon(
    lr: ScalarOrSchedule = 1e-3,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = _NS_COEFFICIENTS,
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
) -> GradientTransformation:
    r"""torch.optim.Muon (torch 2.13): the momentum of each matrix orthogonalised by a quintic
    Newton-Schulz iteration in bfloat16, a shape-dependent learning rate, decoupled weight decay.

        B_t = B_{t-1} + (1 - μ) (G_t - B_{t-1})        (torch's lerp: an EMA, B_0 = 0)
        M_t = G_t + μ (B_t - G_t)   (nesterov)   or   B_t
        O_t = NS(M_t)                                  (5 steps, (a, b, c) = ns_coefficients)
        P_t = P_{t-1} (1 - lr wd) - lr r O_t
        r = sqrt(max(1, rows / cols))   (adjust_lr_fn None or "original")
            0.2 sqrt(max(rows, cols))   ("match_rms_adamw")

    NS is torch's: M in bfloat16, divided by max(||M||_F, eps), then X <- a X + (b A + c A^2) X
    with A = X X^T, every product rounded to bfloat16 (`_newton_schulz_bf16`). Only 2-D
    parameters are accepted (``init`` raises, naming the leaf, as torch's constructor does):
    chain it with `optjax.partition` and e.g. torch_compat.AdamW for the others, as torch's
    documentation advises.

    Unlike `optjax.contrib.muon` (optax's): the momentum is an EMA (optax's is ``μ B + G``,
    and Nesterov is ``μ B_t + G_t`` there), the iteration runs in bfloat16 (optax's in the
    parameters' dtype, optjax's in float32 at least) with eps as a floor on the norm (optax adds
    it), the learning rate is scaled by the shape (optax's by ``sqrt(max(1, fan_out / fan_in))``
    only with its adaptive option off), and weight decay multiplies the parameters by
    1 - lr wd before the step. Defaults are torch's: lr 1e-3, weight_decay 0.1, momentum 0.95,
    nesterov, eps 1e-7, 5 steps. ``momentum`` must lie in [0, 1], ``ns_steps`` in [0, 99].
    Unlike torch, the momentum buffer of a bf16 or fp16 matrix is float32 (2 more bytes per
    parameter): an EMA with 1 - μ = 0.05 loses several percent of its value to bf16's rounding,
    which the orthogonalisation then amplifies in the small directions, and small fp16
    gradients times 0.05 fall below fp16's normal range.

    Example:
        >>> tx = optjax.torch_compat.Muon(lr=0.1, weight_decay=0.0)
        >>> p = jnp.zeros((2, 2))
        >>> u, _ = tx.update(jnp.diag(jnp.array([2.0, 2.0])), tx.init(p), p)
        >>> u   # -lr NS(G) = -lr 1.125 I, as torch: singular values near 1, not at 1
        Array([[-0.1125,  0.    ],
               [ 0.    , -0.1125]], dtype=float32)
    """
    check_learning_rate("lr", lr)
    check_nonnegative("weight_decay", weight_decay)
    check_value("momentum", momentum, lambda x: 0 <= x <= 1, "in [0, 1]")
    if not isinstance(nesterov, bool):
        raise ValueError(f"nesterov must be True or False, got nesterov={nesterov!r}")
    if is_traced(ns_coefficients) and getattr(ns_coefficients, "shape", None) == (3,):
        a, b, c = ns_coefficients  # three traced numbers (under jit or vmap)
        ns_coefficients = (a, b, c)
    if not isinstance(ns_coefficients, (tuple, list)) or len(ns_coefficients) != 3:
        raise ValueError(
            f"ns_coefficients must be three numbers (a, b, c), got ns_coefficients="
            f"{ns_coefficients!r}"
        )
    for i, k in enumerate(ns_coefficients):
        check_value(f"ns_coefficients[{i}]", k, lambda x: True, "a finite number")
    check_nonnegative("eps", eps)
    check_integer("ns_steps", ns_steps, low=0, high=99)
    _check_option("adjust_lr_fn", adjust_lr_fn, (None, "original", "match_rms_adamw"))
    steps = int(ns_steps)
    known = _python(lr, weight_decay)

    def init(params):
        check_real_params(params, "Muon")
        for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
            if jnp.ndim(p) != 2:
                raise ValueError(
                    f"params{jax.tree_util.keystr(path)} has shape {jnp.shape(p)}: "
                    "torch.optim.Muon only supports 2-D parameters (step the others with e.g. "
                    "torch_compat.AdamW, through optjax.partition)"
                )
        return MuonState(jnp.zeros([], jnp.int32), tree.wide_zeros_like(params))

    def update(updates, state, params=None):
        if params is None and not is_zero(weight_decay):
            raise ValueError("torch_compat.Muon.update needs params for weight_decay != 0")
        lr_t = _lr_at(lr, state.count)
        shrink = 1 - lr * weight_decay if known else 1 - lr_t * weight_decay

        def leaf(g, buf, p):
            wide = tree.compute_dtype(g.dtype)
            buf = _lerp(buf.astype(wide), g.astype(wide), 1 - momentum)
            m = _lerp(g.astype(wide), buf, momentum) if nesterov else buf
            o = _newton_schulz_bf16(m, ns_coefficients, steps, eps).astype(wide)
            ratio = _lr_ratio(adjust_lr_fn, g.shape)
            rate = jnp.asarray(lr * ratio if known else lr_t * ratio, wide)
            if params is None:  # weight_decay 0: p (1 - 0) - rate o, less p
                return -rate * o, buf
            p = p.astype(wide)
            new = p * jnp.asarray(shrink, wide) - rate * o
            return new - p, buf

        like = updates if params is None else params
        out = tree.map_like(
            leaf, updates, state.momentum_buffer, like, names=("updates", "state", "params")
        )
        new_updates, buf = tree.unzip(updates, out, 2)
        return tree.cast_like(new_updates, updates), MuonState(
            tree.safe_increment(state.count), tree.cast_like(buf, state.momentum_buffer)
        )

    return with_input_checks("Muon", per_leaf(GradientTransformation(init, update)))


# ---------------------------------------------------------------------------------------------
# LBFGS


class LBFGSState(NamedTuple):
    count: StepCount  # int32 scalar: optimizer steps (calls of update) so far
    n_iter: jax.Array  # int32: L-BFGS iterations over all steps (torch's ``n_iter``)
    func_evals: jax.Array  # int32: evaluations of f over all steps (torch's ``func_evals``)
    d: jax.Array  # the last direction, the parameters flattened into one vector
    t: jax.Array  # the last step size
    old_dirs: jax.Array  # (history_size, n): y_j = g_{j+1} - g_j, a ring whose oldest is at head
    old_stps: jax.Array  # (history_size, n): s_j = t_j d_j
    ro: jax.Array  # (history_size,): 1 / <y_j, s_j>
    head: jax.Array  # int32: the slot of the oldest pair
    num_old: jax.Array  # int32: pairs held
    H_diag: jax.Array  # <y, s> / <y, y> of the newest pair (1 before there is one)
    prev_flat_grad: jax.Array  # the gradient at the start of the last iteration
    prev_loss: jax.Array  # f there


class _Iterate(NamedTuple):
    """One step's inner loop: where it is (x, f, g), the state it updates, and its counters."""

    x: jax.Array
    loss: jax.Array
    g: jax.Array
    state: LBFGSState
    n_iter: jax.Array  # iterations in this step
    evals: jax.Array  # evaluations in this step (torch's current_evals)
    opt_cond: jax.Array
    stop: jax.Array


def _flatten(params, dtype) -> jax.Array:
    """All leaves in one vector, as torch's LBFGS keeps them. On a mesh the vector is whole on
    every device (it mixes every parameter's elements: no parameter's sharding fits it)."""
    mesh = jax.sharding.get_abstract_mesh()
    explicit = not mesh.empty and jax.sharding.AxisType.Explicit in mesh.axis_types
    leaves = [jax.sharding.reshard(x, P()) if explicit else x for x in jax.tree.leaves(params)]
    flat = jnp.concatenate([jnp.ravel(x).astype(dtype) for x in leaves] + [jnp.zeros([0], dtype)])
    return flat if mesh.empty or explicit else jax.lax.with_sharding_constraint(flat, P())


def _unflatten(flat: jax.Array, like):
    leaves, treedef = jax.tree.flatten(like)
    out, start = [], 0
    for x in leaves:
        size = math.prod(jnp.shape(x))
        out.append(flat[start : start + size].reshape(jnp.shape(x)).astype(jnp.result_type(x)))
        start += size
    return jax.tree.unflatten(treedef, out)


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """The minimiser of the cubic through (x1, f1) and (x2, f2) with slopes g1, g2, clipped to
    ``bounds`` (the interval between x1 and x2 by default); their midpoint if it has none."""
    lo, hi = bounds if bounds is not None else (jnp.minimum(x1, x2), jnp.maximum(x1, x2))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 * d1 - g1 * g2
    d2 = jnp.sqrt(jnp.maximum(d2_square, 0))
    right = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    left = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    min_pos = jnp.where(x1 <= x2, right, left)
    return jnp.where(d2_square >= 0, jnp.minimum(jnp.maximum(min_pos, lo), hi), (lo + hi) / 2)


class _Bracket(NamedTuple):
    t: jax.Array  # (2,) step sizes
    f: jax.Array  # (2,) values
    g: jax.Array  # (2, n) gradients
    gtd: jax.Array  # (2,) slopes along d


def _strong_wolfe(evaluate, t, d, f, g, gtd, max_ls, c1=1e-4, c2=0.9, tolerance_change=1e-9):
    """torch's ``_strong_wolfe``: bracket a step size meeting the strong Wolfe conditions along d
    from step size t, then zoom in by cubic interpolation, within ``max_ls`` further values of f.
    Returns (f, g, t) at the step size taken and the number of values of f computed."""
    dtype = f.dtype
    d_norm = jnp.max(jnp.abs(d))
    f_new, g_new = evaluate(t)
    gtd_new = jnp.dot(g_new, d)

    def armijo_fails(t, f_new):
        return f_new > f + c1 * t * gtd

    def found(c):  # the bracketing phase's stopping tests, in torch's order
        (_t_prev, f_prev, _, _, t, f_new, _, gtd_new, ls_iter) = c
        past = armijo_fails(t, f_new) | ((ls_iter > 1) & (f_new >= f_prev))
        wolfe = ~past & (jnp.abs(gtd_new) <= -c2 * gtd)
        uphill = ~past & ~wolfe & (gtd_new >= 0)
        return past, wolfe, uphill

    def grow(c):
        (t_prev, f_prev, _g_prev, gtd_prev, t, f_new, g_new, gtd_new, ls_iter) = c
        bounds = (t + 0.01 * (t - t_prev), t * 10)
        t_next = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds)
        f_next, g_next = evaluate(t_next)
        return (t, f_new, g_new, gtd_new, t_next, f_next, g_next, jnp.dot(g_next, d), ls_iter + 1)

    zero = jnp.zeros([], dtype)
    start = (
        zero,
        f,
        g,
        gtd,
        jnp.asarray(t, dtype),
        f_new,
        g_new,
        gtd_new,
        jnp.zeros([], jnp.int32),
    )

    def searching(c):
        past, wolfe, uphill = found(c)
        return (c[-1] < max_ls) & ~(past | wolfe | uphill)

    c = jax.lax.while_loop(searching, grow, start)
    (t_prev, f_prev, g_prev, gtd_prev, t, f_new, g_new, gtd_new, ls_iter) = c
    _past, wolfe, _uphill = found(c)
    out_of_steps = ls_iter == max_ls
    pair = lambda a, b: jnp.stack([a, b])  # noqa: E731
    bracket = _Bracket(
        t=jnp.where(out_of_steps, pair(zero, t), jnp.where(wolfe, pair(t, t), pair(t_prev, t))),
        f=jnp.where(
            out_of_steps, pair(f, f_new), jnp.where(wolfe, pair(f_new, f_new), pair(f_prev, f_new))
        ),
        g=jnp.where(
            out_of_steps, pair(g, g_new), jnp.where(wolfe, pair(g_new, g_new), pair(g_prev, g_new))
        ),
        gtd=jnp.where(wolfe, pair(gtd_new, gtd_new), pair(gtd_prev, gtd_new)),
    )
    done = wolfe & ~out_of_steps
    low = jnp.where(bracket.f[0] <= bracket.f[-1], 0, 1)

    def zooming(z):
        bracket, _low, done, _insuf, ls_iter = z
        narrow = jnp.abs(bracket.t[1] - bracket.t[0]) * d_norm < tolerance_change
        return ~done & (ls_iter < max_ls) & ~narrow

    def zoom(z):
        b, low, done, insuf, ls_iter = z
        high = 1 - low
        t = _cubic_interpolate(b.t[0], b.f[0], b.gtd[0], b.t[1], b.f[1], b.gtd[1])
        t_max, t_min = jnp.max(b.t), jnp.min(b.t)
        eps = 0.1 * (t_max - t_min)
        near_edge = jnp.minimum(t_max - t, t - t_min) < eps
        move = near_edge & (insuf | (t >= t_max) | (t <= t_min))
        moved = jnp.where(jnp.abs(t - t_max) < jnp.abs(t - t_min), t_max - eps, t_min + eps)
        t = jnp.where(move, moved, t)
        insuf = near_edge & ~move
        f_new, g_new = evaluate(t)
        gtd_new = jnp.dot(g_new, d)
        point = (t, f_new, g_new, gtd_new)

        def put(b, i, values):
            return _Bracket(*(x.at[i].set(v) for x, v in zip(b, values)))

        # Armijo fails, or no lower than the low end: the point becomes the high end.
        to_high = armijo_fails(t, f_new) | (f_new >= b.f[low])
        b_high = put(b, high, point)
        low_high = jnp.where(b_high.f[0] <= b_high.f[1], 0, 1)
        # Otherwise the point becomes the low end (the old low the high end, if it lies beyond).
        wolfe = jnp.abs(gtd_new) <= -c2 * gtd
        flip = ~wolfe & (gtd_new * (b.t[high] - b.t[low]) >= 0)
        b_flip = put(b, high, (b.t[low], b.f[low], b.g[low], b.gtd[low]))
        b_low = put(
            _Bracket(*jax.tree.map(lambda u, v: jnp.where(flip, u, v), b_flip, b)), low, point
        )
        new_b = jax.tree.map(lambda u, v: jnp.where(to_high, u, v), b_high, b_low)
        return (
            new_b,
            jnp.where(to_high, low_high, low),
            done | (~to_high & wolfe),
            insuf,
            ls_iter + 1,
        )

    bracket, low, _, _, ls_iter = jax.lax.while_loop(
        zooming, zoom, (bracket, low, done, jnp.zeros([], bool), ls_iter)
    )
    return bracket.f[low], bracket.g[low], bracket.t[low], ls_iter + 1


def LBFGS(
    lr: ScalarOrSchedule = 1,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
) -> GradientTransformation:
    r"""torch.optim.LBFGS (torch 2.13): up to ``max_iter`` L-BFGS iterations per step, each a
    quasi-Newton direction and a fixed step ``lr`` or a strong Wolfe line search.

    ``update(grad, state, params, value_fn=f, value=None, **extras)`` does what torch's
    ``step(closure)`` does, ``value_fn`` (called ``f(params, **extras)``, differentiated by
    jax.value_and_grad) standing for the closure, ``grad`` for the gradient at params (as the
    closure's first call gives it; ``value`` its value, computed from f if not given). The
    inner loop runs under lax.while_loop. Each iteration k, with g_k the gradient at x_k:

        y = g_k - g_{k-1},  s = t_{k-1} d_{k-1}:  the pair (s, y) is kept if <y, s> > 1e-10
                                                   (the last ``history_size``), H = <y,s>/<y,y>
        d_k = -H_k g_k   (L-BFGS two-loop recursion, initial H I; d_1 = -g_1)
        t_k = lr   (t_1 = min(1, 1/||g_1||_1) lr, at the very first iteration)
        stop before stepping if <g_k, d_k> > -tolerance_change
        x_{k+1} = x_k + t_k d_k   (t_k from torch's strong Wolfe search, c1 = 1e-4, c2 = 0.9,
                                   with line_search_fn="strong_wolfe", starting from t_k)

    and the step stops after ``max_iter`` iterations or ``max_eval`` values of f (default
    max_iter * 5 // 4), or where max|g| <= tolerance_grad (also before the first iteration:
    then nothing moves), max|t d| <= tolerance_change, or |f_{k+1} - f_k| < tolerance_change.
    Without a line search, f is not evaluated after the last iteration of a step. The history
    lives in the state from step to step, as in torch; a schedule ``lr`` is read at the step's
    count.

    With ``max_iter=1`` and no line search a step evaluates nothing: ``value_fn`` may then be
    left out, and the update is an ordinary gradient step (as the conformance table runs it).
    Otherwise it is required (a TypeError says so).

    Unlike `optjax.lbfgs` (optax's, one iteration per update with a zoom line search and a
    memory of 10): torch's initial step, its skip of pairs with <y, s> <= 1e-10, its stopping
    tests and its line search, and a memory of 100 by default. The parameters are held as one
    vector of their compute dtype (float32 at least), like torch's flat view, so its state is
    (2 history_size + 3) vectors of their total size. Where the inner loop runs (a value_fn
    given) the update can be differentiated forward, not in reverse. torch forms part of its
    line search in double precision (Python floats), this one in the parameters' dtype: where a
    choice there hangs on rounding (a cubic fit over steps much shorter than the curvature's
    scale, as with a tiny ``lr``), the two can take different courses.

    Example:
        >>> f = lambda w: jnp.sum((w - 1.0) ** 2)
        >>> tx, w = optjax.torch_compat.LBFGS(line_search_fn="strong_wolfe"), jnp.zeros(3)
        >>> u, state = tx.update(jax.grad(f)(w), tx.init(w), w, value_fn=f)
        >>> optjax.apply_updates(w, u)   # a quadratic: the first line search lands on it
        Array([1., 1., 1.], dtype=float32)
    """
    check_learning_rate("lr", lr)
    check_integer("max_iter", max_iter, low=1)
    if max_eval is None:
        max_eval = max_iter * 5 // 4
    check_integer("max_eval", max_eval, low=1)
    check_nonnegative("tolerance_grad", tolerance_grad)
    check_nonnegative("tolerance_change", tolerance_change)
    if isinstance(history_size, bool) or not isinstance(history_size, int) or history_size < 1:
        raise ValueError(f"history_size must be an integer >= 1, got history_size={history_size!r}")
    _check_option("line_search_fn", line_search_fn, (None, "strong_wolfe"))
    m, most, most_evals = history_size, int(max_iter), int(max_eval)
    needs_f = most > 1 or line_search_fn is not None

    def init(params):
        check_real_params(params, "LBFGS")
        dtype = tree.compute_dtype(*(jnp.result_type(x) for x in jax.tree.leaves(params)))
        flat = _flatten(params, dtype)
        zero, ints = jnp.zeros([], dtype), jnp.zeros([], jnp.int32)
        return LBFGSState(
            count=ints,
            n_iter=ints,
            func_evals=ints,
            d=jnp.zeros_like(flat),
            t=zero,
            old_dirs=jnp.zeros((m, *flat.shape), dtype),
            old_stps=jnp.zeros((m, *flat.shape), dtype),
            ro=jnp.zeros([m], dtype),
            head=ints,
            num_old=ints,
            H_diag=jnp.ones([], dtype),
            prev_flat_grad=jnp.zeros_like(flat),
            prev_loss=zero,
        )

    def direction(s: LBFGSState, g):
        """The two-loop recursion: -H g, over the pairs newest first, then oldest first."""
        order = (s.head + jnp.arange(m, dtype=jnp.int32)) % m
        held = jnp.arange(m, dtype=jnp.int32) < s.num_old

        def backward(q, j_held):
            j, h = j_held
            al = jnp.dot(s.old_stps[j], q) * s.ro[j]
            return jnp.where(h, q - al * s.old_dirs[j], q), jnp.where(h, al, 0)

        q, al = jax.lax.scan(backward, -g, (order, held), reverse=True)
        r = q * s.H_diag

        def forward(r, j_al_held):
            j, al, h = j_al_held
            be = jnp.dot(s.old_dirs[j], r) * s.ro[j]
            return jnp.where(h, r + (al - be) * s.old_stps[j], r), None

        r, _ = jax.lax.scan(forward, r, (order, al, held))
        return r

    def iterate(c: _Iterate, lr_t, evaluate) -> _Iterate:
        """One iteration of torch's inner loop; ``evaluate(x)`` is (f, its gradient) at x."""
        s, g = c.state, c.g
        n_iter, total = c.n_iter + 1, s.n_iter + 1
        first = total == 1
        # The pair of the last iteration, kept if <y, s> > 1e-10.
        y, step = g - s.prev_flat_grad, s.d * s.t
        ys = jnp.dot(y, step)
        keep = ~first & (ys > 1e-10)
        slot = (s.head + s.num_old) % m
        full = s.num_old == m
        s = s._replace(
            old_dirs=s.old_dirs.at[slot].set(jnp.where(keep, y, s.old_dirs[slot])),
            old_stps=s.old_stps.at[slot].set(jnp.where(keep, step, s.old_stps[slot])),
            ro=s.ro.at[slot].set(jnp.where(keep, 1 / ys, s.ro[slot])),
            head=jnp.where(keep & full, (s.head + 1) % m, s.head),
            num_old=jnp.where(keep, jnp.minimum(s.num_old + 1, m), s.num_old),
            H_diag=jnp.where(first, 1, jnp.where(keep, ys / jnp.dot(y, y), s.H_diag)).astype(
                s.H_diag.dtype
            ),
        )
        d = jnp.where(first, -g, direction(s, g))
        t = jnp.where(first, jnp.minimum(1, 1 / jnp.sum(jnp.abs(g))) * lr_t, lr_t).astype(s.t.dtype)
        s = s._replace(n_iter=total, d=d, t=t, prev_flat_grad=g, prev_loss=c.loss)
        gtd = jnp.dot(g, d)
        no_descent = gtd > -tolerance_change
        x, loss, opt_cond = c.x, c.loss, c.opt_cond
        if line_search_fn is not None:
            loss, g, t, ls_evals = _strong_wolfe(
                lambda t: evaluate(c.x + t * d), t, d, loss, g, gtd, max_ls=most_evals - c.evals
            )
            x = x + t * d
            opt_cond = jnp.max(jnp.abs(g)) <= tolerance_grad
            s = s._replace(t=t)
        else:
            x = x + t * d
            if most > 1:
                again = n_iter != most
                loss, g = jax.lax.cond(again, lambda: evaluate(x), lambda: (loss, g))
                opt_cond = jnp.where(again, jnp.max(jnp.abs(g)) <= tolerance_grad, opt_cond)
                ls_evals = again.astype(jnp.int32)
            else:
                ls_evals = jnp.zeros([], jnp.int32)
        evals = c.evals + ls_evals
        s = s._replace(func_evals=s.func_evals + ls_evals)
        stop = (
            (n_iter == most)
            | (evals >= most_evals)
            | opt_cond
            | (jnp.max(jnp.abs(d * t)) <= tolerance_change)
            | (jnp.abs(loss - c.loss) < tolerance_change)
        )
        moved = _Iterate(x, loss, g, s, n_iter, evals, opt_cond, stop)
        # No descent: stop before stepping, the direction and step size kept as torch keeps them.
        halted = c._replace(state=s, n_iter=n_iter, stop=jnp.ones([], bool))
        return jax.tree.map(lambda a, b: jnp.where(no_descent, a, b), halted, moved)

    def update(updates, state, params=None, *, value_fn=None, value=None, **extra_args):
        if params is None:
            raise ValueError("torch_compat.LBFGS.update needs params")
        if needs_f and value_fn is None:
            raise TypeError(
                "torch_compat.LBFGS.update needs value_fn= (the objective f, torch's closure) "
                "unless max_iter=1 and line_search_fn=None"
            )
        dtype = state.d.dtype
        x0 = _flatten(params, dtype)
        g0 = _flatten(updates, dtype)
        lr_t = _lr_at(lr, state.count).astype(dtype)

        def evaluate(x):
            """f and its gradient at the flat point x."""
            v, grad = jax.value_and_grad(lambda w: value_fn(w, **extra_args))(_unflatten(x, params))
            return jnp.asarray(v, dtype), _flatten(grad, dtype)

        if value is None:
            loss0 = (
                jnp.asarray(value_fn(params, **extra_args), dtype)
                if value_fn is not None
                else jnp.zeros([], dtype)
            )
        else:
            loss0 = jnp.asarray(value, dtype)
        opt_cond = jnp.max(jnp.abs(g0)) <= tolerance_grad
        start = _Iterate(
            x0,
            loss0,
            g0,
            state._replace(func_evals=state.func_evals + 1),
            jnp.zeros([], jnp.int32),
            jnp.ones([], jnp.int32),
            opt_cond,
            opt_cond,
        )
        if needs_f:
            end = jax.lax.while_loop(lambda c: ~c.stop, lambda c: iterate(c, lr_t, evaluate), start)
        else:
            end = jax.tree.map(
                lambda a, b: jnp.where(opt_cond, a, b), start, iterate(start, lr_t, None)
            )
        new_state = end.state._replace(count=tree.safe_increment(state.count))
        new_updates = _unflatten(end.x - x0, updates)
        return new_updates, new_state

    return with_input_checks("LBFGS", per_leaf(GradientTransformation(init, update)))
