"""SAM (with normalize) and Sophia (with Hutchinson's estimator) against optax 0.2.8 step by
step on the same gradients (and the same random key); where optax is wrong (SAM with
sync_period=1 steps from the params before last; normalize and SAM turn a zero gradient into
NaN; Hutchinson's estimator fails on params of mixed dtypes); the flat layout; hyperparameter
validation. The trajectories run eagerly (see tests/optax_compare.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax_compare import (
    assert_trajectories_close,
    constant,
    problem,
    worst_error,
)

import optjax
from optjax.contrib._sam import NormalizeState, SAMState, normalize, sam
from optjax.contrib._sophia import (
    HutchinsonState,
    SophiaState,
    hutchinson_estimator_diag_hessian,
    scale_by_sophia,
    sophia,
)

# ---------------------------------------------------------------------------------------------
# Jitted runs: SAM's selects and Sophia's Hessian-vector products cost far more op by op (a
# program per op, and lax.cond compiled again at each eager call) than one program per run.


def jit_run(tx, params, grads, **extra_args):
    """``[(updates, params)]`` after each step, the whole run one jitted lax.scan (optax's
    traced under the standard dtype promotion it needs)."""
    is_optax = type(tx).__module__.startswith("optax")
    apply = optax.apply_updates if is_optax else optjax.apply_updates

    def body(carry, g):
        params, state = carry
        updates, state = tx.update(g, state, params, **extra_args)
        params = apply(params, updates)
        return (params, state), (updates, params)

    @jax.jit
    def trajectory(params, grads):
        with jax.numpy_dtype_promotion("standard" if is_optax else "strict"):
            return jax.lax.scan(body, (params, tx.init(params)), grads)[1]

    out = trajectory(params, jax.tree.map(lambda *g: jnp.stack(g), *grads))
    out = jax.tree.map(np.asarray, out)
    return [jax.tree.map(lambda x, t=t: x[t], out) for t in range(len(grads))]


SMALL = {"scalar": (), "matrix": (3, 2)}  # two leaves: compiling is most of the cost


def compare_jitted(ours, theirs, steps=5, float32=True, **extra_args):
    """compare_with_optax (tests/optax_compare.py) with jitted runs: float64 agreement, and
    (with ``float32``) ours in float32 at least as close to the float64 run as optax's."""
    with jax.enable_x64(True):
        params, grads = problem(jnp.float64, steps, shapes=SMALL)
        exact = jit_run(ours(), params, grads, **extra_args)
        assert_trajectories_close(exact, jit_run(theirs(), params, grads, **extra_args), 1e-6)
    if not float32:
        return
    params, grads = problem(jnp.float32, steps, shapes=SMALL)
    ours32 = worst_error(jit_run(ours(), params, grads, **extra_args), exact)
    theirs32 = worst_error(jit_run(theirs(), params, grads, **extra_args), exact)
    assert ours32 <= theirs32 + float(jnp.finfo(jnp.float32).eps), (ours32, theirs32)


# ---------------------------------------------------------------------------------------------
# SAM and normalize against optax.


def _sam_pair(outer, adv, **kwargs):
    """Ours and optax's SAM, built from the same factories of optjax and optax optimizers."""
    ours = lambda: sam(outer(optjax), adv(optjax, normalize), **kwargs)
    theirs = lambda: optax.contrib.sam(outer(optax), adv(optax, optax.contrib.normalize), **kwargs)
    return ours, theirs


SAM_CASES = {  # the default case also in float32
    "default": _sam_pair(lambda m: m.sgd(0.1), lambda m, n: m.chain(n(), m.sgd(0.05))),
    "adam_sync3_keep_state": _sam_pair(
        lambda m: m.adam(constant(0.05), b1=0.8),
        lambda m, n: m.chain(n(), m.sgd(0.05, momentum=0.5)),
        sync_period=3,
        reset_state=False,
    ),
}


@pytest.mark.parametrize("case", sorted(SAM_CASES))
def test_sam_matches_optax(case, standard_promotion):
    ours, theirs = SAM_CASES[case]
    compare_jitted(ours, theirs, steps=6, float32=case == "default")


