"""Every optimizer against optax 0.2.x, step by step on the same gradients, and the places where
optjax is deliberately right where optax is not.

The comparisons run in float64 so that both libraries compute their (identical) formulas to far
below the 1e-5 tolerance. In float32 the two differ by up to ~3e-5 in Adam's early steps, and the
difference is optax's: it forms 1 - 0.999^t in float32, where 0.999 itself is off by 1.3e-5
relative to 1 - b2 and the subtraction cancels 3 more digits; see
test_bias_correction_is_closer_to_float64_than_optax_in_float32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optjax

STEPS = 8

# (name, kwargs): each row runs optjax.<name>(**kwargs) against optax.<name>(**kwargs).
CASES = [
    ("sgd", dict(learning_rate=0.1)),
    ("sgd", dict(learning_rate=0.05, momentum=0.9)),
    ("sgd", dict(learning_rate=0.05, momentum=0.8, nesterov=True)),
    ("adagrad", dict(learning_rate=0.1)),
    ("adagrad", dict(learning_rate=0.3, initial_accumulator_value=0.0, eps=1e-3)),
    ("adadelta", dict(learning_rate=1.0)),
    ("adadelta", dict(learning_rate=0.5, rho=0.8, eps=1e-4, weight_decay=0.1)),
    ("rmsprop", dict(learning_rate=0.01)),
    ("rmsprop", dict(learning_rate=0.01, decay=0.95, eps=1e-4, eps_in_sqrt=False)),
    ("rmsprop", dict(learning_rate=0.01, centered=True, momentum=0.9, nesterov=True)),
    ("rmsprop", dict(learning_rate=0.01, initial_scale=0.5, bias_correction=True)),
    ("adam", dict(learning_rate=1e-2)),
    ("adam", dict(learning_rate=3e-3, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8)),
    ("adam", dict(learning_rate=1e-2, nesterov=True)),
    ("adamw", dict(learning_rate=1e-2)),
    ("adamw", dict(learning_rate=1e-2, b1=0.85, weight_decay=0.3)),
    ("nadam", dict(learning_rate=1e-2)),
    ("nadam", dict(learning_rate=1e-2, b1=0.8, b2=0.95, eps=1e-5)),
    ("nadamw", dict(learning_rate=1e-2)),
    ("nadamw", dict(learning_rate=1e-2, weight_decay=0.05)),
    ("amsgrad", dict(learning_rate=1e-2)),
    ("amsgrad", dict(learning_rate=1e-2, b1=0.5, b2=0.9, eps=1e-4)),
    ("adamax", dict(learning_rate=1e-2)),
    ("adamax", dict(learning_rate=2e-2, b1=0.7, b2=0.9, eps=1e-3)),
    ("adamaxw", dict(learning_rate=1e-2)),
    ("adamaxw", dict(learning_rate=1e-2, weight_decay=0.2)),
    ("adafactor", dict(learning_rate=1e-2)),
    ("adafactor", dict(learning_rate=1e-2, min_dim_size_to_factor=4, decay_rate=0.7)),
    (
        "adafactor",
        dict(
            learning_rate=1e-2,
            multiply_by_parameter_scale=False,
            clipping_threshold=None,
            momentum=0.9,
            weight_decay_rate=0.01,
            factored=False,
        ),
    ),
    ("lion", dict(learning_rate=1e-3)),
    ("lion", dict(learning_rate=1e-3, b1=0.8, b2=0.9, weight_decay=0.1)),
]


def _params(dtype):
    rng = np.random.default_rng(0)
    shapes = {"scalar": (), "vector": (7,), "matrix": (130, 129), "conv": (3, 3, 2, 4)}
    return {k: jnp.asarray(rng.normal(size=s), dtype) for k, s in shapes.items()}


def _trajectory(tx, apply, params, grads):
    state, out = tx.init(params), []
    update = jax.jit(tx.update)
    for g in grads:
        updates, state = update(g, state, params)
        params = apply(params, updates)
        out.append((updates, params))
    return out


def _case_id(case):
    name, kwargs = case
    return name + "(" + ",".join(f"{k}={v}" for k, v in kwargs.items()) + ")"


@pytest.mark.parametrize("name,kwargs", CASES, ids=[_case_id(c) for c in CASES])
def test_matches_optax_step_by_step(name, kwargs, standard_promotion):
    with jax.enable_x64(True):
        params = _params(jnp.float64)
        rng = np.random.default_rng(1)
        grads = [
            jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)
            for _ in range(STEPS)
        ]
        ours = _trajectory(getattr(optjax, name)(**kwargs), optjax.apply_updates, params, grads)
        theirs = _trajectory(getattr(optax, name)(**kwargs), optax.apply_updates, params, grads)
    for (u, p), (u_ref, p_ref) in zip(ours, theirs, strict=True):
        for a, b in zip(jax.tree.leaves((u, p)), jax.tree.leaves((u_ref, p_ref)), strict=True):
            assert a.dtype == b.dtype
            # float64 throughout (optjax forms its bias corrections and schedule values in
            # float64 under x64 too): elementwise, plus an atol of the leaf's scale for entries
            # that pass through zero. optax's Adafactor forms its decay rate in float32 even
            # here, so it is float32-accurate (see tests/test_float64.py).
            tol = 1e-5 if name == "adafactor" else 1e-10
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(np.max(np.abs(b))))


def _adam_float64(grads, b1=0.9, b2=0.999, eps=1e-8):
    m = v = np.zeros_like(grads[0], np.float64)
    for t, g in enumerate(grads, start=1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        yield (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)


def test_bias_correction_is_closer_to_float64_than_optax_in_float32(standard_promotion):
    # Gradients of one sign keep m_t away from 0, so relative errors measure the correction.
    rng = np.random.default_rng(2)
    grads = [rng.uniform(0.5, 1.5, size=1000).astype(np.float32) for _ in range(10)]
    errors = {}
    for lib in (optjax, optax):
        tx = lib.scale_by_adam()
        state, worst = tx.init(jnp.zeros(1000)), 0.0
        for g, exact in zip(grads, _adam_float64(grads)):
            u, state = tx.update(jnp.asarray(g), state)
            worst = max(worst, float(np.max(np.abs(np.asarray(u, np.float64) / exact - 1))))
        errors[lib.__name__] = worst
    assert errors["optjax"] < 2e-6, errors
    assert errors["optjax"] < errors["optax"] / 4, errors


def test_adadelta_default_learning_rate_descends():
    # optax.adadelta() defaults to learning_rate=None, which skips the sign flip: it ascends.
    f = lambda x: jnp.sum((x - 3.0) ** 2)
    tx, x = optjax.adadelta(), jnp.zeros(3)
    state = tx.init(x)
    for _ in range(200):
        u, state = tx.update(jax.grad(f)(x), state, x)
        x = optjax.apply_updates(x, u)
    assert float(f(x)) < float(f(jnp.zeros(3)))


@pytest.mark.parametrize("name", ["adam", "adamw", "nadam", "amsgrad", "adamax", "rmsprop"])
def test_bf16_params_keep_b2_and_track_float32(name):
    # b2 = 0.999 rounds to exactly 1.0 in bf16; computing the moments in bf16 arithmetic would
    # freeze the second moment and make the bias correction 1 - 1^t = 0.
    assert float(jnp.asarray(0.999, jnp.bfloat16)) == 1.0
    target = jnp.linspace(-0.5, 0.5, 64)  # minimise 0.5 ||x - target||^2 from x = 1
    results = {}
    for dtype in (jnp.bfloat16, jnp.float32):
        tx, x = getattr(optjax, name)(2e-2), jnp.ones(64, dtype)
        state, update = tx.init(x), jax.jit(tx.update)
        for _ in range(100):
            u, state = update((x.astype(jnp.float32) - target).astype(dtype), state, x)
            assert u.dtype == dtype
            x = optjax.apply_updates(x, u)
        results[dtype] = np.asarray(x, np.float32)
    start = np.abs(1.0 - np.asarray(target))
    assert np.all(np.abs(results[jnp.float32] - target) < 0.6 * start)  # it descended
    # bf16 keeps 8 bits of mantissa: 100 rounded steps stay within a few ulps (1/128 near 1).
    np.testing.assert_allclose(results[jnp.bfloat16], results[jnp.float32], atol=0.05)


def test_adam_bf16_second_moment_is_not_frozen():
    tx = optjax.scale_by_adam()
    g = jnp.full(4, 2.0, jnp.bfloat16)
    _, state = tx.update(g, tx.init(jnp.zeros(4, jnp.bfloat16)))
    # v_1 = (1 - b2) g^2 = 0.004; a b2 rounded to 1.0 would leave it at 0.
    np.testing.assert_allclose(np.asarray(state.nu, np.float32), 0.004, rtol=1e-2)


def test_adafactor_default_uses_relative_step(standard_promotion):
    # learning_rate=None means the paper's relative step rho_t = min(1e-2, 1/sqrt(t)); optax's
    # own None applies no step size at all, so compare with optax given that schedule.
    relative_step = lambda count: jnp.minimum(1e-2, 1.0 / jnp.sqrt(count + 1.0))
    params = _params(jnp.float32)
    rng = np.random.default_rng(4)
    grads = [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        for _ in range(5)
    ]
    ours = _trajectory(optjax.adafactor(), optjax.apply_updates, params, grads)
    theirs = _trajectory(optax.adafactor(relative_step), optax.apply_updates, params, grads)
    for (_, p), (_, p_ref) in zip(ours, theirs):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), p, p_ref)
