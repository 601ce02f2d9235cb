"""The conformance table (tests/test_conformance.py) again, with every optimizer wrapped in
inject_hyperparams and in MultiSteps: it still converges on the ill-conditioned quadratic, keeps
the dtypes of float32 and bf16 leaves and the state's structure, and compiles once (with
inject_hyperparams, also when its learning rate is changed between steps).

One jitted step per row and wrapper serves all of these checks: the params hold the quadratic's
point (float32) beside a bf16 leaf with a loss of its own, so the table costs one compile each.
"""

import inspect

import chex
import jax
import jax.numpy as jnp
import pytest
from test_conformance import ROWS, quadratic

import optjax

K = 2  # MultiSteps accumulates K gradients per inner step


def _inject(make, lr):
    return optjax.inject_hyperparams(make)(lr)


def _multisteps(make, lr):
    return optjax.MultiSteps(make(lr), every_k_schedule=K)


WRAPPERS = {"inject_hyperparams": _inject, "MultiSteps": _multisteps}


def _loss(params):
    h = params["h"].astype(jnp.float32)
    return quadratic(params["x"]) + 0.5 * jnp.sum(h * h)


@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize("name", ROWS)
def test_converges_keeps_dtypes_and_compiles_once(name, wrapper):
    row = ROWS[name]
    make, (lr, steps) = row.factory, row.quadratic
    steps *= K if wrapper == "MultiSteps" else 1  # the same number of inner steps
    chex.clear_trace_counter()  # counts are kept per function across the table's rows
    tx = row.given_objective(WRAPPERS[wrapper](make, lr), _loss)  # the wrapper passes it on

    @jax.jit
    @chex.assert_max_traces(n=1)  # the new learning rate below included
    def step(params, state):
        grads = jax.grad(_loss)(params)
        updates, state = tx.update(grads, state, params)
        return optjax.apply_updates(params, updates), state, updates

    params = {"x": jnp.array([3.0, 2.0]), "h": jnp.array([1.0, -0.5, 0.25], jnp.bfloat16)}
    state = tx.init(params)
    before = state
    for i in range(steps):
        params, state, updates = step(params, state)
        if i < 3:
            chex.assert_trees_all_equal_shapes_and_dtypes(state, before)
            assert [u.dtype for u in jax.tree.leaves(updates)] == [jnp.bfloat16, jnp.float32]
    assert float(jnp.linalg.norm(params["x"])) < 1e-2, params["x"]
    chex.assert_trees_all_equal_shapes_and_dtypes(state, before)
    assert [p.dtype for p in jax.tree.leaves(params)] == [jnp.bfloat16, jnp.float32]
    assert bool(jnp.all(jnp.isfinite(params["h"].astype(jnp.float32))))
    if wrapper == "inject_hyperparams":
        lr_name = next(iter(inspect.signature(make).parameters))
        assert all(h.dtype == jnp.float32 for h in state.hyperparams.values())
        state.hyperparams[lr_name] = lr / 2  # a new learning rate, not a new program
        params, state, _ = step(params, state)
        assert float(state.hyperparams[lr_name]) == jnp.float32(lr / 2)
