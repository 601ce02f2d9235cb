"""Running an optjax transform and optax's on the same params and gradients, step by step.

The runs are eager: a few steps on small trees, whose operations are compiled once per shape
and dtype for the whole test process, cost far less than compiling a program per run.

    params, grads = problem(jnp.float64)
    with jax.enable_x64(True):
        ours = run(optjax.adopt(1e-2), params, grads)
        theirs = run(optax.contrib.adopt(1e-2), params, grads)
    assert_trajectories_close(ours, theirs, rtol=1e-6)

``float32_is_as_close`` checks the float32 runs against the float64 one: optjax's must be at
least as close as optax's (where optjax deliberately rounds differently, it is not the same).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optjax

SHAPES: Mapping[str, tuple[int, ...]] = {"scalar": (), "vector": (3,), "matrix": (4, 3)}


def problem(dtype=jnp.float32, steps: int = 5, seed: int = 0, shapes=SHAPES, scale: float = 1.0):
    """``(params, [grads for each step])``: standard normal draws (times ``scale``), drawn in
    float64 NumPy and cast to ``dtype`` (so that a float64 and a float32 problem of one seed
    are the same numbers, rounded)."""
    rng = np.random.default_rng(seed)
    draw = lambda: {k: rng.normal(size=s) * scale for k, s in shapes.items()}
    params, grads = draw(), [draw() for _ in range(steps)]
    cast = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)
    with jax.enable_x64(jnp.dtype(dtype).itemsize == 8):
        return cast(params), [cast(g) for g in grads]


def run(tx, params, grads: Sequence, *, states: bool = False, **extra_args) -> list:
    """``[(updates, params)]`` after each step (``(updates, params, state)`` with ``states``),
    as NumPy arrays. ``tx`` is an optjax or an optax transform; optax's runs under the standard
    dtype promotion it needs. ``extra_args`` go to every update (a callable is called with the
    step's params first, for a value that depends on them)."""
    is_optax = type(tx).__module__.startswith("optax")
    apply = optax.apply_updates if is_optax else optjax.apply_updates
    with jax.numpy_dtype_promotion("standard" if is_optax else "strict"):
        state, out = tx.init(params), []
        for g in grads:
            extra = {k: v(params) if callable(v) else v for k, v in extra_args.items()}
            updates, state = tx.update(g, state, params, **extra)
            params = apply(params, updates)
            kept = (updates, params, state) if states else (updates, params)
            out.append(jax.tree.map(np.asarray, kept))
    return out


def assert_trajectories_close(got: list, want: list, rtol: float = 1e-6) -> None:
    """Every leaf of every step within ``rtol``, relative to that leaf's largest entry at that
    step (entries that pass through zero are compared at the leaf's scale)."""
    assert len(got) == len(want)
    for t, (a_step, b_step) in enumerate(zip(got, want, strict=True)):
        pairs = zip(jax.tree.leaves(a_step), jax.tree.leaves(b_step), strict=True)
        for a, b in pairs:
            assert a.shape == b.shape, (t, a.shape, b.shape)
            scale = float(np.max(np.abs(b), initial=0.0))
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale, err_msg=f"step {t}")


def worst_error(got: list, exact: list) -> float:
    """The largest error of any entry, relative to its leaf's largest entry at that step."""
    pairs = zip(jax.tree.leaves(got), jax.tree.leaves(exact), strict=True)
    errors = [
        np.max(np.abs(np.asarray(a, np.float64) - b)) / max(np.max(np.abs(b)), 1e-300)
        for a, b in pairs
    ]
    return float(max(errors))


def compare_with_optax(
    ours: Callable[[], Any],
    theirs: Callable[[], Any],
    *,
    steps: int = 5,
    seed: int = 0,
    rtol: float = 1e-6,
    shapes=SHAPES,
    scale: float = 1.0,
    float32: str = "as_close",
    **extra_args,
) -> tuple[float, float]:
    """Run ``ours()`` and ``theirs()`` on one problem in float64 and assert they agree within
    ``rtol``; then run both in float32 and assert optjax's is at least as close to the float64
    run as optax's (plus a float32 ulp of slack). With ``float32="same_order"``, for a method
    both form in float32 the same way, where which rounding lands closer changes from seed to
    seed: optjax's error is at most twice optax's (a lost precision, such as a bf16 step, is
    orders of magnitude). Returns the two float32 errors."""
    assert float32 in ("as_close", "same_order"), float32
    with jax.enable_x64(True):
        params, grads = problem(jnp.float64, steps, seed, shapes, scale)
        exact = run(ours(), params, grads, **extra_args)
        assert_trajectories_close(exact, run(theirs(), params, grads, **extra_args), rtol)
    params, grads = problem(jnp.float32, steps, seed, shapes, scale)
    ours32 = worst_error(run(ours(), params, grads, **extra_args), exact)
    theirs32 = worst_error(run(theirs(), params, grads, **extra_args), exact)
    factor = 1.0 if float32 == "as_close" else 2.0
    assert ours32 <= factor * theirs32 + float(jnp.finfo(jnp.float32).eps), (ours32, theirs32)
    return ours32, theirs32


def constant(value: float) -> Callable:
    """A schedule whose value is always ``value`` (so a run that takes schedules can be
    compared with one that takes the number)."""
    return lambda count: jnp.where(count >= 0, value, 0.0)
