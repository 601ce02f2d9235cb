"""Algorithms in the form torch.optim computes them, where that form is not an argument of a
paper primitive: NAdam with its momentum-decay schedule, and torch's Adafactor second moment.

Both keep float32 state (the step count int32, mu_product float32 as in torch) and form their
scalar coefficients in float32; optjax.torch_compat chains them into torch's optimizers.

Like every torch.optim preset, they refuse complex parameters (`check_real_params`): torch.optim
steps a complex tensor as a pair of real ones, each part with its own second moment, which these
forms do not reproduce; optjax's own optimizers step complex parameters as optax does.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_at_most, check_decay, check_nonnegative
from optjax.base import GradientTransformation, StepCount, Updates
from optjax.flat import FlatBuffers, as_tree, flat_ready, per_leaf
from optjax.transforms.factored import FactoredState

__all__ = [
    "ScaleByNadamState",
    "check_real_params",
    "nadam_momentum",
    "scale_by_factored_rms_torch",
    "scale_by_nadam",
]


class ScaleByNadamState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
    mu_product: jax.Array  # float32 scalar (float64 under x64): prod_{i<=t} mu_i
    mu: Updates  # first moment m_t
    nu: Updates  # second moment v_t


def check_real_params(params, preset: str) -> None:
    """Raise ValueError naming the first complex leaf of ``params``, for torch.optim's ``preset``.

    torch.optim steps a complex tensor as a pair of real ones (``torch.view_as_real``): each part
    has its own second moment, where optjax (as optax) keeps one of |g|^2 per element. A preset
    meant to match torch step for step therefore refuses complex leaves, and names the optjax
    optimizer that steps them.

    Example:
        >>> params = {"w": jnp.ones(2), "z": jnp.ones(2, jnp.complex64)}
        >>> optjax.torch_compat.Adam().init(params)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: params['z'] is complex64: torch.optim.Adam steps a complex tensor as a ...
    """
    views = jax.eval_shape(as_tree, params) if isinstance(params, FlatBuffers) else params
    for path, x in jax.tree_util.tree_flatten_with_path(views)[0]:
        dtype = jnp.result_type(x)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            raise ValueError(
                f"params{jax.tree_util.keystr(path)} is {dtype}: torch.optim.{preset} steps a "
                "complex tensor as a pair of real ones (torch.view_as_real), which this preset "
                f"does not reproduce; use optjax.{preset.lower()}, which steps complex parameters "
                "as optax does (|g|^2 where a square is meant)"
            )


def nadam_momentum(b1: float, momentum_decay: float, count: jax.Array) -> jax.Array:
    """NAdam's momentum schedule ``mu_t = b1 (1 - 0.5 * 0.96^(t momentum_decay))`` in
    `optjax.tree.scalar_dtype` (float32, as torch forms it, or float64 under x64)."""
    exponent = tree.step_as_float(count) * momentum_decay
    return b1 * (1.0 - 0.5 * jnp.power(jnp.asarray(0.96, exponent.dtype), exponent))


@flat_ready
def scale_by_nadam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, momentum_decay: float = 4e-3
) -> GradientTransformation:
    r"""NAdam with Dozat's warming momentum schedule, as torch.optim.NAdam computes it.

        mu_t = b1 (1 - 0.5 * 0.96^(t psi)),        psi = momentum_decay,  t = 1, 2, ...
        P_t = P_{t-1} mu_t,   P_0 = 1               (mu_product, float32)
        m_t = b1 m_{t-1} + (1 - b1) g_t            v_t = b2 v_{t-1} + (1 - b2) g_t^2
        d_t = sqrt(v_t / (1 - b2^t)) + eps
        u_t = [(1 - mu_t) / (1 - P_t) g_t + mu_{t+1} / (1 - P_t mu_{t+1}) m_t] / d_t

    With ``momentum_decay=0`` the schedule is the constant ``b1 / 2``. Compare
    ``scale_by_adam(nesterov=True)``, which uses the constant ``b1`` and Adam's corrections.

    Example:
        >>> tx = optjax.scale_by_nadam()
        >>> u, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> u.round(4)   # step 1: sign(g) (1 + (1 - b1) mu_2 / (1 - mu_1 mu_2))
        Array([1.0565], dtype=float32)
        >>> state.mu_product.round(4)   # mu_1 = 0.9 (1 - 0.5 * 0.96^0.004)
        Array(0.4501, dtype=float32)

    Reference: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop,
    Algorithm 2; torch.optim.NAdam (torch 2.13).
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("momentum_decay", momentum_decay)

    def init(params):  # v in float32 for bf16 and fp16 params (see scale_by_adam)
        check_real_params(params, "NAdam")
        return ScaleByNadamState(
            jnp.zeros([], jnp.int32),
            jnp.ones([], tree.scalar_dtype()),
            tree.zeros_like(params),
            tree.wide_zeros_like(params),
        )

    def update(updates, state, params=None):
        del params  # NAdam does not look at the parameters.
        count = tree.safe_increment(state.count)
        mu_t = nadam_momentum(b1, momentum_decay, count)
        mu_next = nadam_momentum(b1, momentum_decay, tree.safe_increment(count))
        mu_product = state.mu_product * mu_t
        grad_coef = (1.0 - mu_t) / (1.0 - mu_product)
        mom_coef = mu_next / (1.0 - mu_product * mu_next)
        c2 = tree.one_minus_power(b2, count)
        mu = tree.ema(updates, state.mu, b1)
        nu = tree.ema(updates, state.nu, b2, order=2)

        def step(g, m, v):
            g_w, dtype = tree.wide(g), tree.compute_dtype(g.dtype)
            denom = jnp.sqrt(tree.wide(v) / c2.astype(dtype)) + eps
            update = grad_coef.astype(dtype) * g_w + mom_coef.astype(dtype) * tree.wide(m)
            return (update / denom).astype(g.dtype)

        updates = tree.map_like(step, updates, mu, nu, names=("updates", "mu", "nu"))
        return updates, ScaleByNadamState(count, mu_product, mu, nu)

    return GradientTransformation(init, update)


