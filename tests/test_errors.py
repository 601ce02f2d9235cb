"""Bad hyperparameters fail at construction with a message naming the argument, the value and
what is allowed; traced values (under jit or vmap) are accepted unchecked."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optjax

# (constructor, keyword arguments, the argument named in the error, the allowed range's words)
BAD = [
    (optjax.sgd, dict(learning_rate=-0.1), "learning_rate", ">= 0"),
    (optjax.sgd, dict(learning_rate=math.nan), "learning_rate", "finite"),
    (optjax.sgd, dict(learning_rate=0.1, momentum=1.5), "momentum", "[0, 1]"),
    (optjax.rmsprop, dict(learning_rate=0.1, momentum=-0.5), "momentum", "[0, 1]"),
    (optjax.adam, dict(learning_rate=-1e-3), "learning_rate", ">= 0"),
    (optjax.adam, dict(learning_rate=1e-3, b1=1.0), "b1", "[0, 1)"),
    (optjax.adam, dict(learning_rate=1e-3, b1=-0.1), "b1", "[0, 1)"),
    (optjax.adam, dict(learning_rate=1e-3, b2=1.2), "b2", "[0, 1)"),
    (optjax.adam, dict(learning_rate=1e-3, eps=-1e-8), "eps", ">= 0"),
    (optjax.adam, dict(learning_rate=1e-3, eps_root=-1.0), "eps_root", ">= 0"),
    (optjax.adamw, dict(learning_rate=1e-3, weight_decay=-0.1), "weight_decay", ">= 0"),
    (optjax.nadam, dict(learning_rate=1e-3, b2=1.0), "b2", "[0, 1)"),
    (optjax.amsgrad, dict(learning_rate=1e-3, eps=-1.0), "eps", ">= 0"),
    (optjax.adamax, dict(learning_rate=1e-3, b1=2.0), "b1", "[0, 1)"),
    (optjax.adamaxw, dict(learning_rate=1e-3, weight_decay=-1.0), "weight_decay", ">= 0"),
    (optjax.rmsprop, dict(learning_rate=1e-3, decay=1.0), "decay", "[0, 1)"),
    (optjax.rmsprop, dict(learning_rate=1e-3, eps=-1.0), "eps", ">= 0"),
    (optjax.rmsprop, dict(learning_rate=1e-3, initial_scale=-1.0), "initial_scale", ">= 0"),
    (
        optjax.adagrad,
        dict(learning_rate=1e-3, initial_accumulator_value=-0.1),
        "initial_accumulator_value",
        ">= 0",
    ),
    (optjax.adagrad, dict(learning_rate=1e-3, eps=-1.0), "eps", ">= 0"),
    (optjax.adadelta, dict(rho=1.0), "rho", "[0, 1)"),
    (optjax.adadelta, dict(learning_rate=-1.0), "learning_rate", ">= 0"),
    (optjax.adafactor, dict(min_dim_size_to_factor=0), "min_dim_size_to_factor", ">= 1"),
    (optjax.adafactor, dict(clipping_threshold=0.0), "clipping_threshold", "> 0"),
    (optjax.adafactor, dict(eps=-1.0), "eps", ">= 0"),
    (optjax.adafactor, dict(momentum=1.1), "momentum", "[0, 1]"),
    (optjax.adafactor, dict(weight_decay_rate=-1.0), "weight_decay_rate", ">= 0"),
    (optjax.lion, dict(learning_rate=1e-4, b2=1.0), "b2", "[0, 1)"),
    (optjax.radam, dict(learning_rate=1e-3, b1=1.0), "b1", "[0, 1)"),
    (optjax.clip, dict(max_delta=-1.0), "max_delta", ">= 0"),
    (optjax.clip_by_global_norm, dict(max_norm=-1.0), "max_norm", ">= 0"),
    (optjax.clip_by_block_rms, dict(threshold=0.0), "threshold", "> 0"),
    (optjax.scale_by_param_block_rms, dict(min_scale=0.0), "min_scale", "> 0"),
    (optjax.add_noise, dict(eta=-0.1), "eta", ">= 0"),
    (optjax.ema, dict(decay=1.0), "decay", "[0, 1)"),
    (optjax.trace, dict(decay=-0.5), "decay", "[0, 1]"),
    (optjax.scale, dict(step_size=math.inf), "step_size", "finite"),
    (optjax.scale_by_schedule, dict(step_size_fn=0.1), "step_size_fn", "callable"),
]


def _case_id(case):
    fn, kwargs, _, _ = case
    return f"{fn.__name__}({','.join(f'{k}={v}' for k, v in kwargs.items())})"


@pytest.mark.parametrize("make,kwargs,argument,allowed", BAD, ids=[_case_id(c) for c in BAD])
def test_invalid_hyperparameter_raises_naming_it(make, kwargs, argument, allowed):
    with pytest.raises(ValueError) as info:
        make(**kwargs)
    message = str(info.value)
    assert argument in message and allowed in message, message
    bad_value = [v for v in kwargs.values()][-1]
    assert repr(bad_value) in message, message


def test_non_numeric_hyperparameter_is_a_clear_error():
    with pytest.raises(ValueError, match=r"learning_rate must be .*, got learning_rate='fast'"):
        optjax.adam("fast")


def test_traced_hyperparameters_are_accepted_unchecked():
    def step(lr, b1):
        tx = optjax.adam(lr, b1=b1)
        return tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]

    out = jax.jit(jax.vmap(step))(jnp.array([1e-3, 1e-2]), jnp.array([0.9, 0.5]))
    np.testing.assert_allclose(out, [[-1e-3, -1e-3], [-1e-2, -1e-2]], rtol=1e-5)


def test_schedules_are_accepted_as_learning_rates():
    tx = optjax.sgd(lambda count: jnp.where(count < 1, 1.0, 0.5))
    state = tx.init(jnp.zeros(1))
    u1, state = tx.update(jnp.ones(1), state)
    u2, state = tx.update(jnp.ones(1), state)
    np.testing.assert_array_equal([u1[0], u2[0]], [-1.0, -0.5])


def test_decay_in_a_transform_needs_params_when_absent():
    tx = optjax.adamw(1e-3)
    with pytest.raises(ValueError, match="add_decayed_weights needs params"):
        tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))


def test_mask_of_wrong_structure_names_path():
    tx = optjax.add_decayed_weights(0.1, mask={"a": True})
    params = {"a": jnp.ones(1), "b": jnp.ones(1)}
    with pytest.raises(ValueError, match=r"params and mask differ: only params has \['b'\]"):
        tx.update(params, tx.init(params), params)
