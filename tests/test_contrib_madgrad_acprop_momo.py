"""MADGRAD, ACProp and MoMo (optax.contrib's scale_by_madgrad, madgrad, scale_by_acprop, acprop,
momo, momo_adam) against optax 0.2.8 step by step on the same gradients, in float64 and float32;
against the authors' algorithms (NumPy, float64) where optax 0.2.8 is wrong: ACProp's centring
and MoMo's weight decay; the places where optax gives NaN; the flat layout; hyperparameter
validation.

The trajectories run through optax_compare with each transform's init and update jitted
(`jitted`): one small program per transform and dtype compiles faster than an eager step's many
operations. MoMo has no conformance row: its update needs the loss, ``value=``, which the
table's loop does not pass.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax_compare import (
    assert_trajectories_close,
    compare_with_optax,
    constant,
    problem,
    run,
    worst_error,
)
from test_gradient_ops import assert_flat_matches_tree, flat_and_tree, flat_test_tree

import optjax
from optjax.contrib._acprop import acprop, scale_by_acprop
from optjax.contrib._madgrad import MadgradState, madgrad, scale_by_madgrad
from optjax.contrib._momo import MomoAdamState, MomoState, momo, momo_adam

INT32_MAX = 2**31 - 1
# One small leaf: each shape and dtype is compiled anew.
SHAPES = {"vector": (3,)}  # scalar leaves: the flat-layout and Python-number tests
STEPS = 4


def loss(params):
    """A loss value for MoMo's ``value=`` that moves with the params (above the bound 0), taken
    in NumPy (a Python float: nothing to compile)."""
    return 0.5 * float(sum(np.sum(np.abs(np.asarray(p)) ** 2) for p in jax.tree.leaves(params))) + 1


def jitted(tx):
    """``tx`` with its init and update jitted: one program per transform and dtype, which
    compiles in a fraction of the time an eager step's many small operations take."""
    return type(tx)(jax.jit(tx.init), jax.jit(tx.update))


# (name, optjax, optax): run on the same problem, with value=loss(params) for MoMo.
CASES = [
    ("madgrad", lambda: madgrad(0.1), lambda: optax.contrib.madgrad(0.1)),
    (
        "madgrad(schedule,momentum=0,weight_decay,eps)",
        lambda: madgrad(constant(0.05), momentum=0.0, weight_decay=0.1, eps=1e-3),
        lambda: optax.contrib.madgrad(constant(0.05), momentum=0.0, weight_decay=0.1, eps=1e-3),
    ),
    ("momo", lambda: momo(), lambda: optax.contrib.momo()),
    (
        "momo(schedule,beta,lower_bound,adapt_lower_bound)",
        lambda: momo(constant(0.5), beta=0.5, lower_bound=0.9, adapt_lower_bound=True),
        lambda: optax.contrib.momo(constant(0.5), 0.5, 0.9, adapt_lower_bound=True),
    ),
    ("momo_adam", lambda: momo_adam(), lambda: optax.contrib.momo_adam()),
    (
        "momo_adam(schedule,b1,b2,eps,lower_bound,adapt_lower_bound)",
        lambda: momo_adam(constant(0.1), 0.8, 0.99, 1e-6, 0.9, adapt_lower_bound=True),
        lambda: optax.contrib.momo_adam(constant(0.1), 0.8, 0.99, 1e-6, 0.9, 0.0, True),
    ),
]


# MoMo's step size is a difference of nearly cancelling sums (f̄ - gamma + <d, x>, and with an
# adapted bound, the bound set just below the model): there the float32 error of either library
# is the luck of its roundings (their ratio ranges from 0.1 to 30 across seeds), and optjax
# computes it as optax does in float32. They are compared in float64, and optjax's float32 run
# is held to float32's precision of the cancelling terms. (MoMo-Adam's own averages are bias-
# corrected more accurately by optjax: that case gets the full comparison.)
CANCELLING = {
    "momo",
    "momo(schedule,beta,lower_bound,adapt_lower_bound)",
    "momo_adam(schedule,b1,b2,eps,lower_bound,adapt_lower_bound)",
}


