"""Adafactor's factored second moment (scale_by_factored_rms) against a float64 NumPy oracle of
Shazeer & Stern 2018, Algorithms 4 (factored) and 5 (unfactored), written with the paper's row and
column sums."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from test_transforms_support import ATOL, RTOL, assert_trajectory, random_trees, run

import optjax


def adafactor_spec(gs, axes, decay_rate=0.8, epsilon=1e-30):
    """Yield ``(u_t, second-moment statistics)``. ``axes = (a, b)``: factor over these two axes
    (rows along a, columns along b; any others are batch axes), or None for the full V_t."""
    stats = {}
    for t, g in enumerate(gs, start=1):
        beta = 1 - t ** (-decay_rate)  # β̂_2t
        g2 = g**2 + epsilon
        if axes is None:
            v = beta * stats.get("v", 0.0) + (1 - beta) * g2  # Algorithm 5
            stats = {"v": v}
        else:
            a, b = axes  # Algorithm 4: R_t = β R + (1 - β)(G² + ε) 1_m,  C_t likewise with 1_n^T
            r = beta * stats.get("r", 0.0) + (1 - beta) * g2.sum(axis=b, keepdims=True)
            c = beta * stats.get("c", 0.0) + (1 - beta) * g2.sum(axis=a, keepdims=True)
            v = r * c / r.sum(axis=a, keepdims=True)  # V̂_t = R_t C_t / (1_n^T R_t)
            stats = {"r": r, "c": c}
        yield g / np.sqrt(v), stats


SHAPES = {
    "scalar": (),
    "vector": (7,),
    "matrix": (5, 6),
    "thin": (3, 8),
    "tensor3": (2, 6, 5),  # its two largest axes: 1 and 2
    "tensor4": (3, 5, 2, 4),  # its two largest axes: 1 and 3, not adjacent
}
# The two largest axes of each leaf, written out by hand; a leaf is factored when both have at
# least min_dim_size_to_factor entries. No leaf has a tie among its two largest axes.
LARGEST_TWO = {"matrix": (0, 1), "thin": (0, 1), "tensor3": (1, 2), "tensor4": (1, 3)}


@pytest.mark.parametrize(
    "hyper, factored_leaves",
    [
        ({"min_dim_size_to_factor": 4}, ("matrix", "tensor3", "tensor4")),
        (
            {"min_dim_size_to_factor": 3, "decay_rate": 0.5},
            ("matrix", "thin", "tensor3", "tensor4"),
        ),
        ({"min_dim_size_to_factor": 5, "epsilon": 1e-3}, ("matrix", "tensor3")),
        ({"min_dim_size_to_factor": 6}, ()),
        ({}, ()),  # the default, 128, factors none of these small leaves
        ({"min_dim_size_to_factor": 1, "factored": False}, ()),
    ],
    ids=str,
)
def test_scale_by_factored_rms_matches_spec(hyper, factored_leaves):
    grads = random_trees(40, shapes=SHAPES)
    spec_hyper = {k: v for k, v in hyper.items() if k in ("decay_rate", "epsilon")}
    axes = {k: LARGEST_TWO[k] if k in factored_leaves else None for k in SHAPES}
    runs = {
        k: list(adafactor_spec([np.float64(g[k]) for g in grads], axes[k], **spec_hyper))
        for k in SHAPES
    }
    got = run(optjax.scale_by_factored_rms(**hyper), grads)
    expected = [({k: runs[k][t][0] for k in SHAPES}, {}) for t in range(len(grads))]
    assert_trajectory(got, expected)
    for t, (_, state) in enumerate(got):
        for k, shape in SHAPES.items():
            _check_statistics(state, k, shape, axes[k], runs[k][t][1])


def _check_statistics(state, k, shape, axes, stats):
    """The state keeps row and column means (O(n + m) memory) for a factored leaf, the full
    second moment otherwise; the unused fields are None (empty nodes: no buffers)."""
    close = {"rtol": RTOL, "atol": ATOL, "err_msg": k}
    if axes is None:
        assert state.v_row[k] is None and state.v_col[k] is None
        np.testing.assert_allclose(np.float64(state.v[k]), stats["v"], **close)
        return
    a, b = axes
    assert state.v[k] is None
    row_means = np.squeeze(stats["r"], b) / shape[b]
    col_means = np.squeeze(stats["c"], a) / shape[a]
    kept = {np.shape(state.v_row[k]): state.v_row[k], np.shape(state.v_col[k]): state.v_col[k]}
    assert set(kept) == {row_means.shape, col_means.shape}
    np.testing.assert_allclose(np.float64(kept[row_means.shape]), row_means, **close)
    np.testing.assert_allclose(np.float64(kept[col_means.shape]), col_means, **close)


def test_default_threshold_factors_from_128():
    shapes = {"at": (128, 130), "below": (127, 130), "vector": (300,)}
    grads = random_trees(41, shapes=shapes)
    axes = {"at": (0, 1), "below": None, "vector": None}
    runs = {k: list(adafactor_spec([np.float64(g[k]) for g in grads], axes[k])) for k in shapes}
    got = run(optjax.scale_by_factored_rms(), grads)
    assert_trajectory(got, [({k: runs[k][t][0] for k in shapes}, {}) for t in range(len(grads))])
    for t, (_, state) in enumerate(got):
        for k, shape in shapes.items():
            _check_statistics(state, k, shape, axes[k], runs[k][t][1])


def test_first_step_of_a_factored_leaf():
    # At t = 1, β̂ = 0: V̂ = (row sums)(column sums) / total of G² + ε. For this rank-one G², V̂ is
    # G² itself, so u = sign(G).
    g = jnp.outer(jnp.array([1.0, -2.0]), jnp.array([3.0, 1.0, -0.5]))
    tx = optjax.scale_by_factored_rms(min_dim_size_to_factor=2)
    u, state = tx.update(g, tx.init(g))
    np.testing.assert_allclose(u, np.sign(g), rtol=RTOL)
    assert state.v is None and {state.v_row.shape, state.v_col.shape} == {(2,), (3,)}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_factored_state_is_float32_the_updates_keep_the_dtype(dtype):
    shapes = {"matrix": (4, 6), "vector": (5,)}
    grads = random_trees(42, steps=2, shapes=shapes, dtype=dtype)
    for u, state in run(optjax.scale_by_factored_rms(min_dim_size_to_factor=2), grads):
        assert {x.dtype for x in u.values()} == {jnp.dtype(dtype)}
        for tree in (state.v_row, state.v_col, state.v):  # float32 for bf16: they must decay
            assert {x.dtype for x in tree.values() if x is not None} == {jnp.dtype(jnp.float32)}
