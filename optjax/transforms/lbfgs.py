"""L-BFGS: the direction ``P_k g_k``, P_k the limited-memory quasi-Newton estimate of the inverse
Hessian built from the last steps' differences of parameters and gradients.

Inner products are taken over all leaves together (the parameters as one vector; for complex
leaves, as the real vector of their real and imaginary parts: <a, b> = Re sum(conj(a) b)), in
float32 at least. The memory of differences is kept in the parameters' compute dtype (float32
for bf16 and fp16 parameters: the difference of two nearby bf16 gradients keeps 2 or 3 digits,
too few for a curvature pair). On the flat layout (optjax.flat) it runs on the tree of views.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optjax import tree
from optjax._checks import check_positive_int
from optjax.base import GradientTransformation, Params, StepCount, Updates
from optjax.flat import per_leaf

__all__ = ["ScaleByLBFGSState", "scale_by_lbfgs"]


class ScaleByLBFGSState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
    params: Params  # w_{k-1}, the parameters of the last step
    updates: Updates  # g_{k-1}, the updates (gradient) of the last step
    diff_params_memory: Updates  # s_j = w_{j+1} - w_j, the last m of them stacked on axis 0
    diff_updates_memory: Updates  # y_j = g_{j+1} - g_j, likewise
    weights_memory: jax.Array  # rho_j = 1 / <y_j, s_j> (0 for a pair not yet made, or <y, s> = 0)


def _real_dtype(params) -> jnp.dtype:
    reals = [
        jnp.finfo(jnp.result_type(x)).dtype
        for x in jax.tree.leaves(params)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return tree.compute_dtype(*reals)


def _inner(a, b, dtype) -> jax.Array:
    """<a, b> = Re sum(conj(a) b) over every leaf, in ``dtype``."""

    def leaf(x, y):
        x, y = tree.wide(jnp.asarray(x)), tree.wide(jnp.asarray(y))
        return jnp.sum(jnp.real(jnp.conj(x) * y)).astype(dtype)

    return sum(jax.tree.leaves(jax.tree.map(leaf, a, b)), jnp.zeros([], dtype))


def _axpy(x, alpha, y):
    """``x + alpha y``, leaf by leaf, in x's dtype (a compute dtype here)."""
    return jax.tree.map(lambda a, b: a + alpha.astype(a.dtype) * b.astype(a.dtype), x, y)


def _safe_inverse(x):
    """``1 / x``, and 0 where x is 0 (with a gradient that stays finite there)."""
    nonzero = x != 0
    return jnp.where(nonzero, 1 / jnp.where(nonzero, x, 1), 0)


