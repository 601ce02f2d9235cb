"""Shapes and dtypes that do not match are refused, naming the path: gradients against the
parameters, the state against what the optimizer's ``init`` gives for these parameters (a state
from another optimizer, or for other parameters), and updates against parameters in
``apply_updates``. Every optimizer and torch preset of the conformance table, and the
wrappers, are tried; nothing is broadcast or half-updated."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_conformance import ROWS

import optjax

NAMES = sorted(ROWS)
PARAMS = {"b": jnp.zeros(3), "w": jnp.ones((2, 3))}


def grads_like(params, **replace):
    return {k: replace.get(k, jnp.full(jnp.shape(v), 0.5)) for k, v in params.items()}


BAD_GRADS = {  # a gradient that does not fit its parameter, and the message that names it
    "broadcastable (2, 3) for (3,)": (
        {"b": jnp.ones((2, 3))},
        r"updates\['b'\] has shape \(2, 3\) but params\['b'\] has shape \(3,\)",
    ),
    "(4,) for (3,)": ({"b": jnp.ones(4)}, r"updates\['b'\] has shape \(4,\) but params\['b'\]"),
    "scalar for (2, 3)": ({"w": jnp.ones(())}, r"updates\['w'\] has shape \(\) but params\['w'\]"),
    "transposed": ({"w": jnp.ones((3, 2))}, r"updates\['w'\] has shape \(3, 2\) but params"),
}


@pytest.mark.parametrize("bad", BAD_GRADS)
@pytest.mark.parametrize("name", NAMES)
def test_gradients_of_another_shape_are_refused_naming_the_path(name, bad):
    tx = ROWS[name].make(0.1)
    state = tx.init(PARAMS)
    replace, message = BAD_GRADS[bad]
    with pytest.raises(ValueError, match=message):
        tx.update(grads_like(PARAMS, **replace), state, PARAMS)


@pytest.mark.parametrize("name", NAMES)
def test_a_state_for_other_parameters_is_refused_naming_the_leaf(name):
    """A state built for a (4,) bias, given with (3,) parameters and gradients: refused at the
    first leaf that differs, whichever optimizer."""
    tx = ROWS[name].make(0.1)
    other = {"b": jnp.zeros(4), "w": jnp.ones((2, 3))}
    state = tx.init(other)
    if not any(np.shape(x) == (4,) for x in jax.tree.leaves(state)):
        pytest.skip("no state leaf is shaped like b")  # e.g. plain sgd: an empty state
    with pytest.raises(ValueError, match=r"state.*\['b'\].* is float32\[4\], but init gives "):
        tx.update(grads_like(PARAMS), state, PARAMS)


@pytest.mark.parametrize("name", NAMES)
def test_a_state_from_another_optimizer_is_refused(name):
    """Each row's update given the next row's state (and adam's, for a row whose neighbour
    builds the same state): one clear error, never a TypeError from deep inside."""
    tx = ROWS[name].make(0.1)
    own = tx.init(PARAMS)
    own_structure = jax.tree.structure(own)
    candidates = [NAMES[(NAMES.index(name) + k) % len(NAMES)] for k in range(1, len(NAMES))]
    for other in candidates:
        state = ROWS[other].make(0.1).init(PARAMS)
        if jax.tree.structure(state) != own_structure:
            break
    with pytest.raises(ValueError, match=r"made by another optimizer"):
        tx.update(grads_like(PARAMS), state, PARAMS)


@pytest.mark.parametrize(
    "dtype, message",
    [(jnp.bfloat16, r"is bfloat16\[3\], but init gives float32\[3\]"),
     (jnp.int32, r"is int32\[3\], but init gives float32\[3\]")],
)  # fmt: skip
def test_a_state_leaf_of_another_dtype_is_refused(dtype, message):
    tx = optjax.adam(0.1)
    state = tx.init(PARAMS)
    bad = (state[0]._replace(mu={**state[0].mu, "b": state[0].mu["b"].astype(dtype)}), *state[1:])
    with pytest.raises(ValueError, match=r"chain: state\[0\]\.mu\['b'\] " + message):
        tx.update(grads_like(PARAMS), bad, PARAMS)


@pytest.mark.parametrize("bad", BAD_GRADS)
def test_apply_updates_refuses_updates_of_another_shape(bad):
    replace, _ = BAD_GRADS[bad]
    key = next(iter(replace))
    with pytest.raises(ValueError, match=rf"params\['{key}'\] has shape .* but updates\['{key}'\]"):
        optjax.apply_updates(PARAMS, grads_like(PARAMS, **replace))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda tx: optjax.MultiSteps(tx, every_k_schedule=2),
        lambda tx: optjax.apply_if_finite(tx, 3),
        lambda tx: optjax.lookahead(tx, 2, 0.5),
        lambda tx: optjax.masked(tx, {"b": True, "w": False}),
        lambda tx: optjax.inject_hyperparams(optjax.adam)(0.1),
    ],
    ids=["MultiSteps", "apply_if_finite", "lookahead", "masked", "inject_hyperparams"],
)
def test_wrapped_optimizers_refuse_gradients_of_another_shape(wrap):
    tx = wrap(optjax.adam(0.1))
    state = tx.init(PARAMS)
    with pytest.raises(ValueError, match=r"updates\['b'\] has shape \(4,\) but params\['b'\]"):
        tx.update(grads_like(PARAMS, b=jnp.ones(4)), state, PARAMS)


def test_matching_inputs_still_step():
    tx = optjax.adam(0.1)
    state = tx.init(PARAMS)
    updates, _ = tx.update(grads_like(PARAMS), state, PARAMS)
    assert updates["w"].shape == (2, 3) and updates["b"].shape == (3,)