@pytest.mark.parametrize("name,ours,theirs", CASES, ids=[c[0] for c in CASES])
def test_matches_optax_in_float64_and_is_as_close_in_float32(
    name, ours, theirs, standard_promotion
):
    extra = {"value": loss} if name.startswith("momo") else {}
    if name not in CANCELLING:
        mine, optax_tx = (lambda make=make: jitted(make()) for make in (ours, theirs))
        compare_with_optax(mine, optax_tx, steps=STEPS, shapes=SHAPES, **extra)
        return
    with jax.enable_x64(True):
        params, grads = problem(jnp.float64, STEPS, shapes=SHAPES)
        exact = run(jitted(ours()), params, grads, **extra)
        assert_trajectories_close(exact, run(jitted(theirs()), params, grads, **extra), rtol=1e-6)
    params, grads = problem(jnp.float32, STEPS, shapes=SHAPES)
    assert worst_error(run(jitted(ours()), params, grads, **extra), exact) < 1e-3


# ------------------------------------------------------------- the authors' algorithms (NumPy)


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _flat_steps(trajectory):
    return [_flat(updates) for updates, _ in trajectory]


def acprop_reference(x, grads, lr, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16, wd=0.0):
    """Zhuang et al. 2021, Algorithm 2, as optax documents it: u_t = g_t / (sqrt(ŝ_{t-1}) + eps),
    s_t = b2 s_{t-1} + (1 - b2) (g_t - m_t)^2 + eps_root with the new m_t; then decoupled
    decay and the learning rate."""
    m = s = np.zeros_like(x)
    for t, g in enumerate(grads, start=1):
        s_hat = s / (1 - b2 ** (t - 1)) if t > 1 else np.ones_like(s)
        u = g / (np.sqrt(s_hat) + eps)
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * (g - m) ** 2 + eps_root
        step = -lr * (u + wd * x)
        x = x + step
        yield step


def momo_reference(x, grads, lr, wd=0.0, beta=0.9, lb=0.0, adapt=False, adam=False):
    """The authors' MoMo and MoMo-Adam (fabian-sp/MoMo, bias_correction=False, divide=True) on
    one vector, with the loss `_loss_of_vector`: x_{k+1} = (x_k - tau d_k / D_k) / (1 + lr wd).
    Adam's b2 and eps: 0.999, 1e-8."""
    d, v, fbar, gamma, lb_now = np.zeros_like(x), np.zeros_like(x), 0.0, 0.0, lb
    for k, g in enumerate(grads, start=1):
        f = _loss_of_vector(x)
        b = beta if (adam or k > 1) else 0.0  # MoMo starts its averages at the first values
        d, fbar, gamma = b * d + (1 - b) * g, b * fbar + (1 - b) * f, b * gamma + (1 - b) * g @ x
        rho, direction = 1.0, d
        if adam:
            v = 0.999 * v + 0.001 * g**2
            rho, direction = 1 - beta**k, d / (np.sqrt(v / (1 - 0.999**k)) + 1e-8)
        dot, norm, c = d @ x, d @ direction, 1 + lr * wd
        if adapt and c * fbar + dot - c * gamma < c * rho * lb_now:
            lb_now = max((c * fbar + dot - c * gamma) / (2 * c * rho), lb)
        tau = min(lr / rho, max(c * (fbar - rho * lb_now) + dot - c * gamma, 0.0) / norm)
        if adapt:
            lb_now = max((fbar + dot - gamma - tau * norm / 2) / rho, lb)
        new_x = (x - tau * direction) / c
        yield new_x - x
        x = new_x


def _loss_of_vector(x):
    return 0.5 * x @ x + 1.0  # `loss` of the tree, on its flat vector


REFERENCE_CASES = {
    "momo_adam(weight_decay,adapt_lower_bound)": (
        lambda: momo_adam(0.1, lower_bound=0.9, weight_decay=0.5, adapt_lower_bound=True),
        dict(lr=0.1, wd=0.5, lb=0.9, adapt=True, adam=True),
    ),
    "acprop(schedule,b1,b2,eps,eps_root,weight_decay)": (
        lambda: acprop(constant(0.05), 0.5, 0.99, 1e-3, 1e-8, 0.1),
        dict(lr=0.05, b1=0.5, b2=0.99, eps=1e-3, eps_root=1e-8, wd=0.1),
    ),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_CASES))
