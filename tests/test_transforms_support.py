"""The driver shared by the test_transforms* files (this module holds no tests of its own).

Each primitive runs jitted over a few steps of seeded random gradients on a tree of leaves shaped
like a scalar, a vector, a matrix and a 4-D tensor (one compilation covers every shape), and its
updates and state are compared with a float64 NumPy oracle written from the paper's formula.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SHAPES = {"scalar": (), "vector": (3,), "matrix": (2, 3), "tensor": (2, 3, 1, 2)}
STEPS = 6
# The oracle runs in float64, optjax in float32. One float32 rounding is 6e-8 relative; a handful
# of them per step over a few steps stays well under 1e-5 relative. Moments are sums of
# gradients of both signs and can cancel to near zero, where only an absolute error of the order
# of the terms (~1e-7 here, terms are O(1)) is meaningful: hence the small atol.
RTOL, ATOL = 1e-5, 1e-6


def has_count(state) -> bool:
    """Whether a state NamedTuple has a step-count field (tuples all have a .count method)."""
    return "count" in getattr(state, "_fields", ())


def random_trees(seed: int, steps: int = STEPS, shapes=SHAPES, dtype=np.float32) -> list[dict]:
    """``steps`` trees of standard normal leaves, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    return [{k: rng.normal(size=s).astype(dtype) for k, s in shapes.items()} for _ in range(steps)]


class CountingJit:
    """``tx.update`` under jax.jit, counting how many times it has been traced (compiled)."""

    def __init__(self, tx):
        self.tx, self.traces = tx, 0

        def update(g, s, p):
            self.traces += 1
            return tx.update(g, s, p)

        self.update = jax.jit(update)


def run(tx, grads: list, params=None, state=None, jitted: CountingJit | None = None) -> list:
    """``[(updates_t, state_t)]`` from the jitted ``tx.update`` over ``grads``; asserts that the
    update traced once only, i.e. the state it returns has the types it was given."""
    jitted = jitted or CountingJit(tx)
    if state is None:
        state = tx.init(jax.tree.map(jnp.zeros_like, grads[0]) if params is None else params)
    out = []
    for g in grads:
        u, state = jitted.update(jax.tree.map(jnp.asarray, g), state, params)
        out.append((u, state))
    assert jitted.traces == 1, f"update traced {jitted.traces} times"
    return out


def leafwise(spec, grads: list, params=None, **hyper) -> list[tuple]:
    """Run the one-leaf oracle ``spec(leaf_grads, [p,] **hyper)`` (a generator of
    ``(update, {state field: value})``) on every leaf, in float64; regroup the result per step."""
    keys = list(grads[0])
    per_leaf = {}
    for k in keys:
        gs = [np.asarray(g[k], np.float64) for g in grads]
        extra = () if params is None else (np.asarray(params[k], np.float64),)
        per_leaf[k] = list(spec(gs, *extra, **hyper))
    steps = []
    for t in range(len(grads)):
        fields = per_leaf[keys[0]][t][1]
        steps.append(
            (
                {k: per_leaf[k][t][0] for k in keys},
                {f: {k: per_leaf[k][t][1][f] for k in keys} for f in fields},
            )
        )
    return steps


def assert_trajectory(got: list, expected: list, rtol=RTOL, atol=ATOL, first_step: int = 1):
    """Compare each step's updates and named state fields, and the int32 step count if any."""
    assert len(got) == len(expected)
    for t, ((u, state), (u_exp, fields)) in enumerate(zip(got, expected), start=1):
        if has_count(state):
            assert state.count.dtype == jnp.int32 and int(state.count) == t
        if t < first_step:
            continue
        for k in u_exp:
            np.testing.assert_allclose(
                np.asarray(u[k], np.float64), u_exp[k], rtol, atol, err_msg=f"update {k}, step {t}"
            )
        for field, leaves in fields.items():
            for k, value in leaves.items():
                np.testing.assert_allclose(
                    np.asarray(getattr(state, field)[k], np.float64),
                    value,
                    rtol,
                    atol,
                    err_msg=f"state.{field} {k}, step {t}",
                )
