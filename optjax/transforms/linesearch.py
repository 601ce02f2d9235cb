"""Line searches: the learning rate found, at each step, by trying it on the objective.

A line search is the last transform of a chain (after the one that gives the direction u, e.g.
L-BFGS or SGD): its ``update`` takes the extras ``value=`` f(w), ``grad=`` the gradient of f at w,
and ``value_fn=`` f itself, tries step sizes eta on the line ``w + eta u`` by calling ``value_fn``
there (inside a ``lax.while_loop``: jit-compatible and pure), and returns ``eta u``. Any other
keyword extra the chain's update is given is passed on to ``value_fn`` when it takes an argument
of that name (e.g. a batch ``x=``, ``y=``); an extra that ``value_fn`` does not take is an error.

The value and the gradient at the accepted point are kept in the state, so a deterministic
objective need not be evaluated twice per step: `value_and_grad_from_state` reads them back.

Conventions:

- ``grad`` is what ``jax.grad`` returns. For complex parameters that is the conjugate of the
  steepest-ascent direction (JAX's convention), so the slope of ``eta -> f(w + eta u)`` is
  ``Re sum(grad * u)``; a descent direction there is ``-conj(grad)``.
- The value, the step size and the errors are held in the real dtype the parameters compute in:
  float32 at least (a bf16 loss value cannot tell a decrease of 0.1% from none), float64 for
  float64 parameters. Trial points are formed as ``apply_updates`` forms the step, so the value
  tried is the value of the point the step lands on.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optjax import tree
from optjax._checks import (
    as_number,
    check_choice,
    check_integer,
    check_nonnegative,
    check_positive,
    check_value,
    is_traced,
)
from optjax.base import GradientTransformation, Params, StepCount, Updates
from optjax.flat import flat_ready

__all__ = [
    "BacktrackingLinesearchInfo",
    "ScaleByBacktrackingLinesearchState",
    "ScaleByZoomLinesearchState",
    "ZoomLinesearchInfo",
    "scale_by_backtracking_linesearch",
    "scale_by_zoom_linesearch",
    "value_and_grad_from_state",
]


class BacktrackingLinesearchInfo(NamedTuple):
    num_linesearch_steps: jax.Array  # int32: values of f tried in the last search
    decrease_error: jax.Array  # how far the accepted rate misses sufficient decrease (0: met)


class ScaleByBacktrackingLinesearchState(NamedTuple):
    learning_rate: jax.Array  # eta of the last step
    value: jax.Array  # f at the point the last step landed on (inf before the first)
    grad: Updates | None  # the gradient there, if store_grad (else None)
    info: BacktrackingLinesearchInfo


class ZoomLinesearchInfo(NamedTuple):
    num_linesearch_steps: jax.Array  # int32: values of f tried in the last search
    decrease_error: jax.Array  # how far the accepted rate misses sufficient decrease (0: met)
    curvature_error: jax.Array  # how far it misses the curvature condition (0: met)


class ScaleByZoomLinesearchState(NamedTuple):
    learning_rate: jax.Array  # eta of the last step
    value: jax.Array  # f at the point the last step landed on (inf before the first)
    grad: Updates  # the gradient there
    info: ZoomLinesearchInfo


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _value_dtype(params) -> jnp.dtype:
    """The real dtype in which values, slopes and step sizes are held: float32 at least, float64
    if a parameter is float64 or complex128."""
    reals = []
    for x in jax.tree.leaves(params):
        dtype = jnp.result_type(x)
        if jnp.issubdtype(dtype, jnp.inexact):
            reals.append(jnp.finfo(dtype).dtype)
    return tree.compute_dtype(*reals)


def _slope(grad, updates, dtype) -> jax.Array:
    """``Re sum(grad * u)``: the derivative of ``eta -> f(w + eta u)`` at eta = 0, for ``grad``
    as jax.grad gives it (for real leaves, the inner product <grad, u>)."""

    def leaf(g, u):
        g, u = tree.wide(jnp.asarray(g)), tree.wide(jnp.asarray(u))
        return jnp.sum(jnp.real(g * u)).astype(dtype)

    products = tree.map_like(leaf, grad, updates, names=("grad", "updates"))
    return sum(jax.tree.leaves(products), jnp.zeros([], dtype))


def _on_line(params, stepsize, updates):
    """``w + eta u``, formed as apply_updates forms it (eta u rounded to u's dtype first)."""

    def leaf(p, u):
        p, u = jnp.asarray(p), jnp.asarray(u)
        step = (tree.wide(u) * stepsize.astype(tree.compute_dtype(u.dtype))).astype(u.dtype)
        wide = tree.compute_dtype(p.dtype, u.dtype)
        return (p.astype(wide) + step.astype(wide)).astype(p.dtype)

    return tree.map_like(leaf, params, updates, names=("params", "updates"))


def _where(condition, on_true, on_false):
    """``on_true`` where the scalar ``condition`` holds, else ``on_false`` (trees alike)."""
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), on_true, on_false)