def test_matches_the_authors_algorithm_where_optax_differs(name):
    make, kwargs = REFERENCE_CASES[name]
    is_momo = name.startswith("momo")
    extra = {"value": loss} if is_momo else {}
    with jax.enable_x64(True):
        params, grads = problem(jnp.float64, STEPS, shapes=SHAPES)
        got = _flat_steps(run(jitted(make()), params, grads, **extra))
    reference = momo_reference if is_momo else acprop_reference
    want = list(reference(_flat(params), [_flat(g) for g in grads], **kwargs))
    for t, (a, b) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7 * np.max(np.abs(b)), err_msg=t)
    # float32: within float32 rounding of the exact steps; for ACProp, at least as close to
    # them as optax's float32 run is to its own float64 run (the same arguments).
    params32, grads32 = problem(jnp.float32, STEPS, shapes=SHAPES)
    error32 = worst_error(_flat_steps(run(jitted(make()), params32, grads32, **extra)), want)
    assert error32 < 1e-4
    if not is_momo:
        theirs = lambda: jitted(optax.contrib.acprop(constant(0.05), 0.5, 0.99, 1e-3, 1e-8, 0.1))
        with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
            exact = _flat_steps(run(theirs(), params, grads))
        with jax.numpy_dtype_promotion("standard"):
            optax32 = worst_error(_flat_steps(run(theirs(), params32, grads32)), exact)
        assert error32 <= optax32 + float(jnp.finfo(jnp.float32).eps), (error32, optax32)


# -------------------------------------------------------------- where optax 0.2.8 is wrong


def test_acprop_centres_on_the_new_momentum_where_optax_uses_the_previous_one(standard_promotion):
    # The paper (and optax's docstring) centre g_t on m_t = b1 m_{t-1} + (1 - b1) g_t; optax's
    # code takes g_t - m_{t-1}. After one step of g = 2: s_1 = (1 - b2)(0.9 * 2)^2 + eps_root,
    # optax's (1 - b2) 2^2 + eps_root; so optjax's second step is 2 / 1.8, optax's 2 / 2.
    g, x = jnp.full(3, 2.0), jnp.zeros(3)
    for make, s_1, u_2 in [
        (scale_by_acprop, 1e-3 * 1.8**2, 2 / 1.8),
        (optax.contrib.scale_by_acprop, 1e-3 * 2.0**2, 1.0),
    ]:
        tx = jitted(make())
        u_1, state = tx.update(g, tx.init(x))
        np.testing.assert_allclose(u_1, 2.0, rtol=1e-6)  # both: g first
        np.testing.assert_allclose(state.nu, s_1, rtol=1e-4)  # 1 - b2 in float32
        u, state = tx.update(g, state)
        np.testing.assert_allclose(u, u_2, rtol=1e-5)


def test_acprop_differs_from_optax_by_its_centring_alone(standard_promotion):
    # g_t - m_t = b1 (g_t - m_{t-1}): with eps_root = 0 optjax's s_t is b1^2 times optax's, so
    # optjax with eps is optax with eps / b1, its steps divided by b1 (after the first, which
    # both take as g). Step by step in float64, the rest (counts, bias corrections, the first
    # step) is optax's.
    b1, eps = 0.8, 1e-6
    with jax.enable_x64(True):
        params, grads = problem(jnp.float64, STEPS, shapes=SHAPES)
        ours = run(scale_by_acprop(b1, 0.99, eps, 0.0), params, grads, states=True)
        theirs = run(
            optax.contrib.scale_by_acprop(b1, 0.99, eps / b1, 0.0), params, grads, states=True
        )
    for t, ((u, _, s), (u_ref, _, s_ref)) in enumerate(zip(ours, theirs, strict=True)):
        scale = 1.0 if t == 0 else b1
        assert_trajectories_close([jax.tree.map(lambda v, k=scale: v * k, u)], [u_ref], rtol=2e-6)
        assert_trajectories_close([s.mu], [s_ref.mu], rtol=1e-12)
        assert_trajectories_close([s.nu], [jax.tree.map(lambda v: b1**2 * v, s_ref.nu)], 1e-12)