def test_normalize_matches_optax(standard_promotion):
    compare_jitted(normalize, optax.contrib.normalize, steps=2, float32=False)  # (SAM's: both)
    assert normalize().init(None) == NormalizeState()


def _quadratic_grad(params):
    return jax.tree.map(lambda p: 2.0 * p * p + p, params)  # a gradient that depends on params


def test_sam_opaque_mode_matches_optax(standard_promotion):
    kwargs = dict(sync_period=3, reset_state=False, opaque_mode=True)
    ours, theirs = _sam_pair(
        lambda m: m.sgd(0.1, momentum=0.9), lambda m, n: m.chain(n(), m.adam(0.05)), **kwargs
    )
    compare_jitted(ours, theirs, steps=4, float32=False, grad_fn=lambda p, i: _quadratic_grad(p))


def test_sam_opaque_mode_averages_over_batch_axis_name(standard_promotion):
    # Two replicas (vmap with an axis name) with their own gradients: the adversarial gradients
    # are averaged between them before the outer step, as optax's are.
    ours = sam(optjax.sgd(0.1), optjax.chain(normalize(), optjax.sgd(0.05)), opaque_mode=True)
    ours_b = sam(
        optjax.sgd(0.1),
        optjax.chain(normalize(), optjax.sgd(0.05)),
        opaque_mode=True,
        batch_axis_name="replica",
    )
    theirs_b = optax.contrib.sam(
        optax.sgd(0.1),
        optax.chain(optax.contrib.normalize(), optax.sgd(0.05)),
        opaque_mode=True,
        batch_axis_name="replica",
    )
    params = jnp.array([1.0, -2.0])
    scale = jnp.array([1.0, 3.0])  # replica r's gradient is scale[r] * grad

    def step(tx, s):
        grad_fn = lambda p, i: s * _quadratic_grad(p)
        return tx.update(s * _quadratic_grad(params), tx.init(params), params, grad_fn=grad_fn)[0]

    both = jax.jit(
        lambda: (
            jax.vmap(lambda s: step(ours_b, s), axis_name="replica")(scale),
            jax.vmap(lambda s: step(theirs_b, s), axis_name="replica")(scale),
            step(ours, 1.0),
        )
    )
    got, want, alone = both()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got[0], got[1])  # every replica takes the same step
    assert not np.allclose(got[0], alone)  # the average did take effect


def test_sam_state_holds_the_period_start_and_resets_the_adversary():
    tx = sam(optjax.sgd(0.1), optjax.chain(normalize(), optjax.adam(0.05)), sync_period=3)
    params, grads = problem(jnp.float32, steps=3)
    update, state, states = jax.jit(tx.update), tx.init(params), []
    for g in grads:
        updates, state = update(g, state, params)
        params = optjax.apply_updates(params, updates)
        states.append(state)
    params = problem(jnp.float32, steps=3)[0]
    assert all(isinstance(s, SAMState) for s in states)
    assert [int(s.steps_since_sync) for s in states] == [1, 2, 0]
    for s in states[:2]:  # the cache is the params the period started at
        np.testing.assert_array_equal(s.cache["matrix"], params["matrix"])
    assert int(states[1].adv_state[1][0].count) == 2
    assert int(states[2].adv_state[1][0].count) == 0  # reset after the outer step


def test_sam_with_sync_period_1_is_the_outer_optimizer_where_optax_steps_back(standard_promotion):
    # optax's transparent SAM lands each outer step at the cached params plus the update, and
    # with sync_period=1 the cache is the params before last: it keeps only the latest step.
    grads, p0 = [jnp.array([1.0])] * 3, jnp.array([1.0])
    for make, want in [(sam, 0.7), (optax.contrib.sam, 0.8)]:
        lib = optjax if make is sam else optax
        adv = lib.chain(normalize() if make is sam else optax.contrib.normalize(), lib.sgd(0.05))
        _, p = jit_run(make(lib.sgd(0.1), adv, sync_period=1), p0, grads)[-1]
        np.testing.assert_allclose(p, [want], rtol=1e-6, err_msg=make.__module__)


