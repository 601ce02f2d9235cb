"""Sharpness-Aware Minimization (SAM): adversarial steps up the loss, then an outer step taken
from where they started, with the gradient found at the end of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import check_positive_int
from optjax.base import EmptyState, GradientTransformation, OptState, Params, Updates
from optjax.contrib._parameter_free import _as_optimizer
from optjax.core import apply_updates, extra_args_filter, stateless
from optjax.flat import as_flat_ready, flat_ready, mark_flat_ready

__all__ = [
    "NormalizeState",
    "SAMState",
    "normalize",
    "sam",
]

NormalizeState = EmptyState  # normalize keeps no state (optax's name for it)


@flat_ready
def normalize() -> GradientTransformation:
    r"""Divide the updates by their global l2 norm: ``u_t = g_t / ||g_t||``.

    The direction of SAM's adversarial step (chain it with ``sgd(rho)``). A zero gradient gives
    a zero update (no 0/0, where optax's gives NaN), and gradients whose squares overflow
    float32 are normalized right too (the norm is then taken rescaled).

    Example:
        >>> tx = optjax.contrib.normalize()
        >>> tx.update(jnp.array([3.0, 4.0]), tx.init(None))[0]
        Array([0.6, 0.8], dtype=float32)

    Reference: Foret, Kleiner, Mobahi & Neyshabur, "Sharpness-Aware Minimization for
    Efficiently Improving Generalization", ICLR 2021, eq. 2.
    """

    def normalized(updates, params):
        del params
        m, r = tree.global_norm_factors(updates)  # the norm is m r (m > 1 only past float32)
        r = jnp.where(r > 0, r, 1.0)  # a zero gradient stays zero, and so does its derivative

        def leaf(g):
            dtype = tree.compute_dtype(g.dtype)
            return (tree.wide(g) / m.astype(dtype) / r.astype(dtype)).astype(g.dtype)

        return jax.tree.map(leaf, updates)

    return stateless(normalized)


class SAMState(NamedTuple):
    steps_since_sync: jax.Array  # int32: adversarial steps since the last outer step
    opt_state: OptState  # the outer optimizer's state
    adv_state: OptState  # the adversarial optimizer's state
    cache: Params | None  # the params at the start of the period (None in opaque mode)


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {name}={value!r}")


def _select(condition, on_true, on_false):
    """Each leaf of ``on_true`` where ``condition`` holds, else ``on_false``'s: a select, so a
    NaN or inf in the branch not taken stays out (optax multiplies by 0 and 1, and gets NaN)."""
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), on_true, on_false)


def _copy(params):
    """A copy of params in new buffers, so that state and params can both be donated."""
    return jax.tree.map(lambda p: jnp.array(p, copy=True), params)


def sam(
    optimizer: GradientTransformation,
    adv_optimizer: GradientTransformation,
    sync_period: int = 2,
    reset_state: bool = True,
    opaque_mode: bool = False,
    batch_axis_name: str | None = None,
) -> GradientTransformation:
    r"""SAM: ``sync_period - 1`` adversarial steps, then one step of the outer optimizer from
    the params the period started at, with the gradient at the adversarial point.

    With k = sync_period, params theta and a period starting at step s (theta_s cached):

        steps s, ..., s + k - 2:   u_t = -adv(g_t)                 (ascent: adv descends)
        step s + k - 1:            u_t = theta_s - theta_t + opt(g_t)   (lands on theta_s + opt)

    The paper's SAM is ``sam(sgd(lr), chain(normalize(), sgd(rho)))``: eps = rho g / ||g||,
    then theta <- theta - lr grad L(theta + eps). The outer optimizer steps only on the outer
    steps (it is given the cached params); with ``reset_state`` the adversarial optimizer's
    state restarts after each. Every call to ``update`` takes the gradient at the current params,
    so the adversarial params are visible to the training loop (and, e.g., to BatchNorm).

    ``opaque_mode=True`` hides them: each ``update(g, state, params, grad_fn=grad_fn)`` runs the
    k - 1 adversarial steps inside, calling ``grad_fn(adv_params, i)`` for the gradient at
    each (averaged over ``batch_axis_name`` with ``jax.lax.pmean`` if given), and returns the
    outer step, so every update is an outer one. Unlike optax's, sync_period = 1 is plain
    ``optimizer`` in both modes (optax's transparent mode steps from the params before last).

    Example:
        >>> tx = optjax.contrib.sam(optjax.sgd(0.1), optjax.chain(optjax.contrib.normalize(),
        ...                                                      optjax.sgd(0.5)))
        >>> p = jnp.array([1.0])
        >>> u, state = tx.update(jnp.array([2.0]), tx.init(p), p)   # ascent: +0.5 g / |g|
        >>> u
        Array([0.5], dtype=float32)
        >>> tx.update(jnp.array([3.0]), state, p + u)[0]   # back to 1, then 1 - 0.1 * 3
        Array([-0.8], dtype=float32)

    Reference: Foret, Kleiner, Mobahi & Neyshabur, "Sharpness-Aware Minimization for
    Efficiently Improving Generalization", ICLR 2021, Algorithm 1.
    """
    check_positive_int("sync_period", sync_period)
    _check_bool("reset_state", reset_state)
    _check_bool("opaque_mode", opaque_mode)
    if batch_axis_name is not None and not isinstance(batch_axis_name, str):
        raise ValueError(
            f"batch_axis_name must be None or a str, got batch_axis_name={batch_axis_name!r}"
        )
    optimizer, adv_optimizer = as_flat_ready(optimizer), as_flat_ready(adv_optimizer)
    keep_opt, keep_adv = (
        extra_args_filter(optimizer.update),
        extra_args_filter(adv_optimizer.update),
    )

    def init(params):
        return SAMState(
            jnp.zeros([], jnp.int32),
            optimizer.init(params),
            adv_optimizer.init(params),
            None if opaque_mode else _copy(params),
        )

    def transparent_update(updates, state, params, extra_args):
        first = state.steps_since_sync == 0
        last = state.steps_since_sync == sync_period - 1
        cache = _select(first, params, state.cache)  # the params the period started at
        adv_updates, adv_state = adv_optimizer.update(
            updates, state.adv_state, params, **keep_adv(extra_args)
        )
        opt_updates, opt_state = optimizer.update(
            updates, state.opt_state, cache, **keep_opt(extra_args)
        )

        def outer_step(c, p, u):  # c - p + u: from the params back to c, then the step
            wide = tree.compute_dtype(c.dtype, p.dtype, u.dtype)
            return (c.astype(wide) - p.astype(wide) + u.astype(wide)).astype(u.dtype)

        def ascent(u, o):
            return (-u).astype(o.dtype)

        outer = tree.map_like(
            outer_step, cache, params, opt_updates, names=("cache", "params", "updates")
        )
        adv_updates = tree.map_like(ascent, adv_updates, outer, names=("updates", "updates"))
        if reset_state:
            adv_state = _select(last, adv_optimizer.init(params), adv_state)
        else:
            adv_state = _select(last, state.adv_state, adv_state)
        steps = jnp.where(last, 0, state.steps_since_sync + 1).astype(jnp.int32)
        return _select(last, outer, adv_updates), SAMState(
            steps, _select(last, opt_state, state.opt_state), adv_state, cache
        )

    def opaque_update(updates, state, params, grad_fn, extra_args):
        if grad_fn is None:
            raise ValueError(
                "sam(opaque_mode=True) needs grad_fn: call update(g, state, params, "
                "grad_fn=grad_fn), with grad_fn(params, i) the gradient at params"
            )
        adv_params, adv_state = params, state.adv_state
        for i in range(sync_period - 1):
            adv_updates, adv_state = adv_optimizer.update(
                updates, adv_state, adv_params, **keep_adv(extra_args)
            )
            adv_params = apply_updates(adv_params, jax.tree.map(jnp.negative, adv_updates))
            updates = grad_fn(adv_params, i)
            if batch_axis_name is not None:
                updates = jax.lax.pmean(updates, axis_name=batch_axis_name)
        if reset_state:
            adv_state = adv_optimizer.init(params)
        updates, opt_state = optimizer.update(
            updates, state.opt_state, params, **keep_opt(extra_args)
        )
        return updates, SAMState(jnp.zeros([], jnp.int32), opt_state, adv_state, None)

    def update(
        updates: Updates,
        state: SAMState,
        params: Params | None = None,
        *,
        grad_fn: Callable[[Params, int], Updates] | None = None,
        **extra_args,
    ) -> tuple[Updates, SAMState]:
        if params is None:
            raise ValueError("sam needs params: call update(g, state, params)")
        if opaque_mode:
            return opaque_update(updates, state, params, grad_fn, extra_args)
        return transparent_update(updates, state, params, extra_args)

    # Checked at its boundary as a chain is: Python-number leaves become arrays, and a state
    # made by another optimizer or for other params is refused naming the leaf.
    return mark_flat_ready(_as_optimizer("sam", GradientTransformation(init, update)))
