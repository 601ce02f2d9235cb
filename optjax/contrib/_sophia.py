"""Sophia: momentum divided by a moving average of the Hessian's diagonal, clipped elementwise;
and Hutchinson's estimator of that diagonal."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import (
    check_decay,
    check_integer,
    check_learning_rate,
    check_nonnegative,
)
from optjax._tree_util import draw_per_leaf
from optjax.base import GradientTransformation, ScalarOrSchedule, StepCount, Updates
from optjax.contrib._adopt import _clip
from optjax.core import chain, extra_args_filter
from optjax.flat import per_leaf
from optjax.transforms.noise import _check_key, _is_typed_key
from optjax.transforms.regularization import add_decayed_weights
from optjax.transforms.scaling import scale_by_learning_rate

__all__ = [
    "HutchinsonState",
    "SophiaState",
    "hutchinson_estimator_diag_hessian",
    "scale_by_sophia",
    "sophia",
]


class HutchinsonState(NamedTuple):
    key: jax.Array  # raw uint32 key data (checkpointable)


def _raw_key(key) -> jax.Array:
    """A key, raw key data or int seed as raw uint32 key data."""
    if _is_typed_key(key):
        return jax.random.key_data(key)
    if jnp.shape(key):
        return jnp.asarray(key, jnp.uint32)
    return jax.random.key_data(jax.random.key(key))


def hutchinson_estimator_diag_hessian(random_seed: jax.Array | int | None = None):
    r"""Estimate the diagonal of the Hessian of ``obj_fn`` at the params (Hutchinson).

        z ~ Rademacher (each entry +-1 with probability 1/2, a fresh draw each step)
        u_t = z * (H z),       H z = jvp(grad(obj_fn), params, z)

    An unbiased estimate of diag(H) (E[z z^T] = I), of high variance. ``update(g, state,
    params, obj_fn=f)`` needs the params and ``obj_fn``, the loss as a function of the params
    alone; the gradient ``g`` is not used. ``random_seed`` is a ``jax.random.key``, its raw data
    (``jax.random.PRNGKey``) or an int seed (None: 0); the key is split as optax splits it, so
    the signs are optax's for the same key. Each sign has its leaf's dtype (optax casts all of
    them to the tree's lowest dtype, and its jvp then fails on params of mixed dtypes).

    Example:
        >>> tx = optjax.contrib.hutchinson_estimator_diag_hessian()
        >>> p = jnp.array([1.0, 2.0])
        >>> f = lambda x: 1.5 * x[0] ** 2 + x[0] * x[1] + 0.5 * x[1] ** 2   # H = [[3, 1], [1, 1]]
        >>> u, _ = tx.update(p, tx.init(p), p, obj_fn=f)
        >>> bool(jnp.all(jnp.abs(u - jnp.array([3.0, 1.0])) == 1))   # diag(H) +- the coupling
        True

    Reference: Hutchinson, "A stochastic estimator of the trace of the influence matrix for
    Laplacian smoothing splines", 1989; Liu et al., "Sophia: A Scalable Stochastic Second-order
    Optimizer for Language Model Pre-training", 2023, Section 2.3.
    """
    seed = 0 if random_seed is None else random_seed
    _check_key("random_seed", seed)
    impl = jax.random.key_impl(seed) if _is_typed_key(seed) else None

    def init(params):
        del params
        return HutchinsonState(_raw_key(seed))

    def update(updates, state, params=None, obj_fn=None, **extra_args):
        del updates, extra_args  # the estimate needs only the params and the loss
        if params is None:
            raise ValueError("hutchinson_estimator_diag_hessian needs params")
        if obj_fn is None:
            raise ValueError(
                "hutchinson_estimator_diag_hessian needs obj_fn: call update(g, state, params, "
                "obj_fn=f), with f(params) the loss"
            )
        key, sample = jax.random.split(jax.random.wrap_key_data(state.key, impl=impl))
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(sample, len(leaves))
        # Signs drawn as float32, then cast to each leaf's dtype.
        draws = draw_per_leaf(jax.random.rademacher, keys, leaves, lambda d: jnp.float32)
        signs = treedef.unflatten(
            [z.astype(jnp.result_type(p)) for p, z in zip(leaves, draws, strict=True)]
        )
        hz = jax.jvp(jax.grad(obj_fn), (params,), (signs,))[1]
        estimate = tree.map_like(lambda h, z: h * z, hz, signs, names=("H z", "z"))
        return estimate, HutchinsonState(jax.random.key_data(key))

    # One key per leaf, as on the tree path; obj_fn sees the model's tree on the flat layout.
    return per_leaf(GradientTransformation(init, update))


_HUTCHINSON = hutchinson_estimator_diag_hessian()  # the default estimator (key 0)


class SophiaState(NamedTuple):
    count: StepCount  # int32 scalar: steps taken so far
    mu: Updates  # momentum m_t
    nu: Updates  # moving average h_t of the Hessian diagonal estimates
    hessian_fn_state: Any  # the estimator's state


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {name}={value!r}")


def _curvature(estimate: jax.Array) -> jax.Array:
    """The curvature an estimate of the Hessian diagonal gives: itself for a real leaf; for a
    complex leaf its modulus (|g|^2 for a Gauss-Newton estimate g g, as optjax squares the
    modulus where the papers square g), so that h is real and a phase leaves it unchanged."""
    return jnp.abs(estimate) if jnp.iscomplexobj(estimate) else estimate


def scale_by_sophia(
    b1: float = 0.965,
    b2: float = 0.99,
    eps: float = 1e-8,
    gamma: float = 0.01,
    clip_threshold: float | None = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: GradientTransformation = _HUTCHINSON,
    mu_dtype=None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
) -> GradientTransformation:
    r"""Sophia's scaling: momentum over a clipped, floored moving average of the Hessian diagonal.

        m_t = b1 m_{t-1} + (1 - b1) g_t,          m̂_t = m_t / (1 - b1^t)
        u_t = clip(m̂_t / max(gamma h_{t-1}, eps), -clip_threshold, clip_threshold)
        h_t = b2 h_{t-1} + (1 - b2) ĥ_t     if (t - 1) mod update_interval = 0, else h_{t-1}

    ĥ_t is ``hessian_diagonal_fn``'s estimate (Hutchinson's by default: pass ``obj_fn=`` to
    ``update``; every keyword extra goes to it), taken every ``update_interval`` steps starting
    with the first. As in optax (and the authors' code, which refreshes h after the step), a
    step divides by the average before its own estimate: until the first one lands, h = 0 and
    the step is clip_threshold sign(m̂). Unlike the paper, m̂ is bias-corrected (optax's form).
    No clipping if clip_threshold is None. h is kept in float32 for bf16 and fp16 params.
    For complex params, h averages the modulus |ĥ_t| (real, in float32 for complex64) and the
    clipping bounds the modulus of u_t, keeping its phase.
    ``verbose`` prints the win rate (the fraction of coordinates not clipped; the authors keep
    it between 0.1 and 0.5) every ``print_win_rate_every_n_steps`` steps (0: never).

    Example:
        >>> tx = optjax.contrib.scale_by_sophia()
        >>> p = jnp.array([1.0, -2.0])
        >>> u, _ = tx.update(jnp.array([4.0, -0.5]), tx.init(p), p, obj_fn=lambda x: x @ x)
        >>> u   # h = 0 before the first estimate: the step is sign(g)
        Array([ 1., -1.], dtype=float32)

    Reference: Liu, Li, Hall, Liang & Ma, "Sophia: A Scalable Stochastic Second-order
    Optimizer for Language Model Pre-training", 2023, Algorithm 3.
    """
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("gamma", gamma)
    if clip_threshold is not None:
        check_nonnegative("clip_threshold", clip_threshold)
    check_integer("update_interval", update_interval, low=1)
    _check_bool("verbose", verbose)
    check_integer("print_win_rate_every_n_steps", print_win_rate_every_n_steps, low=0)
    if not (hasattr(hessian_diagonal_fn, "init") and hasattr(hessian_diagonal_fn, "update")):
        raise ValueError(
            "hessian_diagonal_fn must be a transform with init and update, got "
            f"hessian_diagonal_fn={hessian_diagonal_fn!r}"
        )
    keep = extra_args_filter(hessian_diagonal_fn.update)

    def init(params):
        return SophiaState(
            jnp.zeros([], jnp.int32),
            tree.moment_zeros_like(params, mu_dtype),
            tree.real_wide_zeros_like(params),  # real for complex params: see _curvature
            hessian_diagonal_fn.init(params),
        )

    def update(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("scale_by_sophia needs params: call update(g, state, params)")
        count = tree.safe_increment(state.count)
        mu = tree.ema(updates, state.mu, b1)
        mu_hat = tree.debias(mu, b1, count)

        def ratio(m, h, g):
            wide = tree.compute_dtype(m.dtype, h.dtype)
            real = jnp.finfo(wide).dtype  # h, the floor and the bound are real
            m = m.astype(wide)
            floor = jnp.maximum(jnp.asarray(gamma, real) * h.astype(real), jnp.asarray(eps, real))
            # 0, not 0/0, if eps = 0
            u = jnp.where(m == 0, 0, m / jnp.where(m == 0, 1, floor).astype(wide))
            if clip_threshold is not None:
                # For complex params the modulus is clipped, keeping the phase (as ADOPT's).
                u = _clip(u, jnp.asarray(clip_threshold, real))
            return u.astype(g.dtype)

        new_updates = tree.map_like(ratio, mu_hat, state.nu, updates, names=("mu", "nu", "updates"))
        if verbose and clip_threshold is not None and print_win_rate_every_n_steps:
            leaves = jax.tree.leaves(new_updates)
            kept = sum(jnp.sum(jnp.abs(u) < clip_threshold, dtype=jnp.int32) for u in leaves)
            win_rate = kept / sum(u.size for u in leaves)
            jax.lax.cond(
                count % print_win_rate_every_n_steps == 0,
                lambda: jax.debug.print("Sophia optimizer win rate: {}", win_rate),
                lambda: None,
            )

        def refresh(hessian_fn_state, nu):
            estimate, hessian_fn_state = hessian_diagonal_fn.update(
                updates, hessian_fn_state, params, **keep(extra_args)
            )
            return hessian_fn_state, tree.ema(jax.tree.map(_curvature, estimate), nu, b2)

        hessian_fn_state, nu = jax.lax.cond(
            state.count % update_interval == 0,
            refresh,
            lambda h, n: (h, n),
            state.hessian_fn_state,
            state.nu,
        )
        return new_updates, SophiaState(count, mu, nu, hessian_fn_state)

    # The Hessian estimate's function takes the params as a tree: on the flat layout, the views.
    return per_leaf(GradientTransformation(init, update))


def sophia(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.965,
    b2: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    weight_decay_mask: Any = None,
    gamma: float = 0.01,
    clip_threshold: float | None = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: GradientTransformation = _HUTCHINSON,
    mu_dtype=None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
) -> GradientTransformation:
    """Sophia (Liu et al. 2023): scale_by_sophia (the update rule is there), decoupled weight
    decay (add_decayed_weights with ``weight_decay_mask``), then the learning rate. With the
    default Hutchinson estimator, call ``update(g, state, params, obj_fn=f)``, with ``f(params)``
    the loss on the step's batch.

    Example:
        >>> tx = optjax.contrib.sophia(0.1, weight_decay=0.0)
        >>> p = jnp.array([1.0, -2.0])
        >>> tx.update(jnp.array([4.0, -0.5]), tx.init(p), p, obj_fn=lambda x: x @ x)[0]
        Array([-0.1,  0.1], dtype=float32)
    """
    check_learning_rate("learning_rate", learning_rate)
    return chain(
        scale_by_sophia(
            b1,
            b2,
            eps,
            gamma,
            clip_threshold,
            update_interval,
            hessian_diagonal_fn,
            mu_dtype,
            verbose,
            print_win_rate_every_n_steps,
        ),
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_learning_rate(learning_rate),
    )