def _two_loop(g, s_memory, y_memory, rho, gamma, oldest):
    """``P g`` by Nocedal's two-loop recursion over the pairs, newest first, then oldest first.
    ``oldest`` is the slot of the oldest pair (the next one to be overwritten).

    Each loop applies a pair's coefficient in the iteration after the one that computes it (it
    travels in the loop's carry): XLA copies a coefficient computed from an inner product over
    all leaves, with the whole sum, into each leaf's update that reads it in the same iteration,
    which makes the program grow as the leaves squared. XLA also removes a loop that runs once
    or never, and the copying comes back: for memory_size 1 and 2 each loop runs twice, the
    iterations past the pairs computing a coefficient that nothing applies. The arithmetic is
    the recursion's."""
    m = rho.shape[0]
    order = (oldest + jnp.arange(m, dtype=jnp.int32)) % m  # oldest ... newest
    dtype = rho.dtype
    trips = max(m - 1, 2)  # iteration t = 1 ... trips applies coefficient t - 1, computes t
    t = np.arange(1, trips + 1)
    applies = t <= m  # the coefficient before is a pair's (always, unless padded)
    at = np.minimum(t, m - 1)  # the pair whose coefficient iteration t computes

    def pair(j):  # j is in [0, m): lax's indexing, without x[j]'s handling of negative j
        def slot(x):
            return jax.lax.dynamic_index_in_dim(x, j, keepdims=False)

        return jax.tree.map(slot, s_memory), jax.tree.map(slot, y_memory)

    def alpha(q, j):  # alpha_j = rho_j <s_j, q>
        return rho[j] * _inner(pair(j)[0], q, dtype)

    def step(x, c, v, apply):  # x + c v, or x where padding applies nothing
        return _axpy(x, c, v) if m > 2 else _where(apply, _axpy(x, c, v), x)

    def backward(carry, xs):  # q <- q - alpha_{j'} y_{j'} (j' the pair before), then alpha_j
        q, alpha_before, before = carry
        j, apply = xs
        q = step(q, -alpha_before, pair(before)[1], apply)
        return (q, alpha(q, j), j), alpha_before

    newest_first = order[::-1]
    q = jax.tree.map(tree.wide, g)
    carry = (q, alpha(q, newest_first[0]), newest_first[0])
    xs = (newest_first[at], jnp.asarray(applies))
    (q, alpha_last, last), alphas = jax.lax.scan(backward, carry, xs)
    if m > 2:  # the last coefficient is applied after the loop
        q = _axpy(q, -alpha_last, pair(last)[1])
        alphas = jnp.concatenate([alphas, alpha_last[None]])
    alphas = alphas[:m][::-1]  # oldest ... newest

    def coefficient(r, j, alpha_j):  # alpha_j - beta_j,  beta_j = rho_j <y_j, r>
        return alpha_j - rho[j] * _inner(pair(j)[1], r, dtype)

    def forward(carry, xs):  # r <- r + (alpha_{j'} - beta_{j'}) s_{j'}, then the next
        r, c_before, before = carry
        j, alpha_j, apply = xs
        r = step(r, c_before, pair(before)[0], apply)
        return (r, coefficient(r, j, alpha_j), j), None

    r = jax.tree.map(lambda x: x * gamma.astype(x.dtype), q)
    carry = (r, coefficient(r, order[0], alphas[0]), order[0])
    xs = (order[at], alphas[at], jnp.asarray(applies))
    (r, c_last, last), _ = jax.lax.scan(forward, carry, xs)
    return _axpy(r, c_last, pair(last)[0]) if m > 2 else r


def _where(condition, x, y):
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), x, y)


