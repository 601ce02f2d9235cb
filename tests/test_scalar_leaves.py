"""Python numbers as leaves (``{"w": 1.0}``), as optax accepts them: apply_updates, and init and
update of every optimizer in the conformance table, give what the same computation gives on 0-d
float32 arrays (and what optax gives, where optax accepts them)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_conformance import ROWS

import optjax

PARAMS = {"w": 1.0, "b": -2.0}
GRADS = [{"w": 0.5, "b": 0.25}, {"w": -1.5, "b": 0.75}]


def _f32(tree):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def _typeof(tree):
    return jax.tree.map(
        lambda x: (jnp.shape(x), jnp.result_type(x), getattr(x, "weak_type", 0)), tree
    )


def _run(tx, params, grads, apply_updates=optjax.apply_updates):
    """Steps of tx from params: (the updates of each step, the final params, the final state)."""
    state, steps = tx.init(params), []
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = apply_updates(params, updates)
        steps.append(updates)
    return steps, params, state


@pytest.mark.parametrize("name", list(ROWS))
def test_python_number_leaves_step_like_float32_arrays(name):
    make = ROWS[name].make
    steps, params, state = _run(make(0.1), PARAMS, GRADS)
    want_steps, want_params, want_state = _run(make(0.1), _f32(PARAMS), _f32(GRADS))
    for got, want in [(steps, want_steps), (params, want_params), (state, want_state)]:
        assert _typeof(got) == _typeof(want)
        jax.tree.map(np.testing.assert_array_equal, got, want)
    assert all(isinstance(p, jax.Array) for p in jax.tree.leaves(params))


@pytest.mark.parametrize(
    "params,updates,expected",
    [
        ({"a": 1.0}, {"a": 0.5}, jnp.float32(1.5)),
        ({"a": 1.0}, {"a": jnp.float32(0.5)}, jnp.float32(1.5)),
        ({"a": jnp.float32(1.0)}, {"a": 0.5}, jnp.float32(1.5)),
        ({"a": 1.0, "b": None}, {"a": -0.25, "b": None}, jnp.float32(0.75)),
    ],
    ids=["both", "param", "update", "with_none"],
)
def test_apply_updates_takes_python_numbers_like_optax(
    params, updates, expected, standard_promotion
):
    got = optjax.apply_updates(params, updates)["a"]
    assert _typeof(got) == _typeof(expected)
    np.testing.assert_array_equal(got, expected)
    want = optax.apply_updates(params, updates)["a"]
    assert _typeof(got) == _typeof(want)
    np.testing.assert_array_equal(got, want)


# Rows whose optax twin takes Python-number leaves with the same hyperparameters and numerics.
OPTAX_TWINS = {
    "sgd": lambda lr: optax.sgd(lr),
    "sgd_momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "sgd_nesterov": lambda lr: optax.sgd(lr, 0.9, nesterov=True),
    "adam": lambda lr: optax.adam(lr),
    "adamw": lambda lr: optax.adamw(lr, weight_decay=1e-4),
    "amsgrad": lambda lr: optax.amsgrad(lr),
    "adamax": lambda lr: optax.adamax(lr),
    "lion": lambda lr: optax.lion(lr, weight_decay=0.0),
}


@pytest.mark.parametrize("name", list(OPTAX_TWINS))
def test_python_number_leaves_give_optax_dtypes_and_values(name, standard_promotion):
    steps, params, _ = _run(ROWS[name].make(0.1), PARAMS, GRADS)
    want_steps, want_params, _ = _run(OPTAX_TWINS[name](0.1), PARAMS, GRADS, optax.apply_updates)
    for got, want in [(steps, want_steps), (params, want_params)]:
        assert jax.tree.map(jnp.result_type, got) == jax.tree.map(jnp.result_type, want)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4), got, want)