def scale_by_factored_rms_torch(
    beta2_decay: float = -0.8, eps: float | None = None
) -> GradientTransformation:
    r"""Adafactor's second-moment scaling in torch.optim.Adafactor's form.

    A leaf with two or more axes is factored over its last two, shape (..., n, m), whatever
    their size; other leaves keep a full second moment. With w_t = t^beta2_decay (t = 1, 2, ...,
    so w_1 = 1 and the first step sees only g_1):

        R_t = R_{t-1} + w_t (mean_m(g_t^2) - R_{t-1})           shape (..., n, 1)
        C_t = C_{t-1} + w_t (mean_n(g_t^2) - C_{t-1})           shape (..., 1, m)
        V̂_t = R_t C_t / max(mean_n(R_t), eps)                    (factored)
        V̂_t = V̂_{t-1} + w_t (g_t^2 - V̂_{t-1})                    (otherwise)
        u_t = g_t / max(sqrt(V̂_t), eps)

    ``eps=None`` is the machine epsilon of the gradient's dtype (1.19e-7 for float32). Unlike
    ``scale_by_factored_rms`` (the paper's form: eps added to g^2, the two largest axes, a
    minimum size to factor), eps here is a floor, applied after the moving averages.

    Example:
        >>> tx = optjax.scale_by_factored_rms_torch()
        >>> g = jnp.array([[3.0, 4.0], [0.0, 0.0]])
        >>> u, state = tx.update(g, tx.init(g))
        >>> state.v_row[:, 0], state.v_col[0]   # row and column means of g^2
        (Array([12.5,  0. ], dtype=float32), Array([4.5, 8. ], dtype=float32))
        >>> u   # g / sqrt(R C / mean(R)): [3 / sqrt(12.5 * 4.5 / 6.25), 4 / sqrt(12.5 * 8 / 6.25)]
        Array([[1., 1.],
               [0., 0.]], dtype=float32)

    Reference: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost", ICML 2018, Algorithm 4; torch.optim.Adafactor (torch 2.13), whose eps placement
    this follows.
    """
    check_at_most("beta2_decay", beta2_decay, 0)
    if eps is not None:
        check_nonnegative("eps", eps)

    def init(params):
        check_real_params(params, "Adafactor")

        def leaf(p):  # None: an unused field, an empty node (no buffer)
            dtype = tree.wide_dtype(p)  # float32 for bf16 and fp16 params (see scale_by_adam)
            if jnp.ndim(p) < 2:
                return None, None, jnp.zeros_like(p, dtype)
            # Zeros like a reduction of p: the parameter's sharding without the reduced axis.
            row = jnp.zeros_like(jnp.sum(p, axis=-1, keepdims=True), dtype)
            col = jnp.zeros_like(jnp.sum(p, axis=-2, keepdims=True), dtype)
            return row, col, None

        v_row, v_col, v = tree.unzip(params, jax.tree.map(leaf, params), 3)
        return FactoredState(jnp.zeros([], jnp.int32), v_row, v_col, v)

    def update(updates, state, params=None):
        del params
        count = tree.safe_increment(state.count)
        step_weight = tree.step_as_float(count) ** beta2_decay  # 1 - beta2_t

        def leaf(g, r, c, v):
            floor = float(jnp.finfo(g.dtype).eps) if eps is None else eps
            g_w = tree.wide(g)
            weight = step_weight.astype(g_w.dtype)
            g2 = jnp.square(g_w)
            if g.ndim < 2:
                v_new = tree.wide(v) + weight * (g2 - tree.wide(v))
                v_hat, r_new, c_new = v_new, r, c
                v = v_new.astype(v.dtype)
            else:
                r_new = tree.wide(r) + weight * (
                    jnp.mean(g2, axis=-1, keepdims=True) - tree.wide(r)
                )
                c_new = tree.wide(c) + weight * (
                    jnp.mean(g2, axis=-2, keepdims=True) - tree.wide(c)
                )
                r_new, c_new = r_new.astype(r.dtype), c_new.astype(c.dtype)
                r_mean = jnp.maximum(jnp.mean(tree.wide(r_new), axis=-2, keepdims=True), floor)
                v_hat = tree.wide(r_new) * tree.wide(c_new) / r_mean
            scaled = g_w * jax.lax.rsqrt(jnp.maximum(v_hat, floor * floor))
            return scaled.astype(g.dtype), r_new, c_new, v

        out = tree.map_like(leaf, updates, state.v_row, state.v_col, state.v)
        new_updates, v_row, v_col, v = tree.unzip(updates, out, 4)
        return new_updates, FactoredState(count, v_row, v_col, v)

    return per_leaf(GradientTransformation(init, update))  # factored: each leaf's own shape