def test_normalize_and_sam_keep_a_zero_gradient_finite_where_optax_gives_nan(standard_promotion):
    # normalize divides by the norm: optax's gives 0/0 = NaN for a zero gradient, and its SAM
    # then returns NaN even on an outer step, where the adversarial branch it computes is
    # multiplied by 0 (NaN * 0 = NaN). The ascent from a flat point is 0.
    zero = jnp.zeros(2)
    assert np.all(np.isnan(optax.contrib.normalize().update(zero, NormalizeState())[0]))
    np.testing.assert_array_equal(normalize().update(zero, NormalizeState())[0], [0.0, 0.0])
    p, g = jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0])
    for make, norm, lib in [
        (sam, normalize, optjax),
        (optax.contrib.sam, optax.contrib.normalize, optax),
    ]:
        tx = make(lib.sgd(0.1), lib.chain(norm(), lib.sgd(0.5)))
        # an ascent by (0.5, 0), then the outer step, with a zero gradient: back to p
        u, _ = jit_run(tx, p, [g, zero])[-1]
        if make is sam:
            np.testing.assert_allclose(u, [-0.5, 0.0])
        else:
            assert np.all(np.isnan(u))


def test_normalize_is_finite_where_the_squares_overflow():
    g = jnp.array([3e30, 4e30])
    np.testing.assert_allclose(normalize().update(g, NormalizeState())[0], [0.6, 0.8], rtol=1e-6)


def test_sam_needs_params_and_opaque_mode_needs_grad_fn():
    p = jnp.zeros(2)
    with pytest.raises(ValueError, match="needs params"):
        tx = sam(optjax.sgd(0.1), optjax.sgd(0.1))
        jax.eval_shape(lambda: tx.update(p, tx.init(p)))
    with pytest.raises(ValueError, match="grad_fn"):
        tx = sam(optjax.sgd(0.1), optjax.sgd(0.1), opaque_mode=True)
        jax.eval_shape(lambda: tx.update(p, tx.init(p), p))


@pytest.mark.parametrize("opaque_mode", [False, True], ids=["transparent", "opaque"])
def test_sam_refuses_a_state_from_another_optimizer_or_for_other_params(opaque_mode):
    tx = sam(optjax.adam(0.1), optjax.sgd(0.1), opaque_mode=opaque_mode)
    p = {"b": jnp.zeros(3)}
    grad_fn = lambda params, i: params  # read in opaque mode only
    with pytest.raises(ValueError, match="made by another optimizer"):
        tx.update(p, optjax.adam(0.1).init(p), p, grad_fn=grad_fn)
    with pytest.raises(ValueError, match=r"sam: state.*\['b'\] is float32\[4\], but init gives"):
        tx.update(p, tx.init({"b": jnp.zeros(4)}), p, grad_fn=grad_fn)


# ---------------------------------------------------------------------------------------------
# Sophia and Hutchinson's estimator against optax.


def _loss(params):
    """A loss whose Hessian depends on the params (quartic), with couplings between entries."""
    total = 0.0
    for x in jax.tree.leaves(params):
        total = total + jnp.sum(x**4) / 4 + jnp.sum(x) ** 2 / 2
    return total


