"""The transform algebra: chain, named_chain, stateless transforms, apply_updates, interop with
optax and flax.nnx, and the tree-structure errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optjax


def _params():
    return {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.array([0.5, -1.0])}


def _grads(seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), _params())


def _run(tx, steps=4):
    params, state, trajectory = _params(), tx.init(_params()), []
    for t in range(steps):
        updates, state = tx.update(_grads(t), state, params)
        params = optjax.apply_updates(params, updates)
        trajectory.append(params)
    return trajectory


def _assert_same_trajectory(a, b, rtol=1e-6):
    for pa, pb in zip(a, b, strict=True):
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-7), pa, pb)


def test_chain_applies_transforms_in_order():
    tx = optjax.chain(optjax.scale(2.0), optjax.clip(1.0))  # 2g, then clipped
    u, _ = tx.update(jnp.array([0.25, 3.0]), tx.init(jnp.zeros(2)))
    np.testing.assert_array_equal(u, [0.5, 1.0])


def test_chain_state_is_a_tuple_of_inner_states():
    tx = optjax.chain(optjax.scale_by_adam(), optjax.scale(-1.0))
    state = tx.init(_params())
    assert isinstance(state, tuple) and isinstance(state[0], optjax.ScaleByAdamState)


def test_named_chain_equals_chain_and_keys_states_by_name():
    named = optjax.named_chain(("adam", optjax.scale_by_adam()), ("lr", optjax.scale(-0.1)))
    plain = optjax.chain(optjax.scale_by_adam(), optjax.scale(-0.1))
    assert set(named.init(_params())) == {"adam", "lr"}
    _assert_same_trajectory(_run(named), _run(plain), rtol=0)


def test_named_chain_rejects_duplicate_names():
    with pytest.raises(ValueError, match="unique"):
        optjax.named_chain(("a", optjax.identity()), ("a", optjax.identity()))


def test_identity_and_set_to_zero():
    g = _grads(0)
    u, _ = optjax.identity().update(g, optjax.identity().init(g))
    jax.tree.map(np.testing.assert_array_equal, u, g)
    z, _ = optjax.set_to_zero().update(g, optjax.EmptyState())
    assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(z))


def test_stateless_passes_params():
    tx = optjax.stateless(lambda u, p: jax.tree.map(lambda a, b: a * b, u, p))
    u, state = tx.update(jnp.array([2.0]), tx.init(None), jnp.array([3.0]))
    np.testing.assert_array_equal(u, [6.0])
    assert state == optjax.EmptyState()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=str)
def test_apply_updates_keeps_param_dtype(dtype):
    params = {"a": jnp.ones(3, dtype), "b": jnp.ones((), dtype)}
    updates = {"a": jnp.full(3, 0.25, jnp.float32), "b": jnp.asarray(-0.5, dtype)}
    out = optjax.apply_updates(params, updates)
    assert all(x.dtype == dtype for x in jax.tree.leaves(out))
    np.testing.assert_allclose(np.asarray(out["a"], np.float32), 1.25)
    np.testing.assert_allclose(np.asarray(out["b"], np.float32), 0.5)


@pytest.mark.parametrize("p_dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_apply_updates_rounds_once_to_the_params_dtype(p_dtype):
    # Values that no low-precision format holds: p + u formed in the wider dtype, then rounded
    # once, is the correctly rounded sum; rounding u to p's dtype first (twice in all) is not.
    rng = np.random.default_rng(0)
    p64 = rng.uniform(0.5, 2.0, 4096)
    u64 = rng.uniform(-1e-2, 1e-2, 4096)
    params = jnp.asarray(p64, p_dtype)
    for u_dtype in (jnp.float32, jnp.float64) if p_dtype == jnp.float32 else (jnp.float32,):
        if u_dtype == jnp.float64 and not jax.config.jax_enable_x64:
            continue
        updates = jnp.asarray(u64, u_dtype)
        got = optjax.apply_updates(params, updates)
        exact = np.asarray(params, np.float64) + np.asarray(updates, np.float64)
        want = jnp.asarray(exact.astype(np.float32), p_dtype)  # one rounding (f32 holds it)
        assert got.dtype == p_dtype
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
        twice = params + updates.astype(p_dtype)
        if p_dtype != jnp.float32:  # the test can tell one rounding from two
            assert not np.array_equal(np.asarray(twice, np.float32), np.asarray(got, np.float32))


def test_apply_updates_skips_none_updates():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    out = optjax.apply_updates(params, {"a": jnp.ones(2), "b": None})
    np.testing.assert_array_equal(out["a"], 2.0)
    np.testing.assert_array_equal(out["b"], 1.0)


def test_optax_transforms_inside_optjax_chain(standard_promotion):
    mixed = optjax.chain(optax.scale_by_adam(), optjax.scale_by_learning_rate(0.1))
    _assert_same_trajectory(_run(mixed), _run(optjax.adam(0.1)), rtol=2e-5)


def test_optjax_transforms_inside_optax_chain(standard_promotion):
    mixed = optax.chain(optjax.scale_by_adam(), optax.scale_by_learning_rate(0.1))
    _assert_same_trajectory(_run(mixed), _run(optax.adam(0.1)), rtol=2e-5)


def test_chain_forwards_extra_args_only_where_accepted():
    seen = []

    def takes_value():
        def update(updates, state, params=None, *, value=None):
            seen.append(value)
            return updates, state

        return optjax.GradientTransformation(lambda p: optjax.EmptyState(), update)

    tx = optjax.chain(optax.scale(1.0), takes_value(), optjax.scale(1.0))
    tx.update(jnp.ones(1), tx.init(jnp.ones(1)), jnp.ones(1), value=3.0)
    assert seen == [3.0]


def test_chain_rejects_state_of_another_length():
    tx = optjax.chain(optjax.scale(1.0), optjax.scale(1.0))
    with pytest.raises(ValueError, match="state holds 1 entries but the chain has 2"):
        tx.update(jnp.ones(1), (optjax.EmptyState(),))


def test_flax_nnx_optimizer_accepts_optjax_transforms(standard_promotion):
    def train(tx):
        model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        x, y = jnp.ones((4, 3)), jnp.zeros((4, 2))

        @nnx.jit
        def step(model, optimizer):
            loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
            optimizer.update(model, grads)
            return loss

        losses = [float(step(model, optimizer)) for _ in range(5)]
        return losses, model.kernel[...]

    losses, kernel = train(optjax.adam(0.05))
    _, kernel_ref = train(optax.adam(0.05))
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(kernel, kernel_ref, rtol=1e-5, atol=1e-6)


def test_update_with_state_of_other_params_names_first_differing_path():
    tx = optjax.adam(0.1)
    state = tx.init({"w": jnp.zeros(2), "b": jnp.zeros(2)})
    match = r"only the state has \[0\]\.mu\['b'\]; only init\(params\)'s has \[0\]\.mu\['c'\]"
    with pytest.raises(ValueError, match=match):
        tx.update({"c": jnp.zeros(2), "w": jnp.zeros(2)}, state)


def test_apply_updates_mismatch_names_path():
    with pytest.raises(ValueError, match=r"params.*\['b'\]"):
        optjax.apply_updates({"a": jnp.ones(1), "b": jnp.ones(1)}, {"a": jnp.ones(1)})


def test_step_count_saturates_instead_of_wrapping():
    tx = optjax.scale_by_adam()
    state = tx.init(jnp.zeros(1))._replace(count=jnp.asarray(2**31 - 1, jnp.int32))
    u, state = jax.jit(tx.update)(jnp.ones(1), state)
    assert state.count.dtype == jnp.int32 and int(state.count) == 2**31 - 1
    assert bool(jnp.all(jnp.isfinite(u)))


def test_amsgrad_state_can_be_donated():
    tx = optjax.amsgrad(0.1)
    step = jax.jit(lambda g, s: tx.update(g, s), donate_argnums=1)
    _, state = step(jnp.ones(3), tx.init(jnp.zeros(3)))  # nu and nu_max must be separate buffers
    assert state[0].nu_max.shape == (3,)