@pytest.mark.parametrize("make", [momo, momo_adam], ids=["momo", "momo_adam"])
def test_momo_weight_decay_divides_the_whole_step_where_optax_divides_only_the_decay(make):
    # The proximal step of the paper and the authors' code: x+ = (x - tau d / D) / (1 + lr wd).
    # optax takes x - lr wd / (1 + lr wd) x - tau d / D: a step (1 + lr wd) times too long.
    lr, wd = 0.5, 1.0
    x = jnp.array([1.0, 2.0, 3.0])
    value, g = jax.value_and_grad(lambda x: jnp.sum(x**2))(x)
    ours = jitted(make(lr, weight_decay=wd))
    theirs = jitted(getattr(optax.contrib, make.__name__)(lr, weight_decay=wd))
    u, _ = ours.update(g, ours.init(x), x, value=value)
    with jax.numpy_dtype_promotion("standard"):
        u_optax, _ = theirs.update(g, theirs.init(x), x, value=value)
    tau_d = -(u_optax + lr * wd / (1 + lr * wd) * x)  # optax's tau d / D
    np.testing.assert_allclose(x + u, (x - tau_d) / (1 + lr * wd), rtol=1e-5)
    assert not np.allclose(u, u_optax, rtol=1e-3)


def test_madgrad_at_the_largest_int32_count_is_finite_where_optax_gives_nan():
    # optax forms sqrt(count + 1) in int32: at the saturated count it is sqrt(-2^31), NaN.
    x, g = jnp.array([1.0, -2.0, 0.5]), jnp.array([0.5, 0.25, -1.0])
    for make, finite in [(scale_by_madgrad, True), (optax.contrib.scale_by_madgrad, False)]:
        tx = jitted(make(0.1))
        state = tx.init(x)._replace(count=jnp.asarray(INT32_MAX, jnp.int32))
        u, state = tx.update(g, state, x)
        assert bool(jnp.all(jnp.isfinite(u))) == finite, make.__module__
        assert int(state.count) == INT32_MAX


def test_zero_gradients_with_eps_zero_give_no_step_where_optax_gives_nan(standard_promotion):
    # An entry whose gradients are all 0 divides 0 by 0 in optax when eps = 0 (MADGRAD's cube
    # root of G, MoMo-Adam's sqrt(v)): optjax leaves it where it is.
    x, g = jnp.array([1.0, -2.0, 0.5]), jnp.array([0.5, 0.0, -1.0])
    cases = [
        (lambda: scale_by_madgrad(0.1, eps=0.0), optax.contrib.scale_by_madgrad(0.1, eps=0.0), {}),
        (lambda: momo_adam(eps=0.0), optax.contrib.momo_adam(eps=0.0), {"value": 3.0}),
    ]
    for ours, theirs, extra in cases:
        for tx, finite in [(jitted(ours()), True), (jitted(theirs), False)]:
            u, _ = tx.update(g, tx.init(x), x, **extra)
            assert bool(jnp.all(jnp.isfinite(u))) == finite
            if finite:
                assert float(u[1]) == 0.0


def test_momo_keeps_its_loss_average_in_float32_for_bf16_params(standard_promotion):
    # optax keeps f̄, gamma and the bound in the params' lowest dtype: in bf16 a loss of 1000.3
    # is 1000, and the step size is a difference of such numbers.
    x = jnp.ones(3, jnp.bfloat16)
    g = jnp.full(3, 0.5, jnp.bfloat16)
    for make, dtype, barf in [
        (momo, jnp.float32, 1000.3),
        (optax.contrib.momo, jnp.bfloat16, 1000),
    ]:
        tx = jitted(make())
        _, state = tx.update(g, tx.init(x), x, value=jnp.float32(1000.3))
        assert state.barf.dtype == dtype
        np.testing.assert_allclose(float(state.barf), barf, rtol=1e-7)


# ---------------------------------------------------------------------------- the rest


def test_states_have_optax_fields():
    assert MadgradState._fields == optax.contrib.MadgradState._fields
    assert MomoState._fields == optax.contrib.MomoState._fields
    assert MomoAdamState._fields == optax.contrib.MomoAdamState._fields
    state = scale_by_acprop().init(jnp.zeros(3))
    assert state._fields == optax.ScaleByBeliefState._fields


def test_momo_needs_the_loss_and_the_params():
    x = jnp.ones(3)
    for tx in (momo(), momo_adam()):
        with pytest.raises(ValueError, match="value=loss"):
            tx.update(x, tx.init(x), x)
        with pytest.raises(ValueError, match="needs params"):
            tx.update(x, tx.init(x), value=1.0)
    with pytest.raises(ValueError, match="needs params"):
        madgrad(0.1).update(x, madgrad(0.1).init(x))