def _split_fn_kwargs(who: str, value_fn: Callable, extra_args: dict) -> dict:
    """The extras ``value_fn`` takes by name; an extra it does not take is a TypeError."""
    try:
        parameters = inspect.signature(value_fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read: pass everything on
        return dict(extra_args)
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return dict(extra_args)
    names = {p.name for p in parameters if p.kind is not p.VAR_POSITIONAL}
    unused = sorted(k for k in extra_args if k not in names)
    if unused:
        raise TypeError(
            f"{who}.update: the keyword arguments {unused} are not arguments of value_fn; every "
            "extra keyword given to update (other than value, grad, value_fn) is passed to "
            "value_fn"
        )
    return dict(extra_args)


def _check_extras(who: str, params, value, grad, value_fn) -> None:
    given = {"params": params, "value": value, "grad": grad, "value_fn": value_fn}
    missing = [name for name, x in given.items() if x is None]
    if missing:
        raise TypeError(
            f"{who}.update needs params and the keyword arguments value= (f at params), grad= "
            f"(its gradient) and value_fn= (f); missing: {missing}"
        )


def _violation(error):
    """How far a condition ``error <= 0`` is violated: max(error, 0), and inf for NaN."""
    return jnp.where(jnp.isnan(error), jnp.inf, jnp.maximum(error, 0))


def _scalar(x, dtype) -> jax.Array:
    return jnp.asarray(x).astype(dtype)


def _check_at_least_or_inf(name: str, value, low: float) -> None:
    """A number >= low, finite in float32, or +inf (where optax documents inf as a choice)."""
    if not is_traced(value) and as_number(value) == math.inf:
        return
    check_value(name, value, lambda x: x >= low, f"a number >= {low:g} or inf")


def _check_open_unit(name: str, value) -> None:
    check_value(name, value, lambda x: 0 < x < 1, "in (0, 1)")


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {name}={value!r}")


# ---------------------------------------------------------------------------------------------
# Backtracking (Armijo)


class _Backtrack(NamedTuple):
    learning_rate: jax.Array
    value: jax.Array
    grad: Updates
    decrease_error: jax.Array
    iter_num: jax.Array


@flat_ready
def scale_by_backtracking_linesearch(
    max_backtracking_steps: int,
    slope_rtol: float = 1e-4,
    decrease_factor: float = 0.8,
    increase_factor: float = 1.5,
    max_learning_rate: float = 1.0,
    atol: float = 0.0,
    rtol: float = 0.0,
    store_grad: bool = False,
    verbose: bool = False,
) -> GradientTransformation:
    r"""Scale the direction u by a learning rate that decreases f enough (Armijo's condition).

        accept eta when   f(w + eta u) <= (1 + rtol) f(w) + eta c <grad f(w), u> + atol
        eta_0 = min(increase_factor eta_prev, max_learning_rate)    (max_learning_rate if
                                                                     eta_prev = 0)
        eta_{i+1} = decrease_factor eta_i,   i < max_backtracking_steps
        u_t = eta u

    with c = ``slope_rtol``. The search stops at the first accepted eta, or after
    ``max_backtracking_steps`` reductions (taking the last eta tried, which may miss the
    condition: ``info.decrease_error > 0``). If f is inf or NaN at every eta tried, the step is
    0. ``update`` takes the extras ``value`` (f(w)), ``grad`` (its gradient at w) and
    ``value_fn`` (f); see the module doc. u must be a descent direction (<grad, u> < 0), as SGD's
    is. With ``store_grad`` the gradient at the accepted point is kept for
    `value_and_grad_from_state`.

    Unlike optax 0.2.8, a search that ended with a step of 0 (f not finite anywhere tried) does
    not make every later search start from eta = 0 (and so never move again): it starts from
    ``max_learning_rate`` instead.

    Example:
        >>> f = lambda w: jnp.sum(w**2)
        >>> tx = optjax.chain(optjax.sgd(1.0), optjax.scale_by_backtracking_linesearch(15))
        >>> w = jnp.array([1.0, 2.0, 3.0])
        >>> step = jax.jit(lambda w, state: tx.update(
        ...     jax.grad(f)(w), state, w, value=f(w), grad=jax.grad(f)(w), value_fn=f))
        >>> u, state = step(w, tx.init(w))
        >>> state[1].learning_rate  # eta = 1 lands on -w, no decrease; 0.8 on -0.6 w
        Array(0.8, dtype=float32)

    Reference: Armijo, "Minimization of functions having Lipschitz continuous first partial
    derivatives", Pacific Journal of Mathematics, 1966; Vaswani et al., "Painless Stochastic
    Gradient: Interpolation, Line-Search, and Convergence Rates", NeurIPS 2019.
    """
    check_integer("max_backtracking_steps", max_backtracking_steps, low=0)
    check_value("slope_rtol", slope_rtol, lambda x: 0 <= x < 1, "in [0, 1)")
    _check_open_unit("decrease_factor", decrease_factor)
    _check_at_least_or_inf("increase_factor", increase_factor, 1.0)
    check_positive("max_learning_rate", max_learning_rate)
    check_nonnegative("atol", atol)
    check_nonnegative("rtol", rtol)
    _check_bool("store_grad", store_grad)
    _check_bool("verbose", verbose)

    def init(params):
        dtype = _value_dtype(params)
        return ScaleByBacktrackingLinesearchState(
            learning_rate=jnp.ones([], dtype),
            value=jnp.full([], jnp.inf, dtype),
            grad=tree.zeros_like(params) if store_grad else None,
            info=BacktrackingLinesearchInfo(jnp.zeros([], jnp.int32), jnp.full([], jnp.inf, dtype)),
        )

    def update(updates, state, params=None, *, value=None, grad=None, value_fn=None, **extra_args):
        _check_extras("scale_by_backtracking_linesearch", params, value, grad, value_fn)
        fn_kwargs = _split_fn_kwargs("scale_by_backtracking_linesearch", value_fn, extra_args)
        dtype = state.learning_rate.dtype
        value = _scalar(value, dtype)
        slope = _slope(grad, updates, dtype)
        c, shrink = _scalar(slope_rtol, dtype), _scalar(decrease_factor, dtype)
        most, bound = jnp.asarray(max_backtracking_steps, jnp.int32), _scalar(atol, dtype)

        def f(w):
            return jnp.asarray(value_fn(w, **fn_kwargs)).astype(dtype)

        def decrease_error(eta, new_value):
            return _violation(new_value - (1 + _scalar(rtol, dtype)) * value - eta * c * slope)

        def keep_going(s):
            return ~(s.decrease_error <= bound) & (s.iter_num <= most)

        def attempt(s):
            eta = jnp.where(s.iter_num > 0, shrink * s.learning_rate, s.learning_rate)
            w = _on_line(params, eta, updates)
            if store_grad:  # the value now; the gradient (a transpose) only where accepted
                new_value, tangent = jax.linearize(f, w)
                error = decrease_error(eta, new_value)
                new_grad = jax.lax.cond(
                    (error <= bound) | (s.iter_num == most),
                    lambda: tree.cast_like(
                        jax.linear_transpose(tangent, w)(jnp.ones([], dtype))[0], s.grad
                    ),
                    lambda: s.grad,
                )
            else:
                new_value, new_grad = f(w), s.grad
                error = decrease_error(eta, new_value)
            return _Backtrack(eta, new_value, new_grad, error, s.iter_num + 1)

        previous = state.learning_rate
        ceiling = _scalar(max_learning_rate, dtype)
        grown = jnp.minimum(_scalar(increase_factor, dtype) * previous, ceiling)
        start = _Backtrack(
            learning_rate=jnp.where(previous > 0, grown, ceiling),
            value=value,
            grad=tree.zeros_like(params),
            decrease_error=jnp.full([], jnp.inf, dtype),
            iter_num=jnp.zeros([], jnp.int32),
        )
        end = jax.lax.while_loop(keep_going, attempt, start)
        eta = jnp.where(jnp.isinf(end.decrease_error), 0, end.learning_rate).astype(dtype)
        if verbose:
            jax.lax.cond(
                end.decrease_error > bound,
                lambda: jax.debug.print(
                    "optjax.scale_by_backtracking_linesearch: no step size with sufficient "
                    "decrease found (value {v}, slope {s}, step size {e}, decrease error {d})",
                    v=value,
                    s=slope,
                    e=eta,
                    d=end.decrease_error,
                ),
                lambda: None,
            )
        new_state = ScaleByBacktrackingLinesearchState(
            learning_rate=eta,
            value=end.value,
            grad=end.grad if store_grad else None,
            info=BacktrackingLinesearchInfo(end.iter_num, end.decrease_error),
        )
        return tree.scaled(updates, eta), new_state

    return GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------------
# Zoom (strong Wolfe)


class _Zoom(NamedTuple):
    """The zoom search between two calls of f. ``low`` and ``high`` bracket a step size meeting
    both conditions, f(low) <= f(high) (low is not necessarily the smaller); ``ref`` is the third
    point of the cubic fit; ``safe`` the best point met with sufficient decrease so far.

    A step's gradient becomes ``safe_grad`` in the next step (or after the loop), by a condition
    the step wrote to ``grad_is_safe``: XLA copies a condition computed from a slope, with its
    sum over all leaves, into each leaf's select in the same step, which makes the program grow
    as the leaves squared; a condition carried by the loop it reads once."""

    count: StepCount
    stepsize: jax.Array
    value: jax.Array
    grad: Updates
    slope: jax.Array
    decrease_error: jax.Array
    curvature_error: jax.Array
    interval_found: jax.Array
    done: jax.Array
    failed: jax.Array
    low: jax.Array
    value_low: jax.Array
    slope_low: jax.Array
    high: jax.Array
    value_high: jax.Array
    slope_high: jax.Array
    ref: jax.Array
    value_ref: jax.Array
    safe_stepsize: jax.Array
    safe_value: jax.Array
    safe_grad: Updates  # before this step's point: see grad_is_safe
    grad_is_safe: jax.Array  # this step's point is the safe one: safe_grad is to become grad


def _falls_back(s: _Zoom) -> jax.Array:
    """The search ran out of steps with a safe point to return (or f was not finite at the last
    step size tried)."""
    return s.failed & ((s.safe_stepsize > 0) | jnp.isinf(s.decrease_error))


def _cubic_minimizer(a, fa, fpa, b, fb, c, fc):
    """The critical point of the cubic through (a, fa), (b, fb), (c, fc) with slope fpa at a
    (NaN where it has none: the caller then falls back)."""
    db, dc = b - a, c - a
    rb, rc = fb - fa - fpa * db, fc - fa - fpa * dc
    denominator = (db * dc) ** 2 * (db - dc)
    cubic = (dc**2 * rb - db**2 * rc) / denominator
    square = (-(dc**3) * rb + db**3 * rc) / denominator
    return a + (-square + jnp.sqrt(square * square - 3 * cubic * fpa)) / (3 * cubic)


def _quadratic_minimizer(a, fa, fpa, b, fb):
    """The critical point of the parabola through (a, fa), (b, fb) with slope fpa at a."""
    db = b - a
    curvature = (fb - fa - fpa * db) / db**2
    return a - fpa / (2 * curvature)


@flat_ready
def scale_by_zoom_linesearch(
    max_linesearch_steps: int,
    max_learning_rate: float | None = None,
    tol: float = 0.0,
    increase_factor: float = 2.0,
    slope_rtol: float = 1e-4,
    curv_rtol: float = 0.9,
    approx_dec_rtol: float | None = 1e-6,
    stepsize_precision: float = 1e-5,
    initial_guess_strategy: str = "keep",
    verbose: bool = False,
) -> GradientTransformation:
    r"""Scale the direction u by a learning rate meeting the strong Wolfe conditions.

    With phi(eta) = f(w + eta u), c1 = ``slope_rtol``, c2 = ``curv_rtol``, c3 =
    ``approx_dec_rtol`` and eps = ``tol``, accept eta when both

        sufficient decrease   phi(eta) <= phi(0) + c1 eta phi'(0) + eps
        small curvature       |phi'(eta)| <= c2 |phi'(0)| + eps

    hold, where sufficient decrease may also be met, close to a minimum, by Hager and Zhang's
    approximate form: phi'(eta) <= (2 c1 - 1) phi'(0) + eps and phi(eta) <= phi(0) + c3
    |phi(0)| (c3 = None: the exact form only).

    1. Bracketing (Nocedal & Wright, Algorithm 3.5): try eta_0 (1 with
       ``initial_guess_strategy="one"``, the last step's eta with "keep"), then eta_i =
       increase_factor eta_{i-1}, capped at ``max_learning_rate``, until eta_i is accepted, or
       an interval [low, high] holding an acceptable eta is found (eta_i misses sufficient
       decrease, or phi(eta_i) >= phi(eta_{i-1}), or phi'(eta_i) >= 0), or the cap is reached
       (then eta = the cap, the curvature condition unmet).
    2. Zoom (Algorithm 3.6): try the minimizer of the cubic through low, high and the previous
       end point where it lies well inside the interval (20% from each end), else that of the
       parabola through low, high and phi'(low) (10%), else the midpoint; narrow the interval
       to the side where an acceptable eta lies, until one is accepted.

    After ``max_linesearch_steps`` values of f (or once the interval is narrower than
    ``stepsize_precision`` and a point with sufficient decrease is known), the search takes the
    point with sufficient decrease and the smallest value met, or, if there is none, the last
    eta tried (which may increase f: ``info.decrease_error > 0``), or 0 if f was not finite
    there. ``update`` takes ``value``, ``grad`` and ``value_fn`` (see the module doc); the
    value and gradient at the accepted point are kept for `value_and_grad_from_state`.
    ``curv_rtol=inf`` drops the curvature condition (a backtracking search with interpolation).

    Unlike optax 0.2.8: the slope phi'(0) is formed from ``grad`` as jax.grad gives it also for
    complex parameters (optax conjugates it there, so its searches start from a wrong slope
    whenever the gradient it is given is the one it stores); and with "keep", a last step of 0
    (f not finite anywhere tried) makes the next search start from 1, not from 0 forever.

    Example:
        >>> f = lambda w: jnp.sum(w**2)
        >>> tx = optjax.chain(optjax.sgd(1.0), optjax.scale_by_zoom_linesearch(15))
        >>> w = jnp.array([1.0, 2.0, 3.0])
        >>> step = jax.jit(lambda w, state: tx.update(
        ...     jax.grad(f)(w), state, w, value=f(w), grad=jax.grad(f)(w), value_fn=f))
        >>> u, state = step(w, tx.init(w))
        >>> state[1].learning_rate  # the exact minimizer along -grad f: w - 0.5 (2 w) = 0
        Array(0.5, dtype=float32)

    Reference: Nocedal & Wright, "Numerical Optimization", 1999, Algorithms 3.5 and 3.6;
    Hager & Zhang, "Algorithm 851: CG_DESCENT, a Conjugate Gradient Method with Guaranteed
    Descent", ACM TOMS 2006.
    """
    check_integer("max_linesearch_steps", max_linesearch_steps, low=1)
    if max_learning_rate is not None:
        check_positive("max_learning_rate", max_learning_rate)
    check_nonnegative("tol", tol)
    check_value("increase_factor", increase_factor, lambda x: x > 1, "a number > 1")
    check_value("slope_rtol", slope_rtol, lambda x: 0 <= x < 1, "in [0, 1)")
    _check_at_least_or_inf("curv_rtol", curv_rtol, 0.0)
    if approx_dec_rtol is not None:
        check_nonnegative("approx_dec_rtol", approx_dec_rtol)
    check_nonnegative("stepsize_precision", stepsize_precision)
    check_choice("initial_guess_strategy", initial_guess_strategy, {"one", "keep"})
    _check_bool("verbose", verbose)

    def init(params):
        dtype = _value_dtype(params)
        inf = jnp.full([], jnp.inf, dtype)
        return ScaleByZoomLinesearchState(
            learning_rate=jnp.ones([], dtype),
            value=inf,
            grad=tree.zeros_like(params),
            info=ZoomLinesearchInfo(jnp.zeros([], jnp.int32), inf, inf),
        )

    def update(updates, state, params=None, *, value=None, grad=None, value_fn=None, **extra_args):
        _check_extras("scale_by_zoom_linesearch", params, value, grad, value_fn)
        fn_kwargs = _split_fn_kwargs("scale_by_zoom_linesearch", value_fn, extra_args)
        dtype = state.learning_rate.dtype

        def as_scalar(x):
            return _scalar(x, dtype)

        c1, c2, eps = as_scalar(slope_rtol), as_scalar(curv_rtol), as_scalar(tol)
        most = jnp.asarray(max_linesearch_steps, jnp.int32)
        value_init = as_scalar(value)
        grad = tree.cast_like(grad, state.grad)
        slope_init = _slope(grad, updates, dtype)

        def evaluate(eta):
            w = _on_line(params, eta, updates)
            v, g = jax.value_and_grad(lambda w: value_fn(w, **fn_kwargs))(w)
            g = tree.cast_like(g, state.grad)
            return as_scalar(v), g, _slope(g, updates, dtype)

        def errors(eta, v, slope):
            decrease = v - value_init - c1 * eta * slope_init
            if approx_dec_rtol is not None:
                approx = jnp.maximum(
                    slope - (2 * c1 - 1) * slope_init,
                    v - value_init - as_scalar(approx_dec_rtol) * jnp.abs(value_init),
                )
                decrease = jnp.minimum(approx, decrease)
            curvature = jnp.abs(slope) - c2 * jnp.abs(slope_init)
            return _violation(decrease), _violation(curvature)

        if initial_guess_strategy == "one":
            guess = jnp.ones([], dtype)
        else:  # "keep"; a last step of 0 would make every later search try 0 alone
            guess = jnp.where(state.learning_rate > 0, state.learning_rate, 1).astype(dtype)

        def step(s):
            first = s.count == 0
            safe_grad = _where(s.grad_is_safe, s.grad, s.safe_grad)
            # Bracketing: a larger step.
            grown = jnp.where(first, guess, as_scalar(increase_factor) * s.stepsize)
            at_cap = jnp.zeros([], bool)
            if max_learning_rate is not None:
                cap = as_scalar(max_learning_rate)
                at_cap, grown = grown >= cap, jnp.minimum(grown, cap)
            # Zoom: a point inside the interval, by interpolation.
            width = jnp.abs(s.high - s.low)
            left, right = jnp.minimum(s.low, s.high), jnp.maximum(s.low, s.high)
            cubic = _cubic_minimizer(
                s.low, s.value_low, s.slope_low, s.high, s.value_high, s.ref, s.value_ref
            )
            use_cubic = (cubic > left + 0.2 * width) & (cubic < right - 0.2 * width)
            quadratic = _quadratic_minimizer(s.low, s.value_low, s.slope_low, s.high, s.value_high)
            use_quadratic = (quadratic > left + 0.1 * width) & (quadratic < right - 0.1 * width)
            inner = jnp.where(
                use_cubic, cubic, jnp.where(use_quadratic, quadratic, (s.low + s.high) / 2)
            )
            zooming = s.interval_found
            eta = jnp.where(zooming, inner, grown)

            v, g, slope = evaluate(eta)
            decrease, curvature = errors(eta, v, slope)
            accepted = jnp.maximum(decrease, curvature) <= eps
            sufficient = decrease <= eps
            better = sufficient & (~zooming | (v < s.safe_value))
            safe_stepsize, safe_value = _where(better, (eta, v), (s.safe_stepsize, s.safe_value))
            point = (eta, v, slope)
            low, high = (s.low, s.value_low, s.slope_low), (s.high, s.value_high, s.slope_high)
            previous = (s.stepsize, s.value, s.slope)

            # Bracketing's outcome: [previous, eta] or [eta, previous] holds a good step.
            past_min = (decrease > 0) | ((v >= s.value) & ~first)
            uphill = (slope >= 0) & ~past_min
            b_low, b_high = _where(uphill, (point, previous), (previous, point))
            b_found = past_min | uphill | accepted
            b_done = accepted | (at_cap & ~b_found)
            b_failed = (s.count + 1 >= most) & ~b_done

            # Zoom's outcome: eta replaces high, or low (and high moves to the old low).
            z_high_is_eta = past_min_z = (decrease > 0) | (v >= s.value_low)
            z_high_is_low = (slope * (s.high - s.low) >= 0) & ~past_min_z
            z_high = _where(z_high_is_eta, point, _where(z_high_is_low, low, high))
            z_low = _where(past_min_z, low, point)
            z_ref = _where(z_high_is_eta | z_high_is_low, high[:2], low[:2])
            too_narrow = (width <= as_scalar(stepsize_precision)) & (safe_stepsize > 0)
            z_failed = ((s.count + 1 >= most) | too_narrow) & ~accepted

            new_low, new_high = _where(zooming, (z_low, z_high), (b_low, b_high))
            ref = _where(zooming, z_ref, new_low[:2])
            failed = jnp.where(zooming, z_failed, b_failed)
            new = _Zoom(
                count=tree.safe_increment(s.count),
                stepsize=eta,
                value=v,
                grad=g,
                slope=slope,
                decrease_error=decrease,
                curvature_error=curvature,
                interval_found=jnp.where(zooming, s.interval_found, b_found),
                done=jnp.where(zooming, accepted, b_done),
                failed=failed,
                low=new_low[0],
                value_low=new_low[1],
                slope_low=new_low[2],
                high=new_high[0],
                value_high=new_high[1],
                slope_high=new_high[2],
                ref=ref[0],
                value_ref=ref[1],
                safe_stepsize=safe_stepsize,
                safe_value=safe_value,
                safe_grad=safe_grad,
                grad_is_safe=better,
            )
            # Out of steps: the safe point if there is one (its gradient after the loop).
            eta, v = _where(_falls_back(new), (safe_stepsize, safe_value), (eta, v))
            return new._replace(stepsize=eta, value=v)

        zero = jnp.zeros([], dtype)
        inf = jnp.full([], jnp.inf, dtype)
        no = jnp.zeros([], bool)
        start = _Zoom(
            count=jnp.zeros([], jnp.int32),
            stepsize=zero,
            value=value_init,
            grad=grad,
            slope=slope_init,
            decrease_error=inf,
            curvature_error=inf,
            interval_found=no,
            done=no,
            failed=no,
            low=zero,
            value_low=value_init,
            slope_low=slope_init,
            high=zero,
            value_high=value_init,
            slope_high=slope_init,
            ref=zero,
            value_ref=value_init,
            safe_stepsize=zero,
            safe_value=value_init,
            safe_grad=grad,
            grad_is_safe=no,
        )
        end = jax.lax.while_loop(lambda s: ~(s.done | s.failed), step, start)
        safe_grad = _where(end.grad_is_safe, end.grad, end.safe_grad)
        end = end._replace(grad=_where(_falls_back(end), safe_grad, end.grad))
        if verbose:
            jax.lax.cond(
                end.failed,
                lambda: jax.debug.print(
                    "optjax.scale_by_zoom_linesearch: no step size met both conditions "
                    "(value {v}, slope {s}, step size {e}, decrease error {d}, curvature "
                    "error {c})",
                    v=value_init,
                    s=slope_init,
                    e=end.stepsize,
                    d=end.decrease_error,
                    c=end.curvature_error,
                ),
                lambda: None,
            )
        new_state = ScaleByZoomLinesearchState(
            learning_rate=end.stepsize,
            value=end.value,
            grad=end.grad,
            info=ZoomLinesearchInfo(end.count, end.decrease_error, end.curvature_error),
        )
        return tree.scaled(updates, end.stepsize), new_state

    return GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------------
# Reusing the line search's last evaluation


def value_and_grad_from_state(
    value_fn: Callable[..., Any],
) -> Callable[..., tuple[jax.Array, Updates]]:
    """``jax.value_and_grad(value_fn)`` that reads the value and gradient a line search kept in
    the optimizer state, where it holds a finite value, instead of computing them again.

    The result is called as ``value_and_grad(params, *args, state=opt_state, **kwargs)``; it
    computes ``jax.value_and_grad(value_fn)(params, *args, **kwargs)`` only where the state's
    value is inf or NaN (before the first step, or after a failed search). The state must hold
    exactly one node named ``value`` and one named ``grad`` (a line search's state, e.g. in
    `optjax.lbfgs`'s chain), and the objective must be deterministic: the value kept is f at the
    params the last step landed on.

    Example:
        >>> f = lambda w: jnp.sum(w**2)
        >>> tx = optjax.lbfgs()
        >>> value_and_grad = optjax.value_and_grad_from_state(f)
        >>> @jax.jit
        ... def step(w, state):  # f is computed at step 1 only, then read from the state
        ...     value, grad = value_and_grad(w, state=state)
        ...     u, state = tx.update(grad, state, w, value=value, grad=grad, value_fn=f)
        ...     return optjax.apply_updates(w, u), state
        >>> w = jnp.array([1.0, 2.0, 3.0])
        >>> state = tx.init(w)
        >>> for _ in range(2):
        ...     w, state = step(w, state)
        >>> bool(state[2].value == f(w)), bool(f(w) < 1e-10)  # at the minimum after 2 steps
        (True, True)
    """

    def value_and_grad(params: Params, *args, state: Any, **kwargs):
        found = {}
        for name in ("value", "grad"):
            nodes = tree.get_all_by_name(state, name)
            if len(nodes) != 1 or next(iter(nodes.values())) is None:
                where = sorted(nodes) if nodes else "nowhere"
                raise ValueError(
                    f"value_and_grad_from_state: the state must hold one {name!r} (a line "
                    f"search's, with its gradient stored), found {len(nodes)} at {where}"
                )
            found[name] = next(iter(nodes.values()))
        value, grad = found["value"], found["grad"]

        def compute():
            v, g = jax.value_and_grad(value_fn)(params, *args, **kwargs)
            return jnp.asarray(v).astype(value.dtype), tree.cast_like(g, grad)

        return jax.lax.cond(jnp.isfinite(value), lambda: (value, grad), compute)

    return value_and_grad