SOPHIA_CASES = {
    "default": (lambda: sophia(0.05), lambda: optax.contrib.sophia(0.05)),
    "options": (
        lambda: sophia(
            constant(0.02),
            b1=0.9,
            b2=0.8,
            eps=1e-3,
            weight_decay=0.1,
            weight_decay_mask={"scalar": False, "matrix": True},
            gamma=0.5,
            clip_threshold=None,
            update_interval=2,
            hessian_diagonal_fn=hutchinson_estimator_diag_hessian(jax.random.key(3)),
        ),
        lambda: optax.contrib.sophia(
            constant(0.02),
            b1=0.9,
            b2=0.8,
            eps=1e-3,
            weight_decay=0.1,
            weight_decay_mask={"scalar": False, "matrix": True},
            gamma=0.5,
            clip_threshold=None,
            update_interval=2,
            hessian_diagonal_fn=optax.contrib.hutchinson_estimator_diag_hessian(jax.random.key(3)),
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(SOPHIA_CASES))
def test_sophia_matches_optax(case, standard_promotion):
    ours, theirs = SOPHIA_CASES[case]
    compare_jitted(ours, theirs, steps=5, float32=case == "default", obj_fn=_loss)


def test_hutchinson_matches_optax_on_the_same_keys_and_is_unbiased(standard_promotion):
    a = jnp.array([[3.0, 1.0, 0.0], [1.0, 2.0, -1.0], [0.0, -1.0, 1.0]])
    f = lambda x: 0.5 * x @ a @ x
    # A scalar leaf, coupled; and leaves of x's shape, whose signs are drawn in one batched
    # call with x's, each still from its own key.
    params = {"x": jnp.zeros(3), "s": jnp.array(0.5), "v": jnp.zeros(3), "m": jnp.zeros((2, 3))}
    loss = lambda p: f(p["x"]) + p["s"] ** 4 * p["x"][0] + f(p["v"]) + f(p["m"][0]) + f(p["m"][1])
    ours = hutchinson_estimator_diag_hessian()
    theirs = optax.contrib.hutchinson_estimator_diag_hessian()

    def estimates(key):  # the optax state holds a raw key, as PRNGKey gives (its default)
        raw = jax.random.key_data(key)
        mine = ours.update(params, HutchinsonState(raw), params, obj_fn=loss)
        return mine, theirs.update(params, optax.contrib.HutchinsonState(raw), params, obj_fn=loss)

    keys = jax.random.split(jax.random.key(1), 4096)
    ((draws, state), (want, state_ref)) = jax.jit(jax.vmap(estimates))(keys)
    for name in params:
        np.testing.assert_allclose(draws[name], want[name], rtol=1e-6, err_msg=name)
    np.testing.assert_array_equal(state.key, state_ref.key)
    # x's draws: diag(A) plus +-1 times each off-diagonal entry of the row (and x0 plus +-0.5,
    # d^2 loss / dx0 ds = 4 s^3): unbiased, with a spread known from the Hessian.
    draws = draws["x"]
    np.testing.assert_allclose(draws.mean(0), jnp.diag(a), atol=4 * np.sqrt(2.0 / 4096))
    np.testing.assert_allclose(draws.std(0), np.sqrt([1.25, 2.0, 1.0]), rtol=0.05)


def test_hutchinson_handles_params_of_mixed_dtypes_where_optax_fails(standard_promotion):
    # optax casts every sign to the tree's lowest dtype (bf16 here): jvp then refuses a bf16
    # tangent for the float32 leaf.
    params = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.full(2, 2.0)}
    f = lambda p: jnp.sum(p["a"].astype(jnp.float32) ** 2) + jnp.sum(p["b"] ** 3)
    theirs = optax.contrib.hutchinson_estimator_diag_hessian()
    with pytest.raises(TypeError, match="primal and tangent"):
        theirs.update(params, theirs.init(params), params, obj_fn=f)
    tx = hutchinson_estimator_diag_hessian()
    u, _ = jax.jit(lambda s: tx.update(params, s, params, obj_fn=f))(tx.init(params))
    assert u["a"].dtype == jnp.bfloat16 and u["b"].dtype == jnp.float32
    np.testing.assert_allclose(u["a"].astype(jnp.float32), [2.0, 2.0])  # diagonal Hessians
    np.testing.assert_allclose(u["b"], [12.0, 12.0])


def test_sophia_keeps_the_hessian_average_in_float32_for_bf16_params_and_prints_win_rate(
    capfd,
):
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    tx = sophia(0.1, verbose=True, print_win_rate_every_n_steps=1)
    state = tx.init(params)
    diagonal = lambda p: jnp.sum(p["w"].astype(jnp.float32) ** 4) / 4  # H = 3 w^2 = 3
    u, state = jax.jit(lambda s: tx.update(params, s, params, obj_fn=diagonal))(state)
    (sophia_state, *_) = state
    assert isinstance(sophia_state, SophiaState)
    assert sophia_state.nu["w"].dtype == jnp.float32 and sophia_state.mu["w"].dtype == jnp.bfloat16
    assert u["w"].dtype == jnp.bfloat16
    # h = (1 - b2) diag H = 0.01 * 3 = 0.03; in bf16 it would be 0.030029
    np.testing.assert_allclose(sophia_state.nu["w"], [0.03] * 3, rtol=1e-6)
    jax.effects_barrier()
    assert "Sophia optimizer win rate: 0.0" in capfd.readouterr().out  # all clipped: h was 0


def test_sophia_on_complex_params_averages_the_estimates_modulus_and_clips_keeping_the_phase():
    squares = optjax.stateless(lambda g, p: jax.tree.map(lambda x: x * x, g))  # g^2, not |g|^2
    tx = scale_by_sophia(gamma=40.0, update_interval=1, hessian_diagonal_fn=squares)
    p, phase = jnp.zeros(2, jnp.complex64), jnp.exp(0.7j).astype(jnp.complex64)
    for rotate in [1, phase]:
        g = jnp.array([3 + 4j, -3 - 4j], jnp.complex64) * rotate
        u, state = tx.update(g, tx.init(p), p)
        # h = 0: m / eps, its modulus clipped to 1 and its phase kept
        np.testing.assert_allclose(u, g / 5, rtol=1e-6)
        assert state.nu.dtype == jnp.float32  # h = (1 - b2) |g^2| = 0.25, whatever the phase
        np.testing.assert_allclose(state.nu, [0.25, 0.25], rtol=1e-6)
        u, state = tx.update(g, state, p)
        np.testing.assert_allclose(u, g / 10, rtol=1e-5)  # m / (gamma h) = g / 10: not clipped


def test_sophia_needs_params_and_obj_fn():
    p = jnp.zeros(2)
    tx = sophia(0.1)
    with pytest.raises(ValueError, match="needs params"):
        jax.eval_shape(lambda: tx.update(p, tx.init(p)))  # traced only: nothing to compile
    with pytest.raises(ValueError, match="obj_fn"):
        jax.eval_shape(lambda: tx.update(p, tx.init(p), p))


# ---------------------------------------------------------------------------------------------
# The flat layout, and bad hyperparameters.


BAD = {
    "sync_period": [0, -1, 1.5, True],
    "reset_state": [1, None, "yes"],
    "opaque_mode": [0, "no"],
    "batch_axis_name": [0, ("a",)],
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_sam_refuses_bad_hyperparameters(name):
    for value in BAD[name]:
        with pytest.raises(ValueError, match=name):
            sam(optjax.sgd(0.1), optjax.sgd(0.1), **{name: value})


SOPHIA_BAD = {
    "learning_rate": [-0.1, float("nan"), "0.1"],
    "b1": [1.0, -0.1, float("inf")],
    "b2": [1.0, 1.5],
    "eps": [-1e-8, float("nan")],
    "gamma": [-0.01, None],
    "clip_threshold": [-1.0, float("inf")],
    "update_interval": [0, -3, 2.5, True],
    "verbose": [1, "yes"],
    "print_win_rate_every_n_steps": [-1, 0.5],
    "hessian_diagonal_fn": [None, 3],
}


@pytest.mark.parametrize("name", sorted(SOPHIA_BAD))
def test_sophia_refuses_bad_hyperparameters(name):
    for value in SOPHIA_BAD[name]:
        with pytest.raises(ValueError, match=name):
            sophia(**{"learning_rate": 0.1, name: value})


def test_hutchinson_refuses_a_bad_key():
    for value in [1.5, "0", jnp.zeros(3)]:
        with pytest.raises(ValueError, match="random_seed"):
            hutchinson_estimator_diag_hessian(value)