def test_momo_takes_python_numbers_as_leaves():
    params, grads = {"w": 1.0, "b": -2.0}, {"w": 0.5, "b": 0.25}
    as32 = lambda t: jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), t)
    tx = momo()  # momo_adam takes them through the same code
    got, _ = tx.update(grads, tx.init(params), params, value=2.0)
    want, _ = tx.update(as32(grads), tx.init(as32(params)), as32(params), value=2.0)
    jax.tree.map(np.testing.assert_array_equal, got, want)


def test_flat_layout_matches_the_tree_path():
    # MoMo-Adam on the flat buffers (flat_transform: packed, run on them, unpacked) against the
    # tree path, on odd-sized leaves (padding) and a bf16 leaf: its sums over all leaves leave
    # the padding out. MADGRAD and ACProp are elementwise, like the flat-ready primitives the
    # conformance table runs; all four declare it.
    params, grads = flat_test_tree(4, steps=2)
    values = [{"value": jnp.float32(v)} for v in (2.0, 1.0)]
    make = lambda: momo_adam(weight_decay=0.1, adapt_lower_bound=True)
    want, got = flat_and_tree(make, params, grads, values)
    assert_flat_matches_tree(want, got)
    for tx in (madgrad(0.1), acprop(0.1), momo(), momo_adam()):
        assert optjax.flat.is_flat_ready(tx)


BAD = [
    (lambda v: scale_by_madgrad(v), "learning_rate", [-0.1, np.nan, "0.1", None]),
    (lambda v: madgrad(0.1, momentum=v), "momentum", [1.0, -0.1, np.inf]),
    (lambda v: madgrad(0.1, weight_decay=v), "weight_decay", [-1e-3, np.nan]),
    (lambda v: madgrad(0.1, eps=v), "eps", [-1e-6, "1e-6"]),
    (lambda v: scale_by_acprop(b1=v), "b1", [1.0, -0.5, np.nan]),
    (lambda v: acprop(0.1, b2=v), "b2", [1.5, [0.9]]),
    (lambda v: acprop(0.1, eps=v), "eps", [-1.0, np.inf]),
    (lambda v: acprop(0.1, eps_root=v), "eps_root", [-1e-30, 1e39]),
    (lambda v: acprop(v), "learning_rate", [-1.0, True]),
    (lambda v: acprop(0.1, weight_decay=v), "weight_decay", [-0.1]),
    (lambda v: momo(v), "learning_rate", [-1.0, np.nan]),
    (lambda v: momo(beta=v), "beta", [1.0, -0.1, None]),
    (lambda v: momo(lower_bound=v), "lower_bound", [np.nan, np.inf, "0"]),
    (lambda v: momo(weight_decay=v), "weight_decay", [-1.0]),
    (lambda v: momo(adapt_lower_bound=v), "adapt_lower_bound", ["yes", 1, None]),
    (lambda v: momo_adam(b1=v), "b1", [1.0, -1.0]),
    (lambda v: momo_adam(b2=v), "b2", [1.0, np.nan]),
    (lambda v: momo_adam(eps=v), "eps", [-1e-8]),
    (lambda v: momo_adam(lower_bound=v), "lower_bound", [-np.inf]),
    (lambda v: momo_adam(learning_rate=v), "learning_rate", [-0.01, "0.01"]),
    (lambda v: momo_adam(adapt_lower_bound=v), "adapt_lower_bound", [0]),
]


@pytest.mark.parametrize("make,name,values", BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_bad_hyperparameters_raise_naming_the_argument(make, name, values):
    for value in values:
        with pytest.raises(ValueError, match=f"{name} must be .*got {name}="):
            make(value)


def test_traced_hyperparameters_are_accepted():
    # The constructors called inside a trace (as under jit, vmap, inject_hyperparams), then one
    # update: traced only (make_jaxpr), nothing is compiled.
    x = jnp.ones(3)

    def steps(a, b, c):
        txs = [
            madgrad(a, momentum=b, weight_decay=c, eps=c),
            acprop(a, b, b, c, c, c),
            momo(a, b, c, c),
            momo_adam(a, b, b, c, c, c),
        ]
        return [tx.update(x, tx.init(x), x, value=a)[0] for tx in txs]

    jax.make_jaxpr(steps)(jnp.float32(0.1), jnp.float32(0.5), jnp.float32(1e-3))
