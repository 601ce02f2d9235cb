"""Gradients too large to square, and integer parameters.

- The global norm (clip_by_global_norm, optjax.tree.global_norm) is finite for every finite
  gradient: squares overflow float32 above ~1.8e19, where the norm is taken again rescaled by
  the largest |g|. Checked against NumPy in float64 over magnitudes up to float32's largest,
  in float32, bf16 and fp16, on trees and on the flat layout.
- An integer or bool parameter is never silently truncated: every optimizer of the conformance
  table refuses an integer gradient, apply_updates refuses a floating update to an integer
  parameter (both naming the leaf), and an integer leaf whose float0 gradient
  (``jax.grad(..., allow_int=True)``) is sent to set_to_zero stays as it is.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_conformance import ROWS

import optjax
from optjax import flat

MAGNITUDES = [1.0, 1e15, 1e19, 3e19, 1e25, 1e30, 1e37, 3e38]


def _gradients(scale, dtype, seed):
    rng = np.random.default_rng(seed)
    g = {"w": rng.normal(size=(5, 4)), "b": rng.normal(size=(3,)), "s": rng.normal(size=())}
    top = max(float(np.max(np.abs(x))) for x in g.values())
    limit = float(jnp.finfo(dtype).max) / 2  # no element rounds past the dtype's range
    return {k: jnp.asarray(np.clip(x * scale / top, -limit, limit), dtype) for k, x in g.items()}


def _norm64(g):
    return float(np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in g.values())))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=str)
@pytest.mark.parametrize("scale", MAGNITUDES, ids=str)
def test_clip_by_global_norm_is_finite_and_right_for_huge_gradients(scale, dtype):
    tx = optjax.clip_by_global_norm(1.0)
    clip = jax.jit(lambda g: tx.update(g, tx.init(None))[0])
    for seed in range(3):
        g = _gradients(scale, dtype, seed)
        norm = _norm64(g)
        got = clip(g)
        if norm < float(jnp.finfo(jnp.float32).max):  # the norm itself is in range
            np.testing.assert_allclose(float(optjax.tree.global_norm(g)), norm, rtol=1e-6)
        for k in g:
            want = np.asarray(g[k], np.float64) * min(1.0, 1.0 / norm)
            tol = 1e-6 if dtype == jnp.float32 else 1e-2
            np.testing.assert_allclose(np.asarray(got[k], np.float64), want, rtol=tol, atol=tol)


def test_the_flat_layout_has_the_same_norm_for_huge_gradients():
    g = _gradients(1e30, jnp.float32, 0)
    buffers = flat.FlatLayout.of(g).flatten(g)
    np.testing.assert_allclose(float(jax.jit(optjax.tree.global_norm)(buffers)), _norm64(g), 1e-6)


def test_a_non_finite_gradient_still_gives_a_non_finite_norm():
    for bad, expect in [(jnp.inf, np.isinf), (jnp.nan, np.isnan)]:
        g = {"a": jnp.array([3e30, bad]), "b": jnp.array([1.0])}
        assert expect(float(jax.jit(optjax.tree.global_norm)(g)))


def test_the_overflow_branch_keeps_the_program_linear_in_the_leaves():
    """The rescaling branch reads every leaf; what it returns must not make XLA copy the
    reduction over all leaves into each leaf's clip (a program, and a compile, that grow as the
    leaves squared)."""
    tx = optjax.clip_by_global_norm(1.0)

    def program_size(leaves):
        tree = [jnp.zeros((8,)) for _ in range(leaves)]
        step = jax.jit(lambda g: tx.update(g, tx.init(g))[0])
        return len(step.lower(tree).compile().as_text())

    assert program_size(64) < 2.5 * program_size(32)  # 2.0 now; 3.5 with the copies


def _int_params():
    return {"w": jnp.ones(3), "n": jnp.array([5, 7], jnp.int32), "flag": jnp.array(True)}


@pytest.mark.parametrize("name", ROWS)
def test_every_optimizer_refuses_integer_and_bool_gradients_naming_the_leaf(name):
    tx = ROWS[name].make(0.1)
    params = _int_params()
    state = tx.init(params)
    for leaf in ("n", "flag"):
        grads = {"w": jnp.ones(3), "n": jnp.ones(2, jnp.float32), "flag": jnp.array(0.0)}
        grads[leaf] = params[leaf]  # the integer (or bool) gradient
        with pytest.raises(ValueError, match=rf"updates\['{leaf}'\] is (int32|bool): optimizers"):
            tx.update(grads, state, params)


@pytest.mark.parametrize("dtype", [jnp.int8, jnp.int32, jnp.uint8, jnp.bool_], ids=str)
@pytest.mark.parametrize("update_dtype", [jnp.float32, jnp.bfloat16, jnp.complex64], ids=str)
def test_apply_updates_refuses_a_floating_step_to_an_integer_parameter(dtype, update_dtype):
    params = {"w": jnp.ones(2), "n": jnp.ones((2,), dtype)}
    updates = {"w": jnp.ones(2), "n": jnp.full((2,), 0.7, update_dtype)}
    with pytest.raises(ValueError, match=r"params\['n'\] is .* and its update is .*: the step"):
        optjax.apply_updates(params, updates)


def test_integer_updates_are_added_exactly_to_integer_parameters():
    params = {"n": jnp.array([5, 7], jnp.int32)}
    got = optjax.apply_updates(params, {"n": jnp.array([1, -2], jnp.int32)})
    np.testing.assert_array_equal(got["n"], [6, 5])


def test_integer_leaves_sent_to_set_to_zero_stay_as_they_are():
    params = _int_params()
    labels = {"w": "train", "n": "frozen", "flag": "frozen"}
    tx = optjax.multi_transform({"train": optjax.adam(0.1), "frozen": optjax.set_to_zero()}, labels)
    loss = lambda p: jnp.sum(p["w"] ** 2)  # "n" and "flag" get float0 gradients
    state, step = tx.init(params), jax.jit(tx.update)
    for _ in range(3):
        grads = jax.grad(loss, allow_int=True)(params)
        updates, state = step(grads, state, params)
        params = optjax.apply_updates(params, updates)
    np.testing.assert_array_equal(params["n"], [5, 7])
    assert params["n"].dtype == jnp.int32 and bool(params["flag"])
    assert float(params["w"][0]) < 1.0  # the float leaf did train