def scale_by_lbfgs(
    memory_size: int = 10, scale_init_precond: bool = True
) -> GradientTransformation:
    r"""Precondition updates by the L-BFGS estimate of the inverse Hessian.

    With w_k the parameters and g_k the updates (gradients) at step k, and the last m =
    ``memory_size`` pairs

        s_j = w_{j+1} - w_j,   y_j = g_{j+1} - g_j,   rho_j = 1 / <y_j, s_j>   (0 if <y_j, s_j> = 0)

    the estimate is P_k = H_{k-m}^{k}, built from H^{k-m} = gamma_k I by

        H^{j+1} = V_j^T H^j V_j + rho_j s_j s_j^T,   V_j = I - rho_j y_j s_j^T
        gamma_k = <s_{k-1}, y_{k-1}> / <y_{k-1}, y_{k-1}>   (1 where y_{k-1} = 0; 1 throughout
                                                             if not scale_init_precond)
        gamma_0 = min(1, 1 / ||g_0||)                        (scale_init_precond)

    and u_k = P_k g_k is computed by the two-loop recursion (O(m) inner products, no matrix).
    The pair (s_{k-1}, y_{k-1}) is formed at step k from the params and updates of steps k-1
    and k, so chained before a line search the estimate learns from the step actually taken.
    u_k is a direction to be scaled by a negative rate (``optjax.lbfgs`` chains ``scale(-1)``
    and a line search after it). For complex parameters pass the conjugate of jax.grad's
    gradient as the updates (the steepest-ascent direction).

    Example:
        >>> tx = optjax.scale_by_lbfgs()
        >>> u, _ = tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)), jnp.zeros(2))
        >>> u  # the first step: g / ||g||, as ||g|| = 5 > 1
        Array([0.6, 0.8], dtype=float32)

    Reference: Liu & Nocedal, "On the limited memory BFGS method for large scale
    optimization", Mathematical Programming, 1989; Nocedal & Wright, "Numerical Optimization",
    1999, Algorithms 7.4 and 7.5.
    """
    check_positive_int("memory_size", memory_size)
    if not isinstance(scale_init_precond, bool):
        raise ValueError(
            f"scale_init_precond must be True or False, got scale_init_precond="
            f"{scale_init_precond!r}"
        )
    m = int(memory_size)

    def init(params):
        def stacked(x):  # m zeros shaped like x, built from x (its sharding, on a new axis)
            zeros = jnp.zeros_like(x, tree.wide_dtype(x))
            return jnp.broadcast_to(zeros[None], (m, *jnp.shape(x)))

        return ScaleByLBFGSState(
            count=jnp.zeros([], jnp.int32),
            params=tree.zeros_like(params),
            updates=tree.zeros_like(params),
            diff_params_memory=jax.tree.map(stacked, params),
            diff_updates_memory=jax.tree.map(stacked, params),
            weights_memory=jnp.zeros([m], _real_dtype(params)),
        )

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_lbfgs.update needs params (the pairs are their steps)")
        dtype = state.weights_memory.dtype
        k = state.count
        newest, oldest = (k - 1) % m, k % m  # the slot the new pair goes to, the oldest pair
        started = k > 0  # step 0 has no previous step: its pair stays 0

        def difference(new, old, memory):
            wide = memory.dtype
            return jnp.where(started, new.astype(wide) - old.astype(wide), 0).astype(wide)

        s = jax.tree.map(difference, params, state.params, state.diff_params_memory)
        y = jax.tree.map(difference, updates, state.updates, state.diff_updates_memory)
        sy = _inner(s, y, dtype)
        rho = jnp.where(started, _safe_inverse(sy), 0).astype(dtype)

        def put(mem, x):  # newest is in [0, m): one slice's update, not mem.at[newest]'s scatter
            return jax.lax.dynamic_update_index_in_dim(mem, x, newest, 0)

        s_memory = jax.tree.map(put, state.diff_params_memory, s)
        y_memory = jax.tree.map(put, state.diff_updates_memory, y)
        weights = state.weights_memory.at[newest].set(rho)

        if scale_init_precond:
            # One quotient (XLA computes a division once; a select of it would be copied, with
            # the sums over all leaves, into each leaf's r = gamma q): sy / yy (1 where y = 0)
            # after the first step, min(1, 1 / ||g||) = 1 / max(1, ||g||) at it.
            yy = tree.sum_of_squares(y).astype(dtype)
            norm = tree.global_norm(jax.lax.stop_gradient(updates)).astype(dtype)
            curved = started & (yy > 0)
            numerator = jnp.where(curved, sy, 1)
            denominator = jnp.where(curved, yy, jnp.where(started, 1, jnp.maximum(1, norm)))
            gamma = (numerator / denominator).astype(dtype)
        else:
            gamma = jnp.ones([], dtype)

        direction = _two_loop(updates, s_memory, y_memory, weights, gamma, oldest)
        new_updates = tree.cast_like(direction, updates)
        return new_updates, ScaleByLBFGSState(
            count=tree.safe_increment(k),
            params=params,
            updates=updates,
            diff_params_memory=s_memory,
            diff_updates_memory=y_memory,
            weights_memory=weights,
        )

    # Inner products over all leaves: on FlatBuffers it runs on the views (the memory is
    # stacked per leaf, which the flat layout's padding does not describe).
    return per_leaf(GradientTransformation(init, update))
